// Stack slabs, guard pages, trimming and the overflow reporter. See stack.h.
#include "runtime/stack.h"

#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "green/detail/spin_lock.h"
#include "runtime/green_thread.h"
#include "runtime/machine.h"

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102  // Linux 6.13 uapi; Debian 12's headers predate it.
#endif

namespace green::detail {
namespace {

// Slots per slab: 256 stacks of 256 KiB + guard is a 65 MiB mapping, so a million stacks need
// ~3,900 mappings. Address space is plentiful (47 bits); physical memory is only what is touched.
constexpr std::size_t kSlotsPerSlab = 256;

struct Slab {
  char* base;
  std::size_t slot_size;  // guard page + stack
  std::size_t used;       // slots handed out (bump allocation; slots are reused via G lists)
};

struct SlabRegistry {
  SpinLock lock;
  std::vector<Slab> slabs;  // never shrinks: stacks are type-stable memory
};

SlabRegistry& registry() {
  static SlabRegistry r;
  return r;
}

std::atomic<int> guard_mode{0};  // 0 unknown, 1 markers (MADV_GUARD_INSTALL), 2 mprotect

[[noreturn]] void die(const char* what) {
  // NOLINTNEXTLINE(concurrency-mt-unsafe): thread-safe in glibc (.clang-tidy)
  std::fprintf(stderr, "greenrt: %s: %s\n", what, std::strerror(errno));
  std::abort();
}

void install_guard(char* page) {
  int mode = guard_mode.load(std::memory_order_relaxed);
  if (mode != 2) {
    if (madvise(page, page_size(), MADV_GUARD_INSTALL) == 0) {
      guard_mode.store(1, std::memory_order_relaxed);
      return;
    }
    if (errno != EINVAL) die("madvise(MADV_GUARD_INSTALL)");
    guard_mode.store(2, std::memory_order_relaxed);  // kernel < 6.13
  }
  if (mprotect(page, page_size(), PROT_NONE) != 0) {
    die("mprotect(guard page) (raise vm.max_map_count: each mprotect guard costs 2 mappings)");
  }
}

}  // namespace

std::size_t page_size() {
  static const std::size_t size = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
  return size;
}

bool stack_guards_are_markers() { return guard_mode.load(std::memory_order_relaxed) == 1; }

Stack allocate_stack(std::size_t size) {
  const std::size_t slot_size = size + page_size();
  SlabRegistry& r = registry();
  char* slot = nullptr;
  {
    std::lock_guard<SpinLock> guard(r.lock);
    for (auto it = r.slabs.rbegin(); it != r.slabs.rend(); ++it) {
      if (it->slot_size == slot_size && it->used < kSlotsPerSlab) {
        slot = it->base + it->used++ * slot_size;
        break;
      }
    }
  }
  if (slot == nullptr) {
    // MAP_NORESERVE: the reservation is not charged against overcommit; pages are committed
    // (and charged) only when touched.
    void* base = mmap(nullptr, slot_size * kSlotsPerSlab, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED) die("mmap(stack slab)");
    // A transparent huge page would commit 2 MiB for a G that needs 4 KiB.
    madvise(base, slot_size * kSlotsPerSlab, MADV_NOHUGEPAGE);
    std::lock_guard<SpinLock> guard(r.lock);
    r.slabs.push_back(Slab{static_cast<char*>(base), slot_size, 1});
    slot = static_cast<char*>(base);
  }
  install_guard(slot);
  return Stack{slot + page_size(), slot + slot_size};
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
    std::lock_guard<SpinLock> guard(r.lock);
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

// Formats an unsigned number into buf (async-signal-safe); returns the length.
std::size_t format_unsigned(char* buf, unsigned long long v) {
  char tmp[24];
  std::size_t n = 0;
  do {
    tmp[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v != 0);
  for (std::size_t i = 0; i < n; ++i) buf[i] = tmp[n - 1 - i];
  return n;
}

void append(char* buf, std::size_t* len, std::size_t cap, const char* s) {
  while (*s != '\0' && *len < cap) buf[(*len)++] = *s++;
}

void on_segv(int sig, siginfo_t* info, void* uctx) {
  Machine* m = current_machine();
  GreenThread* g = m != nullptr ? m->curg : nullptr;
  auto* addr = static_cast<char*>(info->si_addr);
  if (g != nullptr && addr >= g->stack.lo - page_size() && addr < g->stack.lo) {
    char msg[512];
    std::size_t len = 0;
    append(msg, &len, sizeof msg, "greenrt: fatal: green thread ");
    len += format_unsigned(msg + len, g->id);
    append(msg, &len, sizeof msg, " overflowed its ");
    len += format_unsigned(msg + len, g->stack.size() / 1024);
    append(msg, &len, sizeof msg, " KiB stack (spawned at ");
    append(msg, &len, sizeof msg - 2, g->spawn_file != nullptr ? g->spawn_file : "?");
    append(msg, &len, sizeof msg - 2, ":");
    if (len < sizeof msg - 24) len += format_unsigned(msg + len, g->spawn_line);
    append(msg, &len, sizeof msg, "); raise green::Options::stack_size\n");
    ssize_t ignored = write(STDERR_FILENO, msg, len);
    (void)ignored;
    std::abort();
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
  if (mem == MAP_FAILED) die("mmap(signal stack)");
  stack_t ss{};
  ss.ss_sp = mem;
  ss.ss_size = size;
  if (sigaltstack(&ss, nullptr) != 0) die("sigaltstack");
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
