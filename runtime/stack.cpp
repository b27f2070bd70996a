// Stack slabs, guard pages, trimming and the overflow reporter. See stack.h.
#include "runtime/stack.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <vector>

#include "green/detail/spin_lock.h"
#include "green/green.h"
#include "runtime/fatal.h"
#include "runtime/green_thread.h"
#include "runtime/machine.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102  // Linux 6.13 uapi; Debian 12's headers predate it.
#endif

namespace green::detail {
namespace {

// Slots per slab: 256 stacks of 8 MiB + guard is a 2 GiB mapping, so a million stacks need
// ~3,900 mappings. Larger stacks get fewer slots, so that a size used by a handful of spawns
// does not reserve 256 of them: a slab is at most kMaxSlabBytes (a 1 GiB stack gets 3 slots).
// Address space is plentiful (47 bits); physical memory is only what is touched.
constexpr std::size_t kMaxSlotsPerSlab = 256;
constexpr std::size_t kMaxSlabBytes = std::size_t{4} << 30;

std::size_t slots_for(std::size_t slot_size) {
  return std::clamp<std::size_t>(kMaxSlabBytes / slot_size, 1, kMaxSlotsPerSlab);
}

struct Slab {
  char* base;
  std::size_t slot_size;  // guard page + stack
  std::size_t slots;      // slot_size * slots bytes mapped
  std::size_t used;       // slots handed out (bump allocation; slots are reused via G lists)
};

// A slab per size has free slots (the newest of that size); `open` finds it without a walk
// over thousands of full slabs. More sizes than entries: the oldest entry's slab is forgotten,
// its unused slots stay reserved, unused (address space only).
constexpr int kOpenSlabs = 16;

struct SlabRegistry {
  SpinLock lock{LockRank::kStackRegistry};
  std::vector<Slab> slabs GREEN_GUARDED_BY(lock);  // never shrinks: stacks are type-stable memory
  std::size_t open[kOpenSlabs] GREEN_GUARDED_BY(lock) = {};  // indices into slabs, + 1 (0: empty)
  int next_open GREEN_GUARDED_BY(lock) = 0;  // round-robin victim when every entry is taken
};

SlabRegistry& registry() {
  static SlabRegistry r;
  return r;
}

// Under r.lock: a free slot of `slot_size` from an open slab, or null.
char* take_slot_locked(SlabRegistry& r, std::size_t slot_size) GREEN_REQUIRES(r.lock) {
  for (std::size_t& entry : r.open) {
    if (entry == 0) continue;
    Slab& slab = r.slabs[entry - 1];
    if (slab.slot_size != slot_size) continue;
    char* slot = slab.base + slab.used++ * slot_size;
    if (slab.used == slab.slots) entry = 0;  // full: nothing more to find here
    return slot;
  }
  return nullptr;
}

// Under r.lock: records a fresh slab whose first slot the caller takes.
void add_slab_locked(SlabRegistry& r, char* base, std::size_t slot_size, std::size_t slots)
    GREEN_REQUIRES(r.lock) {
  r.slabs.push_back(Slab{base, slot_size, slots, 1});
  if (slots == 1) return;
  std::size_t* entry = nullptr;
  for (std::size_t& e : r.open) {
    if (e == 0) {
      entry = &e;
      break;
    }
  }
  if (entry == nullptr) {
    entry = &r.open[r.next_open];
    r.next_open = (r.next_open + 1) % kOpenSlabs;
  }
  *entry = r.slabs.size();
}

std::atomic<int> guard_mode{0};  // 0 unknown, 1 markers (MADV_GUARD_INSTALL), 2 mprotect

void install_guard(char* page) {
  int mode = guard_mode.load(std::memory_order_relaxed);
  if (mode != 2) {
    if (madvise(page, page_size(), MADV_GUARD_INSTALL) == 0) {
      guard_mode.store(1, std::memory_order_relaxed);
      return;
    }
    // NOLINTNEXTLINE(concurrency-mt-unsafe): thread-safe in glibc (.clang-tidy)
    if (errno != EINVAL) GREEN_FATAL("madvise(MADV_GUARD_INSTALL): %s", std::strerror(errno));
    guard_mode.store(2, std::memory_order_relaxed);  // kernel < 6.13
  }
  if (mprotect(page, page_size(), PROT_NONE) != 0) {
    GREEN_FATAL(
        "mprotect(guard page): %s (raise vm.max_map_count: each mprotect guard costs 2 "
        "mappings)",
        // NOLINTNEXTLINE(concurrency-mt-unsafe): thread-safe in glibc (.clang-tidy)
        std::strerror(errno));
  }
}

}  // namespace

std::size_t page_size() {
  static const std::size_t size = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return size;
}

bool stack_guards_are_markers() { return guard_mode.load(std::memory_order_relaxed) == 1; }

Stack allocate_stack(std::size_t size, void (*init_top)(char* hi)) {
  const std::size_t slot_size = size + page_size();
  SlabRegistry& r = registry();
  char* slot = nullptr;
  {
    SpinLockGuard guard(r.lock);
    slot = take_slot_locked(r, slot_size);
    // Under the lock that for_each_stack_top() snapshots the slabs under: a walker (a dump on
    // any thread) that sees this slot counted also sees what init_top wrote there.
    if (slot != nullptr && init_top != nullptr) init_top(slot + slot_size);
  }
  if (slot == nullptr) {
    // MAP_NORESERVE: the reservation is not charged against overcommit; pages are committed
    // (and charged) only when touched. Outside the lock: mmap takes the process's mmap lock.
    const std::size_t slots = slots_for(slot_size);
    void* base = mmap(nullptr, slot_size * slots, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) {
      GREEN_FATAL(
          "mmap(stack slab): %s (address space exhausted, or vm.overcommit_memory=2: "
          "lower green::Options::stack_size)",
          // NOLINTNEXTLINE(concurrency-mt-unsafe): thread-safe in glibc (.clang-tidy)
          std::strerror(errno));
    }
    // A transparent huge page would commit 2 MiB for a G that needs 4 KiB.
    madvise(base, slot_size * slots, MADV_NOHUGEPAGE);
    SpinLockGuard guard(r.lock);
    add_slab_locked(r, static_cast<char*>(base), slot_size, slots);
    slot = static_cast<char*>(base);
    if (init_top != nullptr) init_top(slot + slot_size);  // as above
  }
  install_guard(slot);
  return Stack{slot + page_size(), slot + slot_size};
}

std::size_t committed_bytes(const Stack& s) {
  const std::size_t page = page_size();
  unsigned char resident[256];
  std::size_t pages = 0;
  for (char* at = s.lo; at < s.hi;) {
    const std::size_t n = std::min(sizeof resident, static_cast<std::size_t>(s.hi - at) / page);
    if (mincore(at, n * page, resident) != 0) return 0;
    for (std::size_t i = 0; i < n; ++i) pages += resident[i] & 1;
    at += n * page;
  }
  return pages * page;
}

void trim_stack(const Stack& s, const char* keep_from) {
  const std::size_t page = page_size();
  auto end = reinterpret_cast<uintptr_t>(keep_from) & ~(page - 1);
  auto lo = reinterpret_cast<uintptr_t>(s.lo);
  if (end <= lo) return;
  // Look before cutting: MADV_DONTNEED costs a TLB shootdown across every CPU running this
  // process even when nothing in the range is resident; mincore() only reads page tables.
  // Stacks grow down from the top, so the resident pages of the range are at its high end.
  unsigned char resident[64];
  const std::size_t pages = (end - lo) / page;
  const std::size_t probe = pages < sizeof resident ? pages : sizeof resident;
  char* probe_from = s.lo + (end - lo - probe * page);  // from s.lo: keeps its provenance
  if (mincore(probe_from, probe * page, resident) == 0) {
    bool any = false;
    for (std::size_t i = 0; i < probe && !any; ++i) any = (resident[i] & 1) != 0;
    if (!any) return;
  }
  madvise(s.lo, end - lo, MADV_DONTNEED);
}

void for_each_stack_top(void (*f)(char* top, void* arg), void* arg) {
  SlabRegistry& r = registry();
  std::vector<Slab> snapshot;
  {
    SpinLockGuard guard(r.lock);
    snapshot = r.slabs;
  }
  for (const Slab& slab : snapshot) {
    for (std::size_t i = 0; i < slab.used; ++i) f(slab.base + (i + 1) * slab.slot_size, arg);
  }
}

// ---- overflow reporting ----
namespace {

struct sigaction previous_segv;
std::once_flag handler_once;

void on_segv(int sig, siginfo_t* info, void* uctx) {
  Machine* m = current_machine();
  GreenThread* g = m != nullptr ? m->curg : nullptr;
  auto* addr = static_cast<char*>(info->si_addr);
  if (g != nullptr && addr >= g->stack.lo - page_size() && addr < g->stack.lo) {
    // fatal() is async-signal-safe (no lock, no allocation), and we run on the signal stack.
    const std::size_t size = g->stack.size();
    const bool mib = size % (std::size_t{1} << 20) == 0;
    fatal("SIGSEGV",
          "green thread %llu overflowed its %zu %s stack (spawned at %s:%u); raise "
          "green::Options::stack_size, or SpawnOptions::stack_size for this spawn",
          static_cast<unsigned long long>(g->id), mib ? size >> 20 : size >> 10,
          mib ? "MiB" : "KiB", g->spawn_file != nullptr ? g->spawn_file : "?", g->spawn_line);
  }
  // Not ours: hand the fault to whoever was installed before us, or to the default action.
  if ((previous_segv.sa_flags & SA_SIGINFO) != 0 && previous_segv.sa_sigaction != nullptr) {
    previous_segv.sa_sigaction(sig, info, uctx);
    return;
  }
  if (previous_segv.sa_handler != SIG_DFL && previous_segv.sa_handler != SIG_IGN &&
      previous_segv.sa_handler != nullptr) {
    previous_segv.sa_handler(sig);
    return;
  }
  signal(sig, SIG_DFL);  // returning re-executes the access, which now kills the process
}

}  // namespace

void install_overflow_handler() {
  std::call_once(handler_once, [] {
    struct sigaction sa {};
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &previous_segv);
  });
}

