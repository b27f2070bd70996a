// Per-P timer heaps. See timer.h.
#include "runtime/timer.h"

#include <algorithm>
#include <mutex>

#include "runtime/sanitizers.h"
#include "runtime/scheduler.h"

namespace green::detail {

void TimerHeap::place(size_t i, Entry e) {
  heap_[i] = e;
  e.timer->heap_index = static_cast<int32_t>(i);
}

// Moves e up from slot i (whose old content is dropped) to where it belongs.
void TimerHeap::sift_up(size_t i, Entry e) {
  while (i > 0) {
    const size_t parent = (i - 1) / kArity;
    if (heap_[parent].when <= e.when) break;
    place(i, heap_[parent]);
    i = parent;
  }
  place(i, e);
}

// Moves e down from slot i (whose old content is dropped) to where it belongs.
void TimerHeap::sift_down(size_t i, Entry e) {
  const size_t n = heap_.size();
  for (;;) {
    const size_t first = i * kArity + 1;
    if (first >= n) break;
    size_t least = first;
    const size_t last = std::min(first + kArity, n);
    for (size_t c = first + 1; c < last; ++c) {
      if (heap_[c].when < heap_[least].when) least = c;
    }
    if (e.when <= heap_[least].when) break;
    place(i, heap_[least]);
    i = least;
  }
  place(i, e);
}

void TimerHeap::update_earliest() {
  earliest_.store(heap_.empty() ? INT64_MAX : heap_[0].when, std::memory_order_release);
}

void TimerHeap::push(Timer* t) {
  const Entry e{t->when, t};
  heap_.push_back(e);  // the slot sift_up() starts from
  sift_up(heap_.size() - 1, e);
  update_earliest();
}

bool TimerHeap::remove(Timer* t) {
  const auto i = static_cast<size_t>(t->heap_index);
  if (t->heap_index < 0 || i >= heap_.size() || heap_[i].timer != t) return false;
  const Entry last = heap_.back();
  heap_.pop_back();
  t->heap_index = -1;
  if (last.timer != t) {
    // The last entry fills the hole: up if it is earlier than the hole's parent, else down.
    if (i > 0 && last.when < heap_[(i - 1) / kArity].when) {
      sift_up(i, last);
    } else {
      sift_down(i, last);
    }
  }
  update_earliest();
  return true;
}

Timer* TimerHeap::pop_expired(int64_t now) {
  if (heap_.empty() || heap_[0].when > now) return nullptr;
  Timer* t = heap_[0].timer;
  remove(t);
  t->state.store(Timer::kRunning, std::memory_order_release);
  return t;
}

void timer_add(Timer* t) {
  Machine* m = current_machine();
  Processor* p = (m != nullptr && m->p != nullptr) ? m->p : &sched.procs[0];
  t->owner = p;
  // Read before publishing: once in the heap the timer may fire at once, and its owner (a
  // parked G's stack) may be gone by the time we would read t->when again.
  const int64_t when = t->when;
  bool now_earliest;
  {
    SpinLockGuard guard(p->timers.lock());
    t->state.store(Timer::kPending, std::memory_order_relaxed);
    p->timers.push(t);
    now_earliest = p->timers.earliest() == when;  // exact under the lock
  }
  // StoreLoad barrier: the adder's half of the timer waiter's pair. The waiter stores
  // timer_waiter_until = kTimerWaiterComputing (seq_cst) and then reads every heap's earliest
  // (stopm); we store our heap's earliest (push, a release store, then the lock's release)
  // and then read timer_waiter_until (wake_timer_waiter). Without a barrier here both reads
  // may see the old values (the store buffer reorders a store and a later load on x86 too):
  // the waiter sleeps past this timer, possibly forever (until = INT64_MAX), and sysmon does
  // not step in while a waiter exists. Only a timer that became its heap's earliest can need
  // the waiter (else that heap's earliest, already no later, is what the waiter reads), so
  // the common case of a deadline behind others pays nothing.
  if (now_earliest) {
#if defined(GREEN_TSAN)
    // TSan does not model fences (and warns on one); a seq_cst read-modify-write of the word
    // we are about to read is the same barrier, as in wakep().
    sched.timer_waiter_until.fetch_add(0, std::memory_order_seq_cst);
#else
    std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
  }
  wake_timer_waiter(when);
}

void timer_fired(Timer* t) { t->state.store(Timer::kFired, std::memory_order_release); }

bool timer_cancel(Timer* t) {
  for (;;) {
    uint8_t state = t->state.load(std::memory_order_acquire);
    if (state == Timer::kIdle || state == Timer::kFired) return false;
    if (state == Timer::kRunning) {
      // The callback is short (a claim) and marks the timer fired before it wakes anyone;
      // wait for it so t may be destroyed after us.
      cpu_relax();
      continue;
    }
    Processor* p = t->owner;
    SpinLockGuard guard(p->timers.lock());
    if (t->state.load(std::memory_order_relaxed) != Timer::kPending) continue;
    p->timers.remove(t);
    t->state.store(Timer::kIdle, std::memory_order_release);
    return true;
  }
}

int run_expired_timers(Processor* p, int64_t now) {
  if (p->timers.earliest() > now) return 0;
  int ran = 0;
  for (;;) {
    Timer* t;
    {
      SpinLockGuard guard(p->timers.lock());
      t = p->timers.pop_expired(now);
    }
    if (t == nullptr) return ran;
    // The callback marks the timer fired (timer_fired) before anything that can let the
    // timer's owner resume, and never touches it after.
    t->fire(t);
    ++ran;
  }
}

}  // namespace green::detail
