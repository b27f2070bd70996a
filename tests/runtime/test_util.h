// Helpers shared by the runtime tests.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "green/detail/park.h"
#include "green/green.h"

namespace green::testing {

// Scales a count down in sanitizer builds, where each green thread costs far more. Under TSan
// at most ~8,000 green threads may exist at once (each is a TSan fiber): at most 5,000 then.
constexpr int64_t scaled(int64_t release_count, int64_t sanitizer_count) {
#if defined(GREEN_TSAN_BUILD)
  (void)release_count;
  return sanitizer_count < 5'000 ? sanitizer_count : 5'000;
#elif defined(GREEN_SANITIZER_BUILD)
  (void)release_count;
  return sanitizer_count;
#else
  (void)sanitizer_count;
  return release_count;
#endif
}

// Waits until `done()` holds or `limit` passes; returns whether it held. The one way tests wait
// for something another thread, the runtime or another process does: on an observable state
// (a flag, a counter, green::stats(), a dump, /metrics, a file), never for a fixed time, and
// never without a deadline. It polls, backing off from 1 ms to 20 ms; green::sleep_for parks
// the caller on a green thread (its P runs others meanwhile) and sleeps a plain thread.
template <typename Pred>
bool wait_until(Pred&& done, std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  auto pause = std::chrono::milliseconds(1);
  while (!done()) {
    if (std::chrono::steady_clock::now() >= until) return false;
    sleep_for(pause);
    pause = std::min(pause * 2, std::chrono::milliseconds(20));
  }
  return true;
}

// wait_until for a green thread that must keep its P (a test of who runs where): it yields
// between looks instead of parking.
template <typename Pred>
bool yield_until(Pred&& done, std::chrono::milliseconds limit) {
  const auto until = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() >= until) return false;
    yield();
  }
  return true;
}

// How many green threads the runtime's dump (green::dump_green_threads(), public) shows parked
// for `reason` ("chan receive", "netpoll read", "mutex", ...): "it has parked", observed.
inline int waiting(std::string_view reason) {
  const std::string dump = dump_green_threads();
  const std::string key = "[waiting: " + std::string(reason) + ",";
  int n = 0;
  for (std::size_t at = dump.find(key); at != std::string::npos; at = dump.find(key, at + 1)) ++n;
  return n;
}

// Waits until at least `n` green threads are parked for `reason` (10 s at most).
inline bool wait_until_waiting(std::string_view reason, int n,
                               std::chrono::milliseconds limit = std::chrono::seconds(10)) {
  return wait_until([&] { return waiting(reason) >= n; }, limit);
}

// A gate that parks green threads (through the runtime's park/unpark) until opened; used by
// tests that need many parked green threads without depending on the channel layer.
class Gate {
 public:
  void wait() {
    detail::Waiter w;
    lock_.lock();
    if (open_) {
      lock_.unlock();
      return;
    }
    waiters_.push_back(&w);
    parked_.fetch_add(1, std::memory_order_relaxed);
    detail::park(w, detail::WaitReason::kWaitGroup, detail::unlock_spin_lock, &lock_);
  }
  void open() {
    std::vector<detail::Waiter*> woken;
    lock_.lock();
    open_ = true;
    woken.swap(waiters_);
    lock_.unlock();
    for (detail::Waiter* w : woken) {
      if (w->try_claim(0)) detail::unpark(*w);
    }
  }
  int64_t parked() const { return parked_.load(std::memory_order_relaxed); }

 private:
  detail::SpinLock lock_;
  bool open_ = false;
  std::vector<detail::Waiter*> waiters_;
  std::atomic<int64_t> parked_{0};
};

// On a green thread of a 2-P runtime: computes (no runtime call, so this P stays busy) for at
// least `at_least`, and then until the other P is idle with no OS thread looking for work,
// i.e. its thread has gone to sleep (a loaded machine may take a while to run it that far).
// Gives up after 10 s.
inline void compute_until_the_other_p_sleeps(std::chrono::nanoseconds at_least) {
  const auto start = std::chrono::steady_clock::now();
  for (;;) {
    const auto elapsed = std::chrono::steady_clock::now() - start;
    const RuntimeStats rs = stats();
    if ((elapsed >= at_least && rs.idle_procs == 1 && rs.spinning_machines == 0) ||
        elapsed > std::chrono::seconds(10)) {
      return;
    }
  }
}

inline int64_t rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  int64_t size = 0, resident = 0;
  statm >> size >> resident;
  return resident * 4096;
}

inline int map_count() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  int n = 0;
  while (std::getline(maps, line)) ++n;
  return n;
}

}  // namespace green::testing
