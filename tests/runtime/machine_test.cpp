// Machines (OS threads): the scheduler starts and wakes them without holding its spin lock.
#include <sched.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <ctime>

#include <gtest/gtest.h>

#include "green/green.h"
#include "green/sync.h"
#include "runtime/scheduler.h"

using namespace std::chrono_literals;

namespace {

#if GREEN_CHECKS
std::atomic<int> probes{0};
std::atomic<int> found_held{0};

// Called by the runtime where sched.lock must be free: before startm() creates a thread and
// before a wake-up's futex or eventfd call. Had the caller held the lock, it would never come
// free here: give up after 5 s and count it (other threads hold it well under a microsecond).
void probe_sched_lock() {
  probes.fetch_add(1);
  const auto deadline = std::chrono::steady_clock::now() + 5s;
  while (!green::detail::sched.lock.try_lock()) {
    if (std::chrono::steady_clock::now() > deadline) {
      found_held.fetch_add(1);
      return;
    }
    sched_yield();
  }
  green::detail::sched.lock.unlock();
}

// A call that blocks its OS thread, the kind green::blocking() is for.
void os_sleep(std::chrono::nanoseconds d) {
  struct timespec ts {};
  ts.tv_sec = d.count() / 1'000'000'000;
  ts.tv_nsec = d.count() % 1'000'000'000;
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}
#endif

}  // namespace

// Go's startm rule (docs/style.md, "nothing slow under a spin lock"): thread creation and the
// futex/eventfd wake-ups of Ms happen after sched.lock is released.
TEST(Machines, ThreadsAreStartedAndWokenOutsideTheSchedulerLock) {
#if GREEN_CHECKS
  green::detail::outside_sched_lock_hook.store(&probe_sched_lock);
  green::run({.procs = 2}, [] {
    // Each round's blocking calls hand their Ps to other Ms: new threads in the first round,
    // idle Ms woken in the next ones.
    for (int round = 0; round < 3; ++round) {
      green::WaitGroup wg;
      for (int i = 0; i < 6; ++i) {
        wg.add(1);
        green::go([&wg] {
          green::blocking([] { os_sleep(2ms); });
          wg.done();
        });
      }
      wg.wait();
    }
    // A timer while a P is idle: an idle M is woken to wait for it.
    green::sleep_for(5ms);
  });
  green::detail::outside_sched_lock_hook.store(nullptr);
  EXPECT_GT(probes.load(), 0) << "the hook was never called: nothing was checked";
  EXPECT_EQ(found_held.load(), 0) << "a thread was started or woken under sched.lock";
#else
  GTEST_SKIP() << "the hook exists in GREEN_CHECKS builds (Debug, sanitizers) only";
#endif
}
