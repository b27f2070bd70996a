// greenrt: a Go-style M:N green-thread runtime.
//
// Green threads (G) are scheduled by logical processors (P) onto OS threads (M), as in Go:
// per-P run queues with work stealing, a global queue, lazily committed guarded stacks.
// The design is in docs/runtime.md; this header is the public contract.
//
//   green::run({}, [] {
//     green::WaitGroup wg;
//     for (int i = 0; i < 10; ++i) { wg.add(1); green::go([&] { work(); wg.done(); }); }
//     wg.wait();
//   });
//
// Rules for code that runs in a green thread (the price of migrating between OS threads):
//   * A green thread may resume on another OS thread after any call that can park or yield.
//     Never keep the address of a thread_local across such a call; use green::GreenLocal<T>.
//   * Preemption is cooperative: a loop that runs for long without calling into the runtime
//     should call green::checkpoint() now and then; sysmon asks a green thread that has run
//     for 10 ms to yield there (or at its next runtime call).
//   * An exception escaping a green thread's function ends the process with a message naming
//     the green thread and where it was spawned (Go's unrecovered panic).
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <new>
#include <string>
#include <type_traits>
#include <utility>

namespace green {

struct Options {
  // Number of Ps (OS threads running green threads at once). 0: $GREEN_MAXPROCS, else the
  // number of CPUs.
  int procs = 0;
  // Reserved virtual size of each green thread's stack, 8 MiB like a pthread's default (Go's
  // stacks grow to 1 GB by moving; C++ stacks cannot move, so the whole reservation is made at
  // spawn). Reserved, not committed: the address space is MAP_NORESERVE and a page is committed
  // on first touch, so a green thread costs one page (plus a 4 KiB page-table page, as the
  // stacks are more than 2 MiB apart) until it goes deeper; idle stacks are trimmed back.
  // Going past it ends the process ("green thread N overflowed its 8 MiB stack"). Under
  // vm.overcommit_memory=2 every reservation is charged in full: lower it there. Rounded up to
  // the page size. A spawn may ask for another size (SpawnOptions::stack_size).
  std::size_t stack_size = 8 * 1024 * 1024;
  // A recycled stack that has pages committed more than this far below its top is trimmed
  // back to this depth with MADV_DONTNEED.
  std::size_t stack_shrink_threshold = 32 * 1024;
  // An OS thread (M) that has found no work for this long exits, while more than procs + 2
  // exist (so a burst of blocking calls does not leave its threads behind for good). 0:
  // $GREEN_THREAD_IDLE ("10s", "250ms"; "0" keeps idle threads forever), else 10 s.
  std::chrono::nanoseconds thread_idle_timeout{0};
};

// Starts the runtime with `main` as its first green thread and returns when `main` returns,
// like Go's main: green threads still parked or runnable at that point are discarded without
// being unwound (their closures are not destroyed). May be called again after it returns, but
// not concurrently and not from inside a green thread. Returns only after every M has stopped,
// so a green thread that never reaches a scheduling point keeps run() from returning.
void run(const Options& options, std::function<void()> main);

// True while run() is active.
bool running();

// Where a green thread was spawned (for the dump). The compiler builtins behind
// std::source_location, used directly: clang 14 with libstdc++ 12 (the fuzz build) has the
// builtins but not std::source_location.
struct SpawnSite {
  const char* file;
  unsigned line;
  static constexpr SpawnSite current(const char* file = __builtin_FILE(),
                                     unsigned line = __builtin_LINE()) noexcept {
    return SpawnSite{file, line};
  }
  constexpr const char* file_name() const noexcept { return file; }
  constexpr unsigned line_number() const noexcept { return line; }
};

// Options of one spawn (green::go(SpawnOptions, f)).
struct SpawnOptions {
  // Reserved size of this green thread's stack; 0: Options::stack_size. Rounded up to a power
  // of two, at least 16 KiB; more than 1 GiB (Go's limit) ends the process with a message. As
  // every stack, lazily committed: a larger reservation costs address space, not memory. A
  // dead green thread's stack is only reused by a spawn that asks for the same size.
  std::size_t stack_size = 0;
};

namespace detail {
struct GreenThread;
// Allocates a green thread with room for a closure of `size` bytes at the top of its stack.
GreenThread* new_green_thread(std::size_t closure_size, std::size_t closure_align,
                              void (*entry)(void*), void** closure_out, const SpawnSite& where);
// The same, with a stack of `stack_size` bytes (SpawnOptions::stack_size; 0: the default).
GreenThread* new_green_thread(std::size_t closure_size, std::size_t closure_align,
                              void (*entry)(void*), void** closure_out, const SpawnSite& where,
                              std::size_t stack_size);
// Makes a freshly built green thread runnable.
void start_green_thread(GreenThread* g);

template <typename F>
void invoke_closure(void* p) {
  F* f = static_cast<F*>(p);
  (*f)();
  f->~F();
}

// green::go's body. A stack_size of 0 (the default, a constant in go(f)) skips the sized path.
template <typename F>
void spawn(F&& f, const SpawnSite& where, std::size_t stack_size) {
  using Fn = std::decay_t<F>;
  static_assert(std::is_invocable_v<Fn&>, "green::go needs a callable taking no arguments");
  void* storage = nullptr;
  GreenThread* g = stack_size == 0 ? new_green_thread(sizeof(Fn), alignof(Fn), &invoke_closure<Fn>,
                                                      &storage, where)
                                   : new_green_thread(sizeof(Fn), alignof(Fn), &invoke_closure<Fn>,
                                                      &storage, where, stack_size);
  ::new (storage) Fn(std::forward<F>(f));
  start_green_thread(g);
}
}  // namespace detail

// Spawns a green thread running f(). Callable from green threads and from plain threads while
// run() is active (a precondition: outside run() it aborts with a message). Never blocks. The
// callable is moved onto the top of the new green thread's stack: no heap allocation.
//
//   green::go([&] { serve(conn); });
//   green::go({.stack_size = 64 << 20}, [&] { parse_deeply_nested(doc); });  // 64 MiB stack
template <typename F>
void go(const SpawnOptions& options, F&& f, const SpawnSite& where = SpawnSite::current()) {
  detail::spawn(std::forward<F>(f), where, options.stack_size);
}

template <typename F>
void go(F&& f, const SpawnSite& where = SpawnSite::current()) {
  detail::spawn(std::forward<F>(f), where, 0);
}

// Puts the calling green thread at the back of its P's run queue and runs others. From a plain
// thread it calls sched_yield().
void yield();

// Parks the calling green thread (not its OS thread) for at least `d`. From a plain thread it
// sleeps the thread.
void sleep_for(std::chrono::nanoseconds d);

template <typename Rep, typename Period>
void sleep_for(std::chrono::duration<Rep, Period> d) {
  sleep_for(std::chrono::duration_cast<std::chrono::nanoseconds>(d));
}

namespace detail {
void enter_blocking();
void exit_blocking();
void checkpoint_slow();
extern std::atomic<uint32_t> preempt_pending;  // nonzero while some P should yield
}  // namespace detail

// Runs f(), a call that may block its OS thread (file I/O, getaddrinfo, nanosleep, a
// third-party client library), and returns its result. The calling green thread keeps its OS
// thread for the call, but its P (the right to run green threads) is handed to another thread
// right away, so the other green threads keep running. Afterwards the green thread takes a P
// back, or waits in the global queue for one. Threads inside blocking calls are capped
// (GREEN_MAX_THREADS, default 10000, as Go's SetMaxThreads; may_block() calls whose P was
// retaken count too); past the cap a blocking call parks until a thread comes back. Threads
// started for blocking calls exit after Options::thread_idle_timeout idle. From a plain
// thread it just calls f().
template <typename F>
decltype(auto) blocking(F&& f) {
  struct Exit {
    ~Exit() { detail::exit_blocking(); }
  };
  detail::enter_blocking();
  Exit exit;
  return std::forward<F>(f)();
}

namespace detail {
uint64_t enter_may_block(bool patient = false);
void exit_may_block(uint64_t ticket);
}  // namespace detail

// Like blocking(), for calls that usually return at once but now and then block (a read from a
// file that is usually in the page cache, a lock in a third-party library): the P is not handed
// off up front; sysmon retakes it and gives it to another thread if the call is still running
// at its next look (20 us to 10 ms later, Go's entersyscall + retake). A call that returns in
// time keeps its P and costs two atomic operations. A call whose P was retaken counts against
// GREEN_MAX_THREADS; at the cap sysmon leaves the P with it until it returns (so a call that
// never returns, such as opening a FIFO without O_NONBLOCK, must not go here in numbers).
// From a plain thread it just calls f().
template <typename F>
decltype(auto) may_block(F&& f) {
  struct Exit {
    uint64_t ticket;
    ~Exit() { detail::exit_may_block(ticket); }
  };
  Exit exit{detail::enter_may_block()};
  return std::forward<F>(f)();
}

// Like may_block(), for calls that normally keep the CPU busy in the kernel for a while
// without blocking, and block only now and then: sendfile(2) from the page cache spends
// ~300 us a MiB copying, and waits for the disk only on a cache miss. Retaking the P at
// sysmon's next look, as may_block() does, handed it to another thread on nearly every call
// of a 1 MiB download (3.6 futex calls a request, and 60% more CPU a byte than nginx): here
// sysmon retakes it only once the call has run for 1 ms.
template <typename F>
decltype(auto) may_block_patiently(F&& f) {
  struct Exit {
    uint64_t ticket;
    ~Exit() { detail::exit_may_block(ticket); }
  };
  Exit exit{detail::enter_may_block(true)};
  return std::forward<F>(f)();
}

// A preemption point for long CPU-bound loops: yields when sysmon has flagged this green
// thread (it has run for more than 10 ms) or a timer of its P is due and no other thread can
// run it. Costs one relaxed load of a global when no P has a request pending. Preemption in
// greenrt is cooperative: see the README, "Rules for code running in green threads".
inline void checkpoint() {
  if (detail::preempt_pending.load(std::memory_order_relaxed) != 0) detail::checkpoint_slow();
}

// Writes Go's goroutine dump for every green thread to `out` (also what SIGQUIT prints):
//   green thread 17 [waiting: netpoll read, 2.1s]:
//       spawned at server/connection.cpp:42
// At most `limit` green threads (the lowest ids), then one line "… N more green threads".
std::string dump_green_threads(std::size_t limit = SIZE_MAX);

// Green threads that exist now (runnable, running or parked): Go's runtime.NumGoroutine().
int64_t num_green_threads();

// Number of Ps of the running runtime (0 when not running).
int num_procs();

namespace this_green_thread {
// Id of the calling green thread (1 is main; ids are never reused within a run). 0 from a
// plain thread.
uint64_t id();
// True when the caller is a green thread.
bool is_green();
// Index of the P the caller runs on, or -1 from a plain thread. Changes across parks.
int processor_id();
// Labels the calling green thread for dumps (dump_green_threads, /debug/greenthreads, SIGQUIT):
// a line "label: NAME VALUE" under it, as Go's pprof goroutine labels show in a dump
// ("h2 stream 5"). `name` must be a string with static storage (a literal); the label stays
// until the green thread ends or is labelled again.
void set_label(const char* name, uint64_t value);
// Returns committed stack pages below the caller's current depth to the kernel
// (MADV_DONTNEED). For long-lived green threads that went deep once and now idle.
void shrink_stack();
// The caller's stack: its reservation, how deep the caller is now (from the top, including
// the green thread's control block and closure) and how much of it is committed (resident
// pages, read with mincore(2) over the whole reservation: a syscall per 1 MiB, so for
// diagnostics, not hot paths). All zero from a plain thread.
struct StackUsage {
  std::size_t reserved = 0;
  std::size_t depth = 0;
  std::size_t committed = 0;
};
StackUsage stack_usage();
}  // namespace this_green_thread

// Green-thread-local storage: one T per green thread, default-constructed on first get() in
// that green thread and destroyed when it exits. Replaces thread_local for code that parks.
// At most 64 GreenLocal objects may exist at once (aborts beyond).
namespace detail {
int gls_key_create(void (*destroy)(void*));
void gls_key_delete(int key);
void* gls_get(int key);
void gls_set(int key, void* value);
}  // namespace detail

template <typename T>
class GreenLocal {
 public:
  GreenLocal() : key_(detail::gls_key_create([](void* p) { delete static_cast<T*>(p); })) {}
  ~GreenLocal() { detail::gls_key_delete(key_); }
  GreenLocal(const GreenLocal&) = delete;
  GreenLocal& operator=(const GreenLocal&) = delete;

