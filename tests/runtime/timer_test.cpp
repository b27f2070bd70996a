// The per-P timer heap on its own: order, removal from anywhere, the earliest-deadline hint.
#include "runtime/timer.h"

#include <algorithm>
#include <cstdint>
#include <random>
#include <vector>

#include <gtest/gtest.h>

using green::detail::Timer;
using green::detail::TimerHeap;

TEST(TimerHeap, PopsInDeadlineOrderAfterRemovalsFromAnywhere) {
  std::mt19937_64 rng(42);
  for (int round = 0; round < 20; ++round) {
    const int n = 1 + static_cast<int>(rng() % 3000);
    std::vector<Timer> timers(static_cast<size_t>(n));
    TimerHeap heap;
    for (Timer& t : timers) {
      t.when = static_cast<int64_t>(rng() % 1000);  // many equal deadlines
      heap.push(&t);
    }
    // Remove a random third, including the earliest and the last pushed.
    std::vector<bool> removed(timers.size(), false);
    for (size_t i = 0; i < timers.size(); ++i) {
      if (rng() % 3 == 0 || i + 1 == timers.size()) {
        ASSERT_TRUE(heap.remove(&timers[i]));
        EXPECT_FALSE(heap.remove(&timers[i])) << "removed twice";
        removed[i] = true;
      }
    }
    std::vector<int64_t> want;
    for (size_t i = 0; i < timers.size(); ++i) {
      if (!removed[i]) want.push_back(timers[i].when);
    }
    std::sort(want.begin(), want.end());
    ASSERT_EQ(heap.size(), want.size());
    std::vector<int64_t> got;
    int64_t now = -1;
    while (heap.size() > 0) {
      const int64_t earliest = heap.earliest();
      EXPECT_EQ(heap.pop_expired(earliest - 1), nullptr) << "popped before its deadline";
      now = std::max(now, earliest);
      Timer* t = heap.pop_expired(now);
      ASSERT_NE(t, nullptr);
      EXPECT_EQ(t->when, earliest);
      EXPECT_EQ(t->state.load(), Timer::kRunning);
      got.push_back(t->when);
    }
    EXPECT_EQ(got, want) << "round " << round;
    EXPECT_EQ(heap.earliest(), INT64_MAX);
  }
}
