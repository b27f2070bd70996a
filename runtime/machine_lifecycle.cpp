// Machines (Ms): starting, waking, parking, retiring and reaping OS threads.
//
// startm() runs a P on an idle M (woken through its futex word) or on a new thread; stopm()
// parks an M that found no work until it is handed a P, taking the timer-waiter role on the
// way (timer_waiter.cpp), and retires an M idle for too long; sysmon joins retired threads
// (reap_retired_machines) and startm() reuses their Machines. The M registry
// (sched.all_machines, retired_machines, free_machines, next_machine_id) and the idle M list
// are under sched.lock; join_lock serialises joins. A Machine is never freed during a run: a
// waker may hold its address. Thread creation and wake-ups happen after sched.lock is
// released (decide under the lock, act after it, as Go's startm).
// Go: newm, startm, stopm, mexit (runtime/proc.go).
#include <algorithm>
#include <mutex>

#include "runtime/context_switch.h"
#include "runtime/netpoll.h"
#include "runtime/sanitizers.h"
#include "runtime/scheduler.h"
#include "runtime/stack.h"

namespace green::detail {

namespace {

void machine_main(Machine* m) {
  set_current_machine(m);
  ensure_signal_stack();
  init_machine_context(m);
  acquire_p(m, m->next_p);
  m->next_p = nullptr;
  schedule(m);
  set_current_machine(nullptr);
  release_signal_stack();
}

}  // namespace

// Reserves the start of a new M's thread: its id, its place in nmachines and in
// starting_machines, and a retired Machine that sysmon has joined, if there is one (else
// new_machine() allocates one). Caller holds sched.lock; the slow part (allocation, thread
// creation) is the caller's after it releases the lock.
MachineReservation reserve_machine_locked() {
  MachineReservation r{sched.free_machines, sched.next_machine_id++};
  if (r.reuse != nullptr) sched.free_machines = r.reuse->idle_link;
  sched.nmachines.fetch_add(1,
                            std::memory_order_relaxed);  // under sched.lock; stats read it racily
  return r;
}

// The Machine for a reservation, without sched.lock held (except briefly, to register a new
// Machine): the reused one reset for its new thread, or a new one.
Machine* new_machine(MachineReservation r) {
  Machine* m = r.reuse;
  if (m != nullptr) {
    // What the previous thread left: reset for the new one (init_machine_context redoes the
    // per-thread pointers). Only we hold this Machine now (it left free_machines under the
    // lock), but a waker holding a stale pointer may still set `wake`: that is one spurious
    // wakeup, which stopm() tolerates.
    m->idle_link = nullptr;
    m->in_idle_list = false;
    m->curg = nullptr;
    m->p = m->next_p = m->blocked_from = nullptr;
    m->arrived_directly = false;
    m->wake.store(0,
                  std::memory_order_relaxed);  // before its thread exists (creating it orders this)
  } else {
    m = new Machine;
    // Registered under the lock (two stores): begin_stop(), join_machines() and
    // Scheduler::reset() walk the registry.
    SpinLockGuard guard(sched.lock);
    m->all_link = sched.all_machines;
    sched.all_machines = m;
  }
  m->id = r.id;
  return m;
}

#if GREEN_CHECKS
std::atomic<void (*)()> outside_sched_lock_hook{nullptr};
#endif

// Runs p (or an idle P) on an idle or new M. `spinning`: the caller already counted the M in
// nmspinning.
//
// As Go's startm: decide under sched.lock (take an idle P and an idle M, or reserve a new M),
// act after releasing it (wake the M, or allocate a Machine and create its thread: tens of
// microseconds of mmap and clone that every other M would spin through). Safe outside the
// lock: the P and the idle M were taken off their lists under it, so nobody else can hand them
// out; a reserved M is already counted in nmachines (which idle Ms' retiring compares with the
// reserve) and in starting_machines, which run() waits on before it joins threads and
// reap_retired_machines() checks before it joins any. If the runtime starts stopping
// meanwhile, the new M's find_runnable() sees `stopping` and its thread exits.
void startm(Processor* p, bool spinning) {
  Machine* m;
  MachineReservation reserved{};
  {
    SpinLockGuard guard(sched.lock);
    if (sched.stopping.load(std::memory_order_relaxed)) {
      // seq_cst: undoing the caller's count of the wakep() pair (ready.cpp), as Go's startm.
      if (spinning) sched.nmspinning.fetch_sub(1, std::memory_order_seq_cst);
      if (p != nullptr) pidle_put_locked(p);
      return;
    }
    if (p == nullptr) {
      p = pidle_get_locked();
      if (p == nullptr) {
        if (spinning) sched.nmspinning.fetch_sub(1, std::memory_order_seq_cst);  // as above
        return;
      }
    }
    sched.machine_wakeups.fetch_add(1, std::memory_order_relaxed);
    m = midle_get_locked();
    if (m == nullptr) {
      reserved = reserve_machine_locked();
      sched.starting_machines.fetch_add(1, std::memory_order_relaxed);
    }
  }
  if (m == nullptr) {
    m = new_machine(reserved);
    m->spinning = spinning;
    m->next_p = p;
#if GREEN_CHECKS
    if (auto hook = outside_sched_lock_hook.load(std::memory_order_relaxed)) hook();
#endif
    m->thread = std::thread(machine_main, m);
    // release: a joiner that reads the count back at zero (acquire) sees m->thread.
    sched.starting_machines.fetch_sub(1, std::memory_order_release);
    return;
  }
  m->spinning = spinning;
  m->next_p = p;
  // next_p and spinning are visible to the woken M (the store is seq_cst: see wake_machine).
  wake_machine(m, Machine::kWakeRun, /*force=*/true);
}

namespace {
// Serialises joins of M threads: sysmon's reaping and run()'s final join loop.
std::mutex join_lock;
}  // namespace

Machine* all_machines_snapshot() {
  SpinLockGuard guard(sched.lock);
  return sched.all_machines;
}

void join_machines() {
  // Every startm() that reserved an M before `stopping` has released sched.lock by the time we
  // take it; one that takes the lock later sees `stopping` and starts nothing. Then wait for
  // the reserved threads to exist (microseconds): their Machines are registered and their
  // `thread` set once the count is back at zero.
  { SpinLockGuard guard(sched.lock); }
  while (sched.starting_machines.load(std::memory_order_acquire) != 0) sched_yield();
  std::lock_guard<std::mutex> joining(join_lock);  // sysmon may be reaping retired Ms
  for (Machine* m = all_machines_snapshot(); m != nullptr; m = m->all_link) {
    if (m->thread.joinable()) m->thread.join();
  }
}

void reap_retired_machines() {
  if (sched.nretired.load(std::memory_order_relaxed) == 0) return;
  std::lock_guard<std::mutex> joining(join_lock);
  Machine* list;
  {
    SpinLockGuard guard(sched.lock);
    // A retired M's `thread` may still be being set by the startm() that created it, if the M
    // retired that fast: leave the list to the next round until no start is in flight (acquire:
    // pairs with startm's release, so every such `thread` is set).
    if (sched.starting_machines.load(std::memory_order_acquire) != 0) return;
    list = sched.retired_machines;
    sched.retired_machines = nullptr;
    sched.nretired.store(0,
                         std::memory_order_relaxed);  // under sched.lock; sysmon's read is a hint
  }
  if (list == nullptr) return;
  Machine* tail = list;
  for (Machine* m = list; m != nullptr; m = m->idle_link) {
    if (m->thread.joinable()) m->thread.join();
    tail = m;
  }
  SpinLockGuard guard(sched.lock);
  tail->idle_link = sched.free_machines;
  sched.free_machines = list;
}

bool post_wake(Machine* m, uint32_t why, bool force) {
  // seq_cst: the store half of the pair with stopm(), which takes the waiter role and then
  // reads m->wake before epoll_wait; we store m->wake and then read timer_waiter
  // (deliver_wake). Either it sees our wake, or we see it as the waiter and break its poll.
  if (force) {
    m->wake.store(why, std::memory_order_seq_cst);
    return true;
  }
  uint32_t expected = 0;
  // false: already being woken
  return m->wake.compare_exchange_strong(expected, why, std::memory_order_seq_cst);
}

void deliver_wake(Machine* m) {
#if GREEN_CHECKS
  if (auto hook = outside_sched_lock_hook.load(std::memory_order_relaxed)) hook();
#endif
  futex_wake(&m->wake, 1);
  // The waiter M may be blocked in epoll_wait rather than on its futex.
  if (sched.timer_waiter.load(std::memory_order_seq_cst) == m) netpoll_break();  // the pair
}

void wake_machine(Machine* m, uint32_t why, bool force) {
  if (post_wake(m, why, force)) deliver_wake(m);
}

namespace {

// Called by an idle M that is not the timer waiter: when it has been idle since *idle_since
// for sched.machine_idle_ns, it leaves the idle list and retires (returns true: its thread
// exits), unless that would leave procs + 2 Ms or fewer, or a startm() has just popped it.
//
// Go keeps idle Ms forever (capped at 10,000 threads by SetMaxThreads); here a burst of
// blocking calls would otherwise leave one parked thread per call for the process's life
// (1,000 /blocking calls left 1,000 threads). The reserve of procs + 2 keeps enough Ms to run
// every P plus the timer waiter and one spare for the next blocking handoff without creating a
// thread (~30 us each). M0 never retires: it is the caller's thread, which run() returns on.
bool retire_if_idle_too_long(Machine* m, int64_t* idle_since) {
  if (m->id == 0 || sched.machine_idle_ns <= 0) return false;
  const int64_t now = now_ns();
  if (now - *idle_since < sched.machine_idle_ns) return false;
  {
    SpinLockGuard guard(sched.lock);
    // Not with a wake posted (under this lock, by ensure_waiter or
    // nudge_idle_machine_for_timers, which deliver it after the lock): that wake would be lost.
    // Relaxed: the wakes this guards are posted under sched.lock, which orders them.
    if (m->in_idle_list && m->wake.load(std::memory_order_relaxed) == 0 &&
        !sched.stopping.load(std::memory_order_relaxed) &&
        sched.nmachines.load(std::memory_order_relaxed) > sched.machine_reserve) {
      midle_remove_locked(m);
      // Relaxed, the counts' updates under sched.lock.
      sched.nmachines.fetch_sub(1, std::memory_order_relaxed);
      m->idle_link = sched.retired_machines;
      sched.retired_machines = m;
      sched.nretired.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
  }
  *idle_since = now;  // kept (the reserve) or being handed a P: look again a period later
  return false;
}

// How long an idle M that is not the timer waiter sleeps before it looks at retiring.
int64_t retire_timeout(const Machine* m, int64_t idle_since) {
  if (m->id == 0 || sched.machine_idle_ns <= 0) return -1;
  return std::max<int64_t>(0, idle_since + sched.machine_idle_ns - now_ns());
}

// ---- stopm: an idle M's loop, in named steps ----

// Puts m on the idle M list, unless the runtime is stopping (false).
bool enter_idle_list(Machine* m) {
  SpinLockGuard guard(sched.lock);
  if (sched.stopping.load(std::memory_order_relaxed)) return false;
  m->idle_link = sched.idle_machines;
  sched.idle_machines = m;
  m->in_idle_list = true;
  sched.nmidle.fetch_add(1, std::memory_order_relaxed);
  return true;
}

// What one sleep of an idle M ended with.
struct IdleWake {
  bool was_waiter = false;        // it slept as the timer waiter
  uint32_t why = 0;               // m->wake as it found it: 0 for a timeout or a network event
  GreenThread* polled = nullptr;  // green threads the network made ready (chain, sched_link)
  uint32_t npolled = 0;
};

// Sleeps once: as the timer waiter if `may_wait_for_timers` and the role is free (until the
// earliest timer of all Ps, in epoll_wait once the netpoller exists), else on the futex until
// woken or until it is time to look at retiring.
IdleWake sleep_once(Machine* m, bool may_wait_for_timers, int64_t idle_since) {
  IdleWake w;
  if (may_wait_for_timers) {
    Machine* expected = nullptr;
    // seq_cst: taking the role is the store half of the pair with deliver_wake() (above).
    w.was_waiter =
        sched.timer_waiter.compare_exchange_strong(expected, m, std::memory_order_seq_cst);
  }
  int64_t timeout = -1;
  if (w.was_waiter) {
    // seq_cst pairs with timer_add's push + fence + wake_timer_waiter(): either we see the
    // new timer in earliest_timer(), or the adder sees kTimerWaiterComputing / a later
    // deadline and wakes us. The fence: our reads of the heaps are acquire loads, which may
    // not move before this store only if a seq_cst fence (or seq_cst loads) says so; it costs
    // one barrier per time an M takes the role.
#if defined(GREEN_TSAN)
    // TSan does not model fences (and warns on one): an exchange is a full barrier too.
    sched.timer_waiter_until.exchange(kTimerWaiterComputing, std::memory_order_seq_cst);
#else
    sched.timer_waiter_until.store(kTimerWaiterComputing, std::memory_order_seq_cst);
    std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
    int64_t until = earliest_timer();
    sched.timer_waiter_until.store(until, std::memory_order_seq_cst);
    if (until != INT64_MAX) timeout = std::max<int64_t>(0, until - now_ns());
  } else {
    timeout = retire_timeout(m, idle_since);
  }
  if (w.was_waiter && netpoll_inited()) {
    // A waker stores m->wake before looking at timer_waiter (seq_cst both sides): either it
    // sees us as the waiter and breaks the poll, or we see its store here.
    if (m->wake.load(std::memory_order_seq_cst) == 0) w.polled = netpoll(timeout, &w.npolled);
  } else if (timeout != 0) {
    futex_wait(&m->wake, 0, timeout);
  }
  if (w.was_waiter) {
    // seq_cst, as the role's other accesses: wake_timer_waiter() reads these two in this
    // order (see there); we take the role again and recompute before sleeping again.
    sched.timer_waiter_until.store(kNoTimerWaiter, std::memory_order_seq_cst);
    sched.timer_waiter.store(nullptr, std::memory_order_seq_cst);
  }
  w.why = m->wake.exchange(0, std::memory_order_acquire);
  return w;
}

// kWakeRun: a startm() handed us m->next_p. The network's green threads, if we polled, land
// on it, and if we were the waiter another idle M takes the role.
bool run_handed_p(Machine* m, const IdleWake& w) {
  acquire_p(m, m->next_p);
  m->next_p = nullptr;
  if (w.polled != nullptr) inject_list(w.polled, w.npolled);
  if (w.was_waiter) ensure_waiter();
  return true;
}

// We took an idle P for the network's green threads or a due timer: run them here, the
// expired timers of every P too, and let another idle M watch for the rest.
bool run_taken_p(Machine* m, Processor* p, const IdleWake& w) {
  acquire_p(m, p);
  if (w.polled != nullptr) inject_list(w.polled, w.npolled);
  service_timers_as_waiter();
  ensure_waiter();
  return true;
}

enum class IdlePTaken : uint8_t {
  kTaken,     // *p is ours: run it
  kHanded,    // a startm() popped us: its kWakeRun (and P) is on the way
  kNoneFree,  // every P is busy
};

// For the network's green threads or a due timer: takes an idle P (and leaves the idle M list)
// if one is free. Otherwise the polled green threads go to the global queue, where busy Ps
// find them (they run their own timers).
IdlePTaken take_idle_p(Machine* m, IdleWake* w, Processor** p) {
  // The chain's tail, found before taking the lock (the chain is ours alone).
  GreenThread* tail = w->polled;
  while (tail != nullptr && tail->sched_link != nullptr) tail = tail->sched_link;
  SpinLockGuard guard(sched.lock);
  IdlePTaken taken = IdlePTaken::kNoneFree;
  if (!m->in_idle_list) {
    taken = IdlePTaken::kHanded;
  } else if ((*p = pidle_get_locked()) != nullptr) {
    midle_remove_locked(m);
    return IdlePTaken::kTaken;
  }
  if (w->polled != nullptr) {
    global_put_locked(w->polled, tail, w->npolled);
    w->polled = nullptr;
  }
  return taken;
}

}  // namespace

// Parks the M until it is handed a P (returns true) or the runtime stops or the M retires
// after an idle period (returns false: its thread leaves schedule()).
//
// One idle M at a time is the "waiter" (Go's M blocked in netpoll): it sleeps in epoll_wait (or
// on its futex before any socket exists) until the earliest timer of all Ps, so timers fire and
// network events are seen while every P is idle. When it wakes with work and an idle P is free it
// takes the P and runs; when every P is busy it leaves the green threads in the global queue and
// stands down (sleeps without the role) instead of being woken by every network event: busy Ps
// poll the network themselves when their queues run dry, and sysmon polls if they do not.
bool stopm(Machine* m) {
  if (!enter_idle_list(m)) return false;
  bool stand_down = false;  // every P was busy: sleep without the waiter role until kWakeTimers
  int64_t idle_since = now_ns();
  for (;;) {
    IdleWake w = sleep_once(m, !stand_down, idle_since);
    if (w.why == Machine::kWakeRun) return run_handed_p(m, w);
    if (w.why == Machine::kWakeTimers) stand_down = false;
    // seq_cst, kept: begin_stop() stores `stopping` before waking every M, and relies on this
    // check after every wake (a later startm() may have overwritten its kWakeExit).
    if (w.why == Machine::kWakeExit || sched.stopping.load(std::memory_order_seq_cst)) {
      if (w.polled != nullptr) inject_list(w.polled, w.npolled);
      return false;
    }
    if (w.was_waiter) {
      idle_since = now_ns();  // the waiter's sleep is not idleness: it watched for others
    } else if (w.polled == nullptr && retire_if_idle_too_long(m, &idle_since)) {
      return false;
    }
    if (w.polled == nullptr && earliest_timer() > now_ns()) continue;  // nothing due yet
    Processor* p = nullptr;
    switch (take_idle_p(m, &w, &p)) {
      case IdlePTaken::kTaken:
        return run_taken_p(m, p, w);
      case IdlePTaken::kHanded:
        continue;
      case IdlePTaken::kNoneFree:
        stand_down = true;
        continue;
    }
  }
}

}  // namespace green::detail
