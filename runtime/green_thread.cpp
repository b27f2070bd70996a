// GreenThread lifecycle: allocation with its stack, entry, exit, recycling, green-thread-local
// storage. See green_thread.h.
#include "runtime/green_thread.h"

#include <cxxabi.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <mutex>

#include "runtime/context.h"
#include "runtime/scheduler.h"

#if defined(__SANITIZE_ADDRESS__)
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

std::size_t control_block_size() { return (sizeof(GreenThread) + 63) & ~std::size_t{63}; }

GreenThread* block_at(char* top) {
  return reinterpret_cast<GreenThread*>(top - control_block_size());
}

[[noreturn]] void die_uncaught(GreenThread* g) {
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
  std::fprintf(stderr,
               "greenrt: fatal: uncaught exception in green thread %llu (spawned at %s:%u): "
               "%s: %s\n",
               static_cast<unsigned long long>(g->id), g->spawn_file, g->spawn_line, type, what);
  std::fflush(stderr);
  std::free(demangled);
  std::abort();
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
    die_uncaught(g);
  }
  destroy_green_locals(g);
  SwitchRequest req{SwitchRequest::kExit};
  switch_to_scheduler(g, &req);
  std::fprintf(stderr, "greenrt: fatal: dead green thread %llu was resumed\n",
               static_cast<unsigned long long>(g->id));
  std::abort();
}

// Pushes the chain head..(size Gs) as one batch on the global free list.
void push_free_batch(GreenThread* head, int size) {
  head->free_batch_size = size;
  std::lock_guard<SpinLock> guard(sched.free_lock);
  head->free_batch_next = sched.free_batches;
  sched.free_batches = head;
}

GreenThread* pop_free_batch() {
  std::lock_guard<SpinLock> guard(sched.free_lock);
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

// ASan: a recycled stack keeps the shadow of its last green thread's frames that never
// returned (the exit path's, down to its last saved context, which lowest_sp covers): their
// redzones would lie where the next one builds its closure and frames.
void unpoison_recycled_stack(GreenThread* g) {
#if defined(__SANITIZE_ADDRESS__)
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
    case GStatus::kIdle: return "idle";
    case GStatus::kRunnable: return "runnable";
    case GStatus::kRunning: return "running";
    case GStatus::kWaiting: return "waiting";
    case GStatus::kDead: return "dead";
  }
  return "?";
}

GreenThread* allocate_green_thread(Processor* p, std::size_t closure_size,
                                   std::size_t closure_align, void** closure_out) {
  GreenThread* g = take_free(p);
  if (g == nullptr) {
    Stack s = allocate_stack(sched.options.stack_size);
    g = ::new (block_at(s.hi)) GreenThread();
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

void prepare_entry(GreenThread* g) {
  char* top = static_cast<char*>(g->closure);
  top -= reinterpret_cast<uintptr_t>(top) & 63;
  g->ctx = make_green_context(top, g, &green_entry);
}

void free_green_thread(Processor* p, GreenThread* g) {
  g->status.store(GStatus::kIdle, std::memory_order_release);
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
        GreenThread* g = block_at(top);
        GStatus s = g->status.load(std::memory_order_acquire);
        if (s == GStatus::kIdle) return;
        if (g->stack.size() != sched.options.stack_size) return;
        g->locals = nullptr;  // leaked with the abandoned G's closure, like its other state
#if defined(__SANITIZE_ADDRESS__)
        // Frames that never returned left poisoned redzones behind.
        __asan_unpoison_memory_region(g->stack.lo,
                                      static_cast<std::size_t>(reinterpret_cast<char*>(g) -
                                                               g->stack.lo));
#endif
        g->lowest_sp = g->stack.lo;  // force a full trim
        free_green_thread(nullptr, g);
      },
      nullptr);
}

// ---- green-thread-local storage ----
namespace {
struct GlsKeys {
  SpinLock lock;
  bool used[kMaxGreenLocals] = {};
  void (*destroy[kMaxGreenLocals])(void*) = {};
};
GlsKeys& gls_keys() {
  static GlsKeys keys;
  return keys;
}
GreenThread* gls_owner() {
  GreenThread* g = current_green_thread();
  if (g == nullptr) {
    std::fprintf(stderr, "greenrt: fatal: GreenLocal used outside a green thread\n");
    std::abort();
  }
  return g;
}
}  // namespace

int gls_key_create(void (*destroy)(void*)) {
  GlsKeys& k = gls_keys();
  std::lock_guard<SpinLock> guard(k.lock);
  for (int i = 0; i < kMaxGreenLocals; ++i) {
    if (!k.used[i]) {
      k.used[i] = true;
      k.destroy[i] = destroy;
      return i;
    }
  }
  std::fprintf(stderr, "greenrt: fatal: more than %d GreenLocal objects\n", kMaxGreenLocals);
  std::abort();
}

void gls_key_delete(int key) {
  GlsKeys& k = gls_keys();
  std::lock_guard<SpinLock> guard(k.lock);
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
      std::lock_guard<SpinLock> guard(k.lock);
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
