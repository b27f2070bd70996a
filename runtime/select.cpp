// select over channel cases: Go's selectgo. See select.h.
//
// 1. Lock every distinct channel in address order.
// 2. Poll the cases in a random order; the first ready one completes (fairness).
// 3. Otherwise (no default): link one node per case, all pointing to one Waiter, and park.
//    Whoever wins waiter.try_claim(case index) — a peer on one of the channels, close(), or the
//    timeout — completes exactly that case.
// 4. On wake, relock and unlink the nodes that are still queued; run the winner's callback.
#include "green/select.h"

#include <algorithm>
#include <random>

#include "green/green.h"

namespace green::detail {
namespace {

struct LockSet {
  SpinLock* locks[kMaxSelectCases];
  int n = 0;
  // Exempt from the analysis, which cannot follow a set of locks taken in a loop; the rank
  // check (kChannel nests with itself in address order) covers the order at run time.
  void lock_all() GREEN_NO_THREAD_SAFETY_ANALYSIS {
    for (int i = 0; i < n; ++i) locks[i]->lock();
  }
  void unlock_all() GREEN_NO_THREAD_SAFETY_ANALYSIS {
    for (int i = n - 1; i >= 0; --i) locks[i]->unlock();
  }
  // Unlocks all but `keep` (already unlocked by a completed case).
  void unlock_all_except(SpinLock* released) GREEN_NO_THREAD_SAFETY_ANALYSIS {
    for (int i = n - 1; i >= 0; --i) {
      if (locks[i] != released) locks[i]->unlock();
    }
  }
};

void unlock_set(void* arg) GREEN_NO_THREAD_SAFETY_ANALYSIS {
  static_cast<LockSet*>(arg)->unlock_all();
}

uint32_t random_u32() {
  // Per-thread generator; only used for the poll order, so a migration mid-use is harmless.
  static thread_local std::minstd_rand gen(std::random_device{}());
  return static_cast<uint32_t>(gen());
}

}  // namespace

int select_cases(SelectCase** cases, int n, SelectOptions options) {
  if (n == 0) {
    if (options.has_default) return kSelectDefault;
    if (options.timeout_ns >= 0) {
      sleep_for(std::chrono::nanoseconds(options.timeout_ns));
      return kSelectTimeout;
    }
    Waiter w;  // select {}: parks forever
    park(w, WaitReason::kSelectNoCases, nullptr, nullptr);
    return kSelectTimeout;
  }
  LockSet set;
  for (int i = 0; i < n; ++i) set.locks[set.n++] = &cases[i]->core().lock;
  std::sort(set.locks, set.locks + set.n);
  set.n = static_cast<int>(std::unique(set.locks, set.locks + set.n) - set.locks);

  int order[kMaxSelectCases];
  for (int i = 0; i < n; ++i) order[i] = i;
  for (int i = n - 1; i > 0; --i) std::swap(order[i], order[random_u32() % (i + 1)]);

  set.lock_all();
  for (int k = 0; k < n; ++k) {
    SelectCase* c = cases[order[k]];
    SpinLock* lock = &c->core().lock;
    if (c->try_locked()) {  // released `lock`
      set.unlock_all_except(lock);
      c->fire();
      return order[k];
    }
  }
  if (options.has_default) {
    set.unlock_all();
    return kSelectDefault;
  }
  Waiter w;
  for (int i = 0; i < n; ++i) {
    ChanNode& node = cases[i]->node;
    node.waiter = &w;
    node.index = static_cast<uint32_t>(i);
    node.ok = false;
    ChannelCore& core = cases[i]->core();
    (cases[i]->is_send() ? core.senders : core.receivers).push(&node);
  }
  const int64_t deadline_ns =
      options.timeout_ns >= 0 ? now_ns() + options.timeout_ns : kNoDeadlineNs;
  park(w, WaitReason::kSelect, unlock_set, &set, deadline_ns);
  // Unlink the losers (the winner's node was popped by its waker; remove() is then a no-op).
  set.lock_all();
  for (int i = 0; i < n; ++i) {
    ChannelCore& core = cases[i]->core();
    (cases[i]->is_send() ? core.senders : core.receivers).remove(&cases[i]->node);
  }
  set.unlock_all();
  const uint32_t winner = w.claimed_by();
  if (winner == kTimeoutTag) return kSelectTimeout;
  cases[winner]->fire();
  return static_cast<int>(winner);
}

}  // namespace green::detail
