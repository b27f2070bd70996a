// Scheduler internals shared by the runtime's files. Not a public header.
//
// The scheduler is split by concept (scheduler.cpp's opening note has the overview and the
// file map). This header holds its state (struct Scheduler, in parts, each with its lock and
// access rule) and declares what the files call in each other, grouped by defining file.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>

#include "green/detail/intrusive_fifo.h"
#include "green/detail/park.h"
#include "green/detail/spin_lock.h"
#include "green/green.h"
#include "runtime/fatal.h"
#include "runtime/green_thread.h"
#include "runtime/machine.h"
#include "runtime/processor.h"

namespace green::detail {

inline constexpr int64_t kTimerWaiterComputing = -1;
inline constexpr int64_t kNoTimerWaiter = INT64_MIN;

// ---- The scheduler's state, by concept ----
//
// Each part below is a struct that says which lock guards it or who may write it. Scheduler
// is composed of them by inheritance, so that each field keeps its short name (sched.npidle,
// sched.timer_waiter) and every use reads the same as in Go's schedt. Scheduler::init() (from
// run()) and Scheduler::reset() (at run()'s end) own every field: a new field goes into its
// part's reset() beside its declaration, or into init() if it is configuration.

// Configuration of the current run: written by init() before any other thread of the run
// starts, read-only until reset(). (The Processors themselves are not read-only: see
// processor.h for who writes what.) `options` outlives the run: the cached dead Gs' stacks
// have options.stack_size, which the next init() compares with its own.
struct SchedConfig {
  Options options;
  int nprocs = 0;
  std::unique_ptr<Processor[]> procs;
  // An idle M (not the timer waiter, not M0) whose thread found no work for this long exits,
  // while more than machine_reserve Ms exist (Options::thread_idle_timeout /
  // GREEN_THREAD_IDLE).
  int64_t machine_idle_ns = 10'000'000'000;
  int machine_reserve = 0;
  int max_blocking_machines = 10000;  // GREEN_MAX_THREADS (see BlockingCap)
  int64_t start_ns = 0;
};

// Under `lock` (sched.lock), and only under it: the idle P and M lists, the global run queue
// and the M registry. Its rank (kSched, green/detail/lock_rank.h): no other lock is taken under
// it. Nothing slow under it: no thread creation, futex or eventfd call, allocation or logging
// (decide under the lock, act after it, as Go's startm).
struct SchedLocked {
  // Its own cache line with the lists: idle Ms write them while wakep() reads the counts of
  // SchedCounts on every ready() (false sharing otherwise).
  alignas(64) SpinLock lock{LockRank::kSched};
  // The global run queue, through sched_link.
  GreenThread* global_head GREEN_GUARDED_BY(lock) = nullptr;
  GreenThread* global_tail GREEN_GUARDED_BY(lock) = nullptr;
  Processor* idle_procs GREEN_GUARDED_BY(lock) = nullptr;   // through Processor::idle_link
  Machine* idle_machines GREEN_GUARDED_BY(lock) = nullptr;  // through Machine::idle_link
  // Every Machine of this run, live or retired, newest first through all_link: a Machine is
  // never freed during a run (a waker may still hold a pointer it read before the M retired),
  // only reused. Owned here; deleted by reset(). A registered Machine's all_link never
  // changes, so a walk from a head read under the lock needs no lock.
  Machine* all_machines GREEN_GUARDED_BY(lock) = nullptr;
  // Ms that retired after an idle period (see stopm), linked through idle_link: their threads
  // have left schedule() and are joined by sysmon (reap_retired_machines), which then moves
  // them to free_machines, where startm() takes one before allocating a new Machine.
  Machine* retired_machines GREEN_GUARDED_BY(lock) = nullptr;
  Machine* free_machines GREEN_GUARDED_BY(lock) = nullptr;
  int next_machine_id GREEN_GUARDED_BY(lock) = 0;

