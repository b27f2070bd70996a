// Stacks: lazily committed, guard-paged reservations carved from large slabs.
//
// "Growable" in C++ means lazily committed: each G reserves `stack_size` of address space with a
// guard page below it; the kernel commits pages on first touch, so a G costs one page until it
// goes deeper. Stacks are cut from slabs of kSlotsPerSlab slots so the number of memory mappings
// (vm.max_map_count, 65530 by default) stays small: with MADV_GUARD_INSTALL (Linux >= 6.13) a
// guard page is a page-table marker and costs no mapping, so a million stacks take about 4,000
// mappings. On older kernels guards fall back to mprotect(PROT_NONE), which splits a slab into
// two mappings per stack: about 32,000 live green threads under the default limit
// (raise vm.max_map_count to go further).
//
// Trimming: when a recycled stack has committed pages deeper than the shrink threshold, those
// pages are returned with MADV_DONTNEED (see StackPool::trim).
//
// Overflow: a SIGSEGV handler on an alternate signal stack recognises a touch of the current G's
// guard page, prints "green thread N overflowed its 256 KiB stack" and aborts.
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
Stack allocate_stack(std::size_t size);

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
