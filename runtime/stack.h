// Stacks: lazily committed, guard-paged reservations carved from large slabs.
//
// "Growable" in C++ means lazily committed: a stack cannot move (pointers into it are
// everywhere), so each G reserves its whole stack up front, 8 MiB by default (a pthread's
// default; Go's stacks move and grow to 1 GB), with a guard page below it. The reservation is
// MAP_NORESERVE: it is address space, not memory, and is charged to nobody (under overcommit
// modes 0 and 1; mode 2, strict accounting, ignores MAP_NORESERVE and charges every
// reservation in full, so there a smaller Options::stack_size is needed). The kernel commits a
// page on first touch, so a G costs one page until it goes deeper: 1,000,000 parked Gs reserve
// 8 TiB of the 128 TiB that 47 bits give a process, and touch 4 GiB.
//
// The price of spacing stacks 8 MiB apart is page tables: a page-table page maps 2 MiB, so
// each G whose top page is resident needs one of its own (4 KiB, counted in VmPTE, not in
// RSS), where 256 KiB stacks shared one among eight. A parked G therefore costs its top page
// plus a page-table page; a per-spawn SpawnOptions::stack_size of 256 KiB or less brings back
// the shared page tables for Gs that never go deep.
//
// Slabs: stacks are cut from slabs of up to kMaxSlotsPerSlab slots of one size (at most
// kMaxSlabBytes each), so the number of memory mappings (vm.max_map_count, 65530 by default)
// stays small: with MADV_GUARD_INSTALL (Linux >= 6.13) a guard page is a page-table marker and
// costs no mapping, so a million 8 MiB stacks take at most ~3,900 mappings (fewer: the kernel
// merges adjacent slabs). On older kernels guards fall back to mprotect(PROT_NONE), which splits
// a slab into two mappings per stack, whatever the stack size: about 32,000 live green threads
// under the default limit; beyond that the slab's mprotect fails and the process aborts naming
// vm.max_map_count, which the user raises (sysctl vm.max_map_count=2200000 for a million).
//
// Sizes: every stack of a slab has the same size; the default size's Gs are recycled through
// the per-P and global free lists, every other size (per-spawn, a power of two) through a list
// of its own, so a dead G is only ever reused for a spawn that asked for its stack's size.
//
// Trimming: when a recycled stack has committed pages deeper than the shrink threshold, those
// pages are returned with MADV_DONTNEED (see trim_stack); the cost does not depend on the
// reservation (one mincore of at most 64 pages below the threshold, then one madvise, which
// skips the unpopulated 2 MiB ranges of a large stack at the page-table level).
//
// Overflow: a SIGSEGV handler on an alternate signal stack recognises a touch of the current G's
// guard page, prints "green thread N overflowed its 8 MiB stack" and aborts.
#pragma once

#include <cstddef>
#include <cstdint>

namespace green::detail {

struct Stack {
  char* lo = nullptr;  // lowest usable byte (just above the guard page)
  char* hi = nullptr;  // one past the highest byte
  std::size_t size() const { return static_cast<std::size_t>(hi - lo); }
};

std::size_t page_size();

// True when guard pages use MADV_GUARD_INSTALL (no mapping per stack).
bool stack_guards_are_markers();

// Reserves one stack of `size` usable bytes (a multiple of the page size) with its guard page.
// Thread-safe. Aborts with a message if the address space or mapping budget is exhausted.
// `init_top(hi)`, if given, runs under the slab registry's lock as the slot is handed out, so
// that for_each_stack_top(), which walks every handed-out slot, never reads a control block
// while it is being constructed (a data race a dump on another thread would otherwise hit).
Stack allocate_stack(std::size_t size, void (*init_top)(char* hi) = nullptr);

// Bytes of `s` that are committed (resident) now: mincore(2) over the whole stack.
std::size_t committed_bytes(const Stack& s);

// Returns committed pages of `s` below `keep_from` (an address inside s) to the kernel, if any
// are committed. Cheap check first (mincore), so calling it on a shallow stack costs one syscall.
void trim_stack(const Stack& s, const char* keep_from);

// Installs the SIGSEGV overflow reporter (idempotent) and an alternate signal stack for the
// calling thread (if it has none).
void install_overflow_handler();
void ensure_signal_stack();
// Removes the alternate signal stack ensure_signal_stack() installed on this thread, if any.
void release_signal_stack();

// Calls f(g_block_address) for every stack slot handed out so far, in every pool; used by
// dumps and by run()'s final sweep. `f` must not allocate stacks.
void for_each_stack_top(void (*f)(char* top, void* arg), void* arg);

}  // namespace green::detail
