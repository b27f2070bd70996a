// build/greenhttp and its signals: SIGHUP and SIGUSR1 reopen the access log (logrotate's
// convention), SIGUSR2 is ignored, none of them kills the process; SIGTERM under keep-alive
// load drains without resetting a connection that has a request in flight.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include "tests/http/http_test_util.h"
#include "tests/http/server_process.h"

namespace green::http {
namespace {

using namespace std::chrono_literals;
using testing::Client;
using testing::get;
using testing::read_file;
using testing::run_command;
using testing::ServerProcess;
using testing::wait_until;

bool contains(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

// One request with `agent` as its User-Agent (the mark to look for in the access log).
void request(uint16_t port, const std::string& agent) {
  Client c(port);
  ASSERT_TRUE(c.send(get(port, "/plaintext", "User-Agent: " + agent + "\r\n")));
  auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST(Signals, SighupReopensTheAccessLogAfterItIsRenamed) {
  char dir[] = "/tmp/greenhttp-log-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string log = std::string(dir) + "/access.log";
  ServerProcess server({"--access-log", log});
  ASSERT_NE(server.port(), 0);

  request(server.port(), "before-rotation");
  ASSERT_TRUE(wait_until([&] { return contains(read_file(log), "before-rotation"); }, 5s));
  // logrotate: rename, then signal. The server still writes to the renamed file until then.
  ASSERT_EQ(rename(log.c_str(), (log + ".1").c_str()), 0);
  ASSERT_TRUE(server.signal(SIGHUP));
  ASSERT_TRUE(wait_until([&] { return access(log.c_str(), F_OK) == 0 || !server.alive(); }, 5s))
      << "no new file at the path";
  ASSERT_TRUE(server.alive()) << "SIGHUP killed the server";
  request(server.port(), "after-rotation");
  EXPECT_TRUE(wait_until([&] { return contains(read_file(log), "after-rotation"); }, 5s))
      << read_file(log);
  EXPECT_FALSE(contains(read_file(log), "before-rotation"));
  EXPECT_FALSE(contains(read_file(log + ".1"), "after-rotation"));
  EXPECT_TRUE(server.alive());
  EXPECT_TRUE(contains(server.stderr_text(), "SIGHUP: access log reopened"))
      << server.stderr_text();
  run_command(std::string("rm -rf '") + dir + "'");
}

TEST(Signals, Usr1ReopensTheLogAndUsr2IsIgnoredNeitherKills) {
  char dir[] = "/tmp/greenhttp-log-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string log = std::string(dir) + "/access.log";
  ServerProcess server({"--access-log", log});
  ASSERT_NE(server.port(), 0);
  ASSERT_EQ(rename(log.c_str(), (log + ".1").c_str()), 0);
  ASSERT_TRUE(server.signal(SIGUSR1));
  ASSERT_TRUE(wait_until([&] { return access(log.c_str(), F_OK) == 0 || !server.alive(); }, 5s));
  ASSERT_TRUE(server.signal(SIGUSR2));
  ASSERT_TRUE(wait_until(
      [&] { return contains(server.stderr_text(), "SIGUSR2: ignored") || !server.alive(); }, 5s))
      << server.stderr_text();
  ASSERT_TRUE(server.alive()) << "a signal killed the server";
  request(server.port(), "after-usr1");
  EXPECT_TRUE(wait_until([&] { return contains(read_file(log), "after-usr1"); }, 5s));
  // And SIGTERM still stops it cleanly afterwards.
  EXPECT_EQ(server.signal_and_wait(SIGTERM, 5s), 0) << server.stderr_text();
  run_command(std::string("rm -rf '") + dir + "'");
}

// 50 keep-alive clients loop on /plaintext; SIGTERM arrives mid-run (tests/http/drain_clients.py
// sends it once each client has had answers). No client may see a reset or a cut response after
// a request it sent: each gets its response (the last with Connection: close) or a clean end of
// stream before any of it. Several rounds: a one-in-ten failure is a real failure.
TEST(Signals, SigtermUnderKeepAliveLoadResetsNoConnection) {
  const int rounds = static_cast<int>(testing::scaled(5, 3));
  for (int round = 0; round < rounds; ++round) {
    ServerProcess server({"--access-log", "off", "--shutdown-timeout", "5s"});
    ASSERT_NE(server.port(), 0);
    ASSERT_TRUE(server.alive());
    int status = 0;
    const std::string out = run_command(
        "python3 " GREENHTTP_SOURCE_DIR "/tests/http/drain_clients.py " +
            std::to_string(server.port()) + " " + std::to_string(server.pid()) + " 50 20 2>&1",
        &status);
    std::printf("round %d: %s", round, out.c_str());
    EXPECT_EQ(status, 0) << "round " << round << ": " << out;
    EXPECT_TRUE(contains(out, " reset=0 ")) << out;
    EXPECT_EQ(server.wait_exit(10s), 0) << server.stderr_text();
    if (HasFailure()) break;
  }
}

}  // namespace
}  // namespace green::http
