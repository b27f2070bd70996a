// Context state tree and deadline watchers. See cancel_context.h.
#include "green/context.h"

#include <vector>

#include "green/green.h"
#include "green/select.h"

namespace green {
namespace detail {

struct ContextState : std::enable_shared_from_this<ContextState> {
  SpinLock lock;
  ContextError err = ContextError::kNone;  // under lock; set once
  std::vector<std::weak_ptr<ContextState>> children;  // under lock
  Channel<bool> done{0};
  int64_t deadline = kNoDeadline;

  void cancel(ContextError why) {
    std::vector<std::weak_ptr<ContextState>> kids;
    lock.lock();
    if (err != ContextError::kNone) {
      lock.unlock();
      return;
    }
    err = why;
    kids.swap(children);
    lock.unlock();
    done.close();
    for (auto& k : kids) {
      if (auto child = k.lock()) child->cancel(why);
    }
  }

  ContextError error() {
    lock.lock();
    ContextError e = err;
    lock.unlock();
    return e;
  }
};

namespace {

std::shared_ptr<ContextState> make_child(const std::shared_ptr<ContextState>& parent,
                                         int64_t deadline) {
  auto child = std::make_shared<ContextState>();
  child->deadline = std::min(deadline, parent ? parent->deadline : kNoDeadline);
  if (!parent) return child;
  parent->lock.lock();
  ContextError parent_err = parent->err;
  if (parent_err == ContextError::kNone) {
    // Drop children that are gone, so a long-lived parent does not accumulate them.
    std::erase_if(parent->children, [](const auto& w) { return w.expired(); });
    parent->children.push_back(child);
  }
  parent->lock.unlock();
  if (parent_err != ContextError::kNone) child->cancel(parent_err);
  return child;
}

const std::shared_ptr<ContextState>& background_state() {
  static const std::shared_ptr<ContextState> root = std::make_shared<ContextState>();
  return root;
}

}  // namespace
}  // namespace detail

const char* context_error_name(ContextError e) {
  switch (e) {
    case ContextError::kNone: return "none";
    case ContextError::kCanceled: return "context canceled";
    case ContextError::kDeadlineExceeded: return "context deadline exceeded";
  }
  return "?";
}

Context Context::background() { return Context(detail::background_state()); }
Channel<bool>& Context::done() const { return state_->done; }
ContextError Context::err() const { return state_->error(); }
bool Context::has_deadline() const { return state_->deadline != detail::kNoDeadline; }
int64_t Context::deadline_ns() const { return state_->deadline; }

std::pair<Context, CancelFn> with_cancel(const Context& parent) {
  auto child = detail::make_child(parent.state_, detail::kNoDeadline);
  std::weak_ptr<detail::ContextState> weak = child;
  CancelFn cancel = [weak] {
    if (auto s = weak.lock()) s->cancel(ContextError::kCanceled);
  };
  return {Context(child), std::move(cancel)};
}

std::pair<Context, CancelFn> with_deadline_ns(const Context& parent, int64_t deadline_ns) {
  auto child = detail::make_child(parent.state_, deadline_ns);
  if (child->error() == ContextError::kNone) {
    // A watcher green thread: leaves as soon as the context is cancelled some other way, so
    // calling cancel() releases it (and its reference) at once.
    green::go([child] {
      const int64_t wait = child->deadline - detail::now_ns();
      int fired = select(recv_case(child->done, [](std::optional<bool>) {}),
                         timeout(std::chrono::nanoseconds(wait > 0 ? wait : 0)));
      if (fired == kSelectTimeout) child->cancel(ContextError::kDeadlineExceeded);
    });
  }
  std::weak_ptr<detail::ContextState> weak = child;
  CancelFn cancel = [weak] {
    if (auto s = weak.lock()) s->cancel(ContextError::kCanceled);
  };
  return {Context(child), std::move(cancel)};
}

}  // namespace green
