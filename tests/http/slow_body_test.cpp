// Slow and partial request bodies against build/greenhttp (issue 11, section 1): a request that
// trickles in forever meets --read-timeout, bodies past --max-buffered-body are refused with
// 503 instead of buffered, and the memory an attack took comes back once it is over.
#include <poll.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/http/http_test_util.h"
#include "tests/http/server_process.h"

namespace green::http {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using testing::Client;
using testing::get;
using testing::metric;
using testing::ServerProcess;

constexpr std::string_view kChunkedPost =
    "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n";

// `bytes` of body as 4,000-byte chunks (a multiple of 4,000), without the last chunk.
std::string chunks(std::size_t bytes) {
  const std::string one = "fa0\r\n" + std::string(4000, 'x') + "\r\n";
  std::string out;
  out.reserve(bytes / 4000 * one.size());
  for (std::size_t i = 0; i < bytes / 4000; ++i) out += one;
  return out;
}

// Waits until `done` holds or `limit` passes; returns whether it held.
template <typename Pred>
bool eventually(Pred done, std::chrono::milliseconds limit) {
  return testing::wait_until(done, limit);
}

TEST(SlowBody, TrickledBodyGets408AtTheReadTimeout) {
  ServerProcess server(
      {"--access-log", "off", "--read-timeout", "1s", "--read-header-timeout", "10s"});
  ASSERT_NE(server.port(), 0);
  Client c(server.port(), 5s);
  const Clock::time_point start = Clock::now();
  ASSERT_TRUE(c.send(std::string(kChunkedPost) + "1;"));
  // One chunk-extension byte every 100 ms: the request keeps moving, no pause comes near
  // --read-header-timeout, and only the whole-request deadline can end it.
  std::optional<Client::Response> r;
  while (Clock::now() - start < 5s) {
    if (!c.send("a")) break;
    pollfd p{c.fd(), POLLIN, 0};
    if (poll(&p, 1, 100) > 0) {
      r = c.read_response();
      break;
    }
  }
  const auto elapsed = Clock::now() - start;
  ASSERT_TRUE(r) << "no answer within 5 s";
  EXPECT_EQ(r->status, 408);
  EXPECT_EQ(r->header("Connection"), "close");
  EXPECT_GE(elapsed, 900ms);
  EXPECT_LT(elapsed, 3s);
  EXPECT_EQ(metric(server.port(), "greenhttp_read_timeouts_total"), 1);
}

TEST(SlowBody, BodiesOverTheBufferBudgetGet503AndTheServerStaysResponsive) {
  ServerProcess server({"--access-log", "off", "--max-buffered-body", "256KiB"});
  const uint16_t port = server.port();
  ASSERT_NE(port, 0);
  // A 100,000-byte body grows its buffer to 128 KiB (doubling), so two fit in 256 KiB; the
  // bodies stay unfinished, as from slow clients.
  constexpr int kClients = 6;
  constexpr int64_t kHeld = 2;
  constexpr int64_t kEach = 128 * 1024;
  const std::string upload = std::string(kChunkedPost) + chunks(100'000);
  std::vector<Client> clients;
  for (int i = 0; i < kClients; ++i) {
    clients.emplace_back(port);
    ASSERT_TRUE(clients.back().send(upload)) << i;
    // Wait until the server has taken this body in: held, or refused.
    const int64_t held = std::min<int64_t>(i + 1, kHeld);
    ASSERT_TRUE(eventually(
        [&] {
          return metric(port, "greenhttp_buffered_body_bytes") == held * kEach &&
                 metric(port, "greenhttp_body_budget_rejections_total") == i + 1 - held;
        },
        5s))
        << "client " << i << ": in use " << metric(port, "greenhttp_buffered_body_bytes")
        << ", rejections " << metric(port, "greenhttp_body_budget_rejections_total");
  }
  // Still serving while the budget is spent.
  Client probe(port);
  ASSERT_TRUE(probe.send(get(port, "/plaintext")));
  const std::optional<Client::Response> hello = probe.read_response();
  ASSERT_TRUE(hello);
  EXPECT_EQ(hello->status, 200);

  // A declared body is refused before it is sent: a 503 at once, not 100 Continue.
  Client declared(port);
  ASSERT_TRUE(
      declared.send("POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 100000\r\n"
                    "Expect: 100-continue\r\n\r\n"));
  const std::optional<Client::Response> refused = declared.read_response();
  ASSERT_TRUE(refused);
  EXPECT_EQ(refused->status, 503);

  for (int i = kHeld; i < kClients; ++i) {
    const std::optional<Client::Response> r = clients[static_cast<std::size_t>(i)].read_response();
    ASSERT_TRUE(r) << i;
    EXPECT_EQ(r->status, 503) << i;
    EXPECT_EQ(r->header("Retry-After"), "1");
    EXPECT_EQ(r->header("Connection"), "close");
  }
  // The held bodies complete normally.
  for (int i = 0; i < kHeld; ++i) {
    Client& c = clients[static_cast<std::size_t>(i)];
    ASSERT_TRUE(c.send("0\r\n\r\n"));
    const std::optional<Client::Response> r = c.read_response();
    ASSERT_TRUE(r) << i;
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body.size(), 100'000u);
  }
  clients.clear();
  EXPECT_TRUE(eventually([&] { return metric(port, "greenhttp_buffered_body_bytes") == 0; }, 5s));
}

// The attack that reserving a declared Content-Length at the headers allowed: 64 clients send
// headers declaring 1 MiB (the default --max-body) and then trickle, which held the whole
// default 64 MiB budget and got every other upload over the read buffer refused (503) for as
// long as they kept going. Budget now follows the bytes that arrived.
TEST(SlowBody, DeclaredButUnsentBodiesDoNotBlockOtherUploads) {
  ServerProcess server({"--access-log", "off"});
  const uint16_t port = server.port();
  ASSERT_NE(port, 0);
  constexpr int kHogs = 64;
  constexpr int64_t kSent = 40'000;  // past the ~28 KiB read buffer: this much is budgeted
  const std::string hog =
      "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1048576\r\n\r\n" +
      std::string(kSent, 'h');
  std::vector<Client> hogs;
  for (int i = 0; i < kHogs; ++i) {
    hogs.emplace_back(port);
    ASSERT_TRUE(hogs.back().send(hog)) << i;
  }
  // Every hog's sent bytes are in: each holds a reservation of at least what it sent.
  ASSERT_TRUE(eventually(
      [&] { return metric(port, "greenhttp_buffered_body_bytes") >= kHogs * kSent; }, 10s))
      << "in use " << metric(port, "greenhttp_buffered_body_bytes");
  // What they hold is what they sent (64 KiB buffers), not what they declared (64 MiB).
  EXPECT_LE(metric(port, "greenhttp_buffered_body_bytes"), kHogs * 64 * 1024);
  // A normal 40 KB upload, declared and sent at once, is served.
  Client c(port);
  const std::string body(40'000, 'u');
  ASSERT_TRUE(
      c.send("POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 40000\r\n\r\n" + body));
  const std::optional<Client::Response> r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body.size(), body.size());
  EXPECT_EQ(metric(port, "greenhttp_body_budget_rejections_total"), 0);
}

TEST(SlowBody, RssComesBackAfterManyLargePartialBodiesLeave) {
  // At the default budget (64 MiB) and --max-body (1 MiB).
  ServerProcess server({"--access-log", "off", "--threads", "2"});
  const uint16_t port = server.port();
  ASSERT_NE(port, 0);
  constexpr std::size_t kBody = 900'000;  // of a 1 MiB --max-body: a 1 MiB buffer
  constexpr int64_t kHeldBytes = 1 << 20;
  const std::string upload = std::string(kChunkedPost) + chunks(kBody);
  // Warm-up, as a server that has served one big upload: glibc serves a first 1 MiB buffer
  // with mmap, and once it is freed raises its mmap threshold past 1 MiB, so the attack's
  // buffers come from its heap arenas and, once freed, stay in RSS unless trimmed.
  {
    Client c(port);
    ASSERT_TRUE(c.send(upload + "0\r\n\r\n"));
    const std::optional<Client::Response> r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
  }
  const int64_t baseline_kb = server.rss_kb();

  const int clients_wanted = static_cast<int>(testing::scaled(300, 100));
  std::vector<Client> clients;
  clients.reserve(static_cast<std::size_t>(clients_wanted));
  for (int i = 0; i < clients_wanted; ++i) {
    clients.emplace_back(port, 10s);
    ASSERT_TRUE(clients.back().connected()) << i;
    // A refused client's send may fail: the server answers 503 and closes after discarding
    // what comes in the next 500 ms.
    clients.back().send(upload);
  }
  // Every body is either held whole (1 MiB of budget each) or refused.
  ASSERT_TRUE(eventually(
      [&] {
        const int64_t in_use = metric(port, "greenhttp_buffered_body_bytes");
        const int64_t refused = metric(port, "greenhttp_body_budget_rejections_total");
        return in_use % kHeldBytes == 0 && in_use / kHeldBytes + refused == clients_wanted;
      },
      20s));
  const int64_t peak_kb = server.rss_kb();
  clients.clear();

  // After they leave, what may stay: the dead connections' green-thread stacks that the
  // runtime keeps for reuse (their pages trimmed to a few KiB each), up to
  // MemoryReclaimer::kTrimAfterBytes (4 MiB) freed but not yet trimmed, and allocator
  // fragmentation. 24 MiB covers that with room, and is far below the 64 MiB of bodies held
  // at the peak (and the ~300 MiB without a budget): memory that stayed would not fit.
  constexpr int64_t kBoundKb = 24 * 1024;
#if defined(GREEN_SANITIZER_BUILD)
  // The sanitizer's allocator keeps freed memory in quarantine and never hands it back when
  // asked: the RSS bounds hold only for glibc malloc. The rest of the test still runs.
  constexpr auto kRssWait = 0s;
#else
  constexpr auto kRssWait = 10s;
#endif
  int64_t after_kb = 0;
  const bool back = eventually(
      [&] {
        after_kb = server.rss_kb();
        return after_kb <= baseline_kb + kBoundKb;
      },
      kRssWait);
  std::printf("RSS: baseline %lld KB, %d partial bodies %lld KB, after they left %lld KB\n",
              static_cast<long long>(baseline_kb), clients_wanted, static_cast<long long>(peak_kb),
              static_cast<long long>(after_kb));
  EXPECT_TRUE(eventually([&] { return metric(port, "greenhttp_buffered_body_bytes") == 0; }, 5s));
#if !defined(GREEN_SANITIZER_BUILD)
  EXPECT_TRUE(back) << "RSS stayed above baseline + 24 MiB";
  // The peak: the budget, plus per connection its read buffer, a body buffer up to the
  // unbudgeted size and its stack (~100 KiB in all), plus slack.
  EXPECT_LE(peak_kb - baseline_kb, 64 * 1024 + clients_wanted * 100 + 16 * 1024);
#else
  (void)back;
#endif
  // Still serving.
  Client c(port);
  ASSERT_TRUE(c.send(get(port, "/plaintext")));
  const std::optional<Client::Response> r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

}  // namespace
}  // namespace green::http
