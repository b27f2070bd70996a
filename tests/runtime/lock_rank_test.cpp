// The run-time lock-rank check (green/detail/lock_rank.h): on in debug and sanitizer builds
// (GREEN_CHECKS), where taking locks against the table's order is a fatal error naming both.
// The whole runtime suite running with the check on is what shows the table matches the code.
#include "green/detail/lock_rank.h"

#include <gtest/gtest.h>

#include "green/channel.h"
#include "green/detail/spin_lock.h"
#include "green/green.h"
#include "green/select.h"
#include "green/sync.h"

namespace green {
namespace {

using detail::LockRank;
using detail::SpinLock;

#if GREEN_CHECKS
constexpr bool kChecks = true;
#else
constexpr bool kChecks = false;
#endif

class LockRankTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!kChecks) GTEST_SKIP() << "lock ranks are checked only in GREEN_CHECKS builds";
    // The child re-executes the test binary: no runtime threads are copied into a fork.
    GTEST_FLAG_SET(death_test_style, "threadsafe");
  }
};

TEST_F(LockRankTest, TakingLocksAgainstTheTableAbortsNamingBoth) {
  SpinLock sched_lock(LockRank::kSched);
  SpinLock timers(LockRank::kTimers);
  EXPECT_DEATH(
      {
        sched_lock.lock();
        timers.lock();
      },
      "lock order violation: taking a P's timer lock \\(rank 20.*while holding sched.lock "
      "\\(rank 30");
}

TEST_F(LockRankTest, TakingLocksInTheTablesOrderPasses) {
  SpinLock sched_lock(LockRank::kSched);
  SpinLock timers(LockRank::kTimers);
  SpinLock chan(LockRank::kChannel);
  chan.lock();
  timers.lock();
  sched_lock.lock();
  sched_lock.unlock();
  timers.unlock();
  chan.unlock();
  // Released in any order (select does), the list is empty again: the wrong order is still
  // caught afterwards, and the right one still passes.
  timers.lock();
  sched_lock.lock();
  timers.unlock();
  sched_lock.unlock();
  sched_lock.lock();
  sched_lock.unlock();
}

TEST_F(LockRankTest, ChannelLocksNestOnlyInAddressOrder) {
  SpinLock chans[2] = {SpinLock(LockRank::kChannel), SpinLock(LockRank::kChannel)};
  chans[0].lock();
  chans[1].lock();  // select's order: increasing addresses
  chans[1].unlock();
  chans[0].unlock();
  EXPECT_DEATH(
      {
        chans[1].lock();
        chans[0].lock();
      },
      "taking a channel's lock .*while holding a channel's lock .*increasing address order");
}

TEST_F(LockRankTest, RelockingAHeldLockAbortsInsteadOfSpinningForever) {
  SpinLock timers(LockRank::kTimers);
  EXPECT_DEATH(
      {
        timers.lock();
        timers.lock();
      },
      "taking a P's timer lock .*while holding a P's timer lock .*already held");
}

TEST_F(LockRankTest, AGreenMutexUnderASpinLockAborts) {
  SpinLock chan(LockRank::kChannel);
  Mutex mu;
  EXPECT_DEATH(
      {
        chan.lock();
        mu.lock();
      },
      "green::Mutex::lock: called while holding a channel.s lock");
}

// A lock taken by a green thread and released by g0 after the switch (park's commit), with a
// deadline (the timer lock and sched.lock are taken on g0 meanwhile), again and again across
// Ms: a lock left on some thread's list would make a later, correct acquisition abort.
TEST_F(LockRankTest, LocksReleasedByParkOnG0LeaveNothingHeld) {
  Options options;
  options.procs = 2;
  run(options, [] {
    Channel<int> ch;
    Mutex mu;
    WaitGroup wg;
    constexpr int kRounds = 2000;
    wg.add(1);
    go([&] {
      for (int i = 0; i < kRounds; ++i) {
        EXPECT_TRUE(ch.send(i));
        std::lock_guard<Mutex> guard(mu);
      }
      wg.done();
    });
    for (int i = 0; i < kRounds; ++i) {
      int got = -1;
      select(recv_case(ch, [&](std::optional<int> v) { got = v.value_or(-1); }),
             timeout(std::chrono::seconds(10)));
      EXPECT_EQ(got, i);
      std::lock_guard<Mutex> guard(mu);
    }
    wg.wait();
  });
}

}  // namespace
}  // namespace green
