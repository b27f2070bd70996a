// The green-thread scheduler: Go's G-M-P design in C++.
//
// G (GreenThread) is a green thread, M (Machine) an OS thread, P (Processor) the right to run
// Gs; there are Options::procs Ps. An M runs schedule() on its own stack (g0): find a runnable
// G, switch into it, and when it switches back (to park, yield or exit) finish that transition
// on g0 before looking for the next one.
//
// find_runnable() looks, in order, at: this P's expired timers; the global queue every 61st
// tick (so two Gs respawning each other cannot starve it); runnext and the local queue; the
// global queue; other Ps (steal half of a random victim's queue, 4 rounds, their runnext and
// timers on the last); then gives up the P and parks the M on a futex. The (netpoll) step
// between the global queue and stealing arrives with the netpoller.
//
// Spinning: an M without work may spin (look for work to steal) only while spinning Ms are at
// most half the busy Ps, and wakep() starts a new spinning M only if none is spinning. The M
// that stops spinning because it found work wakes another, so work spreads one M at a time
// without a thundering herd. An M that gives up its P re-checks every queue after dropping it
// (Go's "delicate dance"): a producer that saw a spinning M did not wake anyone.
//
// Who calls wakep(): every spawn, and every G queued in a ring or globally, as in Go. Unlike
// Go, a G woken into its waker's empty runnext does not (Tokio's rule for its LIFO slot): the
// waker usually parks at once (a channel handoff), this P runs the G next, and wakep()'s fence
// is saved. If the waker keeps running, sysmon wakes a spinning M at its next look (ready(),
// retake()).
//
// Timers: each P has a heap. The first idle M becomes the timer waiter and sleeps until the
// earliest deadline of all Ps; adding an earlier timer wakes it (what Go's blocking netpoll M
// does).
//
// Threads: an M that gives up its P for a blocking call (green::blocking, or may_block once
// sysmon retook its P) holds one of GREEN_MAX_THREADS slots, and startm() creates a thread only
// when no idle M is left, so the process has at most procs + cap Ms (plus a few in passing).
// An idle M other than M0 that is not the timer waiter exits after Options::thread_idle_timeout
// (GREEN_THREAD_IDLE, default 10 s) while more than procs + 2 exist; its Machine is kept (a
// waker may still hold its address) and reused by the next thread (retire_if_idle_too_long,
// reap_retired_machines).
//
// Lock order: sched.lock, then a P's timer lock; sched.free_lock is a leaf. Channel and other
// primitive locks are taken by Gs and released on g0 in park's commit, never while holding
// sched.lock.
#include "runtime/scheduler.h"

#include <sched.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <mutex>
#include <string>

#include "runtime/context.h"
#include "green/detail/intrusive_fifo.h"
#include "runtime/netpoll.h"
#include "runtime/stack.h"
#include "runtime/sysmon.h"

