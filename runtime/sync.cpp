// WaitGroup, Mutex, ConditionVariable, Once on park/unpark. See sync.h.
#include "runtime/sync.h"

#include "runtime/green.h"

#include <cstdio>
#include <cstdlib>

namespace green {
namespace detail {

void unpark_chain(Waiter* chain) {
  while (chain != nullptr) {
    Waiter* next = chain->next;  // read before unpark: the Waiter lives on the woken stack
    unpark(*chain);
    chain = next;
  }
}

}  // namespace detail

using detail::park;
using detail::unlock_spin_lock;
using detail::unpark;
using detail::WaitReason;
using detail::Waiter;

// ---- WaitGroup ----

void WaitGroup::add(int64_t delta) {
  if (delta > 0) {
    // Raising the count never wakes anyone (no wait() is parked at zero): one fetch_add,
    // not a load and a CAS that other Ps' done() calls keep failing.
    count_.fetch_add(delta, std::memory_order_acq_rel);
    return;
  }
  // Fast path: any change that leaves waiters nothing to do is one CAS: staying above zero,
  // or reaching zero while nobody waits. With kWaiters clear no wait() is parked, and a
  // wait() that starts now sees zero and returns; the CAS is our last touch of *this.
  int64_t c = count_.load(std::memory_order_relaxed);
  for (;;) {
    const int64_t n = (c & ~kWaiters) + delta;
    if (n < 0) {
      std::fprintf(stderr, "greenrt: fatal: negative WaitGroup counter\n");
      std::abort();
    }
    if (n == 0 && (c & kWaiters) != 0) break;
    if (count_.compare_exchange_weak(c, (c & kWaiters) | n, std::memory_order_acq_rel)) return;
  }
  // Reaching zero with waiters parked: under lock_, which wait() holds while it checks the
  // counter and parks, so no waiter can see zero, return and destroy this WaitGroup (typically
  // on its stack) while we still touch it. Our last access is lock_.unlock().
  lock_.lock();
  const int64_t now = count_.fetch_add(delta, std::memory_order_acq_rel) + delta;
  if ((now & ~kWaiters) < 0) {
    std::fprintf(stderr, "greenrt: fatal: negative WaitGroup counter\n");
    std::abort();
  }
  Waiter* chain = nullptr;
  if ((now & ~kWaiters) == 0) {
    chain = waiters_.claim_all();
    count_.store(0, std::memory_order_release);
  }
  lock_.unlock();
  detail::unpark_chain(chain);  // touches only the waiters, on their own stacks
}

void WaitGroup::wait() {
  lock_.lock();
  if ((count_.load(std::memory_order_acquire) & ~kWaiters) == 0) {
    lock_.unlock();
    return;
  }
  // From here on an add() that reaches zero takes the slow path (and lock_).
  const int64_t c = count_.fetch_or(kWaiters, std::memory_order_acq_rel);
  if ((c & ~kWaiters) == 0) {
    // It reached zero on the fast path between our two reads.
    count_.fetch_and(~kWaiters, std::memory_order_acq_rel);
    lock_.unlock();
    return;
  }
  Waiter w;
  waiters_.push(&w);
  park(w, WaitReason::kWaitGroup, unlock_spin_lock, &lock_);
}

// ---- Mutex ----

bool Mutex::try_lock() {
  uint32_t expected = 0;
  return state_.compare_exchange_strong(expected, kLocked, std::memory_order_acquire);
}

void Mutex::lock() {
  checkpoint();  // a preemption point, as every blocking runtime call
  if (try_lock()) return;
  lock_.lock();
  for (;;) {
    uint32_t s = state_.load(std::memory_order_relaxed);
    if ((s & kLocked) == 0) {
      if (state_.compare_exchange_weak(s, s | kLocked, std::memory_order_acquire)) {
        lock_.unlock();
        return;
      }
      continue;
    }
    // Announce a waiter so unlock() takes the slow path and hands the lock over.
    if (state_.compare_exchange_weak(s, s | kWaiters, std::memory_order_relaxed)) break;
  }
  Waiter w;
  waiters_.push(&w);
  park(w, WaitReason::kMutex, unlock_spin_lock, &lock_);
  // unlock() handed us the mutex: state_ kept kLocked for us. acquire: pairs with its release.
  state_.load(std::memory_order_acquire);
}

void Mutex::unlock() {
  uint32_t expected = kLocked;
  if (state_.compare_exchange_strong(expected, 0, std::memory_order_release)) return;
  lock_.lock();
  Waiter* next = waiters_.pop_claimed();
  if (next == nullptr) {
    state_.store(0, std::memory_order_release);
  } else {
    // Direct handoff: the mutex stays locked, now owned by `next`.
    state_.store(waiters_.empty() ? kLocked : (kLocked | kWaiters), std::memory_order_release);
  }
  lock_.unlock();
  if (next != nullptr) unpark(*next);
}

// ---- ConditionVariable ----

namespace {
struct CondCommit {
  detail::SpinLock* queue_lock;
  Mutex* mutex;
};
void release_both(void* arg) {
  auto* c = static_cast<CondCommit*>(arg);
  c->queue_lock->unlock();
  c->mutex->unlock();
}
}  // namespace

bool ConditionVariable::wait_until_ns(std::unique_lock<Mutex>& lock, int64_t deadline_ns) {
  Waiter w;
  lock_.lock();
  waiters_.push(&w);
  CondCommit commit{&lock_, lock.mutex()};
  park(w, WaitReason::kConditionVariable, release_both, &commit, deadline_ns);
  const bool notified = w.claimed_by() != detail::kTimeoutTag;
  if (!notified) {
    lock_.lock();
    waiters_.remove(&w);
    lock_.unlock();
  }
  lock.mutex()->lock();
  return notified;
}

void ConditionVariable::wait(std::unique_lock<Mutex>& lock) {
  wait_until_ns(lock, detail::kNoDeadline);
}

void ConditionVariable::notify_one() {
  lock_.lock();
  Waiter* w = waiters_.pop_claimed();
  lock_.unlock();
  if (w != nullptr) unpark(*w);
}

void ConditionVariable::notify_all() {
  lock_.lock();
  Waiter* chain = waiters_.claim_all();
  lock_.unlock();
  detail::unpark_chain(chain);
}

// ---- Once ----

bool Once::begin() {
  uint32_t expected = kIdle;
  if (state_.compare_exchange_strong(expected, kRunning, std::memory_order_acquire)) return true;
  lock_.lock();
  if (state_.load(std::memory_order_acquire) == kDone) {
    lock_.unlock();
    return false;
  }
  Waiter w;
  waiters_.push(&w);
  park(w, WaitReason::kOnce, unlock_spin_lock, &lock_);
  return false;
}

void Once::finish() {
  lock_.lock();
  state_.store(kDone, std::memory_order_release);
  Waiter* chain = waiters_.claim_all();
  lock_.unlock();
  detail::unpark_chain(chain);
}

}  // namespace green
