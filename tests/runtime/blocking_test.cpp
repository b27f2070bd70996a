// Blocking calls hand their P away; sysmon and checkpoint() keep CPU-bound green threads fair.
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <ctime>
#include <string>

#include "runtime/green.h"
#include "runtime/net.h"
#include "runtime/sync.h"
#include "tests/runtime/test_util.h"

using namespace std::chrono_literals;
using green::net::Address;
using green::net::TcpListener;
using green::net::TcpStream;

namespace {

void os_sleep(std::chrono::nanoseconds d) {
  struct timespec ts {};
  ts.tv_sec = d.count() / 1'000'000'000;
  ts.tv_nsec = d.count() % 1'000'000'000;
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

// The case: with one P, eight green threads sit in blocking(nanosleep 1 s) while another
// keeps answering requests over a socket.
TEST(Blocking, EightBlockingSleepsDoNotStopAnEchoServerOnOneP) {
  int answered_during_sleeps = 0;
  double sleepers_took_ms = 0;
  green::RuntimeStats after{};
  green::run({.procs = 1}, [&] {
    TcpListener listener;
    ASSERT_EQ(TcpListener::listen(*Address::parse("127.0.0.1:0"), &listener), 0);
    green::go([&] {
      TcpStream conn;
      if (listener.accept(&conn) != 0) return;
      char c;
      while (conn.read(&c, 1) == 1 && conn.write(&c, 1) == 1) {
      }
    });
    TcpStream client;
    ASSERT_EQ(TcpStream::connect(listener.local_address(), &client), 0);

    std::atomic<int> sleeping_done{0};
    green::WaitGroup wg;
    const auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < 8; ++i) {
      wg.add(1);
      green::go([&] {
        const int rc = green::blocking([] {
          os_sleep(1s);
          return 7;
        });
        EXPECT_EQ(rc, 7);
        sleeping_done.fetch_add(1);
        wg.done();
      });
    }
    green::sleep_for(50ms);  // every sleeper is inside its call by now
    // Round trips through the echo server while the eight OS threads sleep.
    while (sleeping_done.load() == 0) {
      char c = 'q';
      ASSERT_EQ(client.write(&c, 1), 1);
      ASSERT_EQ(client.read(&c, 1), 1);
      if (sleeping_done.load() == 0) ++answered_during_sleeps;
      green::sleep_for(5ms);
    }
    wg.wait();
    sleepers_took_ms = ms_since(start);
    after = green::stats();
    listener.close();
    client.close();
  });
  // ~190 round trips fit in the second; a P stuck behind a sleeper would answer none.
  EXPECT_GE(answered_during_sleeps, 50);
  // The eight sleeps overlapped (serially they would take 8 s).
  EXPECT_LT(sleepers_took_ms, 4000);
  EXPECT_EQ(after.blocking_calls, 8u);
  EXPECT_GE(after.blocking_handoffs, 1u);
  EXPECT_GE(after.machines, 9) << "each sleeper holds its own OS thread";
}

TEST(Blocking, ReturnsValuesAndExceptionsAndWorksFromPlainThreads) {
  EXPECT_EQ(green::blocking([] { return std::string("plain"); }), "plain");
  green::run({.procs = 2}, [] {
    EXPECT_EQ(green::blocking([] { return 41 + 1; }), 42);
    int x = 0;
    green::blocking([&] { x = 5; });
    EXPECT_EQ(x, 5);
    EXPECT_THROW(green::blocking([]() -> int { throw std::runtime_error("disk on fire"); }),
                 std::runtime_error);
    // The green thread is fully back: it can park again after a throwing call.
    green::sleep_for(1ms);
    EXPECT_GE(green::this_green_thread::processor_id(), 0);
  });
}

TEST(Blocking, ThreadCapMakesExtraCallsWait) {
  setenv("GREEN_MAX_THREADS", "2", 1);
  std::atomic<int> inside{0}, most{0};
  green::run({.procs = 2}, [&] {
    green::WaitGroup wg;
    for (int i = 0; i < 6; ++i) {
      wg.add(1);
      green::go([&] {
        green::blocking([&] {
          const int now = inside.fetch_add(1) + 1;
          int seen = most.load();
          while (now > seen && !most.compare_exchange_weak(seen, now)) {
          }
          os_sleep(30ms);
          inside.fetch_sub(1);
        });
        wg.done();
      });
    }
    wg.wait();
  });
  unsetenv("GREEN_MAX_THREADS");
  EXPECT_EQ(most.load(), 2);
}

// With one P, a CPU-bound green thread that calls checkpoint() lets a sleeper wake on time.
TEST(Fairness, CheckpointLetsASleeperWakeWithinTwentyMsOnOneP) {
  double worst_late_ms = 0;
  green::RuntimeStats after{};
  green::run({.procs = 1}, [&] {
    std::atomic<bool> stop{false};
    green::WaitGroup wg;
    wg.add(1);
    green::go([&] {
      volatile uint64_t x = 0;
      while (!stop.load(std::memory_order_relaxed)) {
        for (int i = 0; i < 1000; ++i) x = x + i;
        green::checkpoint();
      }
      wg.done();
    });
    green::yield();  // let the spinner start: from now on it owns the only P
    for (int i = 0; i < 5; ++i) {
      const auto t = std::chrono::steady_clock::now();
      green::sleep_for(30ms);
      worst_late_ms = std::max(worst_late_ms, ms_since(t) - 30.0);
    }
    stop.store(true);
    wg.wait();
    after = green::stats();
  });
  EXPECT_LT(worst_late_ms, 20.0);
  EXPECT_GE(after.preemptions, 5u);
}

TEST(Fairness, SysmonFlagsAndCountsAHog) {
  green::RuntimeStats after{};
  std::atomic<int> others_ran{0};
  green::run({.procs = 1}, [&] {
    green::WaitGroup wg;
    wg.add(1);
    green::go([&] {
      // 60 ms of CPU with checkpoints, and queued work behind it on the same P.
      for (int i = 0; i < 4; ++i) {
        wg.add(1);
        green::go([&] {
          others_ran.fetch_add(1);
          wg.done();
        });
      }
      const auto t = std::chrono::steady_clock::now();
      int saw_others = -1;
      volatile uint64_t x = 0;
      while (ms_since(t) < 60) {
        for (int i = 0; i < 1000; ++i) x = x + i;
        green::checkpoint();
        if (saw_others < 0 && others_ran.load() == 4) saw_others = static_cast<int>(ms_since(t));
      }
      EXPECT_GE(saw_others, 0) << "queued green threads ran while the hog was still running";
      wg.done();
    });
    wg.wait();
    after = green::stats();
  });
  EXPECT_EQ(others_ran.load(), 4);
  EXPECT_GE(after.hogs, 1u);
}

TEST(Fairness, IdleRuntimeWithSysmonStaysIdle) {
  // sysmon backs off to 10 ms: an idle runtime must not burn a core.
  struct timespec before {}, after {};
  green::run({.procs = 2}, [&] {
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &before);
    green::sleep_for(300ms);
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &after);
  });
  const double cpu = static_cast<double>(after.tv_sec - before.tv_sec) +
                     static_cast<double>(after.tv_nsec - before.tv_nsec) / 1e9;
  EXPECT_LT(cpu, 0.1);
}

// may_block(): a call that returns at once keeps its P; one that blocks has its P retaken by
// sysmon, so the other green threads on a single P keep running.
TEST(MayBlock, ShortCallsKeepThePAndLongOnesAreRetaken) {
  int ticks_during_call = 0;
  green::RuntimeStats after_short{}, after_long{};
  green::run({.procs = 1}, [&] {
    for (int i = 0; i < 1000; ++i) {
      EXPECT_EQ(green::may_block([i] { return i; }), i);
    }
    after_short = green::stats();
    std::atomic<bool> done{false};
    green::WaitGroup wg;
    wg.add(1);
    green::go([&] {
      green::may_block([] { os_sleep(300ms); });
      done.store(true);
      wg.done();
    });
    green::yield();  // the sleeper enters its call holding the only P
    while (!done.load()) {
      green::sleep_for(5ms);
      if (!done.load()) ++ticks_during_call;
    }
    wg.wait();
    after_long = green::stats();
  });
  EXPECT_EQ(after_short.retakes, 0u);
  EXPECT_EQ(after_short.blocking_handoffs, 0u);
  EXPECT_GE(after_long.retakes, 1u);
  EXPECT_GE(ticks_during_call, 20) << "the P was handed on while the call slept";
}
