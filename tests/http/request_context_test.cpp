// Request::context() (Go's r.Context()) through real sockets: cancelled when the client
// leaves (the netpoller sees the hang-up while the handler runs), by --handler-timeout (503
// when nothing was sent, later writes discarded), by the drain deadline; pipelined requests
// survive the watch; middleware::timeout answers 503 on time; a client that leaves /work
// stops its CPU use at once.
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "green/context.h"
#include "green/green.h"
#include "green/http/middleware.h"
#include "tests/http/http_test_util.h"
#include "tests/http/server_process.h"

using namespace std::chrono_literals;
using green::http::Method;
using green::http::Request;
using green::http::ResponseWriter;
using green::http::Router;
using green::http::ServerOptions;
using green::http::testing::Client;
using green::http::testing::get;
using green::http::testing::metric;
using green::http::testing::ServerProcess;
using green::http::testing::TestServer;
using green::http::testing::wait_until;

namespace {

using Clock = std::chrono::steady_clock;

int64_t count_499(uint16_t port) { return metric(port, "greenhttp_requests_total{code=\"499\"}"); }

// What handlers saw, for the test thread to look at.
struct Seen {
  std::atomic<int> entered{0};
  std::atomic<int> ended{0};
  std::atomic<int> last_err{-1};  // ContextError of the last handler that ended
};

// A route whose handler waits for its request's context to end, then records why.
void add_waiter(Router& router, const char* path, Seen& seen) {
  router.handle(Method::kGet, path, [&seen](Request& r, ResponseWriter& w) {
    seen.entered.fetch_add(1);
    r.context().wait();
    seen.last_err.store(static_cast<int>(r.context().err()));
    seen.ended.fetch_add(1);
    (void)w;  // writes nothing: the server decides (499, 503)
  });
}

}  // namespace

// The client of /sleep?ms=10000 closes its socket: the handler, parked on its context, wakes
// at once; the server records 499 and the green thread is gone.
TEST(RequestContext, ClientThatLeavesCancelsTheSleep) {
  ServerProcess server({});
  ASSERT_NE(server.port(), 0);
  const int64_t threads_before = metric(server.port(), "greenrt_green_threads");
  {
    Client c(server.port());
    ASSERT_TRUE(c.send(get(server.port(), "/sleep?ms=10000")));
    ASSERT_TRUE(wait_until(
        [&] { return metric(server.port(), "greenrt_green_threads") > threads_before; }, 2s));
  }  // closed
  const auto closed = Clock::now();
  EXPECT_TRUE(wait_until([&] { return count_499(server.port()) == 1; }, 2s));
  EXPECT_LT(Clock::now() - closed, 2s);
  EXPECT_TRUE(wait_until(
      [&] { return metric(server.port(), "greenrt_green_threads") == threads_before; }, 2s))
      << "the connection's green thread has ended";
}

// While the handler runs with its context watched, the client sends its next request (a
// readable socket, not a hang-up): the context is not cancelled and nothing is lost.
TEST(RequestContext, PipelinedRequestsAreNotLostWhileTheContextIsWatched) {
  ServerProcess server({});
  ASSERT_NE(server.port(), 0);
  Client c(server.port());
  ASSERT_TRUE(c.send(get(server.port(), "/sleep?ms=300")));
  std::this_thread::sleep_for(50ms);  // not a synchronisation: either order must work
  ASSERT_TRUE(c.send(get(server.port(), "/sleep?ms=1") + get(server.port(), "/plaintext")));
  auto r1 = c.read_response();
  ASSERT_TRUE(r1);
  EXPECT_EQ(r1->status, 200);
  EXPECT_EQ(r1->body, "slept 300 ms\n");
  auto r2 = c.read_response();
  ASSERT_TRUE(r2);
  EXPECT_EQ(r2->body, "slept 1 ms\n");
  auto r3 = c.read_response();
  ASSERT_TRUE(r3);
  EXPECT_EQ(r3->status, 200);
  EXPECT_LE(count_499(server.port()), 0) << "no request was taken for abandoned";
}