  // After the run, with every M joined (no lock needed). Frees the Machines. Exempt from the
  // thread-safety analysis for that reason: no other thread can hold or take `lock` (and
  // freeing Machines under a spin lock would break the rule above).
  void reset_locked_state() GREEN_NO_THREAD_SAFETY_ANALYSIS {
    for (Machine* m = all_machines; m != nullptr;) {
      Machine* next = m->all_link;
      delete m;
      m = next;
    }
    all_machines = retired_machines = free_machines = idle_machines = nullptr;
    global_head = global_tail = nullptr;
    idle_procs = nullptr;
    next_machine_id = 0;
  }
};

// Counts read without sched.lock (wakep, find_runnable, sysmon, stats): written under it,
// except nmspinning (a CAS or add by any M) and starting_machines' decrement (startm, after
// the lock). Hot ones each get their own cache line.
struct SchedCounts {
  alignas(64) std::atomic<uint32_t> global_size{0};  // length of the global run queue
  alignas(64) std::atomic<int> npidle{0};            // Ps in the idle list
  alignas(64) std::atomic<int> nmspinning{0};        // Ms looking for work to steal
  alignas(64) std::atomic<int> nmachines{0};         // Ms of the run, minus the retired ones
  std::atomic<int> nmidle{0};                        // Ms in the idle list
  std::atomic<int> nretired{0};  // Ms in retired_machines (sysmon joins them when nonzero)
  // New Ms reserved by startm() whose threads it is creating outside the lock: joiners wait
  // for zero (run()) or come back later (sysmon's reaping).
  std::atomic<int> starting_machines{0};

  // The reset_*() functions of every part run in Scheduler::reset(), after every M is joined
  // and sysmon stopped: this thread is the only one of the run left, so their stores are
  // relaxed (the next run() creates its threads after them, which orders them).
  void reset_counts() {
    global_size.store(0, std::memory_order_relaxed);
    npidle.store(0, std::memory_order_relaxed);
    nmspinning.store(0, std::memory_order_relaxed);
    nmachines.store(0, std::memory_order_relaxed);
    nmidle.store(0, std::memory_order_relaxed);
    nretired.store(0, std::memory_order_relaxed);
    starting_machines.store(0, std::memory_order_relaxed);
  }
};

// The thread cap for blocking calls. Ms that gave up their P for a blocking call: inside
// green::blocking(), or inside green::may_block() after sysmon retook their P. Capped at
// max_blocking_machines, so the number of OS threads stays under procs + cap + the idle
// reserve whatever blocks. blocking_machines: a CAS by anyone (try_take_blocking_slot);
// blocking_cap_waiters: the green threads waiting for a slot, under blocking_cap_lock (a leaf).
struct BlockingCap {
  std::atomic<int> blocking_machines{0};
  SpinLock blocking_cap_lock{LockRank::kBlockingCap};
  IntrusiveFifo<Waiter> blocking_cap_waiters GREEN_GUARDED_BY(blocking_cap_lock);

  void reset_blocking_cap() {
    blocking_machines.store(0, std::memory_order_relaxed);
    // Green threads still waiting when main returned were abandoned (their stacks reclaimed):
    // forget their nodes rather than pop them in the next run. Every M is joined, so the lock
    // is free: taking it costs one exchange and keeps the analysis.
    SpinLockGuard guard(blocking_cap_lock);
    blocking_cap_waiters = IntrusiveFifo<Waiter>{};
  }
};

// Statistics of the run (green::stats()): relaxed adds by anyone, read racily.
struct RunCounters {
  std::atomic<uint64_t> blocking_calls{0};
  std::atomic<uint64_t> blocking_handoffs{0};
  std::atomic<uint64_t> hogs{0};
  std::atomic<uint64_t> retakes{0};  // Ps taken back by sysmon from Ms inside may_block()
  std::atomic<uint64_t> preemptions{0};
  std::atomic<uint64_t> machine_wakeups{0};  // startm(): an M woken or started to run a P

