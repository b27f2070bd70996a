// park()/unpark() for green threads and plain OS threads. See detail/park.h.
#include "green/detail/park.h"

#include <ctime>

#include "runtime/scheduler.h"
#include "runtime/timer.h"

namespace green::detail {

const char* wait_reason_name(WaitReason reason) {
  switch (reason) {
    case WaitReason::kNone:
      return "none";
    case WaitReason::kChanSend:
      return "chan send";
    case WaitReason::kChanReceive:
      return "chan receive";
    case WaitReason::kSelect:
      return "select";
    case WaitReason::kSelectNoCases:
      return "select (no cases)";
    case WaitReason::kSleep:
      return "sleep";
    case WaitReason::kMutex:
      return "mutex";
    case WaitReason::kConditionVariable:
      return "condition variable";
    case WaitReason::kWaitGroup:
      return "WaitGroup";
    case WaitReason::kOnce:
      return "Once";
    case WaitReason::kContextDone:
      return "context done";
    case WaitReason::kNetpollRead:
      return "netpoll read";
    case WaitReason::kNetpollWrite:
      return "netpoll write";
    case WaitReason::kBlockingCall:
      return "blocking call";
  }
  return "?";
}

int64_t now_ns() {
  struct timespec ts {};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

int64_t coarse_now_ns() {
  struct timespec ts {};
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

Waiter::Waiter(Claimers claimers) : g_(current_green_thread()), claimers_(claimers) {}

namespace {
void fire_park_deadline(Timer* t) {
  auto* w = static_cast<Waiter*>(t->arg);
  const bool won = w->try_claim(kTimeoutTag);
  // From here on the parked green thread may only resume through our unpark() (if we won) or
  // has already been woken (if not): either way, release the Timer first, so that the woken
  // green thread's timer_cancel() never spins while we make it runnable. The Waiter stays
  // valid: its owner cannot resume before unpark().
  timer_fired(t);
  if (won) unpark(*w);
}
}  // namespace

void park(Waiter& w, WaitReason reason, CommitFn commit, void* arg, int64_t deadline_ns) {
  if (GreenThread* g = w.g_; g != nullptr) {
    SwitchRequest req{SwitchRequest::kPark, reason, commit, arg, nullptr};
    if (deadline_ns == kNoDeadlineNs) {
      switch_to_scheduler(g, &req);
      return;
    }
    Timer timer;
    timer.when = deadline_ns;
    timer.fire = fire_park_deadline;
    timer.arg = &w;
    req.timer = &timer;  // armed on g0, after our context is saved
    switch_to_scheduler(g, &req);
    timer_cancel(&timer);
    return;
  }
  // A plain OS thread: release the primitive's lock and sleep on the waiter's futex word.
  if (commit != nullptr) commit(arg);
  for (;;) {
    if (w.os_woken_.load(std::memory_order_acquire) != 0) return;
    int64_t timeout = -1;
    if (deadline_ns != kNoDeadlineNs) {
      timeout = deadline_ns - now_ns();
      if (timeout <= 0) {
        if (w.try_claim(kTimeoutTag)) return;
        deadline_ns = kNoDeadlineNs;  // a waker claimed us first: its unpark() is on the way
        continue;
      }
    }
    futex_wait(&w.os_woken_, 0, timeout);
  }
}

void unpark(Waiter& w, WakeIdleP wake) {
  if (GreenThread* g = w.g_; g != nullptr) {
    ready(g, true, wake);
    return;
  }
  // After this store the waiter may return and its Waiter die; futex_wake on a dead address
  // is harmless (at worst a spurious wakeup of an unrelated waiter, which re-checks its word).
  w.os_woken_.store(1, std::memory_order_release);
  futex_wake(&w.os_woken_, 1);
}

// Exempt from the analysis: the lock behind `arg` was taken by the parked green thread, on its
// stack, before the switch (park_and_unlock states that to the callers).
void unlock_spin_lock(void* lock) GREEN_NO_THREAD_SAFETY_ANALYSIS {
  static_cast<SpinLock*>(lock)->unlock();
}

}  // namespace green::detail
