// The timer waiter: the idle M that sleeps until the earliest timer of all Ps.
//
// At most one idle M holds the role (sched.timer_waiter, claimed with a CAS in stopm()). It
// sleeps in epoll_wait (or on its futex before any socket exists) until the earliest timer,
// which it publishes in sched.timer_waiter_until (kTimerWaiterComputing while it reads the
// heaps). Adding an earlier timer wakes it (wake_timer_waiter); when an idle P has timers or
// the network has waiters and nobody holds the role, an idle M is woken to take it
// (ensure_waiter). Go's equivalent is the M blocked in netpoll until the next timer
// (findRunnable's blocking netpoll, wakeNetPoller; runtime/proc.go).
#include <algorithm>
#include <mutex>

#include "runtime/netpoll.h"
#include "runtime/scheduler.h"

namespace green::detail {

// Earliest pending timer over all Ps.
int64_t earliest_timer() {
  int64_t earliest = INT64_MAX;
  for (int i = 0; i < sched.nprocs; ++i) {
    earliest = std::min(earliest, sched.procs[i].timers.earliest());
  }
  return earliest;
}

// After taking a P as the timer waiter: run every P's expired timers here (their Gs land on
// our P), and hand the waiter role to another idle M if timers remain.
void service_timers_as_waiter() {
  int64_t now = now_ns();
  for (int i = 0; i < sched.nprocs; ++i) run_expired_timers(&sched.procs[i], now);
}

namespace {

// For an idle M to take the waiter role: posts kWakeTimers to the first idle M under
// sched.lock, and returns it (null if there is none) with *posted telling whether the caller
// must deliver the wake (deliver_wake) once the lock is released. Not posted: a wake is already
// pending on that M, which is awake or about to be.
//
// Why the futex (and eventfd) wake may come after the lock without losing the wake-up: the
// word is set under the lock, and an M leaves the idle list to retire only with no wake
// pending (retire_if_idle_too_long reads the word under the lock); an M that sees the word
// before our futex call does not sleep (futex_wait compares it with 0), so our call then finds
// nobody, which is harmless. A Machine is never freed during a run, so the pointer stays
// valid. If a startm() pops the M in between, it overwrites the word with kWakeRun: the M runs
// a P instead, as it could have with the wake under the lock, and parks again through stopm()
// (which claims a free waiter role); sysmon calls ensure_waiter() every round as well.
Machine* post_timers_wake_to_idle_machine(bool* posted) {
  SpinLockGuard guard(sched.lock);
  Machine* idle = sched.idle_machines;
  *posted = idle != nullptr && post_wake(idle, Machine::kWakeTimers, /*force=*/false);
  return idle;
}

}  // namespace

void wake_timer_waiter(int64_t when) {
  // seq_cst: the adder's reads of the timer_add/stopm pair (timer_add fences before us).
  int64_t until = sched.timer_waiter_until.load(std::memory_order_seq_cst);
  if (until != kTimerWaiterComputing && until != kNoTimerWaiter && when >= until) return;
  if (Machine* m = sched.timer_waiter.load(std::memory_order_seq_cst); m != nullptr) {
    wake_machine(m, Machine::kWakeTimers, false);
    return;
  }
  nudge_idle_machine_for_timers();
}

void nudge_idle_machine_for_timers() {
  // Only idle Ps need an idle M to watch their timers and the network: a busy P runs its own
  // timers at its next scheduling point and polls when its queue runs dry.
  // seq_cst, against pidle_put_locked's increment: either we see the idle P, or its M,
  // taking the waiter role in stopm(), sees the timer we added (after timer_add's fence).
  if (sched.npidle.load(std::memory_order_seq_cst) == 0) return;
  bool posted = false;
  Machine* idle = post_timers_wake_to_idle_machine(&posted);
  if (posted) deliver_wake(idle);
}

void ensure_waiter() {
  // seq_cst: the same pairs as wake_timer_waiter() and nudge_idle_machine_for_timers().
  if (sched.timer_waiter.load(std::memory_order_seq_cst) != nullptr ||
      sched.npidle.load(std::memory_order_seq_cst) == 0) {
    return;
  }
  if (earliest_timer() == INT64_MAX && netpoll_waiters() == 0) return;
  bool posted = false;
  if (Machine* idle = post_timers_wake_to_idle_machine(&posted); idle != nullptr) {
    if (posted) deliver_wake(idle);
  } else {
    // No idle M: start one on an idle P; finding nothing, it parks and takes the role.
    startm(nullptr, false);
  }
}

}  // namespace green::detail
