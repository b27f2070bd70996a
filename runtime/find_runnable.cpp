// Finding work: find_runnable(), stealing and giving up the P.
//
// Runs on g0 of the M holding m->p (search order and spinning rules: scheduler.cpp's note).
// It touches other Ps only through their run queues' atomics (runq_steal) and their timer
// heaps' locks, and takes sched.lock only to read the global queue and to give the P up. The
// re-check after giving up the P pairs with wakep()'s fence: see find_runnable().
// Go: findRunnable, stealWork, resetspinning (runtime/proc.go).
#include <mutex>

#include "runtime/netpoll.h"
#include "runtime/scheduler.h"

namespace green::detail {

namespace {

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

}  // namespace

void reset_spinning(Machine* m) {
  m->spinning = false;
  // The last spinner to find work wakes a replacement, in case there is more work.
  // seq_cst: the wakep() pair (see there), as Go's resetspinning.
  if (sched.nmspinning.fetch_sub(1, std::memory_order_seq_cst) == 1) wakep();
}

// Is there anything for an M that just released its P to come back for?
// The consumer's re-check of the wakep() pair: after the seq_cst updates of npidle and
// nmspinning, so the global size is read seq_cst too (the rings' loads are acquire, after
// those read-modify-writes: a full barrier on x86, acquire-release on Arm).
bool work_anywhere() {
  if (sched.global_size.load(std::memory_order_seq_cst) != 0) return true;
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
    // Relaxed: a limit on how many Ms spin, a heuristic; a stale count lets one M more or
    // fewer spin, and the M that does not spin re-checks every queue before it sleeps.
    const int busy = sched.nprocs - sched.npidle.load(std::memory_order_relaxed);
    if (m->spinning || 2 * sched.nmspinning.load(std::memory_order_relaxed) < busy) {
      if (!m->spinning) {
        m->spinning = true;
        sched.nmspinning.fetch_add(1, std::memory_order_seq_cst);  // the wakep() pair's count
      }
      if (GreenThread* g = steal_work(p)) return g;
    }

    // Nothing found: give up the P.
    {
      SpinLockGuard guard(sched.lock);
      if (GreenThread* g = global_get_locked(p, 0)) return g;
      pidle_put_locked(p);
      m->p = nullptr;
    }
    const bool was_spinning = m->spinning;
    if (was_spinning) {
      m->spinning = false;
      sched.nmspinning.fetch_sub(1, std::memory_order_seq_cst);  // the wakep() pair: see there
    }
    // Re-check: a producer may have queued work after we looked and, seeing a spinning M
    // (us), not woken anyone.
    if (work_anywhere()) {
      Processor* again;
      {
        SpinLockGuard guard(sched.lock);
        again = pidle_get_locked();
      }
      if (again != nullptr) {
        acquire_p(m, again);
        if (was_spinning) {
          m->spinning = true;
          sched.nmspinning.fetch_add(1, std::memory_order_seq_cst);  // the wakep() pair's count
        }
        if (earliest_timer() <= now_ns()) service_timers_as_waiter();
        continue;
      }
    }
    if (!stopm(m)) return nullptr;
  }
}

}  // namespace green::detail
