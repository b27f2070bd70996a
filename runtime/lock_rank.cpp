// The run-time lock-rank check (GREEN_CHECKS builds). The table and the rule are in
// green/detail/lock_rank.h; this file keeps each OS thread's list of held spin locks.
//
// Out of line on purpose: a green thread's code must never keep the address of a thread_local
// across a context switch (the compiler may cache it, and the green thread may resume on
// another OS thread). Each call here computes the address afresh.
#include "green/detail/lock_rank.h"

#include "runtime/fatal.h"

namespace green::detail {

namespace {

struct Held {
  const void* lock;
  LockRank rank;
};

// Deep enough for select's 64 channel locks plus the timer and scheduler locks under them.
constexpr int kMaxHeld = 72;

struct HeldList {
  Held held[kMaxHeld];
  int n = 0;
};

thread_local HeldList held_locks;

// Ranks that may nest with themselves, in increasing address order.
bool self_nests(LockRank rank) { return rank == LockRank::kChannel; }

[[noreturn]] void order_violation(const void* lock, LockRank rank, const Held& h, const char* why) {
  fatal("lock_rank_acquire",
        "lock order violation: taking %s (rank %d, lock %p) while holding %s (rank %d, lock %p): "
        "%s; see the table in include/green/detail/lock_rank.h",
        lock_rank_name(rank), static_cast<int>(rank), lock, lock_rank_name(h.rank),
        static_cast<int>(h.rank), h.lock, why);
}

void record(const void* lock, LockRank rank) {
  HeldList& list = held_locks;
  if (list.n == kMaxHeld) {
    fatal("lock_rank_acquire", "more than %d spin locks held by one thread (taking %s)", kMaxHeld,
          lock_rank_name(rank));
  }
  list.held[list.n++] = Held{lock, rank};
}

}  // namespace

const char* lock_rank_name(LockRank rank) {
  switch (rank) {
    case LockRank::kUnranked:
      return "an unranked lock";
    case LockRank::kBlockingCap:
      return "sched.blocking_cap_lock";
    case LockRank::kChannel:
      return "a channel's lock";
    case LockRank::kSyncQueue:
      return "a sync primitive's wait-queue lock";
    case LockRank::kPollDesc:
      return "a poll descriptor's lock";
    case LockRank::kTimers:
      return "a P's timer lock";
    case LockRank::kSched:
      return "sched.lock";
    case LockRank::kContext:
      return "a context's lock";
    case LockRank::kGreenLocals:
      return "the green-thread-local keys' lock";
    case LockRank::kPollTable:
      return "the poll descriptor table's lock";
    case LockRank::kStackRegistry:
      return "the stack slab registry's lock";
    case LockRank::kFreeGs:
      return "sched.free_lock";
    case LockRank::kBufferPool:
      return "a buffer pool shard's lock";
    case LockRank::kSizedFreeGs:
      return "the per-size lists of dead green threads";
    case LockRank::kTest:
      return "a test's lock";
  }
  return "an unknown lock";
}

[[gnu::noinline]] void lock_rank_acquire(const void* lock, LockRank rank) {
  HeldList& list = held_locks;
  for (int i = 0; i < list.n; ++i) {
    const Held& h = list.held[i];
    if (h.lock == lock) order_violation(lock, rank, h, "it is already held (self-deadlock)");
    if (h.rank < rank) continue;
    if (h.rank == rank && self_nests(rank)) {
      if (h.lock < lock) continue;
      order_violation(lock, rank, h, "locks of this rank are taken in increasing address order");
    }
    order_violation(lock, rank, h, "its rank is not above every held lock's");
  }
  record(lock, rank);
}

[[gnu::noinline]] void lock_rank_acquired(const void* lock, LockRank rank) { record(lock, rank); }

[[gnu::noinline]] void lock_rank_release(const void* lock) {
  HeldList& list = held_locks;
  // Usually the last one; select releases its set in any order.
  for (int i = list.n - 1; i >= 0; --i) {
    if (list.held[i].lock != lock) continue;
    for (int j = i; j + 1 < list.n; ++j) list.held[j] = list.held[j + 1];
    --list.n;
    return;
  }
  // Not on this thread's list: taken by code built without GREEN_CHECKS (a user's inline
  // Channel<T>::send, say) and released here. Nothing to remove. A lock taken on one thread and
  // released on another would leave a stale entry behind, which the next acquisition below it
  // reports.
}

[[gnu::noinline]] void lock_rank_assert_none_held(const char* what) {
  HeldList& list = held_locks;
  if (list.n == 0) return;
  const Held& h = list.held[list.n - 1];
  fatal(what,
        "called while holding %s (rank %d, lock %p): it may park, and a spin lock must never be "
        "held across a park; see include/green/detail/lock_rank.h",
        lock_rank_name(h.rank), static_cast<int>(h.rank), h.lock);
}

}  // namespace green::detail
