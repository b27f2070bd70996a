// Switching: the g0 side of every green-thread transition, and the direct switch.
//
// schedule() is each M's loop on g0: find_runnable(), execute() the G, and when it switches
// back, finish_switch() completes what it asked for (yield, park and its commit, exit, return
// from a blocking call) now that its context is saved: only then may another M see it. A
// parking or exiting G may instead hand its M straight to the next local G
// (try_direct_switch). All of it runs on the M holding the P and writes that P's owner-only
// fields; sched.lock is taken only for the global queue. Go: schedule, execute, park_m,
// goexit0, goyield (runtime/proc.go).
#include <mutex>

#include "runtime/context_switch.h"
#include "runtime/scheduler.h"

namespace green::detail {

namespace {

// Completes the switch a G asked for, on g0, after its context was saved.
void finish_switch(Machine* m, GreenThread* g, SwitchRequest* request) {
  auto* sp = static_cast<char*>(g->ctx);
  if (sp < g->lowest_sp) g->lowest_sp = sp;
  switch (request->kind) {
    case SwitchRequest::kYield:
      set_status(g, GStatus::kRunning, GStatus::kRunnable);
      runq_put(m->p, g, false);
      return;
    case SwitchRequest::kYieldGlobal: {
      set_status(g, GStatus::kRunning, GStatus::kRunnable);
      SpinLockGuard guard(sched.lock);
      global_put_locked(g, g, 1);
      return;
    }
    case SwitchRequest::kPark: {
      // Copy first: once commit runs, g may be resumed elsewhere and reuse this stack memory.
      const SwitchRequest req = *request;
      g->wait_reason.store(req.reason, std::memory_order_relaxed);
      g->wait_since_ns.store(wait_clock_ns(), std::memory_order_relaxed);
      set_status<std::memory_order_release>(g, GStatus::kRunning, GStatus::kWaiting);
      if (req.timer != nullptr) timer_add(req.timer);
      if (req.commit != nullptr) req.commit(req.commit_arg);
      return;
    }
    case SwitchRequest::kBlockingExit: {
      // Back from a blocking call with no P free: wait in the global queue; this M (without
      // a P) parks in schedule(). The G has been kWaiting since it entered the call.
      set_status(g, GStatus::kWaiting, GStatus::kRunnable);
      {
        SpinLockGuard guard(sched.lock);
        global_put_locked(g, g, 1);
      }
      wakep();
      return;
    }
    case SwitchRequest::kExit: {
      const bool was_main = g->is_main;
      set_status(g, GStatus::kRunning, GStatus::kDead);
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
  set_status(g, GStatus::kRunnable, GStatus::kRunning);
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
  switch_green_to_green(g, m, next, &d, complete_direct_switch, req->kind == SwitchRequest::kExit);
  return true;
}

}  // namespace

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

void switch_to_scheduler(GreenThread* g, SwitchRequest* req) {
  Machine* m = current_machine();
  if (m->p == nullptr && req->kind != SwitchRequest::kBlockingExit) {
    fatal("green::blocking",
          "a green thread parked, yielded or exited inside green::blocking(); the function "
          "given to blocking() must not call into the scheduler");
  }
  if ((req->kind == SwitchRequest::kPark || (req->kind == SwitchRequest::kExit && !g->is_main)) &&
      try_direct_switch(g, m, req)) {
    return;
  }
  suspend_green_thread(g, m, req, req->kind == SwitchRequest::kExit);
}

}  // namespace green::detail
