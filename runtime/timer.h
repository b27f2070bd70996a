// Timers: a 4-ary min-heap per P, ordered by deadline, as Go's p.timers.
//
// A Timer is owned by its creator (typically on a parked green thread's stack) and must stay
// alive until timer_cancel() returns or its callback has run. The heap only points to it.
//
// States: kIdle -> add -> kPending -> (fire) kRunning -> kFired, or kPending -> cancel -> kIdle.
// timer_cancel() waits while the callback is running, so after it returns the Timer may be
// destroyed. Callbacks run on whichever M services the heap (with a P held, or from the idle
// M that waited for the deadline) and must be short and non-blocking: they typically claim a
// Waiter and unpark it.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

#include "green/detail/spin_lock.h"

namespace green::detail {

struct Processor;

struct Timer {
  enum State : uint8_t { kIdle, kPending, kRunning, kFired };
  int64_t when = 0;  // absolute, now_ns() clock
  void (*fire)(Timer*) = nullptr;
  void* arg = nullptr;
  std::atomic<uint8_t> state{kIdle};
  Processor* owner = nullptr;  // whose heap holds it while pending
  int32_t heap_index = -1;
};

class TimerHeap {
 public:
  void push(Timer* t) GREEN_REQUIRES(lock_);
  // Removes t if still in this heap; returns whether it was.
  bool remove(Timer* t) GREEN_REQUIRES(lock_);
  // Earliest deadline, or INT64_MAX. Racy read is fine (a hint); exact under lock.
  int64_t earliest() const { return earliest_.load(std::memory_order_acquire); }
  // Pops the earliest timer if its deadline is <= now and marks it running; null otherwise.
  Timer* pop_expired(int64_t now) GREEN_REQUIRES(lock_);
  SpinLock& lock() GREEN_RETURN_CAPABILITY(lock_) { return lock_; }
  size_t size() const GREEN_REQUIRES(lock_) { return heap_.size(); }

 private:
  // The deadline is kept next to the pointer: sifting compares without touching the timers,
  // which live on parked green threads' stacks (a cache miss each, thousands of them with
  // one deadline per idle connection). Only an entry that moves is written to (heap_index).
  struct Entry {
    int64_t when;
    Timer* timer;
  };
  static constexpr size_t kArity = 4;  // as Go: half the depth of a binary heap
  void sift_up(size_t i, Entry e) GREEN_REQUIRES(lock_);
  void sift_down(size_t i, Entry e) GREEN_REQUIRES(lock_);
  void place(size_t i, Entry e) GREEN_REQUIRES(lock_);
  void update_earliest() GREEN_REQUIRES(lock_);
  SpinLock lock_{LockRank::kTimers};
  std::vector<Entry> heap_ GREEN_GUARDED_BY(lock_);
  std::atomic<int64_t> earliest_{INT64_MAX};
};

// Arms t (t->when, t->fire set by the caller) on the calling M's P, or on P0 from elsewhere.
void timer_add(Timer* t);
// Disarms t; if its callback is running, waits for it to finish. Returns true if the timer was
// disarmed before firing.
bool timer_cancel(Timer* t);
// Called by every timer callback once it no longer needs the Timer (nor anything the Timer's
// owner may free on waking): before waking anyone. timer_cancel() spins until then, so it must
// come quickly (a claim, not a wakeup, before it).
void timer_fired(Timer* t);
// Runs every expired timer of `p`; returns the number run.
int run_expired_timers(Processor* p, int64_t now);

}  // namespace green::detail
