// Context: cancellation and deadlines passed down a tree of work, as Go's context package.
//
//   auto [ctx, cancel] = green::with_timeout(green::Context::background(), 100ms);
//   green::select(green::recv_case(ctx.done(), [](auto) {}),      // cancelled or timed out
//                 green::recv_case(results, [&](auto r) { ... }));
//   cancel();  // always call it when the work is over: it releases the deadline's timer
//
// done() is a channel that is closed when the context is cancelled (by its cancel function,
// its parent's cancellation, or its deadline), so it composes with select and with recv()
// (which returns nullopt then). err() says why. Cancelling is idempotent and cancels every
// descendant. A Context is a cheap shared handle; copies refer to the same context, and it may
// be used from any green or plain thread. Contexts with deadlines, and cancel functions, must
// be created and called while green::run() is active (a deadline is watched by a green thread,
// which exits as soon as its context is cancelled; cancel contexts before main returns, or
// run() discards a watcher that is still pending, and the state it holds with it).
//
// Blocking operations that take a Context end early when it is cancelled (Go passes ctx to
// every call that may wait): sleep_for(d, ctx) and Channel::recv(ctx) / send(v, ctx) below,
// select with recv_case(ctx.done(), ...), and net::TcpStream's read/write/connect overloads
// (-ECANCELED). after_func() is the hook they are built on (Go 1.21's context.AfterFunc).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>

#include "green/channel.h"
#include "green/select.h"

namespace green {

enum class ContextError { kNone, kCanceled, kDeadlineExceeded };
const char* context_error_name(ContextError e);

namespace detail {
struct ContextState;
}

class Context {
 public:
  // The root: never cancelled, no deadline.
  static Context background();

  // Closed when the context is cancelled. Never closed for background().
  Channel<bool>& done() const;
  ContextError err() const;
  bool cancelled() const { return err() != ContextError::kNone; }
  // Absolute deadline on green's monotonic clock (detail::now_ns()), if any.
  bool has_deadline() const;
  int64_t deadline_ns() const;
  // Parks until cancelled.
  void wait() const { (void)done().recv(); }

 private:
  friend std::pair<Context, std::function<void()>> with_deadline_ns(const Context&, int64_t);
  friend std::pair<Context, std::function<void()>> with_cancel(const Context&);
  friend std::function<bool()> after_func(const Context&, std::function<void()>);
  explicit Context(std::shared_ptr<detail::ContextState> s) : state_(std::move(s)) {}
  std::shared_ptr<detail::ContextState> state_;
};

using CancelFn = std::function<void()>;

// A child that is cancelled by the returned function or with its parent.
std::pair<Context, CancelFn> with_cancel(const Context& parent);
// A child that is also cancelled (kDeadlineExceeded) at `deadline_ns` (now_ns() clock), or at
// the parent's deadline if earlier.
std::pair<Context, CancelFn> with_deadline_ns(const Context& parent, int64_t deadline_ns);

// Calls f once when ctx is cancelled (at once, on this thread, if it already is), as Go's
// context.AfterFunc, except that f runs on the thread that cancels (a green thread, a plain
// thread, or the netpoller's M when a client hangs up): f must be short and must not park.
// The returned stop() unregisters f: true if that kept f from running, false if f has run or
// is running (it may still be running on another thread when stop returns false, so f must
// only touch what outlives that: values it captured, type-stable runtime objects). On
// background(), which is never cancelled, f is dropped at once and stop() returns true.
std::function<bool()> after_func(const Context& ctx, std::function<void()> f);

// Parks for d, or until ctx is cancelled: true when the full time passed, false when
// cancelled (also when already cancelled on entry; then it does not park).
bool sleep_for(std::chrono::nanoseconds d, const Context& ctx);
template <typename Rep, typename Period>
bool sleep_for(std::chrono::duration<Rep, Period> d, const Context& ctx) {
  return sleep_for(std::chrono::duration_cast<std::chrono::nanoseconds>(d), ctx);
}

// A select case for ctx's cancellation: `green::select(green::done_case(ctx, [&] { ... }),
// green::recv_case(ch, ...))`, Go's `case <-ctx.Done():`.
template <typename F>
auto done_case(const Context& ctx, F on_done) {
  return recv_case(ctx.done(), [f = std::move(on_done)](std::optional<bool>) mutable { f(); });
}

// Channel operations that give up when ctx is cancelled (declared in channel.h). A receive
// that was cancelled returns nullopt, as on a closed channel: look at ctx.cancelled() to tell
// them apart. A send returns false when ctx is cancelled first (v is then dropped). When the
// channel is ready and ctx is cancelled at once, either may win (select's random choice), as
// in Go; a cancelled ctx is checked first, so a loop over recv(ctx) ends.
template <typename T>
std::optional<T> Channel<T>::recv(const Context& ctx) {
  if (ctx.cancelled()) return std::nullopt;
  std::optional<T> out;
  (void)select(recv_case(*this, [&out](std::optional<T> v) { out = std::move(v); }),
               recv_case(ctx.done(), [](std::optional<bool>) {}));
  return out;
}

template <typename T>
bool Channel<T>::send(T v, const Context& ctx) {
  if (ctx.cancelled()) return false;
  bool sent = false;
  (void)select(send_case(*this, std::move(v), [&sent](bool ok) { sent = ok; }),
               recv_case(ctx.done(), [](std::optional<bool>) {}));
  return sent;
}

template <typename Rep, typename Period>
std::pair<Context, CancelFn> with_timeout(const Context& parent,
                                          std::chrono::duration<Rep, Period> d) {
  return with_deadline_ns(
      parent, detail::now_ns() + std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
}

}  // namespace green
