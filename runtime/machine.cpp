// Machine (M) plumbing: the per-thread pointer to the current M and the futex helpers that
// idle Ms and OS-thread waiters sleep on. The scheduling loop is in switching.cpp, starting and
// parking Ms in machine_lifecycle.cpp.
#include "runtime/machine.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>

namespace green::detail {
namespace {
thread_local Machine* this_thread_machine = nullptr;
}

// noipa: a G that parked on one thread and resumed on another must get the new thread's M.
// Without it the compiler could reuse a TLS address computed before the switch.
[[GREEN_NOIPA]] Machine* current_machine() { return this_thread_machine; }
[[GREEN_NOIPA]] void set_current_machine(Machine* m) { this_thread_machine = m; }

void futex_wait(std::atomic<uint32_t>* word, uint32_t expected, int64_t timeout_ns) {
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
