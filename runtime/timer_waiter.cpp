// The timer waiter: the idle M that sleeps until the earliest timer of all Ps.
//
// At most one idle M holds the role (sched.timer_waiter, claimed with a CAS in stopm()). It
// sleeps in epoll_wait (or on its futex before any socket exists) until the earliest timer,
// which it publishes in sched.timer_waiter_until (kTimerWaiterComputing while it reads the
// heaps). Adding an earlier timer wakes it (wake_timer_waiter); when an idle P has timers or
// the network has waiters and nobody holds the role, an idle M is woken to take it
// (ensure_waiter). Go's equivalent is the M blocked in netpoll until the next timer
// (findRunnable's blocking netpoll, wakeNetPoller; runtime/proc.go).
#include "runtime/scheduler.h"

#include <algorithm>
#include <mutex>

#include "runtime/netpoll.h"

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

void wake_timer_waiter(int64_t when) {
  int64_t until = sched.timer_waiter_until.load();
  if (until != kTimerWaiterComputing && until != kNoTimerWaiter && when >= until) return;
  if (Machine* m = sched.timer_waiter.load(); m != nullptr) {
    wake_machine(m, Machine::kWakeTimers, false);
    return;
  }
  nudge_idle_machine_for_timers();
}

void nudge_idle_machine_for_timers() {
  // Only idle Ps need an idle M to watch their timers and the network: a busy P runs its own
  // timers at its next scheduling point and polls when its queue runs dry.
  if (sched.npidle.load() == 0) return;
  SpinLockGuard guard(sched.lock);
  if (Machine* idle = sched.idle_machines; idle != nullptr) {
    wake_machine(idle, Machine::kWakeTimers, false);
  }
}

void ensure_waiter() {
  if (sched.timer_waiter.load() != nullptr || sched.npidle.load() == 0) return;
  if (earliest_timer() == INT64_MAX && netpoll_waiters() == 0) return;
  bool have_idle_m;
  {
    SpinLockGuard guard(sched.lock);
    have_idle_m = sched.idle_machines != nullptr;
    if (have_idle_m) wake_machine(sched.idle_machines, Machine::kWakeTimers, false);
  }
  // No idle M: start one on an idle P; finding nothing, it parks and takes the role.
  if (!have_idle_m) startm(nullptr, false);
}

}  // namespace green::detail
