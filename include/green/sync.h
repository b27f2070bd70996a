// WaitGroup, Mutex, ConditionVariable, Once: Go's sync package for green threads. Each parks
// the calling green thread (its OS thread runs others); called from a plain OS thread, the
// thread sleeps on a futex instead. All members are safe to call concurrently.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>

#include "green/detail/intrusive_fifo.h"
#include "green/detail/park.h"

namespace green {

namespace detail {
using WaiterQueue = IntrusiveFifo<Waiter>;

// Unparks a chain returned by claim_all().
void unpark_chain(Waiter* chain);
}  // namespace detail

// Waits for a collection of green threads to finish: add(n) before spawning, done() in each,
// wait() to park until the counter is zero. A negative counter aborts the process with a
// message (Go panics): seen by the first wait(), and at once after it. wait() may be called
// from green and plain threads. The WaitGroup may be destroyed as soon as wait() returns
// (done() never touches it after releasing a waiter).
//
// Until the first wait(), add() and done() count on one of kShards counters, picked by the
// caller's P, each on its own cache line: a spawner adding on one P and green threads finishing
// on another do not pull one line back and forth on every call (Go's WaitGroup is one word; at
// 2 Ps that line was a third of a spawn + join). The first wait() seals the shards and folds
// their sum into one counter, which every later call uses (so done() can tell it reached zero).
class alignas(64) WaitGroup {
 public:
  void add(int64_t delta);
  void done() { add(-1); }
  void wait();

 private:
  static constexpr int kShards = 4;
  // A sealed shard holds kSealed plus whatever calls added after the seal (they then count on
  // count_ instead): anything at or below kSealedBelow.
  static constexpr int64_t kSealed = -(int64_t{1} << 62);
  static constexpr int64_t kSealedBelow = -(int64_t{1} << 61);
  // count_: the counter once folded (kFolded set, by the first wait(), under lock_), with
  // kWaiters set while green threads are parked in wait() (set under lock_).
  static constexpr int64_t kWaiters = int64_t{1} << 62;
  static constexpr int64_t kFolded = int64_t{1} << 61;
  static constexpr int64_t kCountMask = kFolded - 1;
  void add_folded(int64_t delta);

  struct alignas(64) Shard {
    std::atomic<int64_t> value{0};
  };
  Shard shards_[kShards];
  std::atomic<int64_t> count_{0};
  detail::SpinLock lock_{detail::LockRank::kSyncQueue};
  detail::WaiterQueue waiters_ GREEN_GUARDED_BY(lock_);
};

// A mutual-exclusion lock that parks contending green threads. Ownership is handed directly to
// the longest waiter on unlock (FIFO, no barging), so no waiter starves. Not recursive; unlock
// from a thread that does not hold it is undefined. Satisfies Lockable (std::lock_guard,
// std::unique_lock). lock() may be called from green and plain threads, never while holding a
// runtime spin lock (checked in debug builds: it may park).
//
// A capability for Clang's thread-safety analysis: annotate what it guards with
// GREEN_GUARDED_BY (green/detail/thread_annotations.h) and take it with MutexGuard, and the
// compiler checks every access.
class GREEN_CAPABILITY("mutex") Mutex {
 public:
  void lock() GREEN_ACQUIRE();
  bool try_lock() GREEN_TRY_ACQUIRE(true);
  void unlock() GREEN_RELEASE();

 private:
  static constexpr uint32_t kLocked = 1;
  static constexpr uint32_t kWaiters = 2;
  std::atomic<uint32_t> state_{0};
  detail::SpinLock lock_{detail::LockRank::kSyncQueue};
  detail::WaiterQueue waiters_ GREEN_GUARDED_BY(lock_);
};

// std::lock_guard for a green::Mutex, visible to the thread-safety analysis (libstdc++'s
// std::lock_guard is not annotated).
class GREEN_SCOPED_CAPABILITY MutexGuard {
 public:
  explicit MutexGuard(Mutex& mu) GREEN_ACQUIRE(mu) : mu_(mu) { mu_.lock(); }
  ~MutexGuard() GREEN_RELEASE() { mu_.unlock(); }
  MutexGuard(const MutexGuard&) = delete;
  MutexGuard& operator=(const MutexGuard&) = delete;

 private:
  Mutex& mu_;
};

// Condition variable over green::Mutex. wait() atomically releases the mutex and parks, and
// re-acquires it before returning. Spurious wakeups do not happen, but use the predicate forms
// anyway: another green thread may run between notify and the waiter's relock.
class ConditionVariable {
 public:
  void wait(std::unique_lock<Mutex>& lock);
  template <typename Pred>
  void wait(std::unique_lock<Mutex>& lock, Pred pred) {
    while (!pred()) wait(lock);
  }
  // Returns false if the deadline passed without a notify.
  bool wait_until_ns(std::unique_lock<Mutex>& lock, int64_t deadline_ns);
  template <typename Rep, typename Period>
  bool wait_for(std::unique_lock<Mutex>& lock, std::chrono::duration<Rep, Period> d) {
    return wait_until_ns(
        lock, detail::now_ns() + std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
  }
  template <typename Rep, typename Period, typename Pred>
  bool wait_for(std::unique_lock<Mutex>& lock, std::chrono::duration<Rep, Period> d, Pred pred) {
    const int64_t deadline =
        detail::now_ns() + std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
    while (!pred()) {
      if (!wait_until_ns(lock, deadline)) return pred();
    }
    return true;
  }
  void notify_one();
  void notify_all();

 private:
  detail::SpinLock lock_{detail::LockRank::kSyncQueue};
  detail::WaiterQueue waiters_ GREEN_GUARDED_BY(lock_);
};

// Runs a function exactly once. Callers that arrive while it runs park until it has finished,
// then return; all of them see its effects. The Once must outlive every call() on it. As in Go, the
// Once counts as done even if the function throws (the exception propagates to the caller that ran
// it).
class Once {
 public:
  template <typename F>
  void call(F&& f) {
    if (state_.load(std::memory_order_acquire) == kDone) return;
    if (begin()) {
      struct Finish {
        Once* once;
        ~Finish() { once->finish(); }
      } finish{this};
      f();
    }
  }

 private:
  static constexpr uint32_t kIdle = 0, kRunning = 1, kDone = 2;
  bool begin();  // true: the caller runs the function; false: it already ran (we waited)
  void finish();
  std::atomic<uint32_t> state_{kIdle};
  detail::SpinLock lock_{detail::LockRank::kSyncQueue};
  detail::WaiterQueue waiters_ GREEN_GUARDED_BY(lock_);
};

}  // namespace green