// A client that half-closes after its request counts as gone (as client_gone() documents, and
// as in Go and nginx): /sleep's context is cancelled at once, and nothing is sent (499).
TEST(RequestContext, HalfClosedClientCancelsTheContext) {
  ServerProcess server({});
  ASSERT_NE(server.port(), 0);
  Client c(server.port(), 5s);
  ASSERT_TRUE(c.send(get(server.port(), "/sleep?ms=5000")));
  ::shutdown(c.fd(), SHUT_WR);
  const auto start = Clock::now();
  EXPECT_EQ(c.read_all(), "");
  EXPECT_LT(Clock::now() - start, 2s);
  EXPECT_TRUE(wait_until([&] { return count_499(server.port()) == 1; }, 2s));
}

// The drain deadline cancels every request context still in flight: handlers that honour it
// end, and serve() returns with no connection left running.
TEST(RequestContext, DrainDeadlineCancelsInFlightContexts) {
  Seen seen;
  ServerOptions o;
  o.shutdown_timeout = 400ms;
  std::atomic<int> answering{0};
  TestServer server(o, [&](Router& r) {
    add_waiter(r, "/wait", seen);
    // As /sleep: honours its context, and answers when it ends.
    r.handle(Method::kGet, "/answer", [&](Request& r, ResponseWriter& w) {
      answering.fetch_add(1);
      if (!green::sleep_for(20s, r.context())) {
        w.send(503, "text/plain", "stopped: the server is shutting down\n");
      }
    });
  });
  Client c(server.port(), 5s);
  ASSERT_TRUE(c.send(get(server.port(), "/wait")));
  // A handler that answers when its context ends still gets its answer out (Connection: close).
  Client s(server.port(), 5s);
  ASSERT_TRUE(s.send(get(server.port(), "/answer")));
  ASSERT_TRUE(wait_until([&] { return seen.entered.load() == 1 && answering.load() == 1; }, 2s));
  const auto start = Clock::now();
  server.stop();
  EXPECT_LT(Clock::now() - start, 3s);
  EXPECT_EQ(seen.ended.load(), 1);
  EXPECT_EQ(seen.last_err.load(), static_cast<int>(green::ContextError::kCanceled));
  EXPECT_EQ(server.still_running(), 0u);
  auto r = s.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->body, "stopped: the server is shutting down\n");
  EXPECT_EQ(r->header("Connection"), "close");
}

// --handler-timeout: a handler that has sent nothing by its deadline is answered 503
// "Timeout" with Connection: close, whether it honours its context (at the deadline) or not
// (when it returns); what it writes afterwards never reaches the client; an earlier
// pipelined response in the same batch is intact.
TEST(RequestContext, HandlerTimeoutAnswers503AndDiscardsLateWrites) {
  Seen seen;
  ServerOptions o;
  o.handler_timeout = 150ms;
  TestServer server(o, [&](Router& r) {
    add_waiter(r, "/wait", seen);
    r.handle(Method::kGet, "/late", [](Request&, ResponseWriter& w) {
      green::sleep_for(400ms);  // ignores its context
      w.send(200, "text/plain", "late body\n");
    });
    r.handle(Method::kGet, "/started", [](Request& r, ResponseWriter& w) {
      w.write("first part\n");
      w.flush();  // the head and a chunk go out in time
      (void)green::sleep_for(5s, r.context());
      w.write("after the deadline\n");
    });
  });
  {
    Client c(server.port(), 5s);
    const auto start = Clock::now();
    ASSERT_TRUE(c.send(get(server.port(), "/wait")));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 503);
    EXPECT_EQ(r->body, "Timeout\n");
    EXPECT_EQ(r->header("Connection"), "close");
    EXPECT_LT(Clock::now() - start, 2s);
    EXPECT_TRUE(c.at_eof());
    EXPECT_EQ(seen.last_err.load(), static_cast<int>(green::ContextError::kDeadlineExceeded));
  }
  {
    Client c(server.port(), 5s);
    ASSERT_TRUE(c.send(get(server.port(), "/plaintext") + get(server.port(), "/late")));
    auto r1 = c.read_response();
    ASSERT_TRUE(r1);
    EXPECT_EQ(r1->status, 200);
    EXPECT_EQ(r1->body, "Hello, World!");
    // (Both answers come in one write: the batch's.)
    auto r2 = c.read_response();
    ASSERT_TRUE(r2);
    EXPECT_EQ(r2->status, 503);
    EXPECT_EQ(r2->body, "Timeout\n");
    EXPECT_TRUE(c.at_eof()) << "and nothing after it (no late body)";
  }
  {
    // The head went out in time: the response is cut off (no last chunk), as Go aborts it.
    Client c(server.port(), 5s);
    ASSERT_TRUE(c.send(get(server.port(), "/started")));
    const std::string all = c.read_all();
    EXPECT_FALSE(c.timed_out());
    EXPECT_EQ(all.rfind("HTTP/1.1 200", 0), 0u) << all;
    EXPECT_NE(all.find("first part"), std::string::npos);
    EXPECT_EQ(all.find("after the deadline"), std::string::npos) << all;
    EXPECT_EQ(all.find("\r\n0\r\n\r\n"), std::string::npos) << "not a complete chunked body";
  }
  EXPECT_EQ(server.server().metrics().handler_timeouts.load(), 2u);
}

