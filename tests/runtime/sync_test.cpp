// WaitGroup, Mutex, ConditionVariable, Once under contention.
#include "green/sync.h"

#include <atomic>
#include <chrono>
#include <thread>

#include <gtest/gtest.h>

#include "green/green.h"
#include "tests/runtime/test_util.h"

using namespace std::chrono_literals;
using green::testing::scaled;

TEST(WaitGroup, WaitsForTenThousandGreenThreads) {
  const int64_t n = scaled(10'000, 2'000);
  std::atomic<int64_t> done{0};
  green::run({.procs = 2}, [&] {
    green::WaitGroup wg;
    for (int64_t i = 0; i < n; ++i) {
      wg.add(1);
      green::go([&] {
        green::yield();
        done.fetch_add(1);
        wg.done();
      });
    }
    wg.wait();
    EXPECT_EQ(done.load(), n);
  });
}

TEST(WaitGroup, PlainThreadCanWait) {
  green::run({.procs = 2}, [] {
    green::WaitGroup wg;
    std::atomic<int> done{0};
    wg.add(10);
    for (int i = 0; i < 10; ++i) {
      green::go([&] {
        green::sleep_for(5ms);  // work that takes a while, so the plain thread waits: not a wait
        done.fetch_add(1);
        wg.done();
      });
    }
    std::thread t([&] {
      wg.wait();
      EXPECT_EQ(done.load(), 10);
    });
    t.join();
  });
}

