// Context switching between g0 (an M's scheduler stack) and green threads, on Boost.Context's
// fcontext (jump_fcontext: ~20 instructions, saves callee-saved registers, FPU control words).
// "Context" here is a saved register set (GreenThread::ctx, Machine::g0_ctx); green::Context,
// the cancellation context, is another thing (include/green/context.h, cancel_context.cpp).
//
// Every switch also carries what fcontext does not:
//   * libstdc++'s exception state (__cxa_eh_globals) and errno, saved per G, because a G may
//     resume on another thread;
//   * AddressSanitizer's and ThreadSanitizer's fiber annotations, so sanitizer builds follow
//     the stack switches (compiled only into sanitizer builds).
//
// Transfer protocol: g0 passes its Machine* to the G it resumes; a G passes a SwitchRequest*
// back to g0. The G learns which M (and which g0 context) it resumed on from that Machine*,
// never from a thread_local cached before the switch. A G may also hand its M straight to
// another G (switch_green_to_green, the scheduler's direct switch): the on_top function then
// passes the same {g0 context, Machine*} pair, and g0 later gets the request of whichever G
// finally switches back to it (m->curg).
#pragma once

#include <boost/context/detail/fcontext.hpp>

namespace green::detail {

struct GreenThread;
struct Machine;

using Transfer = boost::context::detail::transfer_t;

// Builds a context on g's stack (below `top`) that starts in fn(Transfer).
void* make_green_context(char* top, GreenThread* g, void (*fn)(Transfer));

// On g0: runs g until it switches back; returns the data it passed (its SwitchRequest*) and
// stores its saved context in g->ctx.
void* resume_green_thread(Machine* m, GreenThread* g);

// On a G: switches to m's g0 with `request`; returns the Machine the G was resumed on.
// `exiting`: the G will never be resumed (lets ASan release its fake stack).
Machine* suspend_green_thread(GreenThread* g, Machine* m, void* request, bool exiting);

// On a G: switches straight to `next` (already m->curg, its P bookkeeping done) without
// passing through g0. on_top(Transfer{g's saved context, arg}) runs first, on next's stack;
// it must call arrive_green_to_green(m) before anything else and return
// Transfer{m->g0_ctx, m}, what a suspended G expects from any switch (a G that never ran
// ignores it: see enter_green_thread). Returns, like suspend_green_thread, the Machine g is
// later resumed on; `exiting` as there.
Machine* switch_green_to_green(GreenThread* g, Machine* m, GreenThread* next, void* arg,
                               Transfer (*on_top)(Transfer), bool exiting);
void arrive_green_to_green(Machine* m);
// On a G, first thing in its entry function, with m = current_machine(): records g0's
// context and sanitizer state (unless a direct switch started it: then t is meaningless).
void enter_green_thread(Transfer t, Machine* m, GreenThread* g);

// Sanitizer fiber object for a G (a no-op outside TSan builds).
void sanitizer_create_fiber(GreenThread* g);
// On m's own thread, before it runs a G: records that thread's errno and exception-state
// addresses (and its TSan fiber) in m.
void init_machine_context(Machine* m);

}  // namespace green::detail
