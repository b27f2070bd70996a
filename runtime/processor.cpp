// Per-P run queue: Go's runqput/runqget/runqgrab/runqsteal, in C++ atomics. See processor.h.
//
// Memory ordering:
//   * The owner stores a G into runq[tail] (relaxed) and then publishes it with a release store
//     of runq_tail; consumers load runq_tail with acquire before reading the slot.
//   * Consumers read a slot and then claim it with a CAS on runq_head (release); the CAS failing
//     means someone else took it first and the read value is discarded. Slots are atomics so
//     such a discarded racy read is not a data race.
//   * The G's saved context (written by the g0 that parked it) is published by the release that
//     made the G visible in the first place (tail store, runnext store or the global queue's
//     lock), and read after the matching acquire.
#include "runtime/processor.h"

#include <sched.h>

#include "runtime/fatal.h"
#include "runtime/green_thread.h"
#include "runtime/scheduler.h"

namespace green::detail {
namespace {

// Moves half of p's ring plus g to the global queue. Returns false if a thief moved the head
// meanwhile (the caller retries the fast path).
bool runq_put_slow(Processor* p, GreenThread* g, uint32_t head, uint32_t tail) {
  constexpr uint32_t kBatch = kRunQueueSize / 2;
  GreenThread* batch[kBatch + 1];
  uint32_t n = (tail - head) / 2;
  if (n != kBatch) GREEN_FATAL("run queue of P%d not full (%u queued)", p->id, tail - head);
  for (uint32_t i = 0; i < n; ++i) {
    batch[i] = p->runq[(head + i) % kRunQueueSize].load(std::memory_order_relaxed);
  }
  if (!p->runq_head.compare_exchange_strong(head, head + n, std::memory_order_release,
                                            std::memory_order_relaxed)) {
    return false;
  }
  batch[n] = g;
  for (uint32_t i = 0; i < n; ++i) batch[i]->sched_link = batch[i + 1];
  g->sched_link = nullptr;
  SpinLockGuard guard(sched.lock);
  global_put_locked(batch[0], g, n + 1);
  return true;
}

// Grabs about half of victim's queue into batch[batch_head...] (batch is the thief's ring).
uint32_t runq_grab(Processor* victim, std::atomic<GreenThread*>* batch, uint32_t batch_head,
                   bool steal_runnext) {
  for (;;) {
    uint32_t head = victim->runq_head.load(std::memory_order_acquire);
    uint32_t tail = victim->runq_tail.load(std::memory_order_acquire);
    uint32_t n = tail - head;
    n = n - n / 2;
    if (n == 0) {
      if (steal_runnext) {
        GreenThread* next = victim->runnext.load(std::memory_order_acquire);
        if (next != nullptr) {
          if (!victim->idle.load(std::memory_order_relaxed)) {
            // The victim is running and probably about to run `next` itself (a channel
            // handoff takes well under a microsecond); taking it now would bounce the pair
            // between Ps. Go sleeps 3 us here; usleep(3) really sleeps ~60 us on Linux (timer
            // slack), so spin for the 3 us instead.
            // Spin on the clock, not on the victim's runnext: polling that cache line would
            // slow down the very handoff we are waiting for.
            const uint32_t tick = victim->run_tick.load(std::memory_order_relaxed);
            // We are often a just-woken M that the kernel placed on the waker's CPU (wake
            // affinity), so the victim's thread is waiting for the CPU we hold: let it run
            // first, or it cannot schedule its runnext and we would take it (and the pair
            // would follow it here). With this, a ping-pong pair went from ~7,000 moves per
            // million round trips to ~30. A yield costs one syscall when we do not share.
            sched_yield();
            const int64_t until = now_ns() + 3000;
            while (now_ns() < until) cpu_relax();
            // Unlike Go, leave runnext alone if the victim scheduled meanwhile: it is working
            // through its runnext chain (two green threads handing off over a channel), and a
            // G in runnext now is one its P will run within the microsecond. Only a P whose G
            // kept running for the whole wait (it readied `next` and went on computing) loses
            // it. Go steals here whenever runnext is set, even the same G re-readied (ABA),
            // which moves a ping-pong pair to the other P every few microseconds.
            if (victim->run_tick.load(std::memory_order_relaxed) != tick) return 0;
          }
          if (!victim->runnext.compare_exchange_strong(next, nullptr, std::memory_order_acq_rel)) {
            continue;
          }
          batch[batch_head % kRunQueueSize].store(next, std::memory_order_relaxed);
          return 1;
        }
      }
      return 0;
    }
    if (n > kRunQueueSize / 2) continue;  // head and tail read inconsistently; retry
    for (uint32_t i = 0; i < n; ++i) {
      GreenThread* g = victim->runq[(head + i) % kRunQueueSize].load(std::memory_order_relaxed);
      batch[(batch_head + i) % kRunQueueSize].store(g, std::memory_order_relaxed);
    }
    if (victim->runq_head.compare_exchange_strong(head, head + n, std::memory_order_acq_rel,
                                                  std::memory_order_relaxed)) {
      return n;
    }
  }
}

}  // namespace

RunqPut runq_put_contended(Processor* p, GreenThread* g, bool next) {
  RunqPut result = RunqPut::kRing;
  if (next) {
    // runnext is taken (runq_put() filled an empty one): a thief may be taking the old G
    // right now, so exchange. seq_cst (a locked instruction, a full barrier on x86): wakep()
    // relies on it (see there).
    GreenThread* old = p->runnext.exchange(g, std::memory_order_seq_cst);
    if (old == nullptr) return RunqPut::kRunnext;  // a thief took it meanwhile
    g = old;                                       // the previous runnext goes to the tail
    result = RunqPut::kDisplaced;
  }
  for (;;) {
    uint32_t head = p->runq_head.load(std::memory_order_acquire);
    uint32_t tail = p->runq_tail.load(std::memory_order_relaxed);
    if (tail - head < kRunQueueSize) {
      p->runq[tail % kRunQueueSize].store(g, std::memory_order_relaxed);
      // release: the slot (and the G's context) are visible before the new tail.
      p->runq_tail.store(tail + 1, std::memory_order_release);
      return result;
    }
    if (runq_put_slow(p, g, head, tail)) return RunqPut::kRing;
  }
}

GreenThread* runq_get(Processor* p, bool* inherit_time, bool skip_runnext) {
  GreenThread* next = skip_runnext ? nullptr : p->runnext.load(std::memory_order_relaxed);
  if (next != nullptr &&
      p->runnext.compare_exchange_strong(next, nullptr, std::memory_order_acquire)) {
    *inherit_time = true;
    return next;
  }
  *inherit_time = false;
  for (;;) {
    uint32_t head = p->runq_head.load(std::memory_order_acquire);
    uint32_t tail = p->runq_tail.load(std::memory_order_relaxed);
    if (tail == head) return skip_runnext ? runq_get(p, inherit_time, false) : nullptr;
    GreenThread* g = p->runq[head % kRunQueueSize].load(std::memory_order_relaxed);
    if (p->runq_head.compare_exchange_strong(head, head + 1, std::memory_order_acq_rel,
                                             std::memory_order_relaxed)) {
      return g;
    }
  }
}

GreenThread* runq_steal(Processor* p, Processor* victim, bool steal_runnext) {
  uint32_t tail = p->runq_tail.load(std::memory_order_relaxed);
  uint32_t n = runq_grab(victim, p->runq, tail, steal_runnext);
  if (n == 0) return nullptr;
  p->stolen.fetch_add(n, std::memory_order_relaxed);
  --n;
  GreenThread* g = p->runq[(tail + n) % kRunQueueSize].load(std::memory_order_relaxed);
  if (n == 0) return g;
  uint32_t head = p->runq_head.load(std::memory_order_acquire);
  if (tail - head + n >= kRunQueueSize) {
    GREEN_FATAL("run queue of P%d overflows (%u queued + %u stolen)", p->id, tail - head, n);
  }
  p->runq_tail.store(tail + n, std::memory_order_release);
  return g;
}

bool runq_empty(const Processor* p) {
  // Read head, tail, runnext, and re-read tail: a concurrent runq_put that moves runnext to
  // the ring must not make a non-empty queue look empty (Go's runqempty).
  for (;;) {
    uint32_t head = p->runq_head.load(std::memory_order_acquire);
    uint32_t tail = p->runq_tail.load(std::memory_order_acquire);
    GreenThread* next = p->runnext.load(std::memory_order_acquire);
    if (tail == p->runq_tail.load(std::memory_order_acquire)) {
      return head == tail && next == nullptr;
    }
  }
}

uint32_t runq_length(const Processor* p) {
  uint32_t head = p->runq_head.load(std::memory_order_acquire);
  uint32_t tail = p->runq_tail.load(std::memory_order_acquire);
  uint32_t n = tail - head;
  if (n > kRunQueueSize) n = 0;  // racy read
  return n + (p->runnext.load(std::memory_order_relaxed) != nullptr ? 1 : 0);
}

}  // namespace green::detail

namespace green::detail {

uint32_t spill_runq(Processor* p) {
  std::atomic<GreenThread*> batch[kRunQueueSize];
  const uint32_t n = runq_grab(p, batch, 0, false);
  if (n == 0) return 0;
  for (uint32_t i = 0; i + 1 < n; ++i) {
    batch[i].load(std::memory_order_relaxed)->sched_link =
        batch[i + 1].load(std::memory_order_relaxed);
  }
  SpinLockGuard guard(sched.lock);
  global_put_locked(batch[0].load(std::memory_order_relaxed),
                    batch[n - 1].load(std::memory_order_relaxed), n);
  return n;
}

}  // namespace green::detail
