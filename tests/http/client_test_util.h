// The harness of the HTTP client's tests (client_test.cpp, client_tls_test.cpp): a runtime per
// test with the check, after it, that descriptors and green threads are back where they were,
// a context that bounds a test's calls, and readable assertions on ClientError.
#pragma once

#include <dirent.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include <gtest/gtest.h>

#include "green/channel.h"
#include "green/context.h"
#include "green/green.h"
#include "green/http/client.h"
#include "green/http/router.h"
#include "green/http/server.h"
#include "green/net.h"
#include "tests/runtime/test_util.h"

namespace green::testing {

// greenhttp's own Server on `routes`, serving in a green thread of this runtime from
// construction to destruction, which shuts it down (2 s drain) and waits for serve() to
// return: the in-process upstream of both client test files.
class ServedServer {
 public:
  ServedServer(const std::function<void(green::http::Router&)>& routes,
               green::http::ServerOptions options) {
    routes(router_);
    options.shutdown_timeout = std::chrono::seconds(2);
    server_ = std::make_unique<green::http::Server>(std::move(options), router_, nullptr);
    listening_ = server_->listen() == 0;
    if (!listening_) return;
    green::go([this] {
      server_->serve();
      served_.close();
    });
  }
  ~ServedServer() {
    if (listening_) {
      server_->shutdown();
      (void)served_.recv();
    }
    server_.reset();
  }
  ServedServer(const ServedServer&) = delete;
  ServedServer& operator=(const ServedServer&) = delete;

  bool listening() const { return listening_; }
  const green::http::Server& server() const { return *server_; }
  uint64_t accepted() const { return server_->metrics().accepted_connections.load(); }
  int64_t open_connections() const { return server_->metrics().open_connections.load(); }

 private:
  green::http::Router router_;  // outlives server_
  std::unique_ptr<green::http::Server> server_;
  green::Channel<bool> served_;
  bool listening_ = false;
};

inline int process_fds() {
  int n = 0;
  if (DIR* d = opendir("/proc/self/fd")) {
    while (readdir(d) != nullptr) ++n;
    closedir(d);
  }
  return n;
}

inline uint64_t runtime_fds() { return green::net::netpoll_stats().open_descriptors; }

// Runs `test` as the main green thread of a 2-P runtime, then checks that every descriptor it
// opened (client connections, upstream sockets) is closed again, and every green thread it
// started has ended: the upstreams and the Client are scoped inside `test`, so by then nothing
// may be left.
template <typename F>
void run_client_test(F&& test) {
  green::Options o;
  o.procs = 2;
  green::run(o, [&] {
    {  // the netpoller opens its epoll and eventfd with the first socket: before counting
      net::TcpListener warm_up;
      (void)net::TcpListener::listen(*net::Address::parse("127.0.0.1:0"), &warm_up);
    }
    const uint64_t runtime_before = runtime_fds();
    const int process_before = process_fds();
    const int64_t threads_before = green::num_green_threads();
    test();
    // Green threads too: the client's janitor ends with the Client, a context's deadline
    // watcher with its cancel (and run() would discard one still pending, and leak what it
    // holds, under ASan's eyes).
    EXPECT_TRUE(wait_until([&] { return green::num_green_threads() == threads_before; },
                           std::chrono::seconds(5)))
        << green::num_green_threads() << " green threads, " << threads_before << " before:\n"
        << green::dump_green_threads(20);
    EXPECT_TRUE(
        wait_until([&] { return runtime_fds() == runtime_before; }, std::chrono::seconds(5)))
        << "runtime descriptors: " << runtime_fds() << " open, " << runtime_before << " before";
    EXPECT_TRUE(
        wait_until([&] { return process_fds() == process_before; }, std::chrono::seconds(5)))
        << "process descriptors: " << process_fds() << " open, " << process_before << " before";
  });
}

// A context that bounds a whole test's calls, so that a client that hangs fails the test with
// a wrong error (kDeadlineExceeded) instead of hanging it.
class Bounded {
 public:
  explicit Bounded(std::chrono::nanoseconds limit = std::chrono::seconds(20)) {
    auto [ctx, cancel] = green::with_timeout(green::Context::background(), limit);
    ctx_ = ctx;
    cancel_ = std::move(cancel);
  }
  ~Bounded() { cancel_(); }
  Bounded(const Bounded&) = delete;
  Bounded& operator=(const Bounded&) = delete;
  const green::Context& ctx() const { return ctx_; }

 private:
  green::Context ctx_ = green::Context::background();
  green::CancelFn cancel_;
};

// The error a call ends with, head or body: the error of send() when no head came, else the
// error of reading the body to its end (kNone when it was complete).
inline green::http::ClientError final_error(green::http::ClientResponse& r,
                                            std::string* body = nullptr) {
  if (!r.ok()) return r.error();
  std::optional<std::string> all = r.read_all(64 << 20);
  if (all && body != nullptr) *body = *all;
  return all ? green::http::ClientError::kNone : r.error();
}

inline const char* name(green::http::ClientError e) { return green::http::client_error_name(e); }

// EXPECT_TRUE(is(r.error(), ClientError::kRead)): says both errors by name when it fails.
inline ::testing::AssertionResult is(green::http::ClientError got, green::http::ClientError want) {
  if (got == want) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "error is " << name(got) << ", want " << name(want);
}

}  // namespace green::testing
