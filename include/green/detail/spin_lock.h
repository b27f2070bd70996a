// SpinLock: the lock under which runtime structures (run queues' global part, channels, timer
// heaps, wait queues) are changed. Critical sections are a few dozen instructions and never
// block, so spinning beats a futex; after a bounded spin the thread yields its core so a holder
// that was preempted by the kernel can finish.
//
// Unlike std::mutex, a SpinLock may be locked by a green thread and unlocked by the scheduler
// (g0) after that green thread has switched away: that is how park() publishes a waiter and
// releases the lock only once the waiter's context is saved. std::mutex forbids unlocking from
// another thread, and ThreadSanitizer would (rightly) report it. Both run on the same OS
// thread, which is what the rank check's per-thread list relies on (green/detail/lock_rank.h).
//
// Each SpinLock has a rank from the lock-rank table (green/detail/lock_rank.h); GREEN_CHECKS
// builds check the order on every lock(). The rank is one byte, in every build, so that a
// SpinLock has the same layout whether or not a translation unit checks.
//
// For Clang's thread-safety analysis a SpinLock is a capability, SpinLockGuard its scoped
// guard (std::lock_guard is not annotated in libstdc++, so the analysis cannot see through it).
#pragma once

#include <sched.h>

#include <atomic>

#include "green/detail/lock_rank.h"
#include "green/detail/thread_annotations.h"

namespace green::detail {

inline void cpu_relax() { __builtin_ia32_pause(); }

class GREEN_CAPABILITY("mutex") SpinLock {
 public:
  constexpr SpinLock() noexcept = default;
  constexpr explicit SpinLock(LockRank rank) noexcept : rank_(rank) {}
  SpinLock(const SpinLock&) = delete;
  SpinLock& operator=(const SpinLock&) = delete;

  void lock() noexcept GREEN_ACQUIRE() {
#if GREEN_CHECKS
    if (rank_ != LockRank::kUnranked) lock_rank_acquire(this, rank_);
#endif
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
  bool try_lock() noexcept GREEN_TRY_ACQUIRE(true) {
    const bool got = !locked_.load(std::memory_order_relaxed) &&
                     !locked_.exchange(true, std::memory_order_acquire);
#if GREEN_CHECKS
    if (got && rank_ != LockRank::kUnranked) lock_rank_acquired(this, rank_);
#endif
    return got;
  }
  // release: publishes the critical section's writes to the next lock() holder.
  void unlock() noexcept GREEN_RELEASE() {
#if GREEN_CHECKS
    if (rank_ != LockRank::kUnranked) lock_rank_release(this);
#endif
    locked_.store(false, std::memory_order_release);
  }
  LockRank rank() const noexcept { return rank_; }

 private:
  std::atomic<bool> locked_{false};
  LockRank rank_ = LockRank::kUnranked;
};

// std::lock_guard for a SpinLock, visible to the thread-safety analysis.
class GREEN_SCOPED_CAPABILITY SpinLockGuard {
 public:
  explicit SpinLockGuard(SpinLock& lock) noexcept GREEN_ACQUIRE(lock) : lock_(lock) {
    lock_.lock();
  }
  ~SpinLockGuard() GREEN_RELEASE() { lock_.unlock(); }
  SpinLockGuard(const SpinLockGuard&) = delete;
  SpinLockGuard& operator=(const SpinLockGuard&) = delete;

 private:
  SpinLock& lock_;
};

}  // namespace green::detail
