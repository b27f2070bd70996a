// build/greenhttp and its signals: SIGHUP and SIGUSR1 reopen the access log (logrotate's
// convention), SIGUSR2 is ignored, none of them kills the process; SIGTERM under keep-alive
// load drains without resetting a connection that has a request in flight.
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <string>

#include <gtest/gtest.h>

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

// greenhttp logging to dir/access.log, in a directory of its own removed afterwards.
struct LoggingServer {
  LoggingServer() : dir(make_dir()), log(dir + "/access.log"), server({"--access-log", log}) {}
  ~LoggingServer() { run_command("rm -rf '" + dir + "'"); }
  static std::string make_dir() {
    char d[] = "/tmp/greenhttp-log-XXXXXX";
    return mkdtemp(d) != nullptr ? d : "/nonexistent";
  }
  // logrotate's two steps: rename the file to log.1, signal. True once a new file is at the
  // path and the server is still running.
  bool rotate(int sig) {
    if (rename(log.c_str(), (log + ".1").c_str()) != 0 || !server.signal(sig)) return false;
    wait_until([&] { return access(log.c_str(), F_OK) == 0 || !server.alive(); }, 5s);
    return access(log.c_str(), F_OK) == 0 && server.alive();
  }
  bool logged(const std::string& mark) {
    return wait_until([&] { return contains(read_file(log), mark); }, 5s);
  }

  std::string dir;
  std::string log;
  ServerProcess server;
};

TEST(Signals, SighupReopensTheAccessLogAfterItIsRenamed) {
  LoggingServer s;
  ASSERT_NE(s.server.port(), 0);
  request(s.server.port(), "before-rotation");
  ASSERT_TRUE(s.logged("before-rotation"));
  ASSERT_TRUE(s.rotate(SIGHUP)) << "SIGHUP killed the server or made no new file: "
                                << s.server.stderr_text();
  request(s.server.port(), "after-rotation");
  EXPECT_TRUE(s.logged("after-rotation")) << read_file(s.log);
  EXPECT_FALSE(contains(read_file(s.log), "before-rotation"));
  EXPECT_FALSE(contains(read_file(s.log + ".1"), "after-rotation"));
  EXPECT_TRUE(s.server.alive());
  EXPECT_TRUE(contains(s.server.stderr_text(), "SIGHUP: access log reopened"))
      << s.server.stderr_text();
}

TEST(Signals, Usr1ReopensTheLogAndUsr2IsIgnoredNeitherKills) {
  LoggingServer s;
  ASSERT_NE(s.server.port(), 0);
  ASSERT_TRUE(s.rotate(SIGUSR1)) << s.server.stderr_text();
  ASSERT_TRUE(s.server.signal(SIGUSR2));
  ASSERT_TRUE(wait_until(
      [&] { return contains(s.server.stderr_text(), "SIGUSR2: ignored") || !s.server.alive(); },
      5s))
      << s.server.stderr_text();
  ASSERT_TRUE(s.server.alive()) << "SIGUSR2 killed the server";
  request(s.server.port(), "after-usr1");
  EXPECT_TRUE(s.logged("after-usr1"));
  // And SIGTERM still stops it cleanly afterwards.
  EXPECT_EQ(s.server.signal_and_wait(SIGTERM, 5s), 0) << s.server.stderr_text();
}

// The log's path turned into a FIFO that nobody reads: the reopen fails at once (it used to
// block the signal thread in open(2) for good, so SIGTERM went unheard), the old file is kept,
// and the server still drains and exits on SIGTERM.
TEST(Signals, ReopenOntoAFifoWithNoReaderFailsWithoutBlockingTheSignals) {
  LoggingServer s;
  ASSERT_NE(s.server.port(), 0);
  request(s.server.port(), "before-fifo");
  ASSERT_TRUE(s.logged("before-fifo"));
  ASSERT_EQ(rename(s.log.c_str(), (s.log + ".1").c_str()), 0);
  ASSERT_EQ(mkfifo(s.log.c_str(), 0644), 0);
  ASSERT_TRUE(s.server.signal(SIGHUP));
  ASSERT_TRUE(wait_until([&] { return contains(s.server.stderr_text(), "not reopened"); }, 5s))
      << s.server.stderr_text();
  request(s.server.port(), "after-fifo");  // still logged, to the renamed file
  EXPECT_TRUE(wait_until([&] { return contains(read_file(s.log + ".1"), "after-fifo"); }, 5s));
  EXPECT_EQ(s.server.signal_and_wait(SIGTERM, 10s), 0) << s.server.stderr_text();
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