namespace {
constexpr std::size_t kSignalStackSize = 64 * 1024;
thread_local void* installed_signal_stack = nullptr;
}  // namespace

void ensure_signal_stack() {
  stack_t current{};
  if (sigaltstack(nullptr, &current) == 0 && (current.ss_flags & SS_DISABLE) == 0) return;
  // One per OS thread that runs green threads; kept for the thread's life (Ms are few).
  const std::size_t size = kSignalStackSize;
  void* mem = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  // NOLINTNEXTLINE(concurrency-mt-unsafe): thread-safe in glibc (.clang-tidy)
  if (mem == MAP_FAILED) GREEN_FATAL("mmap(signal stack): %s", std::strerror(errno));
  stack_t ss{};
  ss.ss_sp = mem;
  ss.ss_size = size;
  // NOLINTNEXTLINE(concurrency-mt-unsafe): thread-safe in glibc (.clang-tidy)
  if (sigaltstack(&ss, nullptr) != 0) GREEN_FATAL("sigaltstack: %s", std::strerror(errno));
  installed_signal_stack = mem;
}

void release_signal_stack() {
  if (installed_signal_stack == nullptr) return;
  stack_t ss{};
  ss.ss_flags = SS_DISABLE;
  sigaltstack(&ss, nullptr);
  munmap(installed_signal_stack, kSignalStackSize);
  installed_signal_stack = nullptr;
}

}  // namespace green::detail

namespace green::this_green_thread {
StackUsage stack_usage() {
  detail::GreenThread* g = detail::current_green_thread();
  if (g == nullptr) return {};
  auto* here = static_cast<char*>(__builtin_frame_address(0));
  return StackUsage{g->stack.size(), static_cast<std::size_t>(g->stack.hi - here),
                    detail::committed_bytes(g->stack)};
}
}  // namespace green::this_green_thread
