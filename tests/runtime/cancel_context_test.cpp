// Context: cancel, deadline, propagation to children.
#include <chrono>

#include <gtest/gtest.h>

#include "green/context.h"
#include "green/green.h"
#include "green/select.h"
#include "green/sync.h"
#include "tests/runtime/test_util.h"

using namespace std::chrono_literals;

namespace {
// Deadline watchers leave as soon as their context is cancelled; let them finish before main
// returns (run() discards green threads that are still runnable, and their closures with them).
void wait_for_watchers() {
  EXPECT_TRUE(green::testing::yield_until([] { return green::num_green_threads() == 1; }, 10s))
      << green::num_green_threads() << " green threads left";
}
}  // namespace

TEST(Context, CancelWakesEveryWaiterOnDone) {
  green::run({.procs = 2}, [] {
    auto [ctx, cancel] = green::with_cancel(green::Context::background());
    green::WaitGroup wg;
    for (int i = 0; i < 10; ++i) {
      wg.add(1);
      green::go([&, c = ctx] {
        c.wait();
        EXPECT_EQ(c.err(), green::ContextError::kCanceled);
        wg.done();
      });
    }
    // Every waiter parked on done() first (the dump shows them), so the cancel wakes them all.
    ASSERT_TRUE(green::testing::wait_until_waiting("chan receive", 10));
    EXPECT_EQ(ctx.err(), green::ContextError::kNone);
    cancel();
    cancel();  // idempotent
    wg.wait();
  });
}

TEST(Context, DeadlineCancelsWithDeadlineExceeded) {
  green::run({.procs = 2}, [] {
    auto start = std::chrono::steady_clock::now();
    auto [ctx, cancel] = green::with_timeout(green::Context::background(), 40ms);
    EXPECT_TRUE(ctx.has_deadline());
    ctx.wait();
    EXPECT_GE(std::chrono::steady_clock::now() - start, 40ms);
    EXPECT_EQ(ctx.err(), green::ContextError::kDeadlineExceeded);
    cancel();  // after expiry: no effect on err
    EXPECT_EQ(ctx.err(), green::ContextError::kDeadlineExceeded);
    wait_for_watchers();
  });
}

TEST(Context, ParentCancellationCancelsChildrenButNotTheReverse) {
  green::run({.procs = 2}, [] {
    auto [parent, cancel_parent] = green::with_cancel(green::Context::background());
    auto [child, cancel_child] = green::with_cancel(parent);
    auto [grandchild, cancel_grandchild] = green::with_timeout(child, 10s);
    auto [sibling, cancel_sibling] = green::with_cancel(parent);
    cancel_sibling();
    EXPECT_EQ(parent.err(), green::ContextError::kNone);
    cancel_parent();
    grandchild.wait();
    EXPECT_EQ(child.err(), green::ContextError::kCanceled);
    EXPECT_EQ(grandchild.err(), green::ContextError::kCanceled);
    cancel_child();
    cancel_grandchild();
    wait_for_watchers();
  });
}

TEST(Context, ChildOfCancelledParentStartsCancelled) {
  green::run({.procs = 1}, [] {
    auto [parent, cancel] = green::with_cancel(green::Context::background());
    cancel();
    auto [child, cancel_child] = green::with_cancel(parent);
    EXPECT_EQ(child.err(), green::ContextError::kCanceled);
    cancel_child();
  });
}

TEST(Context, DoneComposesWithSelect) {
  green::run({.procs = 2}, [] {
    auto [ctx, cancel] = green::with_timeout(green::Context::background(), 20ms);
    green::Channel<int> never(0);
    int fired = green::select(green::recv_case(never, [](std::optional<int>) {}),
                              green::recv_case(ctx.done(), [](std::optional<bool>) {}));
    EXPECT_EQ(fired, 1);
    EXPECT_EQ(ctx.err(), green::ContextError::kDeadlineExceeded);
    cancel();
    wait_for_watchers();
  });
}
