// select: readiness, fairness, default, timeout, send cases, close.
#include "green/select.h"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <optional>
#include <utility>

#include <gtest/gtest.h>

#include "green/green.h"
#include "green/sync.h"
#include "tests/runtime/test_util.h"

using namespace std::chrono_literals;

TEST(Select, PicksTheReadyCase) {
  green::run({.procs = 2}, [] {
    green::Channel<int> a(1), b(1);
    EXPECT_TRUE(b.send(9));
    int got = 0;
    int fired = green::select(green::recv_case(a, [&](std::optional<int> v) { got = *v; }),
                              green::recv_case(b, [&](std::optional<int> v) { got = *v; }));
    EXPECT_EQ(fired, 1);
    EXPECT_EQ(got, 9);
  });
}

TEST(Select, ChoosesAmongReadyCasesUniformly) {
  const int64_t rounds = green::testing::scaled(10'000, 2'000);
  int wins[2] = {0, 0};
  green::run({.procs = 1}, [&] {
    green::Channel<int> a(1), b(1);
    for (int64_t i = 0; i < rounds; ++i) {
      (void)a.try_send(1);
      (void)b.try_send(2);
      int fired = green::select(green::recv_case(a, [](std::optional<int>) {}),
                                green::recv_case(b, [](std::optional<int>) {}));
      ++wins[fired];
    }
  });
  EXPECT_GT(wins[0], rounds * 40 / 100);
  EXPECT_GT(wins[1], rounds * 40 / 100);
}

TEST(Select, DefaultRunsWhenNothingIsReady) {
  green::run({.procs = 1}, [] {
    green::Channel<int> a(0);
    int fired =
        green::select(green::recv_case(a, [](std::optional<int>) {}), green::default_case());
    EXPECT_EQ(fired, green::kSelectDefault);
  });
}

TEST(Select, TimeoutFiresWhenNothingBecomesReady) {
  green::run({.procs = 2}, [] {
    green::Channel<int> a(0);
    auto start = std::chrono::steady_clock::now();
    int fired = green::select(green::recv_case(a, [](std::optional<int>) {}), green::timeout(50ms));
    auto took = std::chrono::steady_clock::now() - start;
    EXPECT_EQ(fired, green::kSelectTimeout);
    EXPECT_GE(took, 50ms);
    EXPECT_LT(took, 5s);
    // The channel is usable afterwards: the timed-out waiter was unlinked.
    EXPECT_EQ(a.try_send(1), green::ChanStatus::kWouldBlock);
  });
}

TEST(Select, ParkedSelectIsWokenByASenderAndOnlyOneCaseCompletes) {
  green::run({.procs = 2}, [] {
    green::Channel<int> a(0), b(0);
    green::WaitGroup wg;
    wg.add(1);
    int fired = -10, got = 0;
    green::go([&] {
      fired = green::select(green::recv_case(a, [&](std::optional<int> v) { got = *v; }),
                            green::recv_case(b, [&](std::optional<int> v) { got = *v; }),
                            green::timeout(5s));
      wg.done();
    });
    ASSERT_TRUE(green::testing::wait_until_waiting("select", 1));  // parked, not about to
    EXPECT_TRUE(b.send(42));
    wg.wait();
    EXPECT_EQ(fired, 1);
    EXPECT_EQ(got, 42);
    EXPECT_EQ(a.try_send(1), green::ChanStatus::kWouldBlock);  // a's node is gone
  });
}

TEST(Select, SendCaseDeliversToAParkedReceiver) {
  green::run({.procs = 2}, [] {
    green::Channel<int> out(0);
    green::WaitGroup wg;
    wg.add(1);
    green::go([&] {
      EXPECT_EQ(out.recv(), 5);
      wg.done();
    });
    bool sent = false;
    int fired =
        green::select(green::send_case(out, 5, [&](bool ok) { sent = ok; }), green::timeout(5s));
    wg.wait();
    EXPECT_EQ(fired, 0);
    EXPECT_TRUE(sent);
  });
}

TEST(Select, CloseWakesAParkedSelect) {
  green::run({.procs = 2}, [] {
    green::Channel<int> a(0);
    green::WaitGroup wg;
    wg.add(1);
    bool closed = false;
    green::go([&] {
      green::select(green::recv_case(a, [&](std::optional<int> v) { closed = !v; }));
      wg.done();
    });
    ASSERT_TRUE(green::testing::wait_until_waiting("select", 1));  // parked, not about to
    a.close();
    wg.wait();
    EXPECT_TRUE(closed);
  });
}

namespace {
template <std::size_t... I>
int select_over(green::Channel<int> (&channels)[sizeof...(I)], int* got,
                std::index_sequence<I...>) {
  return green::select(
      green::recv_case(channels[I], [got](std::optional<int> v) { *got = v.value_or(-1); })...);
}
}  // namespace

// The limit is checked at compile time (tests/compile/select_cases.cpp); at the limit, every
// case has its lock and its node: the one that becomes ready wins, after a park.
TEST(Select, ParkedSelectOverTheMaximumNumberOfCasesWakesOnTheLast) {
  green::run({.procs = 1}, [] {
    constexpr std::size_t kCases = green::kMaxSelectCases;
    green::Channel<int> channels[kCases];
    green::go([&] { EXPECT_TRUE(channels[kCases - 1].send(7)); });
    int got = 0;
    EXPECT_EQ(select_over(channels, &got, std::make_index_sequence<kCases>()), int{kCases} - 1);
    EXPECT_EQ(got, 7);
  });
}

TEST(Select, ConcurrentSelectsOnSharedChannelsLoseNoValue) {
  const int64_t n = green::testing::scaled(20'000, 2'000);
  std::atomic<int64_t> received{0};
  green::run({.procs = 2}, [&] {
    green::Channel<int> a(0), b(4);
    green::WaitGroup wg;
    for (int r = 0; r < 4; ++r) {
      wg.add(1);
      green::go([&] {
        bool open_a = true, open_b = true;
        while (open_a || open_b) {
          green::select(green::recv_case(a,
                                         [&](std::optional<int> v) {
                                           if (v) received.fetch_add(1);
                                           else open_a = false;
                                         }),
                        green::recv_case(b, [&](std::optional<int> v) {
                          if (v) received.fetch_add(1);
                          else open_b = false;
                        }));
          if (!open_a && open_b) {
            while (b.recv()) received.fetch_add(1);
            open_b = false;
          } else if (!open_b && open_a) {
            while (a.recv()) received.fetch_add(1);
            open_a = false;
          }
        }
        wg.done();
      });
    }
    for (int64_t i = 0; i < n; ++i) EXPECT_TRUE((i % 2 ? a : b).send(static_cast<int>(i)));
    a.close();
    b.close();
    wg.wait();
  });
  EXPECT_EQ(received.load(), n);
}
