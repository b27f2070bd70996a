// fatal() and the checked G status transitions: a broken invariant ends the process with one
// line that names the function, the message and the G, P and M.
#include "runtime/fatal.h"

#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "green/detail/park.h"
#include "green/green.h"
#include "runtime/green_thread.h"

namespace {

using green::detail::current_green_thread;
using green::detail::GStatus;

void fatal_on_a_green_thread() {
  green::run({.procs = 1}, [] {
    // The main green thread is G 1 and runs on P 0 (the only one).
    GREEN_FATAL("broken on purpose in green thread %llu",
                static_cast<unsigned long long>(green::this_green_thread::id()));
  });
}

}  // namespace

TEST(FatalDeathTest, OnAGreenThreadNamesTheFunctionTheGreenThreadItsProcessorAndMachine) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(fatal_on_a_green_thread(),
               "greenrt: fatal: operator\\(\\): broken on purpose in green thread 1 "
               "\\(G 1 running, P 0, M [0-9]+\\)");
}

TEST(FatalDeathTest, OnAPlainThreadSaysItHasNoGreenThreadProcessorOrMachine) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(std::thread([] { green::detail::fatal("plain", "no runtime here: %d", 7); }).join(),
               "greenrt: fatal: plain: no runtime here: 7 \\(G none, P none, M none\\)");
}

TEST(FatalDeathTest, ALongMessageIsTruncatedButStillNamesTheGreenThread) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  const std::string long_text(4000, 'x');
  EXPECT_DEATH(green::run({.procs = 1}, [&] { GREEN_FATAL("%s", long_text.c_str()); }),
               "xxxx \\(G 1 running, P 0, M [0-9]+\\)");
}

TEST(GStatusDeathTest, IllegalTransitionAbortsNamingBothStatuses) {
#if !GREEN_CHECKS
  GTEST_SKIP() << "status transitions are checked only with GREEN_CHECKS";
#endif
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(green::run({.procs = 1},
                          [] {
                            green::detail::set_status(current_green_thread(), GStatus::kRunning,
                                                      GStatus::kIdle);
                          }),
               "green thread 1: illegal status transition running -> idle \\(G 1 running");
}

TEST(GStatusDeathTest, TransitionFromAStatusTheGreenThreadIsNotInAborts) {
#if !GREEN_CHECKS
  GTEST_SKIP() << "status transitions are checked only with GREEN_CHECKS";
#endif
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(green::run({.procs = 1},
                          [] {
                            green::detail::set_status(current_green_thread(), GStatus::kWaiting,
                                                      GStatus::kRunnable);
                          }),
               "green thread 1: status waiting -> runnable, but it is running");
}

TEST(GStatusDeathTest, DoubleWakeUpOfAParkedGreenThreadAborts) {
#if !GREEN_CHECKS
  GTEST_SKIP() << "status transitions are checked only with GREEN_CHECKS";
#endif
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  // With one P the spawned green thread runs only once main has parked; its second unpark()
  // readies main again while main still waits in the run queue. Unchecked, main would be
  // queued twice, and its second run would resume a context it has already left.
  EXPECT_DEATH(green::run({.procs = 1},
                          [] {
                            green::detail::Waiter w;
                            green::go([&w] {
                              ASSERT_TRUE(w.try_claim(0));
                              green::detail::unpark(w);
                              green::detail::unpark(w);
                            });
                            green::detail::park(w, green::detail::WaitReason::kSleep, nullptr,
                                                nullptr);
                          }),
               "ready: green thread 1: status waiting -> runnable, but it is runnable");
}
