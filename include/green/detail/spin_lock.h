// SpinLock: the lock under which runtime structures (run queues' global part, channels, timer
// heaps, wait queues) are changed. Critical sections are a few dozen instructions and never
// block, so spinning beats a futex; after a bounded spin the thread yields its core so a holder
// that was preempted by the kernel can finish.
//
// Unlike std::mutex, a SpinLock may be locked by a green thread and unlocked by the scheduler
// (g0) after that green thread has switched away: that is how park() publishes a waiter and
// releases the lock only once the waiter's context is saved. std::mutex forbids unlocking from
// another thread, and ThreadSanitizer would (rightly) report it.
#pragma once

#include <atomic>

#include <sched.h>

namespace green::detail {

inline void cpu_relax() { __builtin_ia32_pause(); }

class SpinLock {
 public:
  void lock() noexcept {
    for (;;) {
      // acquire: everything written before the previous unlock() is visible after this.
      if (!locked_.exchange(true, std::memory_order_acquire)) return;
      int spins = 0;
      while (locked_.load(std::memory_order_relaxed)) {
        if (++spins < 64) {
          cpu_relax();
        } else {
          sched_yield();
          spins = 0;
        }
      }
    }
  }
  bool try_lock() noexcept {
    return !locked_.load(std::memory_order_relaxed) &&
           !locked_.exchange(true, std::memory_order_acquire);
  }
  // release: publishes the critical section's writes to the next lock() holder.
  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  std::atomic<bool> locked_{false};
};

}  // namespace green::detail
