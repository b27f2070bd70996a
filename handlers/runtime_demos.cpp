// Endpoints that show the runtime at work under load: parking on a timer, a real blocking
// call handed off with green::blocking, a CPU-bound loop kept fair with checkpoint(), and a
// fan-out of background green threads.
//
// /work and /blocking hold a P or an OS thread for as long as the client asks (up to a
// minute), so they cannot be turned against the server: each has a concurrency limit, past
// which it answers 503 with Retry-After at once (as a Go server behind
// golang.org/x/net/netutil or nginx's limit_conn does: 503). /sleep, /work and /blocking
// honour their request's context (Request::context(), Go's r.Context()): a client that goes
// away cancels it (the netpoller sees the hang-up), and the work stops at once instead of
// computing or holding a thread for nobody (100 clients that sent /work?ms=8000 and left used
// to burn 12 CPU-seconds). A stopped request is logged 499, nginx's "client closed request"
// (the client never sees it); one stopped by --handler-timeout gets the server's 503.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <memory>
#include <mutex>

#include "green/context.h"
#include "green/green.h"
#include "green/sync.h"
#include "handlers/handlers.h"

namespace green::handlers {

namespace {
using http::Method;
using http::Request;
using http::ResponseWriter;

constexpr int64_t kMaxMillis = 60'000;
constexpr int64_t kMaxSpawn = 100'000;
// /work looks at its context every this many rounds of 1,000 xorshifts (~20 us): a lock-free
// read in effect (an uncontended spin lock), so this is for the loop's cost, not the latency.
constexpr uint64_t kCheckEvery = 16;

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
  LimitSlot(ConcurrencyLimit& limit, ResponseWriter& w)
      : limit_(limit), entered_(limit.try_enter()) {
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

// A demo's work was cancelled. The client left: return without a word (the server records
// 499 and sends nothing). The handler deadline passed: the server answers 503 "Timeout".
// Otherwise (the drain deadline): say why.
void stopped(Request& r, ResponseWriter& w) {
  const green::ContextError why = r.context().err();
  if (why == green::ContextError::kDeadlineExceeded || r.client_gone()) return;
  w.send(503, "text/plain; charset=utf-8", "stopped: the server is shutting down\n");
}

void reply(ResponseWriter& w, const char* fmt, long long value) {
  char text[96];
  const int n = std::snprintf(text, sizeof text, fmt, value);
  w.send(200, "text/plain; charset=utf-8", {text, static_cast<std::size_t>(n)});
}
}  // namespace

void register_runtime_demos(http::Router& router, DemoLimits limits) {
  router.handle(Method::kGet, "/sleep", [](Request& r, ResponseWriter& w) {
    const int64_t ms = r.query_int("ms", 10, kMaxMillis);
    // Parks this G (its thread runs others) until the time passes or the context ends.
    if (!green::sleep_for(std::chrono::milliseconds(ms), r.context())) {
      stopped(r, w);
      return;
    }
    reply(w, "slept %lld ms\n", static_cast<long long>(ms));
  });

  auto blocking_limit = std::make_shared<ConcurrencyLimit>(std::max(1, limits.max_blocking));
  router.handle(Method::kGet, "/blocking", [blocking_limit](Request& r, ResponseWriter& w) {
    LimitSlot slot(*blocking_limit, w);
    if (!slot.entered()) return;
    const int64_t ms = r.query_int("ms", 10, kMaxMillis);
    // A real blocking call: the OS thread waits on a condition variable, so its P is handed
    // to another thread first. The context's cancellation notifies it (after_func runs on
    // whichever thread cancels, the netpoller's when the client hangs up): it stops at once,
    // without polling. The state is shared: a late notification finds it alive.
    struct Wait {
      std::mutex mu;
      std::condition_variable cv;
      bool cancelled = false;
    };
    auto wait = std::make_shared<Wait>();
    std::function<bool()> stop = green::after_func(r.context(), [wait] {
      {
        std::lock_guard<std::mutex> g(wait->mu);
        wait->cancelled = true;
      }
      wait->cv.notify_all();
    });
    const bool cancelled = green::blocking([&wait, ms] {
      std::unique_lock<std::mutex> lock(wait->mu);
      return wait->cv.wait_for(lock, std::chrono::milliseconds(ms),
                               [&] { return wait->cancelled; });
    });
    stop();
    if (cancelled) {
      stopped(r, w);
      return;
    }
    reply(w, "blocked a thread for %lld ms\n", static_cast<long long>(ms));
  });

  auto work_limit = std::make_shared<ConcurrencyLimit>(std::max(0, limits.max_work));
  router.handle(Method::kGet, "/work", [work_limit](Request& r, ResponseWriter& w) {
    LimitSlot slot(*work_limit, w);
    if (!slot.entered()) return;
    const int64_t ms = r.query_int("ms", 10, kMaxMillis);
    const green::Context& ctx = r.context();
    auto now = std::chrono::steady_clock::now();
    const auto until = now + std::chrono::milliseconds(ms);
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
      if (rounds % kCheckEvery == 0 && ctx.cancelled()) {
        stopped(r, w);
        return;
      }
    }
    char text[96];
    const int n = std::snprintf(text, sizeof text, "worked %lld ms (%llu rounds, %llx)\n",
                                static_cast<long long>(ms), static_cast<unsigned long long>(rounds),
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
    const int len = std::snprintf(
        text, sizeof text, "spawned %lld green threads (sum %lld)\n", static_cast<long long>(n),
        static_cast<long long>(sum.load(std::memory_order_relaxed)));  // wg.wait() ordered it
    w.send(200, "text/plain; charset=utf-8", {text, static_cast<std::size_t>(len)});
  });

  register_stack_growth(router);  // /stack?depth=N (stack_growth.cpp)
}

}  // namespace green::handlers
