#include "server/memory_reclaimer.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <mutex>

#include "green/green.h"

namespace green::http {

void MemoryReclaimer::start() {
  started_ = true;
  done_.add(1);
  freed_at_last_trim_ = pool_.freed_bytes() + budget_.released();
  green::go([this] {
    loop();
    done_.done();
  });
}

void MemoryReclaimer::stop() {
  if (!started_) return;
  {
    std::lock_guard<green::Mutex> guard(lock_);
    if (stopping_) return;
    stopping_ = true;
  }
  wake_.notify_all();
  done_.wait();
}

void MemoryReclaimer::loop() {
  std::unique_lock<green::Mutex> guard(lock_);
  while (!wake_.wait_for(guard, kInterval, [this] { return stopping_; })) {
    guard.unlock();
    reclaim();
    guard.lock();
  }
}

void MemoryReclaimer::reclaim() {
  pool_.trim();
  const uint64_t freed = pool_.freed_bytes() + budget_.released();
  if (freed - freed_at_last_trim_ < kTrimAfterBytes) return;
  freed_at_last_trim_ = freed;
#if defined(__GLIBC__)
  green::blocking([] { malloc_trim(0); });
  malloc_trims_.fetch_add(1, std::memory_order_relaxed);
#endif
}

}  // namespace green::http
