// MemoryReclaimer: gives memory back to the kernel after a burst (server-internal).
//
// Freeing a buffer returns it to malloc, not to the kernel: glibc keeps freed chunks in its
// arenas, and the chunks freed after 1,000 slow uploads left (each had a ~1 MiB body buffer)
// kept the process at over 1 GB of RSS for good. Once a second a green thread
//   1. trims the buffer pool (BufferPool::trim(): idle sets nobody took for a second), and
//   2. when the pool and finished bodies have freed more than kTrimAfterBytes since the last
//      trim, calls malloc_trim(0), which hands the free pages of every arena back (glibc only;
//      elsewhere step 2 is skipped).
// malloc_trim walks every arena under its lock and can take milliseconds on a big heap, so it
// runs inside green::blocking(): its P goes on running other green threads meanwhile. Nothing
// of this is on a request's path; a connection only adds to two counters when it frees.
#pragma once

#include <chrono>
#include <cstdint>

#include "green/sync.h"
#include "server/body_budget.h"
#include "server/buffer_pool.h"

namespace green::http {

class MemoryReclaimer {
 public:
  // Freed bytes that make a malloc_trim(0) worth its cost.
  static constexpr uint64_t kTrimAfterBytes = 4 << 20;
  static constexpr std::chrono::seconds kInterval{1};

  // `pool` and `budget` must outlive the reclaimer.
  MemoryReclaimer(BufferPool& pool, const BodyBudget& budget) : pool_(pool), budget_(budget) {}
  MemoryReclaimer(const MemoryReclaimer&) = delete;
  MemoryReclaimer& operator=(const MemoryReclaimer&) = delete;

  // Spawns the green thread. From a green thread, once.
  void start();
  // Wakes it and returns once it has ended (at once if it was never started). Idempotent.
  void stop();

  uint64_t malloc_trims() const { return malloc_trims_.load(std::memory_order_relaxed); }

 private:
  void loop();
  void reclaim();

  BufferPool& pool_;
  const BodyBudget& budget_;
  uint64_t freed_at_last_trim_ = 0;  // only the reclaimer's green thread
  std::atomic<uint64_t> malloc_trims_{0};
  bool started_ = false;
  green::Mutex lock_;
  green::ConditionVariable wake_;
  bool stopping_ = false;  // under lock_
  green::WaitGroup done_;
};

}  // namespace green::http
