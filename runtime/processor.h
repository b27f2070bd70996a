// Processor (P): the right to run green threads. There are Options::procs of them; an M must
// hold one to run a G. Each P owns a run queue, a free-G cache and a timer heap.
//
// Run queue, as Go's runq: a 256-slot ring plus a `runnext` slot.
//   * Only the owner P pushes (tail); anyone pops from the head with a CAS, so thieves and the
//     owner race only on `runq_head`.
//   * runnext holds a G readied or spawned by the running G: it runs next and inherits the
//     time slice, which makes a ping-pong pair cheap. Others may CAS it to null (steal) only
//     after a short back-off, to give the owner the chance to run it.
//   * A full ring moves half of itself plus the new G to the global queue in one batch.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "green/detail/spin_lock.h"
#include "runtime/timer.h"

namespace green::detail {

struct GreenThread;
struct Machine;

inline constexpr uint32_t kRunQueueSize = 256;

struct alignas(64) Processor {
  int id = 0;

  // ---- run queue ----
  // head: CAS by owner and thieves; tail: stored by the owner only.
  alignas(64) std::atomic<uint32_t> runq_head{0};
  alignas(64) std::atomic<uint32_t> runq_tail{0};
  std::atomic<GreenThread*> runq[kRunQueueSize] = {};
  std::atomic<GreenThread*> runnext{nullptr};

  // ---- owner-only state (the M holding this P) ----
  alignas(64) uint32_t schedtick = 0;  // incremented on every scheduling (global-queue check)
  uint32_t runnext_streak = 0;         // consecutive Gs taken from runnext
  uint32_t rand_state = 0;
  uint32_t recycle_count = 0;
  GreenThread* free_gs = nullptr;  // dead Gs with their stacks, ready for reuse
  int free_count = 0;
  uint64_t next_id = 0, id_limit = 0;  // batch of G ids taken from the global counter
  Machine* m = nullptr;                // the M holding this P, if any
  Processor* idle_link = nullptr;      // idle P list, under sched lock

  // Written under sched lock; read racily by thieves to skip idle Ps.
  std::atomic<bool> idle{false};

  TimerHeap timers;

  // ---- sysmon's view (atomics: sysmon reads them from its own thread) ----
  // schedtick * 2 + 1 while a G runs, schedtick * 2 on g0: unchanged and odd across two sysmon
  // looks 10 ms apart means one G has run that long.
  std::atomic<uint32_t> run_tick{0};
  // Set by sysmon (the G ran over 10 ms, or a timer of this P is overdue and nobody else can
  // run it); honoured by checkpoint() and cleared when the next G starts.
  std::atomic<bool> preempt{false};
  // green::may_block(): (ticket << 2) | 1 while the owner M is inside such a call (| 2 for
  // may_block_patiently, which sysmon leaves alone for its first millisecond); sysmon
  // retakes the P by clearing the low bit (a CAS), which the returning M then sees. The ticket
  // makes each call's word unique (no ABA when the P is retaken and reused by another call).
  std::atomic<uint64_t> syscall_word{0};
  uint64_t syscall_tickets = 0;      // owner-only
  uint64_t sysmon_syscall_word = 0;  // sysmon-private: the in-call word it last saw
  int64_t sysmon_syscall_since = 0;
  // sysmon-private: the run_tick it last saw and when.
  uint32_t sysmon_tick = 0;
  int64_t sysmon_when = 0;

  // ---- statistics: written by the owner (relaxed), read by anyone ----
  std::atomic<uint64_t> scheduled{0};
  std::atomic<uint64_t> stolen{0};
  std::atomic<uint64_t> spawned{0};
  std::atomic<uint64_t> exited{0};

  uint32_t fastrand() {
    // xorshift32: a per-P sequence for steal order and select; no shared state.
    uint32_t x = rand_state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    rand_state = x;
    return x;
  }
};

// Layout the comments above rely on.
// runq_head and runq_tail are free-running uint32_t counters, indexed modulo the ring size: the
// wrap from 2^32 - 1 to 0 keeps the index right only if the size divides 2^32.
static_assert((kRunQueueSize & (kRunQueueSize - 1)) == 0, "kRunQueueSize: a power of two");
// Thieves CAS runq_head; only the owner stores runq_tail and writes the owner-only block. Each
// starts its own cache line, or every steal attempt would pull the owner's line away.
static_assert(offsetof(Processor, runq_head) % 64 == 0 &&
                  offsetof(Processor, runq_tail) - offsetof(Processor, runq_head) >= 64,
              "runq_head must have its cache line to itself");
static_assert(offsetof(Processor, runq_tail) % 64 == 0 &&
                  offsetof(Processor, schedtick) % 64 == 0 &&
                  offsetof(Processor, schedtick) >= offsetof(Processor, runnext) + 8,
              "the owner-only block must start a cache line after the run queue");
// Ps live side by side in one array (Scheduler::procs): one P's hot lines must not be its
// neighbour's.
static_assert(alignof(Processor) == 64 && sizeof(Processor) % 64 == 0);

// Run queue operations (processor.cpp).
// What runq_put() did, for a caller deciding whether (and how) to wake an idle P.
enum class RunqPut : uint8_t {
  kRunnext,    // g filled the empty runnext: a plain store (only the owner fills it)
  kDisplaced,  // g replaced the runnext (an atomic exchange), which went to the ring
  kRing,       // g went to the ring, or with half of it to the global queue
};
// runq_put() past its fast path (processor.cpp).
RunqPut runq_put_contended(Processor* p, GreenThread* g, bool next);
// Queues g on p, into runnext with `next`. Only p's owner M may call it.
inline RunqPut runq_put(Processor* p, GreenThread* g, bool next) {
  // Thieves only take runnext (CAS to null); only the owner puts a G there. So an empty
  // runnext stays empty until our store, which needs no read-modify-write. release: it
  // publishes g's context to a thief that takes it.
  if (next && p->runnext.load(std::memory_order_relaxed) == nullptr) {
    p->runnext.store(g, std::memory_order_release);
    return RunqPut::kRunnext;
  }
  return runq_put_contended(p, g, next);
}
// Returns a G and whether it inherits the current time slice (it came from runnext).
// `skip_runnext`: take the ring's head even if runnext is set (fairness, see find_runnable).
GreenThread* runq_get(Processor* p, bool* inherit_time, bool skip_runnext = false);
// Moves about half of victim's queue into p's; returns one of them to run now, or null.
GreenThread* runq_steal(Processor* p, Processor* victim, bool steal_runnext);
bool runq_empty(const Processor* p);
uint32_t runq_length(const Processor* p);

}  // namespace green::detail
