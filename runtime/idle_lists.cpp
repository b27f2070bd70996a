// Idle lists and the global run queue: the scheduler's state under sched.lock.
//
// Owns the idle P list (sched.idle_procs, linked through Processor::idle_link, counted in
// npidle), the idle M list (sched.idle_machines, through Machine::idle_link, counted in nmidle)
// and the global run queue (global_head/global_tail through sched_link, length in global_size).
// Every function here runs with sched.lock held, except global_get(), which takes it. The
// counts are atomics so that wakep(), find_runnable() and sysmon read them without the lock.
// Go: pidleget/pidleput, mget/mput, globrunqget/globrunqput (runtime/proc.go).
#include <algorithm>
#include <mutex>

#include "runtime/scheduler.h"

namespace green::detail {

Processor* pidle_get_locked() {
  Processor* p = sched.idle_procs;
  if (p == nullptr) return nullptr;
  sched.idle_procs = p->idle_link;
  p->idle_link = nullptr;
  p->idle.store(false, std::memory_order_relaxed);
  sched.npidle.fetch_sub(1, std::memory_order_seq_cst);  // the wakep() pair's count (ready.cpp)
  return p;
}

void pidle_put_locked(Processor* p) {
  p->m = nullptr;
  p->idle.store(true, std::memory_order_relaxed);
  p->idle_link = sched.idle_procs;
  sched.idle_procs = p;
  // seq_cst: the consumer's store of the wakep() pair (ready.cpp), before find_runnable's
  // re-check of the queues.
  sched.npidle.fetch_add(1, std::memory_order_seq_cst);
}

void pidle_remove_locked(Processor* p) {
  for (Processor** link = &sched.idle_procs; *link != nullptr; link = &(*link)->idle_link) {
    if (*link == p) {
      *link = p->idle_link;
      p->idle_link = nullptr;
      p->idle.store(false, std::memory_order_relaxed);
      sched.npidle.fetch_sub(1, std::memory_order_seq_cst);  // the wakep() pair's count
      return;
    }
  }
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

}  // namespace green::detail