namespace green::detail {

Scheduler sched;

// Ring length at which a spawning green thread steps aside (see start_green_thread).
constexpr uint32_t kSpawnBackPressure = kRunQueueSize - 1;

namespace {

// When a wait starts, as dumps show it: sysmon's clock, at most one sysmon period old.
int64_t wait_clock_ns() { return sched.sysmon_now_ns.load(std::memory_order_relaxed); }

// ---- idle P and M lists (caller holds sched.lock) ----

Processor* pidle_get_locked() {
  Processor* p = sched.idle_procs;
  if (p == nullptr) return nullptr;
  sched.idle_procs = p->idle_link;
  p->idle_link = nullptr;
  p->idle.store(false, std::memory_order_relaxed);
  sched.npidle.fetch_sub(1);
  return p;
}

void pidle_put_locked(Processor* p) {
  p->m = nullptr;
  p->idle.store(true, std::memory_order_relaxed);
  p->idle_link = sched.idle_procs;
  sched.idle_procs = p;
  sched.npidle.fetch_add(1);
}

Machine* midle_get_locked() {
  Machine* m = sched.idle_machines;
  if (m == nullptr) return nullptr;
  sched.idle_machines = m->idle_link;
  m->idle_link = nullptr;
  m->in_idle_list = false;
  sched.nmidle.fetch_sub(1, std::memory_order_relaxed);
  return m;
}

void midle_remove_locked(Machine* m) {
  for (Machine** link = &sched.idle_machines; *link != nullptr; link = &(*link)->idle_link) {
    if (*link == m) {
      *link = m->idle_link;
      m->idle_link = nullptr;
      m->in_idle_list = false;
      sched.nmidle.fetch_sub(1, std::memory_order_relaxed);
      return;
    }
  }
}

// Takes up to `max` (0: a fair share) Gs from the global queue; returns one, queues the rest
// on p. Caller holds sched.lock. With max == 0 p's ring must be empty, so the rest (at most
// half a ring) fit without runq_put spilling back to the global queue under our lock.
GreenThread* global_get_locked(Processor* p, uint32_t max) {
  uint32_t size = sched.global_size.load(std::memory_order_relaxed);
  if (size == 0) return nullptr;
  uint32_t n = std::min(size, size / static_cast<uint32_t>(sched.nprocs) + 1);
  if (max > 0) n = std::min(n, max);
  n = std::min(n, kRunQueueSize / 2);
  sched.global_size.store(size - n, std::memory_order_relaxed);
  GreenThread* g = sched.global_head;
  sched.global_head = g->sched_link;
  for (uint32_t i = 1; i < n; ++i) {
    GreenThread* x = sched.global_head;
    sched.global_head = x->sched_link;
    runq_put(p, x, false);
  }
  if (sched.global_head == nullptr) sched.global_tail = nullptr;
  return g;
}

GreenThread* global_get(Processor* p, uint32_t max) {
  if (sched.global_size.load(std::memory_order_relaxed) == 0) return nullptr;
  std::lock_guard<SpinLock> guard(sched.lock);
  return global_get_locked(p, max);
}

void acquire_p(Machine* m, Processor* p) {
  m->p = p;
  p->m = m;
}

// ---- M lifecycle ----

void schedule(Machine* m);

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

// A Machine for a new thread: a retired one that sysmon has joined, else a new one. Caller
// holds sched.lock.
Machine* new_machine_locked() {
  Machine* m = sched.free_machines;
  if (m != nullptr) {
    sched.free_machines = m->idle_link;
    // What the previous thread left: reset for the new one (init_machine_context redoes the
    // per-thread pointers). A waker holding a stale pointer may still set `wake`: that is one
    // spurious wakeup, which stopm() tolerates.
    m->idle_link = nullptr;
    m->in_idle_list = false;
    m->curg = nullptr;
    m->p = m->next_p = m->blocked_from = nullptr;
    m->arrived_directly = false;
    m->wake.store(0);
  } else {
    auto owned = std::make_unique<Machine>();
    m = owned.get();
    sched.machines.push_back(std::move(owned));
  }
  m->id = sched.next_machine_id++;
  sched.nmachines.fetch_add(1);
  return m;
}

}  // namespace

// Runs p (or an idle P) on an idle or new M. `spinning`: the caller already counted the M in
// nmspinning.
void startm(Processor* p, bool spinning) {
  Machine* m;
  {
    std::lock_guard<SpinLock> guard(sched.lock);
    if (sched.stopping.load(std::memory_order_relaxed)) {
      if (spinning) sched.nmspinning.fetch_sub(1);
      if (p != nullptr) pidle_put_locked(p);
      return;
    }
    if (p == nullptr) {
      p = pidle_get_locked();
      if (p == nullptr) {
        if (spinning) sched.nmspinning.fetch_sub(1);
        return;
      }
    }
    sched.machine_wakeups.fetch_add(1, std::memory_order_relaxed);
    m = midle_get_locked();
    if (m == nullptr) {
      m = new_machine_locked();
      m->spinning = spinning;
      m->next_p = p;
      m->thread = std::thread(machine_main, m);
      return;
    }
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

void reap_retired_machines() {
  if (sched.nretired.load(std::memory_order_relaxed) == 0) return;
  std::lock_guard<std::mutex> joining(join_lock);
  Machine* list;
  {
    std::lock_guard<SpinLock> guard(sched.lock);
    list = sched.retired_machines;
    sched.retired_machines = nullptr;
    sched.nretired.store(0);
  }
  if (list == nullptr) return;
  Machine* tail = list;
  for (Machine* m = list; m != nullptr; m = m->idle_link) {
    if (m->thread.joinable()) m->thread.join();
    tail = m;
  }
  std::lock_guard<SpinLock> guard(sched.lock);
  tail->idle_link = sched.free_machines;
  sched.free_machines = list;
}

// Earliest pending timer over all Ps.
int64_t earliest_timer() {
  int64_t earliest = INT64_MAX;
  for (int i = 0; i < sched.nprocs; ++i) {
    earliest = std::min(earliest, sched.procs[i].timers.earliest());
  }
  return earliest;
}

namespace {

// After taking a P as the timer waiter: run every P's expired timers here (their Gs land on
// our P), and hand the waiter role to another idle M if timers remain.
void service_timers_as_waiter() {
  int64_t now = now_ns();
  for (int i = 0; i < sched.nprocs; ++i) run_expired_timers(&sched.procs[i], now);
}

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
    std::lock_guard<SpinLock> guard(sched.lock);
    if (m->in_idle_list && !sched.stopping.load(std::memory_order_relaxed) &&
        sched.nmachines.load() > sched.machine_reserve) {
      midle_remove_locked(m);
      sched.nmachines.fetch_sub(1);
      m->idle_link = sched.retired_machines;
      sched.retired_machines = m;
      sched.nretired.fetch_add(1);
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
  {
    std::lock_guard<SpinLock> guard(sched.lock);
    if (sched.stopping.load(std::memory_order_relaxed)) return false;
    m->idle_link = sched.idle_machines;
    sched.idle_machines = m;
    m->in_idle_list = true;
    sched.nmidle.fetch_add(1, std::memory_order_relaxed);
  }
  bool stand_down = false;
  int64_t idle_since = now_ns();
  for (;;) {
    bool timer_waiter = false;
    if (!stand_down) {
      Machine* expected = nullptr;
      timer_waiter = sched.timer_waiter.compare_exchange_strong(expected, m);
    }
    int64_t timeout = -1;
    if (timer_waiter) {
      // seq_cst pairs with timer_add's push + wake_timer_waiter(): either we see the new
      // timer in earliest_timer(), or the adder sees kTimerWaiterComputing / a later deadline
      // and wakes us.
      sched.timer_waiter_until.store(kTimerWaiterComputing);
      int64_t until = earliest_timer();
      sched.timer_waiter_until.store(until);
      if (until != INT64_MAX) timeout = std::max<int64_t>(0, until - now_ns());
    } else {
      timeout = retire_timeout(m, idle_since);
    }
    GreenThread* polled = nullptr;
    uint32_t npolled = 0;
    if (timer_waiter && netpoll_inited()) {
      // A waker stores m->wake before looking at timer_waiter (seq_cst both sides): either it
      // sees us as the waiter and breaks the poll, or we see its store here.
      if (m->wake.load() == 0) polled = netpoll(timeout, &npolled);
    } else if (timeout != 0) {
      futex_wait(&m->wake, 0, timeout);
    }
    if (timer_waiter) {
      sched.timer_waiter_until.store(kNoTimerWaiter);
      sched.timer_waiter.store(nullptr);
    }
    const uint32_t why = m->wake.exchange(0, std::memory_order_acquire);
    if (why == Machine::kWakeRun) {
      acquire_p(m, m->next_p);
      m->next_p = nullptr;
      if (polled != nullptr) inject_list(polled, npolled);
      // We may have been the waiter: let another idle M take over the role.
      if (timer_waiter) ensure_waiter();
      return true;
    }
    if (why == Machine::kWakeTimers) stand_down = false;
    if (why == Machine::kWakeExit || sched.stopping.load()) {
      if (polled != nullptr) inject_list(polled, npolled);
      return false;
    }
    if (timer_waiter) {
      idle_since = now_ns();  // the waiter's sleep is not idleness: it watched for others
    } else if (polled == nullptr && retire_if_idle_too_long(m, &idle_since)) {
      return false;
    }
    if (polled == nullptr && earliest_timer() > now_ns()) continue;  // nothing due yet
    // Green threads from the poll, or a due timer: take an idle P to run them.
    Processor* p = nullptr;
    bool handed = false;
    {
      std::lock_guard<SpinLock> guard(sched.lock);
      if (!m->in_idle_list) {
        handed = true;  // a startm() popped us: its kWakeRun is on the way
      } else {
        p = pidle_get_locked();
        if (p != nullptr) midle_remove_locked(m);
      }
      if (p == nullptr && polled != nullptr) {
        GreenThread* tail = polled;
        while (tail->sched_link != nullptr) tail = tail->sched_link;
        global_put_locked(polled, tail, npolled);
        polled = nullptr;
      }
    }
    if (p == nullptr) {
      // Every P is busy (or one is on its way to us). Busy Ps run their own timers and find
      // the polled green threads in the global queue.
      if (!handed) stand_down = true;
      continue;
    }
    acquire_p(m, p);
    if (polled != nullptr) inject_list(polled, npolled);
    service_timers_as_waiter();
    ensure_waiter();
    return true;
  }
}

void reset_spinning(Machine* m) {
  m->spinning = false;
  // The last spinner to find work wakes a replacement, in case there is more work.
  if (sched.nmspinning.fetch_sub(1) == 1) wakep();
}

GreenThread* steal_work(Processor* p) {
  const int n = sched.nprocs;
  constexpr int kStealTries = 4;
  for (int round = 0; round < kStealTries; ++round) {
    const bool last = round == kStealTries - 1;
    const int start = static_cast<int>(p->fastrand() % static_cast<uint32_t>(n));
    for (int k = 0; k < n; ++k) {
      Processor* victim = &sched.procs[(start + k) % n];
      if (victim == p) continue;
      if (last && victim->timers.earliest() <= now_ns()) {
        // Timers are stolen only on the last round (their Gs land on our queue).
        if (run_expired_timers(victim, now_ns()) > 0) {
          bool inherit = false;
          if (GreenThread* g = runq_get(p, &inherit)) return g;
        }
      }
      if (victim->idle.load(std::memory_order_relaxed)) continue;
      if (GreenThread* g = runq_steal(p, victim, last)) return g;
    }
  }
  return nullptr;
}

// The next G from p's own queue. A G that keeps readying or respawning another fills runnext
// forever; Go breaks such a chain with sysmon's time-slice preemption. Without waiting for
// that, after 61 runnext picks in a row the ring's head goes first, so queued Gs cannot
// starve.
GreenThread* take_local(Processor* p, bool* inherit_time) {
  const bool skip_runnext = p->runnext_streak >= 61;
  GreenThread* g = runq_get(p, inherit_time, skip_runnext);
  // After a skip the ring has had its turn (it was empty if runnext came anyway).
  if (g != nullptr) p->runnext_streak = *inherit_time && !skip_runnext ? p->runnext_streak + 1 : 0;
  return g;
}

// Is there anything for an M that just released its P to come back for?
bool work_anywhere() {
  if (sched.global_size.load() != 0) return true;
  for (int i = 0; i < sched.nprocs; ++i) {
    if (!runq_empty(&sched.procs[i])) return true;
  }
  return earliest_timer() <= now_ns();
}

// Returns the next G to run on m's P, parking the M when there is none. Null: stopping.
GreenThread* find_runnable(Machine* m, bool* inherit_time) {
  for (;;) {
    if (sched.stopping.load(std::memory_order_relaxed)) return nullptr;
    Processor* p = m->p;
    *inherit_time = false;
    if (p->timers.earliest() != INT64_MAX) run_expired_timers(p, now_ns());
    if (p->schedtick % 61 == 0) {
      if (GreenThread* g = global_get(p, 1)) return g;
    }
    if (GreenThread* g = take_local(p, inherit_time)) return g;
    if (GreenThread* g = global_get(p, 0)) return g;
    // The network, without blocking, unless an M is already blocked in epoll_wait (it gets
    // the events). Several green threads made ready at once are spread over idle Ps.
    if (netpoll_inited() && netpoll_waiters() > 0 &&
        sched.timer_waiter.load(std::memory_order_relaxed) == nullptr) {
      uint32_t n = 0;
      if (GreenThread* g = netpoll(0, &n)) {
        if (n > 1) inject_list(g->sched_link, n - 1);
        return g;
      }
    }
    const int busy = sched.nprocs - sched.npidle.load();
    if (m->spinning || 2 * sched.nmspinning.load() < busy) {
      if (!m->spinning) {
        m->spinning = true;
        sched.nmspinning.fetch_add(1);
      }
      if (GreenThread* g = steal_work(p)) return g;
    }

    // Nothing found: give up the P.
    {
      std::lock_guard<SpinLock> guard(sched.lock);
      if (GreenThread* g = global_get_locked(p, 0)) return g;
      pidle_put_locked(p);
      m->p = nullptr;
    }
    const bool was_spinning = m->spinning;
    if (was_spinning) {
      m->spinning = false;
      sched.nmspinning.fetch_sub(1);  // seq_cst: before the re-check below
    }
    // Re-check: a producer may have queued work after we looked and, seeing a spinning M
    // (us), not woken anyone.
    if (work_anywhere()) {
      Processor* again;
      {
        std::lock_guard<SpinLock> guard(sched.lock);
        again = pidle_get_locked();
      }
      if (again != nullptr) {
        acquire_p(m, again);
        if (was_spinning) {
          m->spinning = true;
          sched.nmspinning.fetch_add(1);
        }
        if (earliest_timer() <= now_ns()) service_timers_as_waiter();
        continue;
      }
    }
    if (!stopm(m)) return nullptr;
  }
}

void begin_stop() {
  sched.stopping.store(true);
  {
    std::lock_guard<SpinLock> guard(sched.lock);
    for (auto& m : sched.machines) {
      m->wake.store(Machine::kWakeExit, std::memory_order_release);
      futex_wake(&m->wake, 1);
    }
  }
  netpoll_break();
  sysmon_wake();
}

// Completes the switch a G asked for, on g0, after its context was saved.
void finish_switch(Machine* m, GreenThread* g, SwitchRequest* request) {
  auto* sp = static_cast<char*>(g->ctx);
  if (sp < g->lowest_sp) g->lowest_sp = sp;
  switch (request->kind) {
    case SwitchRequest::kYield:
      g->status.store(GStatus::kRunnable, std::memory_order_relaxed);
      runq_put(m->p, g, false);
      return;
    case SwitchRequest::kYieldGlobal: {
      g->status.store(GStatus::kRunnable, std::memory_order_relaxed);
      std::lock_guard<SpinLock> guard(sched.lock);
      global_put_locked(g, g, 1);
      return;
    }
    case SwitchRequest::kPark: {
      // Copy first: once commit runs, g may be resumed elsewhere and reuse this stack memory.
      const SwitchRequest req = *request;
      g->wait_reason.store(req.reason, std::memory_order_relaxed);
      g->wait_since_ns.store(wait_clock_ns(), std::memory_order_relaxed);
      g->status.store(GStatus::kWaiting, std::memory_order_release);
      if (req.timer != nullptr) timer_add(req.timer);
      if (req.commit != nullptr) req.commit(req.commit_arg);
      return;
    }
    case SwitchRequest::kBlockingExit: {
      // Back from a blocking call with no P free: wait in the global queue; this M (without
      // a P) parks in schedule().
      g->status.store(GStatus::kRunnable, std::memory_order_relaxed);
      {
        std::lock_guard<SpinLock> guard(sched.lock);
        global_put_locked(g, g, 1);
      }
      wakep();
      return;
    }
    case SwitchRequest::kExit: {
      const bool was_main = g->is_main;
      g->status.store(GStatus::kDead, std::memory_order_relaxed);
      Processor* p = m->p;
      p->exited.store(p->exited.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
      free_green_thread(p, g);
      if (was_main) begin_stop();
      return;
    }
  }
}

// What execute() does before switching into g, also done by a direct switch.
[[gnu::always_inline]] inline void begin_running(Machine* m, Processor* p, GreenThread* g) {
  // Counted even when the G came from runnext and inherits the slice (unlike Go, whose sysmon
  // covers that case), so the every-61st-tick look at the global queue also happens during
  // runnext chains.
  ++p->schedtick;
  p->scheduled.store(p->scheduled.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  // A preemption request was for the previous G; this one starts a fresh slice.
  if (p->preempt.load(std::memory_order_relaxed)) clear_preempt(p);
  p->run_tick.store(p->schedtick * 2 + 1, std::memory_order_relaxed);  // odd: a G runs
  m->curg = g;
  g->status.store(GStatus::kRunning, std::memory_order_relaxed);
}

void execute(Machine* m, GreenThread* g) {
  begin_running(m, m->p, g);
  void* request = resume_green_thread(m, g);
  // Not necessarily g: g may have handed the M on with a direct switch.
  GreenThread* back = m->curg;
  m->curg = nullptr;
  // The G may have left its P in a blocking call (and taken another): use m's P now.
  if (Processor* now = m->p; now != nullptr) {
    now->run_tick.store(now->schedtick * 2, std::memory_order_relaxed);
  }
  finish_switch(m, back, static_cast<SwitchRequest*>(request));
}

// ---- direct switch: a parking or exiting G hands its M straight to the next local G ----
//
// A channel handoff readies the partner into runnext and then parks; an exiting G is followed
// by the next one in the queue. Through g0 that is two context switches and a pass of
// find_runnable() that would pick the same local G. When nothing else is due (no expired timer
// on this P, not the every-61st-tick look at the global queue, not stopping), the G switches to
// that next G itself, with the same runnext-streak fairness as find_runnable(), and what g0
// would have done after the switch (the park's commit, or recycling the dead G) runs on the
// new G's stack before it continues: still after the old G's context was saved, which is
// what makes wakeups safe.
struct DirectSwitch {
  GreenThread* from;
  Machine* m;
  SwitchRequest* request;
};

Transfer complete_direct_switch(Transfer t) {
  const DirectSwitch d = *static_cast<DirectSwitch*>(t.data);  // on the old G's stack
  arrive_green_to_green(d.m);
  d.from->ctx = t.fctx;
  finish_switch(d.m, d.from, d.request);
  return Transfer{d.m->g0_ctx, d.m};
}

bool try_direct_switch(GreenThread* g, Machine* m, SwitchRequest* req) {
  Processor* p = m->p;
  if (p->schedtick % 61 == 0 || sched.stopping.load(std::memory_order_relaxed)) return false;
  // A timer due within the last clock tick is missed here and runs at this P's next pass
  // through find_runnable() (at most 61 switches away): a server's P always has timers, and
  // a precise clock read per park (~35 ns here) would eat much of what the switch saves.
  if (const int64_t t = p->timers.earliest(); t != INT64_MAX && t <= coarse_now_ns()) return false;
  bool inherit_time = false;
  GreenThread* next = take_local(p, &inherit_time);
  if (next == nullptr) return false;
  begin_running(m, p, next);
  DirectSwitch d{g, m, req};
  switch_green_to_green(g, m, next, &d, complete_direct_switch,
                        req->kind == SwitchRequest::kExit);
  return true;
}

void schedule(Machine* m) {
  for (;;) {
    // Without a P after a blocking call handed ours away: wait to be given one.
    if (m->p == nullptr && !stopm(m)) return;
    bool inherit_time = false;
    GreenThread* g = find_runnable(m, &inherit_time);
    if (g == nullptr) return;
    if (m->spinning) reset_spinning(m);
    execute(m, g);
  }
}

int procs_from(const Options& options) {
  if (options.procs > 0) return std::min(options.procs, static_cast<int>(kRunQueueSize));
  if (const char* env = std::getenv("GREEN_MAXPROCS"); env != nullptr && *env != '\0') {
    char* end = nullptr;
    long v = std::strtol(env, &end, 10);
    if (*end != '\0' || v < 1 || v > static_cast<long>(kRunQueueSize)) {
      std::fprintf(stderr, "greenrt: GREEN_MAXPROCS=%s: want an integer from 1 to %u\n", env,
                   kRunQueueSize);
      std::exit(2);
    }
    return static_cast<int>(v);
  }
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  return static_cast<int>(std::clamp<long>(cpus, 1, kRunQueueSize));
}

int max_threads_from_env() {
  const char* env = std::getenv("GREEN_MAX_THREADS");
  if (env == nullptr || *env == '\0') return 10000;
  char* end = nullptr;
  long v = std::strtol(env, &end, 10);
  if (*end != '\0' || v < 1 || v > 1'000'000) {
    std::fprintf(stderr, "greenrt: GREEN_MAX_THREADS=%s: want an integer from 1 to 1000000\n", env);
    std::exit(2);
  }
  return static_cast<int>(v);
}

// Options::thread_idle_timeout, else GREEN_THREAD_IDLE (Go-style: "10s", "250ms"; "0": idle
// Ms never exit), else 10 s.
int64_t thread_idle_ns_from(const Options& options) {
  if (options.thread_idle_timeout.count() != 0) {
    return std::max<int64_t>(0, options.thread_idle_timeout.count());
  }
  const char* env = std::getenv("GREEN_THREAD_IDLE");
  if (env == nullptr || *env == '\0') return 10'000'000'000;
  char* end = nullptr;
  const long long v = std::strtoll(env, &end, 10);
  const std::string unit = end;
  int64_t scale = 0;
  if (unit == "ms") scale = 1'000'000;
  else if (unit == "s") scale = 1'000'000'000;
  else if (unit.empty() && v == 0 && end != env) scale = 1;
  if (scale == 0 || end == env || v < 0 || v > 86'400'000) {
    std::fprintf(stderr, "greenrt: GREEN_THREAD_IDLE=%s: want a duration such as 10s or 250ms\n",
                 env);
    std::exit(2);
  }
  return v * scale;
}

[[noreturn]] void fatal(const char* message) {
  std::fprintf(stderr, "greenrt: fatal: %s\n", message);
  std::abort();
}

void reset_scheduler() {
  // Per-P caches of dead Gs outlive their Ps on the global free list.
  for (int i = 0; i < sched.nprocs; ++i) {
    Processor* p = &sched.procs[i];
    if (p->free_gs != nullptr) {
      p->free_gs->free_batch_size = p->free_count;
      p->free_gs->free_batch_next = sched.free_batches;
      sched.free_batches = p->free_gs;
    }
    p->free_gs = nullptr;
    p->free_count = 0;
  }
  reclaim_abandoned_green_threads();
  netpoll_forget_waiters();
  preempt_pending.store(0);
  sched.nmidle.store(0);
  sched.blocking_machines.store(0);
  sched.procs.reset();
  sched.nprocs = 0;
  sched.machines.clear();
  sched.retired_machines = sched.free_machines = nullptr;
  sched.nretired.store(0);
  sched.next_machine_id = 0;
  sched.global_head = sched.global_tail = nullptr;
  sched.global_size.store(0);
  sched.idle_procs = nullptr;
  sched.idle_machines = nullptr;
  sched.npidle.store(0);
  sched.nmspinning.store(0);
  sched.nmachines.store(0);
  sched.timer_waiter.store(nullptr);
  sched.timer_waiter_until.store(kNoTimerWaiter);
  sched.outside_spawned.store(0);
  sched.stopping.store(false);
}

std::size_t round_to_pages(std::size_t n) {
  const std::size_t page = page_size();
  return std::max(page * 4, (n + page - 1) / page * page);
}

}  // namespace

// ---- entry points used by other runtime files ----

void global_put_locked(GreenThread* head, GreenThread* tail, uint32_t n) {
  tail->sched_link = nullptr;
  if (sched.global_tail != nullptr) {
    sched.global_tail->sched_link = head;
  } else {
    sched.global_head = head;
  }
  sched.global_tail = tail;
  sched.global_size.store(sched.global_size.load(std::memory_order_relaxed) + n,
                          std::memory_order_relaxed);
}

void wakep(bool after_barrier) {
  // StoreLoad barrier (Go's "worker thread parking/unparking" protocol): the work our caller
  // just queued (a relaxed or release store, possibly a spin lock's plain unlock) must be
  // visible before we read npidle/nmspinning. Otherwise, on x86 too, we can read a stale
  // spinning count while the M that just stopped spinning re-checks the queues and misses our
  // work: both sleep with a green thread queued (seen as a hang under ASan).
  // `after_barrier`: the caller made the work visible with a seq_cst read-modify-write (a
  // spawn's exchange of runnext), which is that barrier already (Go relies on its runnext CAS
  // the same way).
#if defined(__SANITIZE_THREAD__)
  // TSan does not model fences; a seq_cst read-modify-write is the same barrier for it.
  (void)after_barrier;
  if (sched.npidle.fetch_add(0) == 0) return;
#else
  if (!after_barrier) std::atomic_thread_fence(std::memory_order_seq_cst);
  if (sched.npidle.load() == 0) return;
#endif
  // Be conservative: start one spinning M only when none is spinning. It wakes the next one
  // when it finds work (reset_spinning).
  int expected = 0;
  if (sched.nmspinning.load() != 0 || !sched.nmspinning.compare_exchange_strong(expected, 1)) {
    return;
  }
  startm(nullptr, true);
}

void wake_machine(Machine* m, uint32_t why, bool force) {
  if (force) {
    m->wake.store(why);
  } else {
    uint32_t expected = 0;
    if (!m->wake.compare_exchange_strong(expected, why)) return;  // already being woken
  }
  futex_wake(&m->wake, 1);
  // The waiter M may be blocked in epoll_wait rather than on its futex.
  if (sched.timer_waiter.load() == m) netpoll_break();
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
  std::lock_guard<SpinLock> guard(sched.lock);
  if (Machine* idle = sched.idle_machines; idle != nullptr) {
    wake_machine(idle, Machine::kWakeTimers, false);
  }
}

void ensure_waiter() {
  if (sched.timer_waiter.load() != nullptr || sched.npidle.load() == 0) return;
  if (earliest_timer() == INT64_MAX && netpoll_waiters() == 0) return;
  bool have_idle_m;
  {
    std::lock_guard<SpinLock> guard(sched.lock);
    have_idle_m = sched.idle_machines != nullptr;
    if (have_idle_m) wake_machine(sched.idle_machines, Machine::kWakeTimers, false);
  }
  // No idle M: start one on an idle P; finding nothing, it parks and takes the role.
  if (!have_idle_m) startm(nullptr, false);
}

void inject_list(GreenThread* head, uint32_t n) {
  if (head == nullptr) return;
  Machine* m = current_machine();
  Processor* p = m != nullptr ? m->p : nullptr;
  // Idle Ps get one each through the global queue (Go's injectglist); the rest stay here.
  const int idle = sched.npidle.load();
  const uint32_t to_global = p == nullptr ? n : std::min<uint32_t>(n, static_cast<uint32_t>(idle));
  if (to_global > 0) {
    GreenThread* tail = head;
    for (uint32_t i = 1; i < to_global; ++i) tail = tail->sched_link;
    GreenThread* rest = tail->sched_link;
    {
      std::lock_guard<SpinLock> guard(sched.lock);
      global_put_locked(head, tail, to_global);
    }
    head = rest;
    for (uint32_t i = 0; i < to_global && sched.npidle.load() > 0; ++i) startm(nullptr, false);
  }
  while (head != nullptr) {
    GreenThread* next = head->sched_link;
    runq_put(p, head, false);
    head = next;
  }
}

// ---- preemption ----

std::atomic<uint32_t> preempt_pending{0};

void request_preempt(Processor* p) {
  if (!p->preempt.exchange(true)) preempt_pending.fetch_add(1, std::memory_order_relaxed);
}

void clear_preempt(Processor* p) {
  if (p->preempt.exchange(false)) preempt_pending.fetch_sub(1, std::memory_order_relaxed);
}

void checkpoint_slow() {
  Machine* m = current_machine();
  if (m == nullptr || m->curg == nullptr || m->p == nullptr) return;
  Processor* p = m->p;
  if (!p->preempt.load(std::memory_order_relaxed)) return;
  clear_preempt(p);
  sched.preemptions.fetch_add(1, std::memory_order_relaxed);
  // Like Go's gopreempt_m: to the back of the global queue, so that this P runs its queue and
  // timers first and other Ps can pick the hog up.
  SwitchRequest req{SwitchRequest::kYieldGlobal};
  switch_to_scheduler(m->curg, &req);
}

// ---- blocking calls ----

namespace {

IntrusiveFifo<Waiter>& cap_waiters() {
  static IntrusiveFifo<Waiter> fifo;
  return fifo;
}

void pidle_remove_locked(Processor* p) {
  for (Processor** link = &sched.idle_procs; *link != nullptr; link = &(*link)->idle_link) {
    if (*link == p) {
      *link = p->idle_link;
      p->idle_link = nullptr;
      p->idle.store(false, std::memory_order_relaxed);
      sched.npidle.fetch_sub(1);
      return;
    }
  }
}

// Go's handoffp: gives p (whose M is about to block) to another M if there is anything for it
// to do, else makes it idle.
void handoff_p(Processor* p) {
  if (!runq_empty(p) || sched.global_size.load() != 0) {
    sched.blocking_handoffs.fetch_add(1, std::memory_order_relaxed);
    startm(p, false);
    return;
  }
  // Nobody spinning or idle to notice work that appears later: start a spinner.
  if (sched.nmspinning.load() + sched.npidle.load() == 0) {
    int expected = 0;
    if (sched.nmspinning.compare_exchange_strong(expected, 1)) {
      sched.blocking_handoffs.fetch_add(1, std::memory_order_relaxed);
      startm(p, true);
      return;
    }
  }
  bool work = false;
  {
    std::lock_guard<SpinLock> guard(sched.lock);
    work = sched.global_size.load(std::memory_order_relaxed) != 0;
    if (!work) pidle_put_locked(p);
  }
  if (work) {
    sched.blocking_handoffs.fetch_add(1, std::memory_order_relaxed);
    startm(p, false);
    return;
  }
  // p may have timers or the network may have waiters that nobody else watches now.
  ensure_waiter();
}

// One of the max_blocking_machines slots, if one is free now.
bool try_take_blocking_slot() {
  int cur = sched.blocking_machines.load();
  while (cur < sched.max_blocking_machines) {
    if (sched.blocking_machines.compare_exchange_weak(cur, cur + 1)) return true;
  }
  return false;
}

// Gives a slot back and lets the first green thread waiting for one retry. From a G (with or
// without a P) or from sysmon: ready() queues globally when the caller has no P.
void release_blocking_slot() {
  sched.blocking_machines.fetch_sub(1);  // seq_cst: before the waiter list is read
  Waiter* next = nullptr;
  {
    std::lock_guard<SpinLock> guard(sched.blocking_cap_lock);
    next = cap_waiters().pop_claimed();
  }
  if (next != nullptr) unpark(*next);
}

}  // namespace

void enter_blocking() {
  Machine* m = current_machine();
  GreenThread* g = m != nullptr ? m->curg : nullptr;
  if (g == nullptr) return;  // a plain thread: just make the call
  // Cap the threads sitting in blocking calls.
  for (;;) {
    if (try_take_blocking_slot()) break;
    Waiter w;
    sched.blocking_cap_lock.lock();
    if (sched.blocking_machines.load() < sched.max_blocking_machines) {
      sched.blocking_cap_lock.unlock();
      continue;
    }
    cap_waiters().push(&w);
    park(w, WaitReason::kBlockingCall, unlock_spin_lock, &sched.blocking_cap_lock);
  }
  sched.blocking_calls.fetch_add(1, std::memory_order_relaxed);
  m = current_machine();  // the cap wait may have moved us
  Processor* p = m->p;
  g->wait_reason.store(WaitReason::kBlockingCall, std::memory_order_relaxed);
  g->wait_since_ns.store(wait_clock_ns(), std::memory_order_relaxed);
  g->status.store(GStatus::kWaiting, std::memory_order_release);
  p->run_tick.store(p->schedtick * 2, std::memory_order_relaxed);
  m->blocked_from = p;
  m->p = nullptr;
  p->m = nullptr;
  handoff_p(p);
}

namespace {

// After a blocking call that gave up its P (old): take a P back, or queue the green thread
// globally and park this M.
void reacquire_after_call(Machine* m, GreenThread* g, Processor* old) {
  Processor* p = nullptr;
  {
    std::lock_guard<SpinLock> guard(sched.lock);
    // Our old P if it is still idle (its caches are warm), else any idle P.
    if (old != nullptr && old->idle.load(std::memory_order_relaxed)) {
      pidle_remove_locked(old);
      p = old;
    } else {
      p = pidle_get_locked();
    }
  }
  if (p != nullptr) {
    acquire_p(m, p);
    g->wait_reason.store(WaitReason::kNone, std::memory_order_relaxed);
    g->status.store(GStatus::kRunning, std::memory_order_relaxed);
    p->run_tick.store(++p->schedtick * 2 + 1, std::memory_order_relaxed);
    return;
  }
  g->wait_reason.store(WaitReason::kNone, std::memory_order_relaxed);
  SwitchRequest req{SwitchRequest::kBlockingExit};
  switch_to_scheduler(g, &req);
}

}  // namespace

void exit_blocking() {
  Machine* m = current_machine();
  GreenThread* g = m != nullptr ? m->curg : nullptr;
  if (g == nullptr) return;
  Processor* old = m->blocked_from;
  m->blocked_from = nullptr;
  release_blocking_slot();
  reacquire_after_call(m, g, old);
}

uint64_t enter_may_block() {
  Machine* m = current_machine();
  GreenThread* g = m != nullptr ? m->curg : nullptr;
  if (g == nullptr || m->p == nullptr) return 0;
  Processor* p = m->p;
  sched.blocking_calls.fetch_add(1, std::memory_order_relaxed);
  g->wait_reason.store(WaitReason::kBlockingCall, std::memory_order_relaxed);
  g->wait_since_ns.store(wait_clock_ns(), std::memory_order_relaxed);
  g->status.store(GStatus::kWaiting, std::memory_order_relaxed);
  p->run_tick.store(p->schedtick * 2, std::memory_order_relaxed);  // not a hog while inside
  const uint64_t word = (++p->syscall_tickets << 1) | 1;
  p->syscall_word.store(word);  // seq_cst: everything above is visible to a retaking sysmon
  return word;
}

void exit_may_block(uint64_t word) {
  if (word == 0) return;  // a plain thread
  Machine* m = current_machine();
  GreenThread* g = m->curg;
  Processor* p = m->p;
  uint64_t expected = word;
  if (p->syscall_word.compare_exchange_strong(expected, word & ~uint64_t{1})) {
    // Fast path: sysmon did not take the P; carry on.
    g->wait_reason.store(WaitReason::kNone, std::memory_order_relaxed);
    g->status.store(GStatus::kRunning, std::memory_order_relaxed);
    p->run_tick.store(++p->schedtick * 2 + 1, std::memory_order_relaxed);
    return;
  }
  // sysmon handed our P to another M while we were inside the call, and counted us among the
  // threads in blocking calls (retake_from_syscall).
  m->p = nullptr;
  release_blocking_slot();
  reacquire_after_call(m, g, p);
}

bool retake_from_syscall(Processor* p, uint64_t word) {
  // The M keeps blocking without its P, so handing the P on may start another thread: that M
  // now counts against GREEN_MAX_THREADS like one inside blocking(). At the cap the P stays
  // with its M until the call returns (the cap holds for every blocking path; before, 60
  // requests stuck in may_block made 63 threads under a cap of 20).
  if (!try_take_blocking_slot()) return false;
  // Clearing the low bit with a CAS on the exact word: the M returning from the call either
  // cleared it first (it keeps its P) or finds it cleared (it lost the P).
  if (!p->syscall_word.compare_exchange_strong(word, word & ~uint64_t{1})) {
    release_blocking_slot();
    return false;
  }
  sched.retakes.fetch_add(1, std::memory_order_relaxed);
  p->m = nullptr;
  handoff_p(p);
  return true;
}

void ready(GreenThread* g, bool next, WakeIdleP wake) {
  // A G woken into an empty runnext wakes no idle P (Tokio's rule for its LIFO slot; Go wakes
  // one here). The waker usually parks within the microsecond (a channel handoff, a request
  // answered) and this P then runs g with its cache warm, so a wakeup is rarely of use; and
  // wakep() costs even when it wakes nobody: its StoreLoad fence drains the store buffer. With
  // two per round trip, a channel ping-pong took ~170 instead of ~143 ns (medians of 9
  // interleaved runs, with one P as with two). If the waker keeps running instead, a spinning
  // M still takes g after 3 us, and sysmon wakes one when the same G still runs at its next
  // look (retake). A G that lands in the ring wakes a P as in Go: then more than one G waits.
  // kAlways is for wakers that do go on running: a spawn (Go's newproc: it more often starts
  // work to run in parallel than hands over to a G it waits for) and a Mutex handover.
  g->status.store(GStatus::kRunnable, std::memory_order_relaxed);
  RunqPut put = RunqPut::kRing;  // also when queued globally, from a thread without a P
  if (Machine* m = current_machine(); m != nullptr && m->p != nullptr) {
    put = runq_put(m->p, g, next && m->curg != nullptr);
  } else {
    std::lock_guard<SpinLock> guard(sched.lock);
    global_put_locked(g, g, 1);
  }
  if (put != RunqPut::kRunnext || wake == WakeIdleP::kAlways) {
    wakep(put == RunqPut::kDisplaced);
  }
}

uint64_t new_goid(Processor* p) {
  if (p == nullptr) return sched.next_goid.fetch_add(1);
  if (p->next_id == p->id_limit) {
    constexpr uint64_t kBatch = 16;
    p->next_id = sched.next_goid.fetch_add(kBatch);
    p->id_limit = p->next_id + kBatch;
  }
  return p->next_id++;
}

void switch_to_scheduler(GreenThread* g, SwitchRequest* req) {
  Machine* m = current_machine();
  if (m->p == nullptr && req->kind != SwitchRequest::kBlockingExit) {
    fatal("a green thread parked, yielded or exited inside green::blocking(); the function "
          "given to blocking() must not call into the scheduler");
  }
  if ((req->kind == SwitchRequest::kPark || (req->kind == SwitchRequest::kExit && !g->is_main)) &&
      try_direct_switch(g, m, req)) {
    return;
  }
  suspend_green_thread(g, m, req, req->kind == SwitchRequest::kExit);
}

GreenThread* new_green_thread(std::size_t closure_size, std::size_t closure_align,
                              void (*entry)(void*), void** closure_out,
                              const SpawnSite& where) {
  if (!sched.active.load(std::memory_order_acquire)) {
    fatal("green::go called while the runtime is not running (call it inside green::run)");
  }
  Machine* m = current_machine();
  Processor* p = m != nullptr ? m->p : nullptr;
  GreenThread* g = allocate_green_thread(p, closure_size, closure_align, closure_out);
  g->entry = entry;
  g->id = new_goid(p);
  g->spawn_file = where.file_name();
  g->spawn_line = where.line_number();
  g->wait_reason.store(WaitReason::kNone, std::memory_order_relaxed);
  if (p != nullptr) {
    p->spawned.store(p->spawned.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  } else {
    sched.outside_spawned.fetch_add(1, std::memory_order_relaxed);
  }
  return g;
}

void start_green_thread(GreenThread* g) {
  prepare_entry(g);
  ready(g, true, WakeIdleP::kAlways);
  // Back-pressure: a green thread spawning in a loop would otherwise pile up an unbounded
  // backlog (Go spills it to the global queue), each queued G on its own cold stack page. When
  // our ring is about to spill, step aside to the global queue: this P runs the queued Gs while
  // their stacks are hot and recycles them, and the 61-tick rule brings the spawner back soon.
  // Go may preempt at any call, so a spawn being a scheduling point is within its semantics.
  if (GreenThread* self = current_green_thread(); self != nullptr) {
    checkpoint();  // a preemption point, as every runtime call
    Processor* p = current_machine()->p;
    const uint32_t ring = p->runq_tail.load(std::memory_order_relaxed) -
                          p->runq_head.load(std::memory_order_relaxed);
    if (ring >= kSpawnBackPressure) {
      SwitchRequest req{SwitchRequest::kYieldGlobal};
      switch_to_scheduler(self, &req);
    }
  }
}

}  // namespace green::detail

// ---- public API ----
namespace green {
using namespace detail;

void run(const Options& options, std::function<void()> main) {
  if (sched.active.load()) fatal("green::run called while the runtime is already running");
  Options opts = options;
  opts.procs = procs_from(options);
  opts.stack_size = round_to_pages(options.stack_size);
  opts.stack_shrink_threshold =
      std::min(round_to_pages(options.stack_shrink_threshold), opts.stack_size);
  if (opts.stack_size != sched.options.stack_size) {
    // Cached Gs carry stacks of the old size: leave them (trimmed) in their slabs.
    std::lock_guard<SpinLock> guard(sched.free_lock);
    for (GreenThread* batch = sched.free_batches; batch != nullptr;
         batch = batch->free_batch_next) {
      for (GreenThread* g = batch; g != nullptr; g = g->sched_link) {
        trim_stack(g->stack, reinterpret_cast<char*>(g));
      }
    }
    sched.free_batches = nullptr;
  }
  sched.options = opts;
  sched.next_goid.store(1);  // ids are unique within a run; main is 1
  sched.nprocs = opts.procs;
  sched.procs = std::make_unique<Processor[]>(static_cast<std::size_t>(opts.procs));
  for (int i = 0; i < opts.procs; ++i) {
    Processor* p = &sched.procs[i];
    p->id = i;
    p->rand_state = 0x9E3779B9u * static_cast<uint32_t>(i + 1);
  }
  install_overflow_handler();
  ensure_signal_stack();

  Machine* m0 = new_machine_locked();  // id 0 (no other thread runs yet)
  init_machine_context(m0);
  set_current_machine(m0);
  acquire_p(m0, &sched.procs[0]);
  for (int i = opts.procs - 1; i >= 1; --i) pidle_put_locked(&sched.procs[i]);
  sched.max_blocking_machines = max_threads_from_env();
  sched.machine_idle_ns = thread_idle_ns_from(options);
  sched.machine_reserve = opts.procs + 2;
  // Counters are per run, like the green threads they count.
  sched.blocking_calls.store(0);
  sched.blocking_handoffs.store(0);
  sched.hogs.store(0);
  sched.preemptions.store(0);
  sched.machine_wakeups.store(0);
  sched.retakes.store(0);
  sched.start_ns = now_ns();
  sched.sysmon_now_ns.store(sched.start_ns, std::memory_order_relaxed);
  sched.idle_procs_avg.store(opts.procs, std::memory_order_relaxed);  // nothing ran before
  sched.active.store(true, std::memory_order_release);
  sysmon_start();

  using Main = std::function<void()>;
  void* storage = nullptr;
  GreenThread* main_g =
      new_green_thread(sizeof(Main), alignof(Main), &invoke_closure<Main>, &storage,
                       SpawnSite::current());
  ::new (storage) Main(std::move(main));
  main_g->is_main = true;
  start_green_thread(main_g);

  schedule(m0);

  // Stopping: every other M leaves schedule() once its current G switches back. Taking the
  // lock once orders us after any startm() that created an M before it saw `stopping`.
  { std::lock_guard<SpinLock> guard(sched.lock); }
  {
    std::lock_guard<std::mutex> joining(join_lock);  // sysmon may be reaping retired Ms
    for (auto& m : sched.machines) {
      if (m->thread.joinable()) m->thread.join();
    }
  }
  sysmon_stop();
  set_current_machine(nullptr);
  sched.active.store(false, std::memory_order_release);
  reset_scheduler();
  release_signal_stack();
}

bool running() { return sched.active.load(std::memory_order_acquire); }

void yield() {
  GreenThread* g = current_green_thread();
  if (g == nullptr) {
    sched_yield();
    return;
  }
  SwitchRequest req{SwitchRequest::kYield};
  switch_to_scheduler(g, &req);
}

void sleep_for(std::chrono::nanoseconds d) {
  if (current_green_thread() == nullptr) {
    if (d.count() > 0) {
      struct timespec ts {};
      ts.tv_sec = d.count() / 1'000'000'000;
      ts.tv_nsec = d.count() % 1'000'000'000;
      while (nanosleep(&ts, &ts) != 0) {
      }
    }
    return;
  }
  if (d.count() <= 0) {
    yield();
    return;
  }
  Waiter w;
  park(w, WaitReason::kSleep, nullptr, nullptr, now_ns() + d.count());
}

int64_t num_green_threads() {
  if (!running()) return 0;
  int64_t n = sched.outside_spawned.load(std::memory_order_relaxed);
  for (int i = 0; i < sched.nprocs; ++i) {
    n += static_cast<int64_t>(sched.procs[i].spawned.load(std::memory_order_relaxed));
    n -= static_cast<int64_t>(sched.procs[i].exited.load(std::memory_order_relaxed));
  }
  return n;
}

int num_procs() { return running() ? sched.nprocs : 0; }

RuntimeStats stats() {
  RuntimeStats s;
  if (!running()) return s;
  s.procs = sched.nprocs;
  s.machines = sched.nmachines.load();
  s.idle_procs = sched.npidle.load();
  s.idle_procs_avg = sched.idle_procs_avg.load(std::memory_order_relaxed);
  s.spinning_machines = sched.nmspinning.load();
  s.green_threads = num_green_threads();
  s.global_runq_length = sched.global_size.load(std::memory_order_relaxed);
  s.idle_machines = sched.nmidle.load(std::memory_order_relaxed);
  s.blocking_machines = sched.blocking_machines.load(std::memory_order_relaxed);
  s.blocking_calls = sched.blocking_calls.load(std::memory_order_relaxed);
  s.blocking_handoffs = sched.blocking_handoffs.load(std::memory_order_relaxed);
  s.hogs = sched.hogs.load(std::memory_order_relaxed);
  s.retakes = sched.retakes.load(std::memory_order_relaxed);
  s.preemptions = sched.preemptions.load(std::memory_order_relaxed);
  s.machine_wakeups = sched.machine_wakeups.load(std::memory_order_relaxed);
  s.netpoll_polls = netpoll_counters.polls.load(std::memory_order_relaxed);
  s.netpoll_wakeups = netpoll_counters.wakeups.load(std::memory_order_relaxed);
  uint64_t created = static_cast<uint64_t>(sched.outside_spawned.load());
  for (int i = 0; i < sched.nprocs; ++i) {
    Processor* p = &sched.procs[i];
    s.per_proc[i].scheduled = p->scheduled.load(std::memory_order_relaxed);
    s.per_proc[i].stolen = p->stolen.load(std::memory_order_relaxed);
    s.steals += s.per_proc[i].stolen;
    s.per_proc[i].runq_length = runq_length(p);
    created += p->spawned.load(std::memory_order_relaxed);
  }
  s.green_threads_created = created;
  return s;
}

namespace this_green_thread {
uint64_t id() {
  GreenThread* g = current_green_thread();
  return g != nullptr ? g->id : 0;
}
bool is_green() { return current_green_thread() != nullptr; }
int processor_id() {
  Machine* m = current_machine();
  return m != nullptr && m->curg != nullptr && m->p != nullptr ? m->p->id : -1;
}
void shrink_stack() {
  GreenThread* g = current_green_thread();
  if (g == nullptr) return;
  // Keep what the trimming calls below this frame use (trim_stack, mincore, madvise: a few
  // hundred bytes; far more with sanitizer instrumentation). Pages below that margin's page go:
  // an idle connection's green thread then keeps only the pages its parked frames touch,
  // usually the top one.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  constexpr std::size_t kMargin = 16 * 1024;
#else
  constexpr std::size_t kMargin = 1024;
#endif
  auto* here = static_cast<char*>(__builtin_frame_address(0));
  trim_stack(g->stack, here - kMargin);
}
}  // namespace this_green_thread

}  // namespace green
