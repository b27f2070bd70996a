// fatal(): the one way the runtime stops the process on a broken invariant (Go's throw).
//
// A runtime bug (a run queue that overflows, a G resumed after it died, an illegal G status
// transition) must stop the process at once: carrying on would corrupt memory somewhere else,
// later, where nobody can tell why. fatal() prints one line
//
//   greenrt: fatal: <function>: <message> (G <id> <status>, P <id>, M <id>)
//
// naming the G, P and M of the calling thread ("none" for each it lacks: g0 has no G, a plain
// thread has none of the three), then calls std::abort() (a core dump, and a death test's
// expected end). User misuse that the runtime can only detect at run time (GreenLocal outside a
// green thread, a negative WaitGroup counter) ends the same way, with a message that says what
// the user did and the public function's name in place of the internal one.
//
// Safe anywhere: on a G, on g0, on a plain thread, in a signal handler, under any SpinLock. It
// takes no lock and allocates nothing: the message is formatted into a buffer on the caller's
// stack (vsnprintf; the conversions the runtime uses, %s %d %u %llu %zu, neither allocate nor
// lock in glibc) and written with one write(2), so two threads failing at once print whole
// lines. A fatal() inside fatal() (a fault while printing) aborts without printing again.
#pragma once

namespace green::detail {

// printf-style. `function` names where the invariant broke: pass __func__ (GREEN_FATAL does),
// or a public API name for user misuse ("green::GreenLocal::get").
[[noreturn, gnu::cold, gnu::format(printf, 2, 3)]] void fatal(const char* function,
                                                              const char* format, ...);

}  // namespace green::detail

// GREEN_FATAL("queue of P%d overflows", p->id): fatal() naming the enclosing function. A macro
// only because __func__ must be expanded at the call site.
#define GREEN_FATAL(...) ::green::detail::fatal(__func__, __VA_ARGS__)
