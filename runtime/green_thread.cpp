// GreenThread lifecycle: allocation with its stack, entry, exit, recycling, green-thread-local
// storage. See green_thread.h.
#include "runtime/green_thread.h"

#include <cxxabi.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <exception>
#include <mutex>

#include "runtime/context_switch.h"
#include "runtime/fatal.h"
#include "runtime/sanitizers.h"
#include "runtime/scheduler.h"

#if defined(GREEN_ASAN)
#include <sanitizer/asan_interface.h>
#endif

namespace green::detail {
namespace {

// Per-P cache of dead Gs (each keeps its trimmed stack); half moves to the global list
// beyond it. 256 covers a spawner's burst up to the run queue's back-pressure point, so its
// new Gs come back warm from this P's cache rather than cold from the global list (spawn +
// join ~115 -> ~95 ns, interleaved A/B). Each keeps what its stack had committed, down to
// the shrink threshold (32 KiB by default): typically 8 KiB, so ~2 MiB per P.
constexpr int kFreeCacheMax = 256;
// Also check every 1024th recycled stack (one mincore: ~1 us here, so 1 ns per spawn; at
// every 64th it was an eighth of a spawn's cost), for stacks that went deep between switches.
constexpr uint32_t kTrimEvery = 1024;

// Per-spawn stack sizes (SpawnOptions::stack_size) are powers of two from 16 KiB to 1 GiB (Go's
// limit on 64-bit). Dead Gs of such a size wait in a list of their own, so a G is only reused
// for a spawn that asked for its size: per-spawn sizes are the exception, so one global list
// per size, under one spin lock, rather than per-P caches.
constexpr int kMinStackShift = 14;
constexpr int kMaxStackShift = 30;
constexpr int kSizeClasses = kMaxStackShift - kMinStackShift + 1;

struct SizedFreeLists {
  SpinLock lock{LockRank::kSizedFreeGs};
  GreenThread* heads[kSizeClasses] GREEN_GUARDED_BY(lock) = {};  // linked through sched_link
};

SizedFreeLists& sized_free_lists() {
  static SizedFreeLists lists;
  return lists;
}

// The size class of a stack of `size` bytes, or -1 when it is not a per-spawn size.
int size_class(std::size_t size) {
  if (size == 0 || (size & (size - 1)) != 0) return -1;
  const int shift = std::countr_zero(size);
  return shift >= kMinStackShift && shift <= kMaxStackShift ? shift - kMinStackShift : -1;
}

// The stack size the spawn on this thread asked for, 0 for the default. Set by the
// new_green_thread overload that takes a size, for the duration of the call: nothing between
// the store and allocate_green_thread's read parks or switches, so a thread-local carries it
// (new_green_thread itself, in the scheduler, does not take a size).
thread_local std::size_t requested_stack_size = 0;

// The function given to green::go threw: a user's bug, named by the G and where it was spawned.
[[noreturn]] void fatal_uncaught_exception(GreenThread* g) {
  const char* type = "unknown";
  const char* what = "";
  char* demangled = nullptr;
  if (std::type_info* t = abi::__cxa_current_exception_type(); t != nullptr) {
    int status = 0;
    demangled = abi::__cxa_demangle(t->name(), nullptr, nullptr, &status);
    type = status == 0 && demangled != nullptr ? demangled : t->name();
  }
  try {
    throw;
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
  }
  fatal("green::go", "uncaught exception in green thread %llu (spawned at %s:%u): %s: %s",
        static_cast<unsigned long long>(g->id), g->spawn_file, g->spawn_line, type, what);
}

// First code a G runs, on its own stack.
void green_entry(Transfer t) {
  // Not t.data: a G started by a direct switch gets no meaningful t (enter_green_thread).
  Machine* m = current_machine();
  GreenThread* g = m->curg;
  enter_green_thread(t, m, g);
  try {
    g->entry(g->closure);
  } catch (...) {
    fatal_uncaught_exception(g);
  }
  destroy_green_locals(g);
  SwitchRequest req{SwitchRequest::kExit};
  switch_to_scheduler(g, &req);
  GREEN_FATAL("dead green thread %llu was resumed", static_cast<unsigned long long>(g->id));
}

// Pushes the chain head..(size Gs) as one batch on the global free list.
void push_free_batch(GreenThread* head, int size) {
  head->free_batch_size = size;
  SpinLockGuard guard(sched.free_lock);
  head->free_batch_next = sched.free_batches;
  sched.free_batches = head;
}

GreenThread* pop_free_batch() {
  SpinLockGuard guard(sched.free_lock);
  GreenThread* head = sched.free_batches;
  if (head != nullptr) sched.free_batches = head->free_batch_next;
  return head;
}

GreenThread* take_free(Processor* p) {
  if (p == nullptr) {
    // A plain thread spawning: take a whole batch's head, give the rest back.
    GreenThread* head = pop_free_batch();
    if (head != nullptr && head->sched_link != nullptr) {
      push_free_batch(head->sched_link, head->free_batch_size - 1);
    }
    return head;
  }
  if (p->free_gs == nullptr) {
    // Refill with one batch from the global list (Go's gfget).
    if (GreenThread* head = pop_free_batch(); head != nullptr) {
      p->free_gs = head;
      p->free_count = head->free_batch_size;
    }
  }
  GreenThread* g = p->free_gs;
  if (g != nullptr) {
    p->free_gs = g->sched_link;
    --p->free_count;
  }
  return g;
}

GreenThread* take_sized(std::size_t size) {
  SizedFreeLists& lists = sized_free_lists();
  const int c = size_class(size);
  SpinLockGuard guard(lists.lock);
  GreenThread* g = lists.heads[c];
  if (g != nullptr) lists.heads[c] = g->sched_link;
  return g;
}

// Returns whether `g` went to a sized list; false for a size no spawn can ask for (an earlier
// run's default): such a G stays idle in its slab, trimmed, and is never reused.
bool push_sized(GreenThread* g) {
  const int c = size_class(g->stack.size());
  if (c < 0) return false;
  SizedFreeLists& lists = sized_free_lists();
  SpinLockGuard guard(lists.lock);
  g->sched_link = lists.heads[c];
  lists.heads[c] = g;
  return true;
}

// ASan: a recycled stack keeps the shadow of its last green thread's frames that never
// returned (the exit path's, down to its last saved context, which lowest_sp covers): their
// redzones would lie where the next one builds its closure and frames.
void unpoison_recycled_stack(GreenThread* g) {
#if defined(GREEN_ASAN)
  char* from = std::max(g->stack.lo, g->lowest_sp - 256);
  __asan_unpoison_memory_region(from, static_cast<std::size_t>(reinterpret_cast<char*>(g) - from));
#else
  (void)g;
#endif
}

void trim_to_threshold(GreenThread* g) {
  trim_stack(g->stack, g->stack.hi - sched.options.stack_shrink_threshold);
}

}  // namespace

const char* status_name(GStatus status) {
  switch (status) {
    case GStatus::kIdle:
      return "idle";
    case GStatus::kRunnable:
      return "runnable";
    case GStatus::kRunning:
      return "running";
    case GStatus::kWaiting:
      return "waiting";
    case GStatus::kDead:
      return "dead";
  }
  return "?";
}

#if GREEN_CHECKS
void set_status_checked(GreenThread* g, GStatus from, GStatus to, std::memory_order order,
                        const char* caller) {
  const GStatusEdge edge = status_edge(from, to);
  if (edge == GStatusEdge::kIllegal || (edge == GStatusEdge::kOnlyStopped && green::running())) {
    fatal(caller, "green thread %llu: illegal status transition %s -> %s",
          static_cast<unsigned long long>(g->id), status_name(from), status_name(to));
  }
  GStatus seen = from;
  if (!g->status.compare_exchange_strong(seen, to, order, std::memory_order_relaxed)) {
    fatal(caller, "green thread %llu: status %s -> %s, but it is %s (a double wake-up?)",
          static_cast<unsigned long long>(g->id), status_name(from), status_name(to),
          status_name(seen));
  }
}
#endif

GreenThread* allocate_green_thread(Processor* p, std::size_t closure_size,
                                   std::size_t closure_align, void** closure_out) {
  const std::size_t size = requested_stack_size;  // 0: the default size
  GreenThread* g = size == 0 ? take_free(p) : take_sized(size);
  if (g == nullptr) {
    // The control block is constructed under the slab lock (see allocate_stack): the dump
    // walks every handed-out slot from any thread.
    Stack s = allocate_stack(size != 0 ? size : sched.options.stack_size,
                             [](char* hi) { ::new (green_thread_at(hi)) GreenThread(); });
    g = green_thread_at(s.hi);
    g->stack = s;
    sanitizer_create_fiber(g);
  } else {
    unpoison_recycled_stack(g);
  }
  g->lowest_sp = g->stack.hi;
  // The closure sits just below the control block; the first frame below the closure.
  // Aligned down by subtracting from a char* (no integer-to-pointer cast: the pointer keeps
  // its provenance, and the optimizer its knowledge of it).
  if (closure_align < 16) closure_align = 16;
  char* top = reinterpret_cast<char*>(g) - closure_size;
  top -= reinterpret_cast<uintptr_t>(top) & (closure_align - 1);
  g->closure = top;
  *closure_out = g->closure;
  return g;
}

GreenThread* new_green_thread(std::size_t closure_size, std::size_t closure_align,
                              void (*entry)(void*), void** closure_out, const SpawnSite& where,
                              std::size_t stack_size) {
  if (stack_size == 0) {
    return new_green_thread(closure_size, closure_align, entry, closure_out, where);
  }
  if (stack_size > std::size_t{1} << kMaxStackShift) {
    fatal("green::go", "at %s:%u asked for a %zu-byte stack; the most is 1 GiB (Go's limit)",
          where.file_name(), static_cast<unsigned>(where.line_number()), stack_size);
  }
  std::size_t size = std::bit_ceil(std::max(stack_size, std::size_t{1} << kMinStackShift));
  if (size == sched.options.stack_size) size = 0;  // the default's lists are faster
  requested_stack_size = size;
  GreenThread* g = new_green_thread(closure_size, closure_align, entry, closure_out, where);
  requested_stack_size = 0;
  return g;
}

void prepare_entry(GreenThread* g) {
  char* top = static_cast<char*>(g->closure);
  top -= reinterpret_cast<uintptr_t>(top) & 63;
  g->ctx = make_green_context(top, g, &green_entry);
}

void free_green_thread(Processor* p, GreenThread* g) {
  set_status<std::memory_order_release>(g, GStatus::kDead, GStatus::kIdle);
  g->closure = nullptr;
  g->entry = nullptr;
  g->is_main = false;
  g->saved_errno = 0;
  g->exception_state = ExceptionState{};
  // Trim stacks known to have gone deep (a switch happened below the threshold), and check
  // every kTrimEvery-th one regardless (one mincore), to catch stacks that went deep between
  // switches.
  const char* threshold = g->stack.hi - sched.options.stack_shrink_threshold;
  if (g->lowest_sp < threshold || (p != nullptr && ++p->recycle_count % kTrimEvery == 0)) {
    trim_to_threshold(g);
  }
  if (g->stack.size() != sched.options.stack_size) {
    if (!push_sized(g)) trim_stack(g->stack, reinterpret_cast<char*>(g));
    return;
  }
  if (p == nullptr) {
    g->sched_link = nullptr;
    push_free_batch(g, 1);
    return;
  }
  g->sched_link = p->free_gs;
  p->free_gs = g;
  if (++p->free_count < kFreeCacheMax) return;
  // Spill half to the global list, so Gs freed on one P can be reused by another. The oldest
  // half goes: the most recently freed stay, hot in this P's cache.
  GreenThread* keep_tail = p->free_gs;
  for (int i = 1; i < kFreeCacheMax / 2; ++i) keep_tail = keep_tail->sched_link;
  GreenThread* spill = keep_tail->sched_link;
  keep_tail->sched_link = nullptr;
  const int spilled = p->free_count - kFreeCacheMax / 2;
  p->free_count = kFreeCacheMax / 2;
  push_free_batch(spill, spilled);
}

void reclaim_abandoned_green_threads() {
  for_each_stack_top(
      [](char* top, void*) {
        GreenThread* g = green_thread_at(top);
        GStatus s = g->status.load(std::memory_order_acquire);
        if (s == GStatus::kIdle) return;
        g->locals = nullptr;  // leaked with the abandoned G's closure, like its other state
#if defined(GREEN_ASAN)
        // Frames that never returned left poisoned redzones behind.
        __asan_unpoison_memory_region(
            g->stack.lo, static_cast<std::size_t>(reinterpret_cast<char*>(g) - g->stack.lo));
#endif
        g->lowest_sp = g->stack.lo;        // force a full trim
        set_status(g, s, GStatus::kDead);  // abandoned: it will not run again
        free_green_thread(nullptr, g);
      },
      nullptr);
}

// ---- green-thread-local storage ----
namespace {
struct GlsKeys {
  SpinLock lock{LockRank::kGreenLocals};
  bool used[kMaxGreenLocals] GREEN_GUARDED_BY(lock) = {};
  void (*destroy[kMaxGreenLocals])(void*) GREEN_GUARDED_BY(lock) = {};
};
GlsKeys& gls_keys() {
  static GlsKeys keys;
  return keys;
}
GreenThread* gls_owner() {
  GreenThread* g = current_green_thread();
  if (g == nullptr) fatal("green::GreenLocal::get", "GreenLocal used outside a green thread");
  return g;
}
}  // namespace

int gls_key_create(void (*destroy)(void*)) {
  GlsKeys& k = gls_keys();
  SpinLockGuard guard(k.lock);
  for (int i = 0; i < kMaxGreenLocals; ++i) {
    if (!k.used[i]) {
      k.used[i] = true;
      k.destroy[i] = destroy;
      return i;
    }
  }
  fatal("green::GreenLocal", "more than %d GreenLocal objects", kMaxGreenLocals);
}

void gls_key_delete(int key) {
  GlsKeys& k = gls_keys();
  SpinLockGuard guard(k.lock);
  k.used[key] = false;
  k.destroy[key] = nullptr;
}

void* gls_get(int key) {
  GreenThread* g = gls_owner();
  return g->locals != nullptr ? g->locals[key] : nullptr;
}

void gls_set(int key, void* value) {
  GreenThread* g = gls_owner();
  if (g->locals == nullptr) g->locals = new void*[kMaxGreenLocals]();
  g->locals[key] = value;
}

void destroy_green_locals(GreenThread* g) {
  if (g->locals == nullptr) return;
  GlsKeys& k = gls_keys();
  for (int i = 0; i < kMaxGreenLocals; ++i) {
    if (g->locals[i] == nullptr) continue;
    void (*destroy)(void*);
    {
      SpinLockGuard guard(k.lock);
      destroy = k.destroy[i];
    }
    void* value = g->locals[i];
    g->locals[i] = nullptr;
    if (destroy != nullptr) destroy(value);
  }
  delete[] g->locals;
  g->locals = nullptr;
}

}  // namespace green::detail
