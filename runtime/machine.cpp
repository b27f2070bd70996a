// Machine (M) plumbing: the per-thread pointer to the current M and the futex helpers that
// idle Ms and OS-thread waiters sleep on. The scheduling loop is in switching.cpp, starting and
// parking Ms in machine_lifecycle.cpp.
#include "runtime/machine.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

#include "runtime/sanitizers.h"

namespace green::detail {
namespace {
thread_local Machine* this_thread_machine = nullptr;
}

// noipa: a G that parked on one thread and resumed on another must get the new thread's M.
// Without it the compiler could reuse a TLS address computed before the switch.
[[GREEN_NOIPA]] Machine* current_machine() { return this_thread_machine; }
[[GREEN_NOIPA]] void set_current_machine(Machine* m) { this_thread_machine = m; }

void futex_wait(std::atomic<uint32_t>* word, uint32_t expected, int64_t timeout_ns) {
#if defined(GREEN_TSAN)
  // TSan runs a signal's handler only once the thread that took the signal is back in code it
  // sees (an interceptor, an instrumented atomic). A signal that lands on an M asleep in this
  // raw futex (which the kernel restarts after TSan's own handler returns: SA_RESTART) waits
  // for that M to wake, and an idle process may never wake it: SIGTERM to an idle example was
  // lost about one full TSan run in three (Examples.chat, Examples.fanout; the green-thread
  // dump showed the listener still in accept 15 s after the signal, SIGQUIT taken by another
  // M). So the wait is capped at 50 ms, and each return passes an interceptor, which runs the
  // handlers pending on this M (the cap alone still lost a signal now and then). Every caller
  // re-checks its word and its own deadline after any return.
  constexpr int64_t kTsanMaxWaitNs = 50'000'000;
  if (timeout_ns < 0 || timeout_ns > kTsanMaxWaitNs) timeout_ns = kTsanMaxWaitNs;
  struct RunPendingHandlersOnReturn {
    ~RunPendingHandlersOnReturn() {
      struct timeval unused {};
      gettimeofday(&unused, nullptr);  // TSan intercepts it for just this (a vDSO call)
    }
  } on_return;
#endif
  struct timespec ts {};
  struct timespec* tsp = nullptr;
  if (timeout_ns >= 0) {
    ts.tv_sec = timeout_ns / 1'000'000'000;
    ts.tv_nsec = timeout_ns % 1'000'000'000;
    tsp = &ts;
  }
  // Relative timeout with FUTEX_WAIT. EINTR/EAGAIN/ETIMEDOUT all mean "re-check the word".
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT_PRIVATE, expected, tsp, nullptr,
          0);
}

void futex_wake(std::atomic<uint32_t>* word, int count) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE_PRIVATE, count, nullptr, nullptr,
          0);
}

}  // namespace green::detail
