// The lock-rank table: every lock of the runtime and the server, its rank, and the order in
// which they may be taken. This file is the one place that states the order; each lock's
// declaration names its rank (SpinLock's constructor), and debug and sanitizer builds
// (GREEN_CHECKS) check it on every acquisition, as Go's lockrank does (runtime/lockrank.go,
// GOEXPERIMENT=staticlockranking).
//
// The rule: a thread may take a lock only if its rank is above the rank of every spin lock
// it holds. A rank marked "self" may also be taken while holding another lock of the same
// rank, at a higher address (select locks its channels in address order, as Go's sellock).
// Violating it is a fatal error naming both locks. The held locks are a per-OS-thread list:
// a green thread cannot move to another OS thread while it holds a spin lock, because the only
// way it leaves its thread is park(), whose commit releases the lock on that same thread (g0
// or, after a direct switch, the next green thread on that M) before anything else runs there.
//
// Spin locks (green::detail::SpinLock), from the outermost to the innermost:
//
//   rank  lock                       where                       taken while holding
//   ----  -------------------------  --------------------------  ------------------------------
//   10    kBlockingCap               sched.blocking_cap_lock     nothing. A green thread parks on
//                                                                it (enter_blocking); park's
//                                                                commit releases it on g0.
//   11    kChannel (self)            ChannelCore::lock           other channels at higher
//                                                                addresses (select). Parked on:
//                                                                held on g0 while park arms the
//                                                                deadline's timer (kTimers) and
//                                                                that may wake an M (kSched).
//   12    kSyncQueue                 WaitGroup, Mutex,           nothing. Parked on, as channels
//                                    ConditionVariable, Once     (ConditionVariable's deadline
//                                    (their wait queues)         arms a timer). Released before
//                                                                the next one is taken:
//                                                                ConditionVariable's commit
//                                                                unlocks its queue, then the
//                                                                Mutex (whose queue lock it
//                                                                takes then).
//   13    kPollDesc                  PollDesc::lock (netpoll)    nothing. Parked on, with a
//                                                                deadline (timers, sched after).
//                                                                Wakeups happen after unlocking.
//   20    kTimers                    a P's TimerHeap lock        a primitive's lock above (park
//                                                                arms the timer before commit).
//                                                                Callbacks run without it, and
//                                                                wake_timer_waiter() runs after
//                                                                it is released.
//   30    kSched                     sched.lock                  a primitive's lock above: park's
//                                                                commit and deadline run on g0
//                                                                before the lock is released
//                                                                (timer_add -> wake_timer_waiter
//                                                                -> nudge_idle_machine_for_timers).
//                                                                Under it: the idle lists, the
//                                                                global run queue; no other lock.
//                                                                Thread creation and futex and
//                                                                eventfd wake-ups come after it.
//   40    kContext                   ContextState::lock          nothing (leaf): cancel() and the
//                                                                after_func hooks run after it.
//   41    kGreenLocals               green-thread-local keys     nothing (leaf).
//   42    kPollTable                 netpoll descriptor table    nothing (leaf; PollDesc::lock is
//                                                                released before free_desc()).
//   43    kStackRegistry             stack slab registry         nothing (leaf; mmap outside).
//   44    kFreeGs                    sched.free_lock             nothing (leaf): the global list
//                                                                of dead green threads.
//   45    kBufferPool                server BufferPool shard     nothing (leaf; frees outside).
//   46    kSizedFreeGs               dead green threads of a     nothing (leaf): the per-size
//                                    per-spawn stack size        lists of SpawnOptions stacks.
//   60    kTest                      tests' own spin locks       anything above (a leaf).
//
// Sleeping locks (not spin locks; not on the per-thread list, since a green thread holding one
// may park and resume on another OS thread):
//
//   lock                        where                     rule
//   --------------------------  ------------------------  ------------------------------------
//   green::Mutex (user level)   ServerState::registry_lock taken with no spin lock held
//                               (the server's connection  (checked: Mutex::lock is a
//                               list), MemoryReclaimer,   preemption point and may park).
//                               users' code               Under the registry: the drain's
//                                                         Connection::stop, which takes
//                                                         kPollDesc and may wake an M (kSched).
//   join_lock (std::mutex)      scheduler (run, sysmon)   taken with no spin lock held, by
//                                                         plain threads only (sysmon, the caller
//                                                         of run()); kSched under it.
//   /blocking's std::mutex      handlers/runtime_demos    a deliberately blocking wait, inside
//                                                         green::blocking() (the P is handed
//                                                         off first); the context's hook that
//                                                         notifies it holds it for one store.
//                                                         Nothing is taken under it.
#pragma once

#include <cstdint>

namespace green::detail {

enum class LockRank : uint8_t {
  kUnranked = 0,  // not checked (a lock made before it was given a rank)
  kBlockingCap = 10,
  kChannel = 11,
  kSyncQueue = 12,
  kPollDesc = 13,
  kTimers = 20,
  kSched = 30,
  kContext = 40,
  kGreenLocals = 41,
  kPollTable = 42,
  kStackRegistry = 43,
  kFreeGs = 44,
  kBufferPool = 45,
  kSizedFreeGs = 46,
  kTest = 60,
};

// "sched.lock", "channel", ...: for the fatal message.
const char* lock_rank_name(LockRank rank);

// The run-time check (GREEN_CHECKS builds; the functions exist in every build of greenrt, so
// code built with and without the checks links together). Acquire before spinning: a wrong
// order is reported even when it happens not to deadlock this time.
void lock_rank_acquire(const void* lock, LockRank rank);
// After a successful try_lock: recorded, not checked (a try cannot deadlock).
void lock_rank_acquired(const void* lock, LockRank rank);
void lock_rank_release(const void* lock);
// Fatal if the calling OS thread holds a spin lock: before anything that may park or sleep
// (green::Mutex::lock). `what` names the caller in the message.
void lock_rank_assert_none_held(const char* what);

}  // namespace green::detail