// Without --handler-timeout nothing has a deadline, and a handler that never asks for its
// context is unaffected (the plain path).
TEST(RequestContext, NoDeadlineWithoutHandlerTimeout) {
  std::atomic<bool> had_deadline{true};
  TestServer server({}, [&](Router& r) {
    r.handle(Method::kGet, "/ask", [&](Request& r, ResponseWriter& w) {
      had_deadline = r.context().has_deadline();
      w.send(200, "text/plain", r.context().cancelled() ? "cancelled" : "live");
    });
  });
  Client c(server.port(), 5s);
  ASSERT_TRUE(c.send(get(server.port(), "/ask") + get(server.port(), "/ask")));
  for (int i = 0; i < 2; ++i) {
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, "live");
  }
  EXPECT_FALSE(had_deadline.load());
}

// middleware::timeout: the 503 goes out at the deadline even though the handler ignores its
// context; the handler's writes are discarded; a handler that is in time is answered as
// usual, on a connection that stays open.
TEST(RequestContext, TimeoutMiddlewareAnswersOnTime) {
  std::atomic<int> inner_err{-1};
  std::atomic<bool> inner_done{false};
  TestServer server({}, [&](Router& r) {
    auto mw = green::http::middleware::timeout(150ms);
    r.handle(Method::kGet, "/mw/slow", mw([&](Request& r, ResponseWriter& w) {
               w.send(200, "text/plain", "written before\n");
               green::sleep_for(600ms);  // ignores its context: the 503 must not wait for it
               inner_err = static_cast<int>(r.context().err());
               w.write("written after\n");
               inner_done = true;
             }));
    r.handle(Method::kGet, "/mw/fast", mw([](Request& r, ResponseWriter& w) {
               w.set_header("X-Inner", "yes");
               w.send(200, "text/plain",
                      r.context().has_deadline() ? "fast, with a deadline" : "no");
             }));
    r.handle(Method::kGet, "/mw/throws",
             mw([](Request&, ResponseWriter&) { throw std::runtime_error("boom"); }));
  });
  {
    Client c(server.port(), 5s);
    const auto start = Clock::now();
    ASSERT_TRUE(c.send(get(server.port(), "/mw/slow")));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    const auto took = Clock::now() - start;
    EXPECT_EQ(r->status, 503);
    EXPECT_EQ(r->body, "Timeout\n");
    EXPECT_LT(took, 500ms) << "on time, not when the handler returned";
    EXPECT_FALSE(inner_done.load());
    EXPECT_TRUE(c.at_eof());  // the connection closes once the handler has returned
    EXPECT_TRUE(inner_done.load());
    EXPECT_EQ(inner_err.load(), static_cast<int>(green::ContextError::kDeadlineExceeded));
  }
  {
    Client c(server.port(), 5s);
    ASSERT_TRUE(c.send(get(server.port(), "/mw/fast") + get(server.port(), "/mw/fast")));
    for (int i = 0; i < 2; ++i) {
      auto r = c.read_response();
      ASSERT_TRUE(r);
      EXPECT_EQ(r->status, 200);
      EXPECT_EQ(r->body, "fast, with a deadline");
      EXPECT_EQ(r->header("X-Inner"), "yes");
    }
    ASSERT_TRUE(c.send(get(server.port(), "/mw/throws")));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 500);
  }
}

