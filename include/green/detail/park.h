// Parking and unparking: the one mechanism every blocking primitive (channels, select, Mutex,
// WaitGroup, ConditionVariable, sleep, the netpoller, blocking()'s thread cap) is built on.
//
// A Waiter is the identity of whoever blocks: a green thread, or a plain OS thread (so channels,
// WaitGroup and Mutex also work from threads outside the runtime). The protocol is Go's
// gopark/goready:
//
//   1. The blocking primitive takes its own SpinLock, finds it must wait, and links a Waiter
//      (living on the caller's stack) into its wait queue.
//   2. It calls park(w, reason, commit, arg). For a green thread, park switches to the scheduler
//      stack (g0) and only there, once the green thread's context is saved, runs commit(arg),
//      which releases the primitive's lock. From then on a waker may find the Waiter and
//      unpark it; it can never resume a green thread whose stack is still in use. For an OS
//      thread, commit(arg) runs at once and the thread sleeps on a futex.
//   3. A waker, under the primitive's lock, removes the Waiter and must win w.try_claim(tag)
//      before acting on it (handing it a value, say); then, preferably after dropping the lock,
//      calls unpark(w) exactly once. Losing the claim means someone else (a timeout, another
//      select case) owns the wakeup: leave that waiter alone.
//   4. park() returns after unpark(). w.claimed_by() tells who woke it.
//
// Deadlines: with a deadline, the runtime arms a timer before commit runs; when it fires it
// tries w.try_claim(kTimeoutTag) and, if it wins, unparks. A primitive woken that way must
// unlink its Waiter itself (under its lock) before returning.
#pragma once

#include <atomic>
#include <cstdint>

#include "green/detail/spin_lock.h"

namespace green::detail {

struct GreenThread;

// Why a green thread is parked: shown by dumps (Go's waitReason).
enum class WaitReason : uint8_t {
  kNone,
  kChanSend,
  kChanReceive,
  kSelect,
  kSelectNoCases,
  kSleep,
  kMutex,
  kConditionVariable,
  kWaitGroup,
  kOnce,
  kContextDone,
  kNetpollRead,
  kNetpollWrite,
  kBlockingCall,
};

const char* wait_reason_name(WaitReason reason);

// Time, the rule. One clock: CLOCK_MONOTONIC (std::chrono::steady_clock is the same clock in
// libstdc++). Inside the runtime (runtime/, include/green/detail/), a time is an int64_t count
// of nanoseconds on that clock, and a parameter or field holding one says so with _ns
// (deadline_ns, timeout_ns; a timer's `when` and a local `now` are ns by this rule): timers,
// park deadlines and the netpoller compare and store these without conversions. The
// public API takes std::chrono: durations (sleep_for, with_timeout, wait_for, select's
// timeout) and steady_clock time points (net::Deadline); the server and handlers use those
// too. The few public *_ns functions (Context::deadline_ns, with_deadline_ns,
// ConditionVariable::wait_until_ns) are the low-level forms for callers that already hold a
// now_ns() time (Connection::handler_deadline_ns_); their names say so.
//
// Monotonic clock in nanoseconds (CLOCK_MONOTONIC).
int64_t now_ns();
// CLOCK_MONOTONIC_COARSE: the same clock up to one tick (1-4 ms) behind, at a fifth of the
// cost (~7 ns against ~35 ns here). For checks that may see a deadline that late.
int64_t coarse_now_ns();

// "No deadline" in nanoseconds: the latest time there is. The only other form of it is the
// public net::kNoDeadline, steady_clock::time_point::max(), the same instant (its count is
// this value: net.cpp checks that), so converting a Deadline needs no special case.
inline constexpr int64_t kNoDeadlineNs = INT64_MAX;
inline constexpr uint32_t kTimeoutTag = 0xFFFFFFFEu;

// Whether unparking a green thread also wakes an idle P for it.
enum class WakeIdleP : uint8_t {
  // Only if it waits behind another G: the caller usually parks soon (a channel handoff), and
  // the woken G then runs on the caller's P (see ready() in runtime/ready.cpp).
  kIfQueued,
  // Always, as Go: for a caller that goes on running while the woken G holds what others
  // wait for (a Mutex handed over to it).
  kAlways,
};

// Who may claim a Waiter.
enum class Claimers : uint8_t {
  kAny,          // several parties may race: a deadline's timer, the cases of a select, ...
  kLockHolders,  // only holders of one primitive's lock (one wait queue, no deadline)
};

struct Waiter {
  // Binds to the calling green thread, or to the calling OS thread.
  explicit Waiter(Claimers claimers = Claimers::kAny);
  Waiter(const Waiter&) = delete;
  Waiter& operator=(const Waiter&) = delete;

