// Pipelined requests from clients that never read (issue 11, hardening): the server answers
// what it can and then waits for the client to read, instead of building every answer of a
// read batch in memory. Before the output buffer was flushed early, one ~28 KiB batch of
// `GET /metrics` made ~5 MB of answers per connection (896 of them), bounded only by
// --write-timeout: 200 such connections held over 500 MB.
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

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
using testing::Client;
using testing::get;
using testing::metric;
using testing::ServerProcess;

// A connected socket with a small receive buffer (set before connect, so the window is small
// from the start): the server's answers fill it at once.
int small_window_socket(uint16_t port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  const int small = 4096;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

TEST(PipelineMemory, ClientsThatNeverReadDoNotPileUpAnswers) {
  ServerProcess server({"--access-log", "off", "--threads", "2", "--write-timeout", "60s"});
  const uint16_t port = server.port();
  ASSERT_NE(port, 0);
  constexpr int kRequests = 900;
  std::string burst;
  for (int i = 0; i < kRequests; ++i) burst += get(port, "/metrics");
  // The largest answer: /metrics grows a little as the counters do; measure one now.
  Client sample(port);
  ASSERT_TRUE(sample.send(get(port, "/metrics")));
  const std::optional<Client::Response> one = sample.read_response();
  ASSERT_TRUE(one);
  const std::size_t response_bytes = one->head.size() + 4 + one->body.size();
  const int64_t baseline_kb = server.rss_kb();

  constexpr int kClients = 20;
  std::vector<int> fds;
  for (int i = 0; i < kClients; ++i) {
    const int fd = small_window_socket(port);
    ASSERT_GE(fd, 0) << i;
    fds.push_back(fd);
    // ~30 KB: fits the server's receive buffer, so this returns though nobody answers it.
    ASSERT_EQ(::send(fd, burst.data(), burst.size(), MSG_NOSIGNAL),
              static_cast<ssize_t>(burst.size()))
        << i;
  }
  // Wait until the server has answered all it can: every client's green thread is parked in a
  // write the client never makes room for (the dump, /debug/greenthreads, shows it). Old code:
  // ~896 answers per client; now a few dozen.
  const bool all_blocked =
      testing::wait_until([&] { return testing::waiting(port, "netpoll write") == kClients; }, 10s);
  const int64_t last = metric(port, "greenhttp_request_duration_seconds_count");
  const int64_t peak_kb = server.rss_kb();
  std::printf("RSS: baseline %lld KB, %d non-reading pipelining clients %lld KB; %lld answered\n",
              static_cast<long long>(baseline_kb), kClients, static_cast<long long>(peak_kb),
              static_cast<long long>(last));
  EXPECT_TRUE(all_blocked) << "the server kept answering for 10 s: "
                           << testing::green_threads(port);
  // What each connection may hold: its output buffer (64 KiB flush threshold + one response,
  // in a buffer whose capacity doubles: up to 2x that), its read buffer (~28 KiB), parser
  // tables and green-thread stack (~64 KiB touched): under 256 KiB for a ~6 KB answer. Socket
  // buffers are kernel memory, not RSS. Plus 8 MiB of slack for the allocator and the
  // runtime. Before the fix this was ~5 MB per connection (~100 MB for 20).
  const int64_t bound_kb =
      kClients * static_cast<int64_t>(2 * (64 * 1024 + response_bytes) + 64 * 1024) / 1024 +
      8 * 1024;
#if !defined(GREEN_SANITIZER_BUILD)
  // (The sanitizers' allocator and shadow memory make RSS say little: bound only glibc's.)
  EXPECT_LE(peak_kb - baseline_kb, bound_kb);
#else
  (void)bound_kb;
#endif

  // A client that reads still gets every answer, in order: /metrics answers alternate with
  // /echo answers that carry their index.
  Client reader(port, 10s);
  std::string mixed;
  for (int i = 0; i < kRequests; ++i) {
    if (i % 2 == 0) {
      mixed += get(port, "/metrics");
    } else {
      const std::string body = std::to_string(i);
      mixed += "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: " +
               std::to_string(body.size()) + "\r\n\r\n" + body;
    }
  }
  std::thread writer([&] { reader.send(mixed); });
  int answered = 0;
  for (; answered < kRequests; ++answered) {
    const std::optional<Client::Response> r = reader.read_response();
    if (!r || r->status != 200) break;
    if (answered % 2 == 0) {
      EXPECT_NE(r->body.find("greenhttp_requests_total"), std::string::npos) << answered;
    } else {
      EXPECT_EQ(r->body, std::to_string(answered));
    }
  }
  EXPECT_EQ(answered, kRequests);
  if (answered != kRequests) shutdown(reader.fd(), SHUT_RDWR);  // unblocks the writer
  writer.join();
  for (int fd : fds) close(fd);
}

}  // namespace
}  // namespace green::http