// middleware::timeout around a handler that reads a streamed body behind Expect:
// 100-continue. The 100 goes out from the wrapper, before the child starts (the child reading
// would write the connection's output from its own thread while the wrapper writes the 503 to
// it at the deadline: a data race, which the TSan build reports). At the deadline the 503 goes
// out and the child's read of the stalled body ends at once: the connection closes then, not
// after the read timeout (10 s).
TEST(RequestContext, TimeoutMiddlewareEndsAStalledBodyRead) {
  std::atomic<long> last_read{1};
  std::atomic<bool> inner_done{false};
  TestServer server({}, [&](Router& r) {
    r.handle(Method::kPost, "/mw/upload",
             green::http::middleware::timeout(200ms)([&](Request& r, ResponseWriter& w) {
               char buf[4096];
               long n;
               while ((n = r.body().read(buf)) > 0) {
               }
               last_read = n;
               inner_done = true;
               w.send(200, "text/plain", "read it all\n");
             }));
  });
  Client c(server.port(), 3s);
  ASSERT_TRUE(
      c.send("POST /mw/upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n"
             "Expect: 100-continue\r\n\r\n"));
  const auto interim = c.read_response(true);
  ASSERT_TRUE(interim);
  EXPECT_EQ(interim->status, 100);
  const auto start = Clock::now();
  ASSERT_TRUE(c.send(std::string(1000, 'x')));  // then the client stalls
  const auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->body, "Timeout\n");
  EXPECT_TRUE(c.at_eof()) << "the connection must close at the deadline, not the read timeout";
  EXPECT_LT(Clock::now() - start, 2s);
  EXPECT_TRUE(inner_done.load());
  EXPECT_LT(last_read.load(), 0);  // the read failed: it did not see an end of body
}

// The "Measured" line: a client that disconnects from /work?ms=4000 stops its CPU use within
// a poll cycle. The CPU time of the process is read from /proc before and after.
TEST(RequestContext, WorkStopsItsCpuUseAtOnceWhenTheClientLeaves) {
  ServerProcess server({});
  ASSERT_NE(server.port(), 0);
  const double cpu_start = server.cpu_seconds();
  auto client = std::make_unique<Client>(server.port());
  ASSERT_TRUE(client->send(get(server.port(), "/work?ms=4000")));
  // Computing: CPU time rises.
  ASSERT_TRUE(wait_until([&] { return server.cpu_seconds() - cpu_start > 0.1; }, 3s));
  const double cpu_at_close = server.cpu_seconds();
  const auto closed = Clock::now();
  client.reset();  // the client leaves
  ASSERT_TRUE(wait_until([&] { return count_499(server.port()) == 1; }, 2s));
  const auto stopped_after = Clock::now() - closed;
  const double cpu_at_499 = server.cpu_seconds();
  std::this_thread::sleep_for(300ms);  // a window to measure CPU use over, not a wait
  const double cpu_later = server.cpu_seconds();
  std::printf(
      "/work?ms=4000: 499 seen %.1f ms after the close; CPU %.3f s from close to 499, "
      "%.3f s in the 300 ms after (the work would have taken ~%.1f s more)\n",
      std::chrono::duration<double, std::milli>(stopped_after).count(), cpu_at_499 - cpu_at_close,
      cpu_later - cpu_at_499, 4.0 - (cpu_at_close - cpu_start));
  EXPECT_LT(cpu_later - cpu_at_499, 0.05) << "nothing computes any more";
  EXPECT_LT(cpu_at_499 - cpu_at_close, 0.5);
}