  // Relaxed: every M is joined; the next run's threads are created after (which orders these
  // stores before them).
  void reset_counters() {
    blocking_calls.store(0, std::memory_order_relaxed);
    blocking_handoffs.store(0, std::memory_order_relaxed);
    hogs.store(0, std::memory_order_relaxed);
    retakes.store(0, std::memory_order_relaxed);
    preemptions.store(0, std::memory_order_relaxed);
    machine_wakeups.store(0, std::memory_order_relaxed);
  }
};

// Written by sysmon only (and by init()), read by anyone.
struct SysmonView {
  // now_ns() as of sysmon's last round (it runs at least every 10 ms). A parking G records it
  // as the start of its wait, for dumps: a park reads no clock.
  alignas(64) std::atomic<int64_t> sysmon_now_ns{0};
  // Idle Ps averaged over about the last second (sysmon's samples of npidle): npidle itself,
  // read while serving a request, is nearly always the P serving it plus a spinning M's.
  std::atomic<double> idle_procs_avg{0};
};

// The idle M that sleeps until the earliest timer (Go's blocking netpoll M): at most one.
// Claimed and released by that M (stopm: a CAS), read by wakers (timer_waiter.cpp).
struct TimerWaiterState {
  std::atomic<Machine*> timer_waiter{nullptr};
  std::atomic<int64_t> timer_waiter_until{kNoTimerWaiter};  // or kTimerWaiterComputing

  void reset_timer_waiter() {
    timer_waiter.store(nullptr, std::memory_order_relaxed);
    timer_waiter_until.store(kNoTimerWaiter, std::memory_order_relaxed);
  }
};

// Whether a run is on, and G ids and counts.
struct RunState {
  std::atomic<bool> stopping{false};        // set once by begin_stop(); read by every loop
  std::atomic<bool> active{false};          // between run()'s set-up and its end
  std::atomic<uint64_t> next_goid{1};       // ids are unique within a run; main is 1
  std::atomic<int64_t> outside_spawned{0};  // spawns from plain threads (no P)

