// Context state tree, deadline watchers and after_func hooks. See green/context.h.
#include "green/context.h"
// (This file's own header first, on its own, though its name differs: it must compile alone.)

#include <algorithm>
#include <vector>

#include "green/green.h"
#include "green/select.h"

namespace green {
namespace detail {

struct ContextState : std::enable_shared_from_this<ContextState> {
  SpinLock lock{LockRank::kContext};
  ContextError err GREEN_GUARDED_BY(lock) = ContextError::kNone;  // set once
  std::vector<std::weak_ptr<ContextState>> children GREEN_GUARDED_BY(lock);
  std::size_t sweep_at GREEN_GUARDED_BY(lock) = 16;  // see make_child
  Channel<bool> done{0};
  int64_t deadline_ns = kNoDeadlineNs;
  // after_func hooks, each with the id its stop() names (under lock). Most contexts have none:
  // an empty vector costs no allocation.
  struct AfterFn {
    uint64_t id;
    std::function<void()> fn;
  };
  std::vector<AfterFn> after GREEN_GUARDED_BY(lock);
  uint64_t next_after_id GREEN_GUARDED_BY(lock) = 1;

  void cancel(ContextError why) {
    std::vector<std::weak_ptr<ContextState>> kids;
    std::vector<AfterFn> hooks;
    lock.lock();
    if (err != ContextError::kNone) {
      lock.unlock();
      return;
    }
    err = why;
    kids.swap(children);
    hooks.swap(after);
    lock.unlock();
    done.close();
    // Outside the lock: a hook may take other locks (a socket's poll descriptor) and a stop()
    // racing with it must not wait for it.
    for (auto& h : hooks) h.fn();
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
                                         int64_t deadline_ns) {
  auto child = std::make_shared<ContextState>();
  child->deadline_ns = std::min(deadline_ns, parent ? parent->deadline_ns : kNoDeadlineNs);
  if (!parent) return child;
  parent->lock.lock();
  ContextError parent_err = parent->err;
  if (parent_err == ContextError::kNone) {
    // Drop children that are gone, so a long-lived parent (a server's base context, parent of
    // every request's) does not accumulate them; but only when the list has doubled since the
    // last sweep, so that with n children alive each new one costs O(1) amortised, not O(n).
    if (parent->children.size() >= parent->sweep_at) {
      std::erase_if(parent->children, [](const auto& w) { return w.expired(); });
      parent->sweep_at = std::max<std::size_t>(16, 2 * parent->children.size());
    }
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
    case ContextError::kNone:
      return "none";
    case ContextError::kCanceled:
      return "context canceled";
    case ContextError::kDeadlineExceeded:
      return "context deadline exceeded";
  }
  return "?";
}

Context Context::background() { return Context(detail::background_state()); }
Channel<bool>& Context::done() const { return state_->done; }
ContextError Context::err() const { return state_->error(); }
bool Context::has_deadline() const { return state_->deadline_ns != detail::kNoDeadlineNs; }
int64_t Context::deadline_ns() const { return state_->deadline_ns; }

std::pair<Context, CancelFn> with_cancel(const Context& parent) {
  auto child = detail::make_child(parent.state_, detail::kNoDeadlineNs);
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
      const int64_t wait = child->deadline_ns - detail::now_ns();
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

std::function<bool()> after_func(const Context& ctx, std::function<void()> f) {
  const std::shared_ptr<detail::ContextState>& s = ctx.state_;
  if (s == detail::background_state()) return [] { return true; };  // never cancelled
  s->lock.lock();
  if (s->err != ContextError::kNone) {
    s->lock.unlock();
    f();
    return [] { return false; };
  }
  const uint64_t id = s->next_after_id++;
  s->after.push_back({id, std::move(f)});
  s->lock.unlock();
  std::weak_ptr<detail::ContextState> weak = s;
  return [weak, id]() -> bool {
    auto st = weak.lock();
    if (!st) return false;  // gone: it was never cancelled, so f never ran, but it never will
    std::function<void()> dropped;  // destroyed outside the lock
    st->lock.lock();
    bool found = false;
    for (auto it = st->after.begin(); it != st->after.end(); ++it) {
      if (it->id == id) {
        dropped = std::move(it->fn);
        st->after.erase(it);
        found = true;
        break;
      }
    }
    st->lock.unlock();
    return found;
  };
}

bool sleep_for(std::chrono::nanoseconds d, const Context& ctx) {
  if (ctx.cancelled()) return false;
  // A select on done with a timeout: one timer and one park, as the plain sleep_for.
  const int fired = select(recv_case(ctx.done(), [](std::optional<bool>) {}), timeout(d));
  return fired == kSelectTimeout;
}

}  // namespace green