// A streaming handler past --handler-timeout: its flushes fail from the deadline on (Go's
// ErrHandlerTimeout), so /events ends at once and the connection closes, cut off; before, its
// events were discarded while the handler ran on for the whole stream, holding the
// connection (a client that left held it too).
TEST(RequestContext, StreamPastTheHandlerTimeoutEndsAtTheDeadline) {
  ServerProcess server({"--handler-timeout", "200ms"});
  ASSERT_NE(server.port(), 0);
  Client c(server.port(), 5s);
  const auto start = Clock::now();
  ASSERT_TRUE(c.send(get(server.port(), "/events?n=100&ms=100")));  // 10 s of events
  const std::string all = c.read_all();
  EXPECT_FALSE(c.timed_out()) << "the connection closed";
  EXPECT_LT(Clock::now() - start, 4s);
  EXPECT_EQ(all.rfind("HTTP/1.1 200", 0), 0u) << all;
  EXPECT_EQ(all.find("\r\n0\r\n\r\n"), std::string::npos) << "cut off, not completed";
  EXPECT_EQ(all.find("data: 100"), std::string::npos);
  EXPECT_TRUE(
      wait_until([&] { return metric(server.port(), "greenhttp_open_connections") == 1; }, 3s))
      << "only the /metrics connection is left";
}

// A client that sends half of a streamed body and leaves cancels the request's context at
// once, while the body is still unread: /work (which does not read its body) stops, 499.
TEST(RequestContext, ClientThatLeavesMidUploadCancelsTheContext) {
  ServerProcess server({});
  ASSERT_NE(server.port(), 0);
  const int64_t threads_before = metric(server.port(), "greenrt_green_threads");
  {
    Client c(server.port());
    const std::string head =
        "GET /work?ms=20000 HTTP/1.1\r\nHost: x\r\nContent-Length: 40000\r\n\r\n";
    ASSERT_TRUE(c.send(head + std::string(100, 'b')));
    ASSERT_TRUE(wait_until(
        [&] { return metric(server.port(), "greenrt_green_threads") > threads_before; }, 2s));
  }  // closed mid-body
  EXPECT_TRUE(wait_until([&] { return count_499(server.port()) == 1; }, 3s))
      << "/work saw its context end although its body was never read";
  EXPECT_TRUE(wait_until(
      [&] { return metric(server.port(), "greenrt_green_threads") == threads_before; }, 2s));
}

// A streaming handler that ignores its context: once past --handler-timeout its flush() fails
// (Go's ErrHandlerTimeout), also when all it flushes is its own late bytes (which the deadline
// discards, leaving nothing to write), so its loop ends instead of running on unseen.
TEST(RequestContext, FlushFailsPastTheHandlerTimeoutSoAStreamingLoopEnds) {
  std::atomic<int> flushes_after_deadline{-1};
  ServerOptions o;
  o.handler_timeout = 150ms;
  TestServer server(o, [&](Router& r) {
    r.handle(Method::kGet, "/loop", [&](Request&, ResponseWriter& w) {
      const auto deadline = Clock::now() + 150ms;
      int late = 0;
      for (int i = 0; i < 200; ++i) {  // 200 x 20 ms: 4 s if flush never failed
        w.write("x\n");
        if (!w.flush()) break;
        if (Clock::now() > deadline) ++late;
        green::sleep_for(20ms);  // not the context's: this handler ignores it
      }
      flushes_after_deadline.store(late);
    });
  });
  Client c(server.port(), 5s);
  ASSERT_TRUE(c.send(get(server.port(), "/loop")));
  const std::string all = c.read_all();
  EXPECT_FALSE(c.timed_out()) << "the connection closed";
  EXPECT_EQ(all.rfind("HTTP/1.1 200", 0), 0u) << all;
  ASSERT_TRUE(wait_until([&] { return flushes_after_deadline.load() >= 0; }, 3s));
  // The one flush that straddles the clock check may still succeed; the next one fails.
  EXPECT_LE(flushes_after_deadline.load(), 1);
}
