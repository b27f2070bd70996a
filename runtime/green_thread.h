// GreenThread (G): a green thread's control block.
//
// The block lives at the very top of the green thread's own stack, followed (downwards) by the
// closure it runs; the stack proper starts below them. A G therefore costs one page until its
// frames go deeper, and spawning needs no heap allocation. Blocks are recycled with their stack
// (per-P free lists, then a global one) and never returned to the system while the process
// lives, so a G pointer stays dereferenceable (type-stable), as Go's allgs are.
//
// Ownership of the fields:
//   * status: atomic; any thread may read it (dumps, stats). It is written, only through
//     set_status(), by the M running the G or by whoever readies it.
//   * ctx: written by the g0 that the G switched away from, read by the g0 that resumes it. The
//     run queue's release/acquire pair orders the two.
//   * everything else is written only by the G itself or by the M that currently owns it.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "green/detail/park.h"
#include "runtime/machine.h"
#include "runtime/stack.h"

namespace green::detail {

struct Machine;
struct Processor;

enum class GStatus : uint8_t {
  kIdle,      // in a free list, not a green thread right now
  kRunnable,  // in a run queue
  kRunning,   // on an M
  kWaiting,   // parked (wait_reason says on what)
  kDead,      // finished, about to be recycled
};

const char* status_name(GStatus status);

// The life of a G: every edge set_status() accepts (Go's casgstatus keeps the same kind of
// list). Anything else is a runtime bug: a double wake-up, a G run twice, a dead G resumed.
//   idle     -> runnable  spawned (start_green_thread)
//   runnable -> running   an M runs it
//   running  -> runnable  yield, preemption
//   running  -> waiting   park; a call in green::blocking() or green::may_block()
//   running  -> dead      its function returned
//   waiting  -> runnable  woken (ready(), the netpoller); back from blocking() with no P free
//   waiting  -> running   back from blocking() or may_block() with a P
//   dead     -> idle      recycled (free_green_thread)
//   runnable -> dead,
//   waiting  -> dead      only once run() has returned: abandoned by it, then recycled
enum class GStatusEdge : uint8_t { kIllegal, kLegal, kOnlyStopped };
inline constexpr int kGStatusCount = 5;
inline constexpr GStatusEdge status_edge(GStatus from, GStatus to) {
  constexpr GStatusEdge I = GStatusEdge::kIllegal, L = GStatusEdge::kLegal,
                        S = GStatusEdge::kOnlyStopped;
  // Rows: from; columns: to (idle, runnable, running, waiting, dead).
  constexpr GStatusEdge kTable[kGStatusCount][kGStatusCount] = {
      /* idle     */ {I, L, I, I, I},
      /* runnable */ {I, I, L, I, S},
      /* running  */ {I, L, I, L, L},
      /* waiting  */ {I, L, L, I, S},
      /* dead     */ {L, I, I, I, I},
  };
  return kTable[static_cast<int>(from)][static_cast<int>(to)];
}
static_assert(static_cast<int>(GStatus::kDead) + 1 == kGStatusCount,
              "a new GStatus needs a row and a column in status_edge()");

// libstdc++'s per-thread exception state (__cxa_eh_globals): caught-exception stack and the
// uncaught count. Saved per G on every switch, because a G may be switched out inside a catch
// block and resumed on another thread (Boost.Context 1.74 does not do this for us).
struct ExceptionState {
  void* caught_exceptions = nullptr;
  unsigned int uncaught_exceptions = 0;
};

inline constexpr int kMaxGreenLocals = 64;

struct GreenThread {
  void* ctx = nullptr;  // saved fcontext while not running
  std::atomic<GStatus> status{GStatus::kIdle};
  std::atomic<WaitReason> wait_reason{WaitReason::kNone};  // read racily by dumps
  bool is_main = false;
  GreenThread* sched_link = nullptr;       // global run queue / free lists
  GreenThread* free_batch_next = nullptr;  // global free list: next batch (on batch heads)
  int free_batch_size = 0;                 // global free list: Gs in this batch (on heads)
  uint64_t id = 0;
  Stack stack;
  void (*entry)(void*) = nullptr;  // runs and destroys the closure
  void* closure = nullptr;
  std::atomic<int64_t> wait_since_ns{0};  // read racily by dumps
  char* lowest_sp = nullptr;              // deepest saved context seen this life (a trim hint)
  const char* spawn_file = nullptr;
  uint32_t spawn_line = 0;
  // this_green_thread::set_label: a static name and a number, read racily by dumps.
  const char* label = nullptr;
  uint64_t label_value = 0;
  int saved_errno = 0;
  ExceptionState exception_state;
  void** locals = nullptr;  // kMaxGreenLocals slots, allocated on first GreenLocal use
  void* tsan_fiber = nullptr;
  void* asan_fake_stack = nullptr;
};

// The control block's share of the top of its stack: rounded up to a cache line, so that the
// closure below it starts on a line of its own. Every walk over the stacks (recycling, dumps)
// finds a G at stack top - kControlBlockSize (green_thread_at).
inline constexpr std::size_t kControlBlockSize = (sizeof(GreenThread) + 63) & ~std::size_t{63};
// The block, the closure and the first frames share the stack's top page, the one page a
// parked G costs: a block grown past 256 bytes eats into what is left for them.
static_assert(kControlBlockSize <= 256, "GreenThread grew: a parked G's one page has less room");
static_assert(kControlBlockSize % 64 == 0 && kControlBlockSize >= sizeof(GreenThread));
// Dumps and stats read a G's status from any thread, fatal() even from a signal handler.
static_assert(std::atomic<GStatus>::is_always_lock_free);

inline GreenThread* green_thread_at(char* stack_top) {
  return reinterpret_cast<GreenThread*>(stack_top - kControlBlockSize);
}

#if GREEN_CHECKS
// set_status() in checked builds: fatal() unless from -> to is an edge of status_edge() and g
// is in `from` (a compare-and-swap, so two wakers of one G cannot both pass).
void set_status_checked(GreenThread* g, GStatus from, GStatus to, std::memory_order order,
                        const char* caller);
#endif

// Moves g from `from`, the status the caller knows it to be in, to `to`: the only write of
// GreenThread::status. `kOrder` is the store's memory order (release where the store publishes
// the G's state to a reader that acquires it: dumps, reclaim). With GREEN_CHECKS the transition
// is checked (set_status_checked, naming `caller` in the fatal line); in Release it is the plain
// store and nothing else.
template <std::memory_order kOrder = std::memory_order_relaxed>
[[gnu::always_inline]] inline void set_status(GreenThread* g, GStatus from, GStatus to,
                                              const char* caller = __builtin_FUNCTION()) {
#if GREEN_CHECKS
  set_status_checked(g, from, to, kOrder, caller);
#else
  (void)from;
  (void)caller;
  g->status.store(to, kOrder);
#endif
}

// Allocates and prepares a G whose closure storage is `closure_size` bytes below the control
// block. Called by green::go().
GreenThread* allocate_green_thread(Processor* p, std::size_t closure_size,
                                   std::size_t closure_align, void** closure_out);

// Prepares the saved context so that the first switch into `g` runs its closure.
void prepare_entry(GreenThread* g);

// Returns a dead G to the free lists of `p` (or the global list when p is null).
void free_green_thread(Processor* p, GreenThread* g);

// After run() stops: recycles every G that was still parked or runnable (never unwound).
void reclaim_abandoned_green_threads();

// Runs the destructors of the G's GreenLocal values (on the G's own stack, before it dies).
void destroy_green_locals(GreenThread* g);

// The calling green thread, or null on g0 or a plain thread. Safe to inline: every call reads
// through current_machine(), which is never inlined (so never cached across a switch).
inline GreenThread* current_green_thread() {
  Machine* m = current_machine();
  return m != nullptr ? m->curg : nullptr;
}

}  // namespace green::detail