  // Exactly one party wins: the waker that will unpark this waiter. acq_rel: the winner sees
  // everything the parker wrote before linking the waiter; the parker, after waking, sees
  // everything the winner wrote before unpark(). With Claimers::kLockHolders that lock
  // already orders the claimers, and a plain load and store do (no locked instruction: two
  // per channel round trip).
  bool try_claim(uint32_t tag) noexcept {
    if (claimers_ == Claimers::kLockHolders) {
      if (claim_.load(std::memory_order_relaxed) != 0) return false;
      claim_.store(tag + 1, std::memory_order_release);
      return true;
    }
    uint32_t expected = 0;
    return claim_.compare_exchange_strong(expected, tag + 1, std::memory_order_acq_rel);
  }
  bool claimed() const noexcept { return claim_.load(std::memory_order_acquire) != 0; }
  // The tag passed to the winning try_claim(); only meaningful once claimed.
  uint32_t claimed_by() const noexcept { return claim_.load(std::memory_order_acquire) - 1; }

  GreenThread* green_thread() const noexcept { return g_; }

  // Free for the primitive's use: intrusive links and a payload pointer.
  Waiter* next = nullptr;
  Waiter* prev = nullptr;
  bool queued = false;
  void* data = nullptr;
  uint32_t index = 0;  // e.g. the select case this waiter stands for

 private:
  friend void park(Waiter&, WaitReason, void (*)(void*), void*, int64_t);
  friend void unpark(Waiter&, WakeIdleP);
  GreenThread* g_;
  Claimers claimers_;
  std::atomic<uint32_t> claim_{0};
  std::atomic<uint32_t> os_woken_{0};  // OS-thread waiters sleep on this futex word
};

using CommitFn = void (*)(void*);

// Blocks the caller until unpark(w). `commit(arg)` (may be null) runs once the caller can be
// woken safely; see the protocol above. `deadline_ns` is absolute (now_ns() clock).
void park(Waiter& w, WaitReason reason, CommitFn commit, void* arg,
          int64_t deadline_ns = kNoDeadlineNs);

// Wakes a parked waiter (which must have been claimed by the caller). Never blocks.
void unpark(Waiter& w, WakeIdleP wake = WakeIdleP::kIfQueued);

// Plain waiters in an IntrusiveFifo are claimed with tag 0.
inline bool claim(Waiter* w) { return w->try_claim(0); }

// Convenience commit function: unlocks the SpinLock passed as arg.
void unlock_spin_lock(void* lock);

// park(w, reason, unlock_spin_lock, &lock, deadline_ns), in terms the thread-safety analysis
// follows: the caller holds `lock`, and it has been released (by g0, after the switch, or at
// once on a plain thread) when this returns. The analysis cannot see a lock released through a
// function pointer on another stack, hence the exemption of this one function.
inline void park_and_unlock(Waiter& w, WaitReason reason, SpinLock& lock,
                            int64_t deadline_ns = kNoDeadlineNs)
    GREEN_RELEASE(lock) GREEN_NO_THREAD_SAFETY_ANALYSIS {
  park(w, reason, unlock_spin_lock, &lock, deadline_ns);
}

}  // namespace green::detail
