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
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>

#include "green/channel.h"

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
  explicit Context(std::shared_ptr<detail::ContextState> s) : state_(std::move(s)) {}
  std::shared_ptr<detail::ContextState> state_;
};

using CancelFn = std::function<void()>;

// A child that is cancelled by the returned function or with its parent.
std::pair<Context, CancelFn> with_cancel(const Context& parent);
// A child that is also cancelled (kDeadlineExceeded) at `deadline_ns` (now_ns() clock), or at
// the parent's deadline if earlier.
std::pair<Context, CancelFn> with_deadline_ns(const Context& parent, int64_t deadline_ns);

template <typename Rep, typename Period>
std::pair<Context, CancelFn> with_timeout(const Context& parent,
                                          std::chrono::duration<Rep, Period> d) {
  return with_deadline_ns(
      parent, detail::now_ns() + std::chrono::duration_cast<std::chrono::nanoseconds>(d).count());
}

}  // namespace green
