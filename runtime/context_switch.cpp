// Context switches with the per-switch state fcontext does not carry. See context_switch.h.
#include "runtime/context_switch.h"

#include <cxxabi.h>
#include <signal.h>

#include <cerrno>

#include "runtime/green_thread.h"
#include "runtime/machine.h"
#include "runtime/sanitizers.h"

#if defined(GREEN_ASAN)
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(GREEN_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

namespace green::detail {
namespace bctx = boost::context::detail;

namespace {

// glibc declares __errno_location and libstdc++ declares __cxa_get_globals
// __attribute__((const)): the compiler may compute their (thread-specific) result once per
// function and reuse it across a switch, after which the G runs on another thread. noipa keeps
// every call real.
[[GREEN_NOIPA]] int* errno_address() { return &errno; }
[[GREEN_NOIPA]] ExceptionState* exception_state_address() {
  return reinterpret_cast<ExceptionState*>(abi::__cxa_get_globals());
}

// Called on the G's stack just before it leaves m's thread. The addresses were taken once on
// that thread (init_machine_context): no TLS lookup per switch.
inline void save_thread_state(GreenThread* g, Machine* m) {
  g->saved_errno = *m->errno_ptr;
  ExceptionState* eh = m->exception_state_ptr;
  g->exception_state = *eh;
  *eh = ExceptionState{};
}

// Called on the G's stack right after it arrives on m's thread (possibly another one).
inline void restore_thread_state(GreenThread* g, Machine* m) {
  *m->errno_ptr = g->saved_errno;
  *m->exception_state_ptr = g->exception_state;
}

#if GREEN_TSAN
// TSan runs an asynchronous signal's handler late: its own handler marks the signal pending on
// the thread state it interrupted, and the user's handler runs on the way out of the next
// interceptor called on that same state. Under M:N that state is a fiber, and a signal that
// lands while a green thread is on its way to park is left pending on a fiber that may never
// run again: SIGINT sent to examples/chat just as its subscriber parked was lost 1 run in 35
// under TSan (Examples.chat in CI; the parked subscriber's fiber was found holding it). So
// asynchronous signals are blocked across the fiber switch: the blocking call (an interceptor)
// first runs whatever is pending on the fiber we leave, and the unblocking call, made on the
// fiber we go to, takes whatever arrived meanwhile and runs it there. Two system calls per
// switch, in TSan builds only.
void switch_tsan_fiber(void* to) {
  sigset_t async;
  sigfillset(&async);
  for (int sig : {SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGTRAP, SIGABRT, SIGSYS})
    sigdelset(&async, sig);
  sigset_t before;
  pthread_sigmask(SIG_BLOCK, &async, &before);
  __tsan_switch_to_fiber(to, 0);
  pthread_sigmask(SIG_SETMASK, &before, nullptr);
}
#endif

// Where a suspended G continues, whoever resumed it: g0 (t = {g0's context, its Machine}) or
// another G's direct switch (its on_top returned the same pair).
Machine* resumed(GreenThread* g, Transfer t) {
  auto* nm = static_cast<Machine*>(t.data);
  nm->g0_ctx = t.fctx;
  if (nm->arrived_directly) {
    nm->arrived_directly = false;  // on_top finished the sanitizer's switch
  } else {
#if GREEN_ASAN
    __sanitizer_finish_switch_fiber(g->asan_fake_stack, &nm->g0_stack_bottom, &nm->g0_stack_size);
#endif
  }
  restore_thread_state(g, nm);
  return nm;
}

}  // namespace

void* make_green_context(char* top, GreenThread* g, void (*fn)(Transfer)) {
  return bctx::make_fcontext(top, static_cast<std::size_t>(top - g->stack.lo), fn);
}

void sanitizer_create_fiber(GreenThread* g) {
#if GREEN_TSAN
  if (g->tsan_fiber == nullptr) g->tsan_fiber = __tsan_create_fiber(0);
#else
  (void)g;
#endif
}

void init_machine_context(Machine* m) {
  m->errno_ptr = errno_address();
  m->exception_state_ptr = exception_state_address();
#if GREEN_TSAN
  m->tsan_fiber = __tsan_get_current_fiber();
#endif
}

void* resume_green_thread(Machine* m, GreenThread* g) {
#if GREEN_TSAN
  switch_tsan_fiber(g->tsan_fiber);
#endif
#if GREEN_ASAN
  __sanitizer_start_switch_fiber(&m->asan_fake_stack, g->stack.lo, g->stack.size());
#endif
  Transfer t = bctx::jump_fcontext(g->ctx, m);
#if GREEN_ASAN
  __sanitizer_finish_switch_fiber(m->asan_fake_stack, nullptr, nullptr);
#endif
  // The G that switched back: g, or one g handed the M to with switch_green_to_green().
  m->curg->ctx = t.fctx;
  return t.data;
}

Machine* switch_green_to_green(GreenThread* g, Machine* m, GreenThread* next, void* arg,
                               Transfer (*on_top)(Transfer), bool exiting) {
  save_thread_state(g, m);
#if GREEN_TSAN
  switch_tsan_fiber(next->tsan_fiber);
#endif
#if GREEN_ASAN
  __sanitizer_start_switch_fiber(exiting ? nullptr : &g->asan_fake_stack, next->stack.lo,
                                 next->stack.size());
#else
  (void)exiting;
#endif
  return resumed(g, bctx::ontop_fcontext(next->ctx, arg, on_top));
}

void arrive_green_to_green(Machine* m) {
#if GREEN_ASAN
  // Finish the switch before on_top runs more code on the new stack.
  __sanitizer_finish_switch_fiber(m->curg->asan_fake_stack, nullptr, nullptr);
#endif
  // Tells the resume point that next returns to (resumed() or, for a G that never ran,
  // enter_green_thread()) how it was entered.
  m->arrived_directly = true;
}

Machine* suspend_green_thread(GreenThread* g, Machine* m, void* request, bool exiting) {
  save_thread_state(g, m);
#if GREEN_TSAN
  switch_tsan_fiber(m->tsan_fiber);
#endif
#if GREEN_ASAN
  __sanitizer_start_switch_fiber(exiting ? nullptr : &g->asan_fake_stack, m->g0_stack_bottom,
                                 m->g0_stack_size);
#else
  (void)exiting;
#endif
  return resumed(g, bctx::jump_fcontext(m->g0_ctx, request));  // possibly on another M
}

void enter_green_thread(Transfer t, Machine* m, GreenThread* g) {
  if (m->arrived_directly) {
    // Started by a direct switch: make_fcontext's trampoline called us with whatever on_top
    // left in the argument registers, so t is meaningless; m->g0_ctx is already right.
    m->arrived_directly = false;
  } else {
    m->g0_ctx = t.fctx;
#if GREEN_ASAN
    __sanitizer_finish_switch_fiber(nullptr, &m->g0_stack_bottom, &m->g0_stack_size);
#endif
  }
  restore_thread_state(g, m);
}

}  // namespace green::detail
