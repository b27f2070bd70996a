// A green thread that hops between OS threads keeps its errno, its in-flight exception and its
// green-thread-local state.
#include <atomic>
#include <cerrno>
#include <chrono>
#include <exception>
#include <memory>
#include <stdexcept>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "green/channel.h"
#include "green/green.h"
#include "green/select.h"
#include "green/sync.h"
#include "tests/runtime/test_util.h"

using namespace std::chrono_literals;

namespace {

// glibc's __errno_location is declared const, so within one function the compiler may reuse
// errno's address across a yield. Reading through a call it cannot see into is the documented
// way for green-thread code to read errno after a park (see include/green/green.h).
[[gnu::noipa]] int read_errno() { return errno; }
[[gnu::noipa]] void write_errno(int v) { errno = v; }
// pthread_self() (behind std::this_thread::get_id()) is declared const too: the same trap.
[[gnu::noipa]] std::thread::id os_thread() { return std::this_thread::get_id(); }

// prefix + i, built by append: GCC 12 warns falsely (-Wrestrict) on "literal" + std::string.
std::string label(const char* prefix, int i) {
  std::string s(prefix);
  s += std::to_string(i);
  return s;
}

constexpr int kGreenThreads = 8;
constexpr int kHops = 50;

// Moves the calling green thread to another M (two Ps): a spawned blocker spins without
// yielding until released, so once it runs on our P, yield() can only resume us on the other P.
// If the idle P took the blocker first we are still here: release it and go again until the
// OS thread changed, the state waited for (not a retry for luck: each round that leaves us here
// is a legal schedule). Returns whether it changed within 10 s.
bool hop_to_other_machine() {
  const auto before = os_thread();
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < give_up) {
    auto release = std::make_shared<std::atomic<bool>>(false);
    green::go([release] {
      while (!release->load()) {
      }
    });
    green::yield();
    release->store(true);
    if (os_thread() != before) return true;
  }
  return false;
}

// Runs body(i, hop) in kGreenThreads green threads, one after another; counts hops that moved.
template <typename Body>
void run_hopping(Body body, int* hops_that_moved) {
  std::atomic<int> moved{0};
  green::run({.procs = 2}, [&] {
    for (int i = 0; i < kGreenThreads; ++i) {
      std::atomic<bool> done{false};
      green::go([&, i] {
        body(i, [&] {
          if (hop_to_other_machine()) moved.fetch_add(1);
        });
        done.store(true);
      });
      // Parks between looks, not yield: a yielding main would keep its P busy, and an idle P
      // is what steals the hopper away from the blocked one.
      ASSERT_TRUE(green::testing::wait_until([&] { return done.load(); }, 60s)) << "hopper " << i;
    }
    ASSERT_TRUE(green::testing::wait_until([] { return green::num_green_threads() == 1; }, 10s));
  });
  *hops_that_moved = moved.load();
}

}  // namespace

TEST(Migration, ErrnoFollowsTheGreenThreadAcrossMachines) {
  std::atomic<int> mismatches{0};
  int moved = 0;
  run_hopping(
      [&](int i, auto hop) {
        for (int k = 0; k < kHops; ++k) {
          write_errno(1000 + i * kHops + k);
          hop();
          if (read_errno() != 1000 + i * kHops + k) mismatches.fetch_add(1);
        }
      },
      &moved);
  EXPECT_EQ(moved, kGreenThreads * kHops) << "a hop did not change OS thread";
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(Migration, ExceptionBeingHandledSurvivesHops) {
  std::atomic<int> ok{0};
  int moved = 0;
  run_hopping(
      [&](int i, auto hop) {
        try {
          try {
            throw std::runtime_error(label("error ", i));
          } catch (const std::runtime_error&) {
            for (int k = 0; k < kHops; ++k) hop();
            // The exception being handled is still this G's, on whatever thread we are now.
            EXPECT_TRUE(std::current_exception() != nullptr);
            throw;  // rethrow needs the caught-exceptions stack saved per G
          }
        } catch (const std::runtime_error& e) {
          if (e.what() == label("error ", i)) ok.fetch_add(1);
        }
        EXPECT_EQ(std::current_exception(), nullptr);
        EXPECT_EQ(std::uncaught_exceptions(), 0);
      },
      &moved);
  EXPECT_EQ(moved, kGreenThreads * kHops);
  EXPECT_EQ(ok.load(), kGreenThreads);
}

TEST(Migration, DirectHandoffKeepsErrnoExceptionAndDeadline) {
  // One P, so every channel handoff below is a direct switch from the parking G to the one
  // it readied. The parking G is inside a catch block, has errno set, and parks with a
  // deadline (the timer is armed on the partner's stack, after the switch): it must come back
  // with all three intact, and the partner must see none of them.
  int errno_after = 0;
  std::string exception_after;
  int fired = 99;
  int partner_errno = 0;
  bool partner_saw_exception = true;
  green::run({.procs = 1}, [&] {
    green::Channel<int> handoff(0), never(0);
    green::WaitGroup wg;
    wg.add(2);
    green::go([&] {
      (void)handoff.recv();  // parks first; the other G's send readies it into runnext
      partner_saw_exception = std::current_exception() != nullptr;
      errno = 7;
      green::yield();
      partner_errno = errno;
      wg.done();
    });
    green::go([&] {
      try {
        throw std::runtime_error("being handled");
      } catch (const std::runtime_error&) {
        errno = 42;
        (void)handoff.send(1);
        fired = green::select(green::recv_case(never, [](std::optional<int>) {}),
                              green::timeout(std::chrono::milliseconds(20)));
        errno_after = errno;
        try {
          throw;
        } catch (const std::runtime_error& e) {
          exception_after = e.what();
        }
      }
      wg.done();
    });
    wg.wait();
  });
  EXPECT_EQ(fired, green::kSelectTimeout);
  EXPECT_EQ(errno_after, 42);
  EXPECT_EQ(exception_after, "being handled");
  EXPECT_EQ(partner_errno, 7);
  EXPECT_FALSE(partner_saw_exception);
}

TEST(Migration, GreenLocalStateFollowsTheGreenThread) {
  static green::GreenLocal<std::string> name;
  static green::GreenLocal<int> counter;
  std::atomic<int> mismatches{0};
  int moved = 0;
  run_hopping(
      [&](int i, auto hop) {
        const std::string expected = label("g", i);
        name.get() = expected;
        for (int k = 0; k < kHops; ++k) {
          ++counter.get();
          hop();
          if (name.get() != expected || counter.get() != k + 1) {
            mismatches.fetch_add(1);
          }
        }
      },
      &moved);
  EXPECT_EQ(moved, kGreenThreads * kHops);
  EXPECT_EQ(mismatches.load(), 0);
}

TEST(Migration, GreenLocalValuesAreDestroyedWhenTheGreenThreadExits) {
  static std::atomic<int> destroyed{0};
  struct Tracked {
    ~Tracked() { destroyed.fetch_add(1); }
  };
  static green::GreenLocal<Tracked> local;
  green::run({.procs = 2}, [&] {
    std::atomic<int64_t> done{0};
    for (int i = 0; i < 100; ++i) {
      green::go([&] {
        (void)local.get();
        done.fetch_add(1);
      });
    }
    ASSERT_TRUE(green::testing::wait_until([&] { return done.load() == 100; }, 10s));
    // Each G counts itself done just before it exits: its locals go as it exits.
    ASSERT_TRUE(green::testing::wait_until([] { return green::num_green_threads() == 1; }, 10s));
  });
  EXPECT_EQ(destroyed.load(), 100);
}
