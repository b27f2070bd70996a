// Endpoints that show the runtime at work under load: parking on a timer, a real blocking
// call handed off with green::blocking, a CPU-bound loop kept fair with checkpoint(), and a
// fan-out of background green threads.
//
// /work and /blocking hold a P or an OS thread for as long as the client asks (up to a
// minute), so they cannot be turned against the server: each has a concurrency limit, past
// which it answers 503 with Retry-After at once (as a Go server behind
// golang.org/x/net/netutil or nginx's limit_conn does: 503), and each stops soon after its
// client goes away (Request::client_gone(), polled every kPollEvery), instead of computing or
// holding a thread for nobody: 100 clients that sent /work?ms=8000 and left used to burn 12
// CPU-seconds. A stopped request is logged 499, nginx's "client closed request" (the client
// never sees it).
#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <memory>

#include "handlers/handlers.h"
#include "green/green.h"
#include "green/sync.h"

namespace green::handlers {

namespace {
using http::Method;
using http::Request;
using http::ResponseWriter;

constexpr int64_t kMaxMillis = 60'000;
constexpr int64_t kMaxSpawn = 100'000;
// How often a long handler asks whether its client is still there (one syscall each time).
constexpr auto kPollEvery = std::chrono::milliseconds(5);
constexpr int kClientClosedRequest = 499;  // nginx's status for the log; never sent (drop())

// A counting limit that never waits: a request over it is refused, not queued (queued CPU
// work would only add to the latency of everything else).
class ConcurrencyLimit {
 public:
  // max 0: the number of Ps, read when a request comes (handlers may be registered before
  // green::run starts).
  explicit ConcurrencyLimit(int max) : max_(max) {}
  bool try_enter() {
    const int max = max_ > 0 ? max_ : std::max(1, green::num_procs());
    int now = in_use_.load(std::memory_order_relaxed);
    while (now < max) {
      if (in_use_.compare_exchange_weak(now, now + 1, std::memory_order_relaxed)) return true;
    }
    return false;
  }
  void leave() { in_use_.fetch_sub(1, std::memory_order_relaxed); }

 private:
  const int max_;
  std::atomic<int> in_use_{0};
};

// Holds a slot of `limit` for the handler's scope, or answers 503 (then entered() is false).
class LimitSlot {
 public:
  LimitSlot(ConcurrencyLimit& limit, ResponseWriter& w) : limit_(limit), entered_(limit.try_enter()) {
    if (!entered_) {
      w.set_header("Retry-After", "1");
      w.send(503, "text/plain; charset=utf-8", "too many requests of this kind at once\n");
    }
  }
  ~LimitSlot() {
    if (entered_) limit_.leave();
  }
  LimitSlot(const LimitSlot&) = delete;
  LimitSlot& operator=(const LimitSlot&) = delete;
  bool entered() const { return entered_; }

 private:
  ConcurrencyLimit& limit_;
  const bool entered_;
};

void reply(ResponseWriter& w, const char* fmt, long long value) {
  char text[96];
  const int n = std::snprintf(text, sizeof text, fmt, value);
  w.send(200, "text/plain; charset=utf-8", {text, static_cast<std::size_t>(n)});
}
}  // namespace

void register_runtime_demos(http::Router& router, DemoLimits limits) {
  router.handle(Method::kGet, "/sleep", [](Request& r, ResponseWriter& w) {
    const int64_t ms = r.query_int("ms", 10, kMaxMillis);
    green::sleep_for(std::chrono::milliseconds(ms));  // parks this G; its thread runs others
    reply(w, "slept %lld ms\n", static_cast<long long>(ms));
  });

  auto blocking_limit = std::make_shared<ConcurrencyLimit>(std::max(1, limits.max_blocking));
  router.handle(Method::kGet, "/blocking", [blocking_limit](Request& r, ResponseWriter& w) {
    LimitSlot slot(*blocking_limit, w);
    if (!slot.entered()) return;
    const int64_t ms = r.query_int("ms", 10, kMaxMillis);
    // A real blocking call: the OS thread sleeps, so its P is handed to another thread first.
    // It sleeps in slices and asks between them whether the client is still there (a question
    // to the socket that never parks, so it is allowed inside blocking()).
    const bool gone = green::blocking([&r, ms] {
      const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
      for (;;) {
        const auto left = until - std::chrono::steady_clock::now();
        if (left <= std::chrono::nanoseconds::zero()) return false;
        const auto nap = std::chrono::duration_cast<std::chrono::nanoseconds>(
            std::min<std::chrono::steady_clock::duration>(left, kPollEvery));
        timespec ts{static_cast<time_t>(nap.count() / 1'000'000'000),
                    static_cast<long>(nap.count() % 1'000'000'000)};
        while (nanosleep(&ts, &ts) != 0) {
        }
        if (r.client_gone()) return true;
      }
    });
    if (gone) {
      w.drop(kClientClosedRequest);
      return;
    }
    reply(w, "blocked a thread for %lld ms\n", static_cast<long long>(ms));
  });

  auto work_limit = std::make_shared<ConcurrencyLimit>(std::max(0, limits.max_work));
  router.handle(Method::kGet, "/work", [work_limit](Request& r, ResponseWriter& w) {
    LimitSlot slot(*work_limit, w);
    if (!slot.entered()) return;
    const int64_t ms = r.query_int("ms", 10, kMaxMillis);
    auto now = std::chrono::steady_clock::now();
    const auto until = now + std::chrono::milliseconds(ms);
    auto next_poll = now + kPollEvery;
    uint64_t x = 88172645463325252ull;  // xorshift: work the optimiser cannot remove
    uint64_t rounds = 0;
    while ((now = std::chrono::steady_clock::now()) < until) {
      for (int i = 0; i < 1000; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
      }
      ++rounds;
      green::checkpoint();  // lets sysmon's preemption request through
      if (now >= next_poll) {
        if (r.client_gone()) {
          w.drop(kClientClosedRequest);
          return;
        }
        next_poll = now + kPollEvery;
      }
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