  void reset_run_state() {
    stopping.store(false, std::memory_order_relaxed);
    next_goid.store(1, std::memory_order_relaxed);  // relaxed: as reset_counters()
    outside_spawned.store(0, std::memory_order_relaxed);
    // `active` is run()'s: cleared before reset(), once no green thread can be spawned.
  }
};

// Dead Gs beyond the per-P caches, with their stacks, as a stack of batches: each batch is a
// chain through sched_link, its head linked to the next batch through free_batch_next.
// Pushing or popping a batch is O(1) under free_lock (a leaf; the chain is built outside it).
// Survives across runs while the stack size stays the same (init()).
struct FreeGreenThreads {
  SpinLock free_lock{LockRank::kFreeGs};
  GreenThread* free_batches GREEN_GUARDED_BY(free_lock) = nullptr;
};

// The runtime's global state: one instance, `sched`.
struct Scheduler : SchedConfig,
                   SchedLocked,
                   SchedCounts,
                   BlockingCap,
                   RunCounters,
                   SysmonView,
                   TimerWaiterState,
                   RunState,
                   FreeGreenThreads {
  // Sets up a run (from run(), before any other thread of it exists): the configuration from
  // `options` and the GREEN_* environment, the Ps (all idle but P0, which M0 takes), clocks.
  // Drops the cached dead Gs if their stack size differs from the new one.
  void init(const Options& options);
  // Back to the state before init() once every M is joined: Ps' G caches go to the free
  // batches (which survive), Machines are freed, every per-run field is reset.
  void reset();
};

// The separation the comments on SchedLocked and SchedCounts promise: the lock (with the lists
// under it) and each hot atomic start a cache line that no other of them shares. Checked per
// part: Scheduler has data-holding bases, so it is not standard-layout and offsetof on it is
// not allowed; each part is, and a 64-aligned base starts its own line in Scheduler.
static_assert(alignof(SchedLocked) == 64 && offsetof(SchedLocked, lock) == 0,
              "sched.lock must start a cache line");
static_assert(alignof(SchedCounts) == 64 && offsetof(SchedCounts, global_size) == 0 &&
                  offsetof(SchedCounts, npidle) - offsetof(SchedCounts, global_size) >= 64 &&
                  offsetof(SchedCounts, nmspinning) - offsetof(SchedCounts, npidle) >= 64 &&
                  offsetof(SchedCounts, nmachines) - offsetof(SchedCounts, nmspinning) >= 64,
              "Scheduler's hot counts must each have a cache line to themselves");
static_assert(alignof(SysmonView) == 64 && offsetof(SysmonView, sysmon_now_ns) % 64 == 0,
              "sysmon_now_ns must start a cache line");

extern Scheduler sched;

// When a wait starts, as dumps show it: sysmon's clock, at most one sysmon period old.
inline int64_t wait_clock_ns() { return sched.sysmon_now_ns.load(std::memory_order_relaxed); }

inline void acquire_p(Machine* m, Processor* p) {
  m->p = p;
  p->m = m;
}

// The next G from p's own queue. A G that keeps readying or respawning another fills runnext
// forever; Go breaks such a chain with sysmon's time-slice preemption. Without waiting for
// that, after 61 runnext picks in a row the ring's head goes first, so queued Gs cannot
// starve. Inline: find_runnable() and the direct switch (a hot path) both take from it.
inline GreenThread* take_local(Processor* p, bool* inherit_time) {
  const bool skip_runnext = p->runnext_streak >= 61;
  GreenThread* g = runq_get(p, inherit_time, skip_runnext);
  // After a skip the ring has had its turn (it was empty if runnext came anyway).
  if (g != nullptr) p->runnext_streak = *inherit_time && !skip_runnext ? p->runnext_streak + 1 : 0;
  return g;
}

// ---- Functions the scheduler's files call in each other, by defining file ----

// --- scheduler.cpp: the runtime's life, spawning ---
// The main green thread returned: wake every M so that it leaves schedule(), and sysmon.
void begin_stop();
// Takes G ids for p (batches of 16, as Go's goidcache).
uint64_t new_goid(Processor* p);

// --- options.cpp ---
// The integer in environment variable `name`, or 0 when it is unset or empty; outside
// [lo, hi] (lo >= 1) or malformed, exits with status 2 and "want <unit> from lo to hi".
long env_integer(const char* name, const char* unit, long lo, long hi);
int procs_from(const Options& options);
int max_threads_from_env();
int64_t thread_idle_ns_from(const Options& options);
std::size_t round_to_pages(std::size_t n);

// --- idle_lists.cpp: idle P and M lists, global run queue (caller holds sched.lock) ---
Processor* pidle_get_locked() GREEN_REQUIRES(sched.lock);
void pidle_put_locked(Processor* p) GREEN_REQUIRES(sched.lock);
void pidle_remove_locked(Processor* p) GREEN_REQUIRES(sched.lock);
Machine* midle_get_locked() GREEN_REQUIRES(sched.lock);
void midle_remove_locked(Machine* m) GREEN_REQUIRES(sched.lock);
void global_put_locked(GreenThread* head, GreenThread* tail, uint32_t n) GREEN_REQUIRES(sched.lock);
GreenThread* global_get_locked(Processor* p, uint32_t max) GREEN_REQUIRES(sched.lock);
// Same, taking sched.lock itself (and not at all when the queue is empty). Inline:
// find_runnable() calls it twice per pass, nearly always to find the queue empty.
inline GreenThread* global_get(Processor* p, uint32_t max) {
  if (sched.global_size.load(std::memory_order_relaxed) == 0) return nullptr;
  SpinLockGuard guard(sched.lock);
  return global_get_locked(p, max);
}

// --- ready.cpp: making green threads runnable ---
// Makes a parked or new G runnable. `next`: run it next on the caller's P (caller is a G);
// then, with WakeIdleP::kIfQueued, it wakes no idle P unless it displaced another G from
// runnext (see the definition). `from`: kWaiting for a parked G, kIdle for a new one.
void ready(GreenThread* g, bool next, WakeIdleP wake = WakeIdleP::kIfQueued,
           GStatus from = GStatus::kWaiting);
// Starts an M to run an idle P if there is one and no M is already spinning. Call it after
// queueing work; `after_barrier`: that was made visible by a seq_cst read-modify-write.
void wakep(bool after_barrier = false);
// Queues a chain (through sched_link) of n runnable green threads: one per idle P through the
// global queue (starting Ms for them), the rest on the caller's P (or all globally from a
// thread without a P).
void inject_list(GreenThread* head, uint32_t n);

// --- machine_lifecycle.cpp: starting, waking, parking, retiring Ms ---
// Runs p on an idle or new M (spinning: already counted in nmspinning).
void startm(Processor* p, bool spinning);
// Sets m->wake (unconditionally with `force`, else only if no wake is pending) and wakes m,
// whether it sleeps on its futex or in epoll_wait as the waiter.
void wake_machine(Machine* m, uint32_t why, bool force);
// wake_machine() in two halves, for a waker that decides under sched.lock: post_wake() sets
// the word (a CAS; may run under the lock; false: not posted, a wake was pending), then
// deliver_wake() makes the system calls, after the lock is released.
bool post_wake(Machine* m, uint32_t why, bool force);
void deliver_wake(Machine* m);
// Parks the idle M until it is handed a P (true) or must leave schedule() (false).
bool stopm(Machine* m);
// What startm() decides under sched.lock for a new thread: a retired Machine to reuse (null:
// allocate one) and the new M's id.
struct MachineReservation {
  Machine* reuse = nullptr;
  int id = 0;
};
MachineReservation reserve_machine_locked() GREEN_REQUIRES(sched.lock);
Machine* new_machine(MachineReservation r);
// The newest registered Machine; all_link leads from it to every Machine registered before.
// Reads the head under sched.lock; the walk needs no lock (links never change during a run).
Machine* all_machines_snapshot();
// run(), once stopping: waits for threads being started, then joins every M's thread.
void join_machines();
// sysmon: joins the threads of retired Ms and makes their Machines reusable by startm().
// Joining happens outside sched.lock (a thread may take a moment to finish).
void reap_retired_machines();
#if GREEN_CHECKS
// For tests: called where sched.lock must not be held (before startm() creates a thread and
// before wake_machine() makes its system calls), to check that it is not.
extern std::atomic<void (*)()> outside_sched_lock_hook;
#endif

// --- timer_waiter.cpp: the idle M that sleeps until the earliest timer ---
// Earliest pending timer over all Ps.
int64_t earliest_timer();
// Runs every P's expired timers on the caller's P (an M that just took a P as the waiter).
void service_timers_as_waiter();
// Wakes the timer-waiting M if `when` is earlier than what it waits for.
void wake_timer_waiter(int64_t when);
// Wakes an idle M so that it becomes the timer waiter (when an idle P has timers).
void nudge_idle_machine_for_timers();
// Makes sure an idle M watches timers and the network while some P is idle.
void ensure_waiter();

// --- find_runnable.cpp: finding work ---
// Returns the next G to run on m's P, parking the M when there is none. Null: stopping.
GreenThread* find_runnable(Machine* m, bool* inherit_time);
// m found work after spinning: stop counting it, and wake a replacement if it was the last.
void reset_spinning(Machine* m);

// --- preempt.cpp (spill_runq: processor.cpp) ---
// Asks the G running on p to yield at its next checkpoint.
void request_preempt(Processor* p);
void clear_preempt(Processor* p);
// Moves about half of p's queued Gs to the global queue (sysmon, for a hogged P).
uint32_t spill_runq(Processor* p);

// --- handoff.cpp: blocking calls ---
// sysmon: takes p from an M stuck in green::may_block() (if `word` is still its in-call word)
// and hands it to another M. Returns true if it did.
bool retake_from_syscall(Processor* p, uint64_t word);

// --- switching (switching.cpp) ---
// What a G asks g0 to do once it is off its stack.
struct SwitchRequest {
  enum Kind : uint8_t { kYield, kYieldGlobal, kPark, kExit, kBlockingExit } kind;
  WaitReason reason = WaitReason::kNone;
  CommitFn commit = nullptr;
  void* commit_arg = nullptr;
  Timer* timer = nullptr;  // armed on g0 before commit, for park with deadline
};
// Switches from the running G to g0 with `req`; returns when the G is resumed.
void switch_to_scheduler(GreenThread* g, SwitchRequest* req);
// An M's scheduling loop on g0: find a G, run it, finish its switch; returns when stopping or
// when the M retires.
void schedule(Machine* m);

}  // namespace green::detail
