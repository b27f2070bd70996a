// WaitGroup, Mutex, ConditionVariable, Once on park/unpark. See sync.h.
#include "green/sync.h"

#include "green/green.h"
#include "runtime/fatal.h"
#include "runtime/machine.h"
#include "runtime/processor.h"

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
using detail::park_and_unlock;
using detail::unpark;
using detail::Waiter;
using detail::WaitReason;

// ---- WaitGroup ----

namespace {
[[noreturn]] void negative_counter() {
  detail::fatal("green::WaitGroup", "negative WaitGroup counter (more done() than add())");
}
}  // namespace

void WaitGroup::add(int64_t delta) {
  const detail::Machine* m = detail::current_machine();
  const detail::Processor* p = m != nullptr ? m->p : nullptr;  // none from a plain thread
  std::atomic<int64_t>& shard = shards_[p != nullptr ? p->id % kShards : 0].value;
  // Unsealed: one fetch_add, our only touch of *this. acq_rel: what the caller did before
  // done() is visible to the wait() that folds this shard.
  if (shard.fetch_add(delta, std::memory_order_acq_rel) > kSealedBelow) return;
  add_folded(delta);
}

void WaitGroup::add_folded(int64_t delta) {
  int64_t c = count_.load(std::memory_order_acquire);
  for (;;) {
    if ((c & kFolded) == 0) {
      // Our shard is sealed but the fold is not published yet: wait() holds lock_ until it is.
      lock_.lock();
      lock_.unlock();
      c = count_.load(std::memory_order_acquire);
      continue;
    }
    // Fast path: any change that leaves waiters nothing to do is one CAS: staying above zero,
    // or reaching zero while nobody waits. With kWaiters clear no wait() is parked, and a
    // wait() that starts now sees zero and returns; the CAS is our last touch of *this.
    const int64_t n = (c & kCountMask) + delta;
    if (n < 0) negative_counter();
    if (n == 0 && (c & kWaiters) != 0) break;
    if (count_.compare_exchange_weak(c, (c & ~kCountMask) | n, std::memory_order_acq_rel)) {
      return;
    }
  }
  // Reaching zero with waiters parked: under lock_, which wait() holds while it checks the
  // counter and parks, so no waiter can see zero, return and destroy this WaitGroup (typically
  // on its stack) while we still touch it. Our last access is lock_.unlock().
  lock_.lock();
  const int64_t now = (count_.fetch_add(delta, std::memory_order_acq_rel) & kCountMask) + delta;
  if (now < 0) negative_counter();
  Waiter* chain = nullptr;
  if (now == 0) {
    chain = waiters_.claim_all();
    count_.store(kFolded, std::memory_order_release);
  }
  lock_.unlock();
  detail::unpark_chain(chain);  // touches only the waiters, on their own stacks
}

void WaitGroup::wait() {
  lock_.lock();
  int64_t c = count_.load(std::memory_order_acquire);
  if ((c & kFolded) == 0) {
    // The first wait(): seal the shards and publish their sum. A call that finds its shard
    // sealed counts on count_ once we publish (add_folded).
    int64_t sum = 0;
    for (Shard& s : shards_) sum += s.value.exchange(kSealed, std::memory_order_acq_rel);
    if (sum < 0) negative_counter();
    c = kFolded | sum;
    count_.store(c, std::memory_order_release);
  }
  if ((c & kCountMask) == 0) {
    lock_.unlock();
    return;
  }
  // From here on an add() that reaches zero takes the slow path (and lock_).
  c = count_.fetch_or(kWaiters, std::memory_order_acq_rel);
  if ((c & kCountMask) == 0) {
    // It reached zero on the fast path between our two reads.
    count_.fetch_and(~kWaiters, std::memory_order_acq_rel);
    lock_.unlock();
    return;
  }
  Waiter w;
  waiters_.push(&w);
  park_and_unlock(w, WaitReason::kWaitGroup, lock_);
}

// ---- Mutex ----

// Mutex's own three members are exempt from the analysis: the capability is state_, which
// the analysis cannot see change hands.
bool Mutex::try_lock() GREEN_NO_THREAD_SAFETY_ANALYSIS {
  uint32_t expected = 0;
  return state_.compare_exchange_strong(expected, kLocked, std::memory_order_acquire);
}

void Mutex::lock() GREEN_NO_THREAD_SAFETY_ANALYSIS {
#if GREEN_CHECKS
  detail::lock_rank_assert_none_held("green::Mutex::lock");
#endif
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
  park_and_unlock(w, WaitReason::kMutex, lock_);
  // unlock() handed us the mutex: state_ kept kLocked for us. acquire: pairs with its release.
  state_.load(std::memory_order_acquire);
}

void Mutex::unlock() GREEN_NO_THREAD_SAFETY_ANALYSIS {
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
  // The new owner must not wait in our runnext while we go on running (we usually do, having
  // left the critical section): wake an idle P to take it.
  if (next != nullptr) unpark(*next, detail::WakeIdleP::kAlways);
}

// ---- ConditionVariable ----

namespace {
struct CondCommit {
  detail::SpinLock* queue_lock;
  Mutex* mutex;
};
// Exempt from the analysis: both locks were taken by the parked green thread before the
// switch (see wait_until_ns).
void release_both(void* arg) GREEN_NO_THREAD_SAFETY_ANALYSIS {
  auto* c = static_cast<CondCommit*>(arg);
  c->queue_lock->unlock();
  c->mutex->unlock();
}
}  // namespace

// Exempt from the analysis: park's commit (release_both) releases lock_ and the Mutex on g0,
// which the analysis cannot follow through a function pointer.
bool ConditionVariable::wait_until_ns(std::unique_lock<Mutex>& lock,
                                      int64_t deadline_ns) GREEN_NO_THREAD_SAFETY_ANALYSIS {
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
  wait_until_ns(lock, detail::kNoDeadlineNs);
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
  park_and_unlock(w, WaitReason::kOnce, lock_);
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