  // Must be called from a green thread.
  T& get() {
    void* p = detail::gls_get(key_);
    if (p == nullptr) {
      p = new T();
      detail::gls_set(key_, p);
    }
    return *static_cast<T*>(p);
  }

 private:
  int key_;
};

// Scheduler counters, summed over Ps. Cheap enough to call for /metrics.
struct ProcessorStats {
  uint64_t scheduled = 0;  // green threads this P ran (switches into a green thread)
  uint64_t stolen = 0;     // green threads this P took from other Ps' queues
  uint32_t runq_length = 0;
};
struct RuntimeStats {
  int procs = 0;
  int machines = 0;           // OS threads of the runtime (Ms) now; idle ones exit in time
  int idle_procs = 0;         // right now (while a request is served: rarely any)
  double idle_procs_avg = 0;  // averaged over about the last second (sysmon's samples)
  int spinning_machines = 0;
  int64_t green_threads = 0;
  uint64_t green_threads_created = 0;
  uint32_t global_runq_length = 0;
  int idle_machines = 0;           // Ms parked with no work
  int blocking_machines = 0;       // Ms blocked without a P now (blocking(), retaken may_block)
  uint64_t steals = 0;             // sum of per_proc[].stolen
  uint64_t blocking_calls = 0;     // green::blocking() calls
  uint64_t blocking_handoffs = 0;  // Ps handed to another M because a call blocked
  uint64_t hogs = 0;               // times sysmon found a green thread running over 10 ms
  uint64_t retakes = 0;            // Ps sysmon took back from threads stuck in may_block()
  uint64_t preemptions = 0;        // checkpoints that yielded on a sysmon or timer request
  uint64_t machine_wakeups = 0;    // idle Ps handed to an M (a parked M woken, or a new one)
  uint64_t netpoll_polls = 0;      // epoll_wait calls that returned events
  uint64_t netpoll_wakeups = 0;    // green threads made runnable by the netpoller
  ProcessorStats per_proc[256];
};
RuntimeStats stats();

}  // namespace green