TEST(WaitGroup, CountsEveryDoneBeforeDuringAndAfterTheFirstWait) {
  // Until the first wait() the count is spread over per-P shards, which that wait() seals and
  // folds while done() calls keep arriving on both Ps and from a plain thread. Each round the
  // waiter must return exactly when every done() has happened: never early (a done() lost in
  // a sealed shard) and never hang (one counted twice, or a waiter nobody wakes).
  const int rounds = static_cast<int>(scaled(2'000, 300));
  int early = 0;
  green::run({.procs = 2}, [&] {
    for (int r = 0; r < rounds; ++r) {
      constexpr int kGreen = 16;
      green::WaitGroup wg;
      std::atomic<int> finished{0};
      wg.add(kGreen + 1);
      for (int i = 0; i < kGreen; ++i) {
        green::go([&, i] {
          if (i % 2 == 1) green::yield();  // some finish after the wait() has begun
          finished.fetch_add(1);
          wg.done();
        });
      }
      std::thread plain([&] {
        finished.fetch_add(1);
        wg.done();
      });
      wg.wait();
      if (finished.load() != kGreen + 1) ++early;
      plain.join();
    }
  });
  EXPECT_EQ(early, 0) << "wait() returned before every done()";
}

TEST(WaitGroupDeathTest, NegativeCounterAbortsAtTheFirstWait) {
  EXPECT_DEATH(green::run({.procs = 2},
                          [] {
                            green::WaitGroup wg;
                            wg.add(1);
                            wg.done();
                            wg.done();  // one too many: the shards cannot tell yet
                            wg.wait();
                          }),
               "negative WaitGroup counter");
}

TEST(WaitGroupDeathTest, NegativeCounterAbortsAtOnceAfterAWait) {
  EXPECT_DEATH(green::run({.procs = 2},
                          [] {
                            green::WaitGroup wg;
                            wg.add(1);
                            green::go([&] { wg.done(); });
                            wg.wait();
                            wg.done();
                          }),
               "negative WaitGroup counter");
}

TEST(Mutex, ProtectsACounterUnderTenThousandContenders) {
  const int64_t n = scaled(10'000, 2'000);
  int64_t counter = 0;  // deliberately not atomic
  green::run({.procs = 2}, [&] {
    green::Mutex mu;
    green::WaitGroup wg;
    for (int64_t i = 0; i < n; ++i) {
      wg.add(1);
      green::go([&] {
        for (int k = 0; k < 10; ++k) {
          std::lock_guard<green::Mutex> guard(mu);
          int64_t v = counter;
          if (k % 3 == 0) green::yield();  // hold the lock across a switch
          counter = v + 1;
        }
        wg.done();
      });
    }
    wg.wait();
  });
  EXPECT_EQ(counter, n * 10);
}

TEST(Mutex, AnUnlockerThatKeepsRunningWakesAnIdlePForTheNewOwner) {
  // unlock() hands the mutex to the longest waiter, which lands in the unlocker's runnext.
  // The unlocker usually goes on running (its critical section is over), so the handover
  // wakes the idle P at once (counted in machine_wakeups before unlock() returns), unlike a
  // channel handoff, and the new owner runs there while the unlocker computes.
  uint64_t woken_by_unlock = 0;
  int unlocker_p = -1;
  std::atomic<int> owner_p{-1};
  green::run({.procs = 2}, [&] {
    green::Mutex mu;
    mu.lock();
    green::WaitGroup done;
    done.add(1);
    green::go([&] {
      mu.lock();  // parks: main holds it
      owner_p.store(green::this_green_thread::processor_id());
      mu.unlock();
      done.done();
    });
    // The waiter parks (on the other P), and that P's thread goes back to sleep.
    green::testing::compute_until_the_other_p_sleeps(20ms);
    const uint64_t before = green::stats().machine_wakeups;
    mu.unlock();
    woken_by_unlock = green::stats().machine_wakeups - before;
    unlocker_p = green::this_green_thread::processor_id();
    const auto until = std::chrono::steady_clock::now() + 10s;
    while (owner_p.load() < 0 && std::chrono::steady_clock::now() < until) {
    }
    done.wait();
  });
  EXPECT_GE(woken_by_unlock, 1u);
  EXPECT_NE(owner_p.load(), unlocker_p);
}

TEST(Mutex, TryLockFailsWhileHeld) {
  green::run({.procs = 1}, [] {
    green::Mutex mu;
    EXPECT_TRUE(mu.try_lock());
    EXPECT_FALSE(mu.try_lock());
    mu.unlock();
    EXPECT_TRUE(mu.try_lock());
    mu.unlock();
  });
}

TEST(ConditionVariable, NotifyOneAndAllWakeWaiters) {
  green::run({.procs = 2}, [] {
    green::Mutex mu;
    green::ConditionVariable cv;
    int generation = 0;
    std::atomic<int> woke{0};
    green::WaitGroup wg;
    for (int i = 0; i < 20; ++i) {
      wg.add(1);
      green::go([&] {
        {
          std::unique_lock<green::Mutex> lock(mu);
          cv.wait(lock, [&] { return generation > 0; });
          woke.fetch_add(1);
        }
        wg.done();  // last: after it, main may return and destroy mu, cv and wg
      });
    }
    // All twenty wait on the condition variable (the dump shows them) before the notifies.
    ASSERT_TRUE(green::testing::wait_until_waiting("condition variable", 20));
    {
      std::lock_guard<green::Mutex> g(mu);
      generation = 1;
    }
    cv.notify_one();
    EXPECT_TRUE(green::testing::wait_until([&] { return woke.load() >= 1; }, 10s));
    cv.notify_all();
    wg.wait();
    EXPECT_EQ(woke.load(), 20);
  });
}

TEST(ConditionVariable, WaitForTimesOut) {
  green::run({.procs = 2}, [] {
    green::Mutex mu;
    green::ConditionVariable cv;
    std::unique_lock<green::Mutex> lock(mu);
    auto start = std::chrono::steady_clock::now();
    EXPECT_FALSE(cv.wait_for(lock, 30ms));
    EXPECT_GE(std::chrono::steady_clock::now() - start, 30ms);
    EXPECT_TRUE(lock.owns_lock());
  });
}

TEST(Once, RunsOnceForTenThousandConcurrentCallers) {
  const int64_t n = scaled(10'000, 2'000);
  std::atomic<int> calls{0};
  std::atomic<int64_t> saw_effect{0};
  green::run({.procs = 2}, [&] {
    green::Once once;
    int value = 0;
    green::WaitGroup wg;
    for (int64_t i = 0; i < n; ++i) {
      wg.add(1);
      green::go([&] {
        once.call([&] {
          calls.fetch_add(1);
          green::sleep_for(10ms);  // others arrive while it runs and must wait
          value = 42;
        });
        if (value == 42) saw_effect.fetch_add(1);
        wg.done();
      });
    }
    wg.wait();
  });
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(saw_effect.load(), n);
}
