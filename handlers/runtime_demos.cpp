// Endpoints that show the runtime at work under load: parking on a timer, a real blocking
// call handed off with green::blocking, a CPU-bound loop kept fair with checkpoint(), and a
// fan-out of background green threads.
#include <time.h>

#include <atomic>
#include <chrono>
#include <cstdio>

#include "handlers/handlers.h"
#include "runtime/green.h"
#include "runtime/sync.h"

namespace green::handlers {

namespace {
using http::Method;
using http::Request;
using http::ResponseWriter;

constexpr int64_t kMaxMillis = 60'000;
constexpr int64_t kMaxSpawn = 100'000;

void reply(ResponseWriter& w, const char* fmt, long long value) {
  char text[96];
  const int n = std::snprintf(text, sizeof text, fmt, value);
  w.send(200, "text/plain; charset=utf-8", {text, static_cast<std::size_t>(n)});
}
}  // namespace

void register_runtime_demos(http::Router& router) {
  router.handle(Method::kGet, "/sleep", [](Request& r, ResponseWriter& w) {
    const int64_t ms = r.query_int("ms", 10, kMaxMillis);
    green::sleep_for(std::chrono::milliseconds(ms));  // parks this G; its thread runs others
    reply(w, "slept %lld ms\n", static_cast<long long>(ms));
  });

  router.handle(Method::kGet, "/blocking", [](Request& r, ResponseWriter& w) {
    const int64_t ms = r.query_int("ms", 10, kMaxMillis);
    // A real blocking call: the OS thread sleeps, so its P is handed to another thread first.
    green::blocking([ms] {
      timespec ts{static_cast<time_t>(ms / 1000), static_cast<long>((ms % 1000) * 1'000'000)};
      while (nanosleep(&ts, &ts) != 0) {
      }
    });
    reply(w, "blocked a thread for %lld ms\n", static_cast<long long>(ms));
  });

  router.handle(Method::kGet, "/work", [](Request& r, ResponseWriter& w) {
    const int64_t ms = r.query_int("ms", 10, kMaxMillis);
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
    uint64_t x = 88172645463325252ull;  // xorshift: work the optimiser cannot remove
    uint64_t rounds = 0;
    while (std::chrono::steady_clock::now() < until) {
      for (int i = 0; i < 1000; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
      }
      ++rounds;
      green::checkpoint();  // lets sysmon's preemption request through
    }
    char text[96];
    const int n = std::snprintf(text, sizeof text, "worked %lld ms (%llu rounds, %llx)\n",
                                static_cast<long long>(ms),
                                static_cast<unsigned long long>(rounds),
                                static_cast<unsigned long long>(x & 0xfff));
    w.send(200, "text/plain; charset=utf-8", {text, static_cast<std::size_t>(n)});
  });

  router.handle(Method::kGet, "/spawn", [](Request& r, ResponseWriter& w) {
    const int64_t n = r.query_int("n", 100, kMaxSpawn);
    green::WaitGroup wg;
    std::atomic<int64_t> sum{0};
    wg.add(n);
    for (int64_t i = 0; i < n; ++i) {
      green::go([&wg, &sum, i] {
        green::yield();  // each one really gets scheduled, not just created
        sum.fetch_add(i, std::memory_order_relaxed);
        wg.done();
      });
    }
    wg.wait();
    char text[96];
    const int len = std::snprintf(text, sizeof text, "spawned %lld green threads (sum %lld)\n",
                                  static_cast<long long>(n), static_cast<long long>(sum.load()));
    w.send(200, "text/plain; charset=utf-8", {text, static_cast<std::size_t>(len)});
  });
}

}  // namespace green::handlers
