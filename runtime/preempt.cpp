// Preemption requests. sysmon asks the G running on a P to yield (request_preempt: it ran
// over 10 ms, or the P's timers are overdue); the G honours the request at its next
// checkpoint() (checkpoint_slow) by going to the back of the global queue. preempt_pending
// counts the Ps with a request, so that checkpoint()'s fast path is one relaxed load.
// Go: preemptone and gopreempt_m (cooperative only: no signals).
#include "runtime/scheduler.h"

namespace green::detail {

std::atomic<uint32_t> preempt_pending{0};

// The exchanges are relaxed: the flag is a request, no data rides on it (a request that lands
// on the next G is harmless); the exchange only keeps preempt_pending's count exact.
void request_preempt(Processor* p) {
  if (!p->preempt.exchange(true, std::memory_order_relaxed)) {
    preempt_pending.fetch_add(1, std::memory_order_relaxed);
  }
}

void clear_preempt(Processor* p) {
  if (p->preempt.exchange(false, std::memory_order_relaxed)) {
    preempt_pending.fetch_sub(1, std::memory_order_relaxed);
  }
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

}  // namespace green::detail
