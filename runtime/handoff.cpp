// Blocking calls: handing the P on around a call that may block the OS thread.
//
// green::blocking() gives its P to another M before the call (enter_blocking, handoff_p) and
// takes one back after it (exit_blocking, reacquire_after_call); green::may_block() keeps its
// P unless sysmon finds the call still running and retakes the P (retake_from_syscall). An M
// in a call without its P holds one of GREEN_MAX_THREADS slots (sched.blocking_machines); a G
// that finds none parks in the cap waiters' FIFO, under sched.blocking_cap_lock (a leaf).
// Go: entersyscallblock, entersyscall/exitsyscall, handoffp and retake's syscall case
// (runtime/proc.go); Go's thread cap (SetMaxThreads) crashes where this one waits.
#include <mutex>

#include "runtime/scheduler.h"

namespace green::detail {

namespace {

// Go's handoffp: gives p (whose M is about to block) to another M if there is anything for it
// to do, else makes it idle.
// Its reads of the global size and of the idle/spinning counts are seq_cst: with p about to go
// idle without a re-check of its own, they are the consumer's side of the wakep() pair
// (ready.cpp), as in Go's handoffp.
void handoff_p(Processor* p) {
  if (!runq_empty(p) || sched.global_size.load(std::memory_order_seq_cst) != 0) {
    sched.blocking_handoffs.fetch_add(1, std::memory_order_relaxed);
    startm(p, false);
    return;
  }
  // Nobody spinning or idle to notice work that appears later: start a spinner.
  const int watchers = sched.nmspinning.load(std::memory_order_seq_cst) +
                       sched.npidle.load(std::memory_order_seq_cst);
  if (watchers == 0) {
    int expected = 0;
    if (sched.nmspinning.compare_exchange_strong(expected, 1, std::memory_order_seq_cst)) {
      sched.blocking_handoffs.fetch_add(1, std::memory_order_relaxed);
      startm(p, true);
      return;
    }
  }
  bool work = false;
  {
    SpinLockGuard guard(sched.lock);
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
// Relaxed: a counting semaphore; no data rides on it, and the waiters' side is ordered by
// blocking_cap_lock (see release_blocking_slot).
bool try_take_blocking_slot() {
  int cur = sched.blocking_machines.load(std::memory_order_relaxed);
  while (cur < sched.max_blocking_machines) {
    if (sched.blocking_machines.compare_exchange_weak(cur, cur + 1, std::memory_order_relaxed)) {
      return true;
    }
  }
  return false;
}

// Gives a slot back and lets the first green thread waiting for one retry. From a G (with or
// without a P) or from sysmon: ready() queues globally when the caller has no P.
void release_blocking_slot() {
  // Release is enough: a waiter re-reads the count under blocking_cap_lock before it queues
  // (enter_blocking), and we pop under that lock after this decrement. If we lock first we
  // find the waiter; if it locks first, our unlock-lock orders this decrement before its
  // re-read. The lock is the pair, not a seq_cst order.
  sched.blocking_machines.fetch_sub(1, std::memory_order_release);
  Waiter* next = nullptr;
  {
    SpinLockGuard guard(sched.blocking_cap_lock);
    next = sched.blocking_cap_waiters.pop_claimed();
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
    // Relaxed: under blocking_cap_lock, which orders it (see release_blocking_slot).
    if (sched.blocking_machines.load(std::memory_order_relaxed) < sched.max_blocking_machines) {
      sched.blocking_cap_lock.unlock();
      continue;
    }
    sched.blocking_cap_waiters.push(&w);
    park_and_unlock(w, WaitReason::kBlockingCall, sched.blocking_cap_lock);
  }
  sched.blocking_calls.fetch_add(1, std::memory_order_relaxed);
  m = current_machine();  // the cap wait may have moved us
  Processor* p = m->p;
  g->wait_reason.store(WaitReason::kBlockingCall, std::memory_order_relaxed);
  g->wait_since_ns.store(wait_clock_ns(), std::memory_order_relaxed);
  set_status<std::memory_order_release>(g, GStatus::kRunning, GStatus::kWaiting);
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
    SpinLockGuard guard(sched.lock);
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
    set_status(g, GStatus::kWaiting, GStatus::kRunning);
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

uint64_t enter_may_block(bool patient) {
  Machine* m = current_machine();
  GreenThread* g = m != nullptr ? m->curg : nullptr;
  if (g == nullptr || m->p == nullptr) return 0;
  Processor* p = m->p;
  sched.blocking_calls.fetch_add(1, std::memory_order_relaxed);
  g->wait_reason.store(WaitReason::kBlockingCall, std::memory_order_relaxed);
  g->wait_since_ns.store(wait_clock_ns(), std::memory_order_relaxed);
  set_status(g, GStatus::kRunning, GStatus::kWaiting);
  p->run_tick.store(p->schedtick * 2, std::memory_order_relaxed);  // not a hog while inside
  // Bit 0: inside a call; bit 1: patient (may_block_patiently); the rest: the ticket.
  const uint64_t word = (++p->syscall_tickets << 2) | (patient ? 2U : 0U) | 1U;
  // Release: everything above is visible to a sysmon whose CAS (acquire) reads this word. No
  // store-then-load pair here: the M and sysmon only race with CASes on this one word.
  p->syscall_word.store(word, std::memory_order_release);
  return word;
}

void exit_may_block(uint64_t word) {
  if (word == 0) return;  // a plain thread
  Machine* m = current_machine();
  GreenThread* g = m->curg;
  Processor* p = m->p;
  uint64_t expected = word;
  // acq_rel, acquire on failure (then sysmon's CAS won and we read what it did before it).
  if (p->syscall_word.compare_exchange_strong(
          expected, word & ~uint64_t{1}, std::memory_order_acq_rel, std::memory_order_acquire)) {
    // Fast path: sysmon did not take the P; carry on.
    g->wait_reason.store(WaitReason::kNone, std::memory_order_relaxed);
    set_status(g, GStatus::kWaiting, GStatus::kRunning);
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
  // acq_rel: acquire what the M did before enter_may_block()'s release store, before
  // handing its P on; on failure nothing is read.
  if (!p->syscall_word.compare_exchange_strong(word, word & ~uint64_t{1}, std::memory_order_acq_rel,
                                               std::memory_order_relaxed)) {
    release_blocking_slot();
    return false;
  }
  sched.retakes.fetch_add(1, std::memory_order_relaxed);
  p->m = nullptr;
  handoff_p(p);
  return true;
}

}  // namespace green::detail
