// The green-thread scheduler: Go's G-M-P design in C++. The design as a whole, with the park
// protocol, the netpoller, stacks and the rejected designs: docs/runtime.md.
//
// G (GreenThread) is a green thread, M (Machine) an OS thread, P (Processor) the right to run
// Gs; there are Options::procs Ps. An M runs schedule() on its own stack (g0): find a runnable
// G, switch into it, and when it switches back (to park, yield or exit) finish that transition
// on g0 before looking for the next one.
//
// find_runnable() looks, in order, at: this P's expired timers; the global queue every 61st
// tick (so two Gs respawning each other cannot starve it); runnext and the local queue; the
// global queue; the network, without blocking (unless the timer waiter already sits in
// epoll_wait); other Ps (steal half of a random victim's queue, 4 rounds, their runnext and
// timers on the last); then gives up the P, re-checks, and parks the M (stopm).
//
// Spinning: an M without work may spin (look for work to steal) only while spinning Ms are at
// most half the busy Ps, and wakep() starts a new spinning M only if none is spinning. The M
// that stops spinning because it found work wakes another, so work spreads one M at a time
// without a thundering herd. An M that gives up its P re-checks every queue after dropping it
// (Go's "delicate dance"): a producer that saw a spinning M did not wake anyone.
//
// Who calls wakep(): every spawn, and every G queued in a ring or globally, as in Go. Unlike
// Go, a G woken into its waker's empty runnext does not (Tokio's rule for its LIFO slot): the
// waker usually parks at once (a channel handoff), this P runs the G next, and wakep()'s fence
// is saved. If the waker keeps running, sysmon wakes a spinning M at its next look (ready(),
// retake()).
//
// Timers: each P has a heap. The first idle M becomes the timer waiter and sleeps until the
// earliest deadline of all Ps, in epoll_wait once a socket exists (so it also delivers network
// events), else on its futex; adding an earlier timer wakes it (what Go's blocking netpoll M
// does).
//
// Threads: an M that gives up its P for a blocking call (green::blocking, or may_block once
// sysmon retook its P) holds one of GREEN_MAX_THREADS slots, and startm() creates a thread only
// when no idle M is left, so the process has at most procs + cap Ms (plus a few in passing).
// An idle M other than M0 that is not the timer waiter exits after Options::thread_idle_timeout
// (GREEN_THREAD_IDLE, default 10 s) while more than procs + 2 exist; its Machine is kept (a
// waker may still hold its address) and reused by the next thread (retire_if_idle_too_long,
// reap_retired_machines).
//
// Lock order: the table in include/green/detail/lock_rank.h (checked in GREEN_CHECKS builds).
// In short: join_lock (a mutex: sysmon's reaping and run()'s joins) comes before every spin
// lock; a primitive's lock (channel, sync queue, poll descriptor, blocking cap) is held on g0
// while park arms the deadline's timer (a P's timer lock) and may wake an M (sched.lock); the
// timer lock and sched.lock never nest; sched.free_lock is a leaf.
//
// Files, one concept each (declarations shared between them: scheduler.h):
//   scheduler.cpp          this overview, run() and the runtime's life, spawning, public API
//   options.cpp            Options and GREEN_* environment variables
//   idle_lists.cpp         idle P and M lists, global run queue (under sched.lock)
//   machine_lifecycle.cpp  Ms: startm, stopm (parking), retiring and reaping threads
//   timer_waiter.cpp       the idle M that sleeps until the earliest timer
//   ready.cpp              ready(), inject_list(), wakep()
//   find_runnable.cpp      find_runnable(), stealing, giving up the P
//   switching.cpp          schedule(), execute(), finish_switch(), the direct switch
//   preempt.cpp            preemption requests and checkpoint()
//   handoff.cpp            blocking()/may_block(): handing the P on, the thread cap
#include "runtime/scheduler.h"

#include <sched.h>

#include <algorithm>
#include <ctime>
#include <mutex>
#include <type_traits>

#include "runtime/context_switch.h"
#include "runtime/netpoll.h"
#include "runtime/sanitizers.h"
#include "runtime/stack.h"
#include "runtime/sysmon.h"

