// greenhttp's binary, until the HTTP server lands: a tour of the runtime. Spawns a wave of
// green threads that sleep and hop between Ps, and prints what the scheduler did.
#include <atomic>
#include <chrono>
#include <cstdio>

#include "green/green.h"

int main() {
  using namespace std::chrono_literals;
  green::run({}, [] {
    std::printf("greenrt demo: %d Ps (set GREEN_MAXPROCS to change)\n", green::num_procs());
    constexpr int kGreenThreads = 100'000;
    std::atomic<int> finished{0};
    auto start = std::chrono::steady_clock::now();
    for (int i = 0; i < kGreenThreads; ++i) {
      green::go([&finished, i] {
        green::sleep_for(std::chrono::milliseconds(i % 50));  // parks the G, not its thread
        finished.fetch_add(1, std::memory_order_relaxed);
      });
    }
    std::printf("spawned %d green threads; %lld alive\n", kGreenThreads,
                static_cast<long long>(green::num_green_threads()));
    while (finished.load() < kGreenThreads) green::sleep_for(5ms);
    auto ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start);
    green::RuntimeStats s = green::stats();
    std::printf("all %d finished in %.0f ms on %d OS threads\n", kGreenThreads, ms.count(),
                s.machines);
    for (int p = 0; p < s.procs; ++p) {
      std::printf("  P%d ran %llu green threads, stole %llu\n", p,
                  static_cast<unsigned long long>(s.per_proc[p].scheduled),
                  static_cast<unsigned long long>(s.per_proc[p].stolen));
    }
  });
  return 0;
}
