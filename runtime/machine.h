// Machine (M): an OS thread that runs green threads. An M runs schedule() on its own thread
// stack ("g0", Go's name) and switches into a G; the G switches back to g0 to park, yield or
// exit, and g0 finishes that transition (the "commit") before choosing the next G. Doing the
// commit on g0 is what makes wakeups safe: a G becomes visible to other Ms only after its
// context has been saved.
//
// Ms are created on demand (startm) up to the number needed to keep every P busy, and park on a
// futex when there is no work (the one idle M that waits for timers blocks in epoll_wait
// instead, once a socket exists: see netpoll.h). The thread that calls green::run() becomes M0. An
// M other than M0 that stays idle for Options::thread_idle_timeout exits (its Machine is kept for
// reuse) while more than procs + 2 Ms exist; see stopm() in machine_lifecycle.cpp.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <thread>

// For a function whose result depends on the OS thread (a TLS address): every call stays a
// real call, never folded into its caller or reused across a context switch. GCC: noipa.
// Clang has no noipa; noinline keeps the TLS access inside the callee, which Clang infers at
// most to read memory, so a context switch (an opaque call) between two calls keeps both.
#if defined(__clang__)
#define GREEN_NOIPA gnu::noinline
#else
#define GREEN_NOIPA gnu::noipa
#endif

namespace green::detail {

struct ExceptionState;
struct GreenThread;
struct Processor;

struct alignas(64) Machine {
  int id = 0;
  void* g0_ctx = nullptr;             // g0's context while a G runs
  GreenThread* curg = nullptr;        // the G running on this M, null on g0
  Processor* p = nullptr;             // the P held, null when idle
  Processor* next_p = nullptr;        // handed over by startm() before waking us
  Processor* blocked_from = nullptr;  // the P given up by green::blocking(), to retake after
  bool spinning = false;              // looking for work to steal (counted in sched.nmspinning)
  Machine* idle_link = nullptr;       // idle, retired or free M list, under sched lock
  // Next in sched.all_machines (every Machine of the run): set once under sched lock before the
  // Machine is published, never changed during the run.
  Machine* all_link = nullptr;
  bool in_idle_list = false;  // under sched lock

  // Futex word the M sleeps on when idle: 0 asleep, kWakeRun/kWakeTimers/kWakeExit set by
  // wakers.
  std::atomic<uint32_t> wake{0};
  static constexpr uint32_t kWakeRun = 1;     // next_p is set: run
  static constexpr uint32_t kWakeTimers = 2;  // a timer earlier than we wait for was added
  static constexpr uint32_t kWakeExit = 3;    // the runtime is shutting down

  std::thread thread;  // empty for M0 (the thread that called run())
  // This thread's errno and libstdc++ exception state (__cxa_eh_globals), which every switch
  // saves into the leaving G and restores from the arriving one (init_machine_context).
  int* errno_ptr = nullptr;
  ExceptionState* exception_state_ptr = nullptr;

  // Sanitizer bookkeeping for g0.
  void* tsan_fiber = nullptr;
  void* asan_fake_stack = nullptr;
  const void* g0_stack_bottom = nullptr;
  std::size_t g0_stack_size = 0;
  bool arrived_directly =
      false;  // the running G was entered by a direct switch (context_switch.cpp)
};

// The M running on this OS thread, or null. Never inlined: a G that resumed on another thread
// must read the new thread's value, not a cached one.
Machine* current_machine();
void set_current_machine(Machine* m);

// Futex helpers (machine.cpp). The kernel sees a futex word as a plain aligned 32-bit int:
// std::atomic<uint32_t> must be exactly that.
static_assert(sizeof(std::atomic<uint32_t>) == 4 && alignof(std::atomic<uint32_t>) == 4 &&
              std::atomic<uint32_t>::is_always_lock_free);
void futex_wait(std::atomic<uint32_t>* word, uint32_t expected, int64_t timeout_ns);
void futex_wake(std::atomic<uint32_t>* word, int count);

}  // namespace green::detail