namespace green::detail {

Scheduler sched;

// Ring length at which a spawning green thread steps aside (see start_green_thread).
constexpr uint32_t kSpawnBackPressure = kRunQueueSize - 1;

void begin_stop() {
  // seq_cst: stopm() checks `stopping` after every wake, and this store precedes the wakes.
  sched.stopping.store(true, std::memory_order_seq_cst);
  // The futex wakes happen outside sched.lock: an M that parks after our snapshot of the
  // registry was registered before it (or is a thread startm() is creating, whose
  // find_runnable() sees `stopping`), and stopm() checks `stopping` under the lock before it
  // sleeps and after every wake, so no M sleeps through the stop.
  for (Machine* m = all_machines_snapshot(); m != nullptr; m = m->all_link) {
    m->wake.store(Machine::kWakeExit, std::memory_order_release);
    futex_wake(&m->wake, 1);
  }
  netpoll_break();
  sysmon_wake();
}

void Scheduler::init(const Options& requested) {
  Options opts = requested;
  opts.procs = procs_from(requested);
  opts.stack_size = round_to_pages(requested.stack_size);
  opts.stack_shrink_threshold =
      std::min(round_to_pages(requested.stack_shrink_threshold), opts.stack_size);
  if (opts.stack_size != options.stack_size) {
    // Cached Gs carry stacks of the old size: leave them (trimmed) in their slabs.
    SpinLockGuard guard(free_lock);
    for (GreenThread* batch = free_batches; batch != nullptr; batch = batch->free_batch_next) {
      for (GreenThread* g = batch; g != nullptr; g = g->sched_link) {
        trim_stack(g->stack, reinterpret_cast<char*>(g));
      }
    }
    free_batches = nullptr;
  }
  options = opts;
  nprocs = opts.procs;
  procs = std::make_unique<Processor[]>(static_cast<std::size_t>(opts.procs));
  for (int i = 0; i < opts.procs; ++i) {
    Processor* p = &procs[i];
    p->id = i;
    p->rand_state = 0x9E3779B9u * static_cast<uint32_t>(i + 1);
  }
  {
    // P0 is M0's (run()); the others wait in the idle list, P1 first. No other thread runs
    // yet: the lock costs nothing and keeps the *_locked rule uniform.
    SpinLockGuard guard(sched.lock);  // `this` is sched; named so the analysis sees the lock
    for (int i = opts.procs - 1; i >= 1; --i) pidle_put_locked(&procs[i]);
  }
  max_blocking_machines = max_threads_from_env();
  machine_idle_ns = thread_idle_ns_from(requested);
  machine_reserve = opts.procs + 2;
  start_ns = now_ns();
  // Relaxed: no other thread of this run exists yet (creating one orders these stores before
  // it).
  sysmon_now_ns.store(start_ns, std::memory_order_relaxed);
  idle_procs_avg.store(opts.procs, std::memory_order_relaxed);  // nothing ran before
}

// Exempt from the thread-safety analysis: it runs after every M has been joined and sysmon has
// stopped, so no other thread can hold or take sched.lock or sched.free_lock.
void Scheduler::reset() GREEN_NO_THREAD_SAFETY_ANALYSIS {
  // Per-P caches of dead Gs outlive their Ps on the global free list.
  for (int i = 0; i < nprocs; ++i) {
    Processor* p = &procs[i];
    if (p->free_gs != nullptr) {
      p->free_gs->free_batch_size = p->free_count;
      p->free_gs->free_batch_next = free_batches;
      free_batches = p->free_gs;
    }
    p->free_gs = nullptr;
    p->free_count = 0;
  }
  reclaim_abandoned_green_threads();
  netpoll_forget_waiters();
  preempt_pending.store(0, std::memory_order_relaxed);  // the only thread left, as reset_*()
  procs.reset();
  nprocs = 0;
  reset_locked_state();
  reset_counts();
  reset_blocking_cap();
  reset_counters();  // per run, like the green threads they count
  reset_timer_waiter();
  reset_run_state();
}

// Relaxed: ids need only be unique, which the read-modify-write gives in any order.
uint64_t new_goid(Processor* p) {
  if (p == nullptr) return sched.next_goid.fetch_add(1, std::memory_order_relaxed);
  if (p->next_id == p->id_limit) {
    constexpr uint64_t kBatch = 16;
    p->next_id = sched.next_goid.fetch_add(kBatch, std::memory_order_relaxed);
    p->id_limit = p->next_id + kBatch;
  }
  return p->next_id++;
}

GreenThread* new_green_thread(std::size_t closure_size, std::size_t closure_align,
                              void (*entry)(void*), void** closure_out, const SpawnSite& where) {
  if (!sched.active.load(std::memory_order_acquire)) {
    fatal("green::go", "called while the runtime is not running (call it inside green::run)");
  }
  Machine* m = current_machine();
  Processor* p = m != nullptr ? m->p : nullptr;
  GreenThread* g = allocate_green_thread(p, closure_size, closure_align, closure_out);
  g->entry = entry;
  // Atomic (relaxed) stores: a dump on another thread may be reading these fields of the G's
  // previous life (it loaded a live status just before that life ended). Plain moves on x86.
  std::atomic_ref<uint64_t>(g->id).store(new_goid(p), std::memory_order_relaxed);
  std::atomic_ref<const char*>(g->spawn_file).store(where.file_name(), std::memory_order_relaxed);
  std::atomic_ref<uint32_t>(g->spawn_line).store(where.line_number(), std::memory_order_relaxed);
  std::atomic_ref<const char*>(g->label).store(nullptr, std::memory_order_relaxed);
  g->wait_reason.store(WaitReason::kNone, std::memory_order_relaxed);
  if (p != nullptr) {
    p->spawned.store(p->spawned.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  } else {
    sched.outside_spawned.fetch_add(1, std::memory_order_relaxed);
  }
  return g;
}

void start_green_thread(GreenThread* g) {
  prepare_entry(g);
  ready(g, true, WakeIdleP::kAlways, GStatus::kIdle);
  // Back-pressure: a green thread spawning in a loop would otherwise pile up an unbounded
  // backlog (Go spills it to the global queue), each queued G on its own cold stack page. When
  // our ring is about to spill, step aside to the global queue: this P runs the queued Gs while
  // their stacks are hot and recycles them, and the 61-tick rule brings the spawner back soon.
  // Go may preempt at any call, so a spawn being a scheduling point is within its semantics.
  if (GreenThread* self = current_green_thread(); self != nullptr) {
    checkpoint();  // a preemption point, as every runtime call
    Processor* p = current_machine()->p;
    const uint32_t ring =
        p->runq_tail.load(std::memory_order_relaxed) - p->runq_head.load(std::memory_order_relaxed);
    if (ring >= kSpawnBackPressure) {
      SwitchRequest req{SwitchRequest::kYieldGlobal};
      switch_to_scheduler(self, &req);
    }
  }
}

}  // namespace green::detail

// ---- public API ----
namespace green {
using namespace detail;

void run(const Options& options, std::function<void()> main) {
  if (sched.active.load(std::memory_order_acquire)) {
    fatal("green::run", "called while the runtime is already running");
  }
  sched.init(options);
  install_overflow_handler();
  ensure_signal_stack();

  MachineReservation m0_slot;
  {
    // No other thread runs yet: the lock costs nothing and keeps the *_locked rule uniform.
    SpinLockGuard guard(sched.lock);
    m0_slot = reserve_machine_locked();  // id 0
  }
  Machine* m0 = new_machine(m0_slot);  // takes sched.lock to register the Machine
  init_machine_context(m0);
  set_current_machine(m0);
  acquire_p(m0, &sched.procs[0]);
  sched.active.store(true, std::memory_order_release);
  sysmon_start();

  using Main = std::function<void()>;
  void* storage = nullptr;
  GreenThread* main_g = new_green_thread(sizeof(Main), alignof(Main), &invoke_closure<Main>,
                                         &storage, SpawnSite::current());
  ::new (storage) Main(std::move(main));
  main_g->is_main = true;
  start_green_thread(main_g);

  schedule(m0);

  // Stopping: every other M leaves schedule() once its current G switches back.
  join_machines();
  sysmon_stop();
  set_current_machine(nullptr);
  sched.active.store(false, std::memory_order_release);
  sched.reset();
  release_signal_stack();
}

bool running() { return sched.active.load(std::memory_order_acquire); }

void yield() {
  GreenThread* g = current_green_thread();
  if (g == nullptr) {
    sched_yield();
    return;
  }
  SwitchRequest req{SwitchRequest::kYield};
  switch_to_scheduler(g, &req);
}

void sleep_for(std::chrono::nanoseconds d) {
  if (current_green_thread() == nullptr) {
    if (d.count() > 0) {
      struct timespec ts {};
      ts.tv_sec = d.count() / 1'000'000'000;
      ts.tv_nsec = d.count() % 1'000'000'000;
      while (nanosleep(&ts, &ts) != 0) {
      }
    }
    return;
  }
  if (d.count() <= 0) {
    yield();
    return;
  }
  Waiter w;
  park(w, WaitReason::kSleep, nullptr, nullptr, now_ns() + d.count());
}

int64_t num_green_threads() {
  if (!running()) return 0;
  int64_t n = sched.outside_spawned.load(std::memory_order_relaxed);
  for (int i = 0; i < sched.nprocs; ++i) {
    n += static_cast<int64_t>(sched.procs[i].spawned.load(std::memory_order_relaxed));
    n -= static_cast<int64_t>(sched.procs[i].exited.load(std::memory_order_relaxed));
  }
  return n;
}

int num_procs() { return running() ? sched.nprocs : 0; }

RuntimeStats stats() {
  RuntimeStats s;
  if (!running()) return s;
  s.procs = sched.nprocs;
  // Figures for a reader, all relaxed: each is a snapshot that may be stale when returned.
  s.machines = sched.nmachines.load(std::memory_order_relaxed);
  s.idle_procs = sched.npidle.load(std::memory_order_relaxed);
  s.idle_procs_avg = sched.idle_procs_avg.load(std::memory_order_relaxed);
  s.spinning_machines = sched.nmspinning.load(std::memory_order_relaxed);
  s.green_threads = num_green_threads();
  s.global_runq_length = sched.global_size.load(std::memory_order_relaxed);
  s.idle_machines = sched.nmidle.load(std::memory_order_relaxed);
  s.blocking_machines = sched.blocking_machines.load(std::memory_order_relaxed);
  s.blocking_calls = sched.blocking_calls.load(std::memory_order_relaxed);
  s.blocking_handoffs = sched.blocking_handoffs.load(std::memory_order_relaxed);
  s.hogs = sched.hogs.load(std::memory_order_relaxed);
  s.retakes = sched.retakes.load(std::memory_order_relaxed);
  s.preemptions = sched.preemptions.load(std::memory_order_relaxed);
  s.machine_wakeups = sched.machine_wakeups.load(std::memory_order_relaxed);
  s.netpoll_polls = netpoll_counters.polls.load(std::memory_order_relaxed);
  s.netpoll_wakeups = netpoll_counters.wakeups.load(std::memory_order_relaxed);
  uint64_t created = static_cast<uint64_t>(sched.outside_spawned.load(std::memory_order_relaxed));
  // procs_from() (options.cpp) caps procs at kRunQueueSize: every P has its slot.
  static_assert(std::extent_v<decltype(RuntimeStats::per_proc)> >= kRunQueueSize);
  for (int i = 0; i < sched.nprocs; ++i) {
    Processor* p = &sched.procs[i];
    s.per_proc[i].scheduled = p->scheduled.load(std::memory_order_relaxed);
    s.per_proc[i].stolen = p->stolen.load(std::memory_order_relaxed);
    s.steals += s.per_proc[i].stolen;
    s.per_proc[i].runq_length = runq_length(p);
    created += p->spawned.load(std::memory_order_relaxed);
  }
  s.green_threads_created = created;
  return s;
}

namespace this_green_thread {
uint64_t id() {
  GreenThread* g = current_green_thread();
  return g != nullptr ? g->id : 0;
}
bool is_green() { return current_green_thread() != nullptr; }
void set_label(const char* name, uint64_t value) {
  GreenThread* g = current_green_thread();
  if (g == nullptr) return;
  std::atomic_ref<uint64_t>(g->label_value).store(value, std::memory_order_relaxed);
  std::atomic_ref<const char*>(g->label).store(name, std::memory_order_relaxed);
}
int processor_id() {
  Machine* m = current_machine();
  return m != nullptr && m->curg != nullptr && m->p != nullptr ? m->p->id : -1;
}
void shrink_stack() {
  GreenThread* g = current_green_thread();
  if (g == nullptr) return;
    // Keep what the trimming calls below this frame use (trim_stack, mincore, madvise: a few
    // hundred bytes; far more with sanitizer instrumentation). Pages below that margin's page go:
    // an idle connection's green thread then keeps only the pages its parked frames touch,
    // usually the top one.
#if defined(GREEN_ASAN) || defined(GREEN_TSAN)
  constexpr std::size_t kMargin = 16 * 1024;
#else
  constexpr std::size_t kMargin = 1024;
#endif
  auto* here = static_cast<char*>(__builtin_frame_address(0));
  trim_stack(g->stack, here - kMargin);
}
}  // namespace this_green_thread

}  // namespace green
