// Making green threads runnable: ready(), inject_list() and wakep().
//
// ready() puts a woken G on the caller's P (runnext or ring) or, from a thread without a P, on
// the global queue, then wakes an idle P when the work may need one. inject_list() spreads a
// batch (from the netpoller or sysmon) over the idle Ps through the global queue. wakep() is the
// producer's half of the spinning protocol (scheduler.cpp's note): a StoreLoad barrier, then
// one spinning M at most. Go: ready, injectglist, wakep (runtime/proc.go).
#include <algorithm>
#include <mutex>

#include "runtime/sanitizers.h"
#include "runtime/scheduler.h"

namespace green::detail {

void ready(GreenThread* g, bool next, WakeIdleP wake, GStatus from) {
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
  set_status(g, from, GStatus::kRunnable);
  RunqPut put = RunqPut::kRing;  // also when queued globally, from a thread without a P
  if (Machine* m = current_machine(); m != nullptr && m->p != nullptr) {
    put = runq_put(m->p, g, next && m->curg != nullptr);
  } else {
    SpinLockGuard guard(sched.lock);
    global_put_locked(g, g, 1);
  }
  if (put != RunqPut::kRunnext || wake == WakeIdleP::kAlways) {
    wakep(put == RunqPut::kDisplaced);
  }
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
  //
  // The pair, and why every access to npidle and nmspinning on it stays seq_cst (as Go's
  // atomics are): producer: queue work, barrier, read npidle then nmspinning (here). Consumer:
  // raise npidle (pidle_put_locked) and drop nmspinning (find_runnable, seq_cst RMWs), then
  // re-check every queue (work_anywhere). Either we see the idle P / the spinner gone and wake
  // one, or the consumer's re-check sees our work. The counts' other updates (startm's undo,
  // reset_spinning, handoff_p) are part of the same protocol and keep the same order.
#if defined(GREEN_TSAN)
  // TSan does not model fences; a seq_cst read-modify-write is the same barrier for it.
  (void)after_barrier;
  if (sched.npidle.fetch_add(0, std::memory_order_seq_cst) == 0) return;
#else
  if (!after_barrier) std::atomic_thread_fence(std::memory_order_seq_cst);
  if (sched.npidle.load(std::memory_order_seq_cst) == 0) return;  // the pair: see above
#endif
  // Be conservative: start one spinning M only when none is spinning. It wakes the next one
  // when it finds work (reset_spinning).
  int expected = 0;
  if (sched.nmspinning.load(std::memory_order_seq_cst) != 0 ||
      !sched.nmspinning.compare_exchange_strong(expected, 1, std::memory_order_seq_cst)) {
    return;
  }
  startm(nullptr, true);
}

void inject_list(GreenThread* head, uint32_t n) {
  if (head == nullptr) return;
  Machine* m = current_machine();
  Processor* p = m != nullptr ? m->p : nullptr;
  // Idle Ps get one each through the global queue (Go's injectglist); the rest stay here.
  // Relaxed: how many to spread is a guess; the startm() loop below re-reads the count.
  const int idle = sched.npidle.load(std::memory_order_relaxed);
  const uint32_t to_global = p == nullptr ? n : std::min<uint32_t>(n, static_cast<uint32_t>(idle));
  if (to_global > 0) {
    GreenThread* tail = head;
    for (uint32_t i = 1; i < to_global; ++i) tail = tail->sched_link;
    GreenThread* rest = tail->sched_link;
    {
      SpinLockGuard guard(sched.lock);
      global_put_locked(head, tail, to_global);
    }
    head = rest;
    // seq_cst, as Go's injectglist: the queue went in under sched.lock, which also orders us
    // against an M idling its P (pidle_put_locked takes the global queue first), so this read
    // is covered twice; kept as the wakep() pair reads it.
    for (uint32_t i = 0; i < to_global && sched.npidle.load(std::memory_order_seq_cst) > 0; ++i) {
      startm(nullptr, false);
    }
  }
  while (head != nullptr) {
    GreenThread* next = head->sched_link;
    runq_put(p, head, false);
    head = next;
  }
}

}  // namespace green::detail
