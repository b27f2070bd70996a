// Endpoints and files that cannot be turned against the server (issue 11, section 4), through
// build/greenhttp: a FIFO in --static-dir, /work and /blocking whose clients left, their
// concurrency limits, threads left by a burst of blocking calls, --debug-listen, and the bounded
// green-thread dump. Every wait has a deadline; the server's own figures (/proc/PID, /metrics)
// say when a state is reached.
#include <arpa/inet.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "config/config.h"
#include "tests/http/http_test_util.h"
#include "tests/http/server_process.h"

namespace green::http {
namespace {

using namespace std::chrono_literals;
using testing::Client;
using testing::get;
using testing::metric;
using testing::run_command;
using Clock = std::chrono::steady_clock;

// The server as these tests run it: no access log, two Ps.
class ServerProcess : public testing::ServerProcess {
 public:
  explicit ServerProcess(std::vector<std::string> args, std::vector<std::string> env = {})
      : testing::ServerProcess(with_defaults(std::move(args)), std::move(env)) {}

 private:
  static std::vector<std::string> with_defaults(std::vector<std::string> args) {
    args.insert(args.begin(), {"--access-log", "off", "--threads", "2"});
    return args;
  }
};

// One request on its own connection; the response, or status 0 on timeout.
Client::Response fetch(uint16_t port, const std::string& target,
                       std::chrono::milliseconds timeout = 5s) {
  Client c(port, timeout);
  if (!c.connected() || !c.send(get(port, target, "Connection: close\r\n"))) return {};
  return c.read_response().value_or(Client::Response{});
}

// Waits up to `limit` for pred(); returns whether it held.
template <typename Pred>
bool eventually(Pred pred, std::chrono::milliseconds limit) {
  return testing::wait_until(pred, limit);
}

// Sends a request and closes the connection at once (a client that gave up).
void send_and_leave(uint16_t port, const std::string& target) {
  Client c(port);
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.send(get(port, target)));
}

uint16_t free_port() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  close(fd);
  return ntohs(a.sin_port);
}

// A FIFO opened for reading waits for a writer: it used to hang its request forever and pin an
// OS thread (60 requests made 63 threads under GREEN_MAX_THREADS=20). Only regular files are
// served; anything else is a 404 at once, as nginx answers.
TEST(Endpoints, StaticDirServesOnlyRegularFilesAndAFifoPinsNoThread) {
  char dir[] = "/tmp/greenhttp-static-XXXXXX";
  const std::string root = mkdtemp(dir);
  ASSERT_EQ(mkfifo((root + "/pipe").c_str(), 0644), 0);
  std::ofstream(root + "/a.txt") << "regular";
  mkdir((root + "/sub").c_str(), 0755);
  ServerProcess server({"--static-dir", root}, {"GREEN_MAX_THREADS=20"});
  ASSERT_NE(server.port(), 0);
  EXPECT_EQ(fetch(server.port(), "/static/a.txt").body, "regular");
  EXPECT_EQ(fetch(server.port(), "/static/sub").status, 301);   // to "/static/sub/" (nginx)
  EXPECT_EQ(fetch(server.port(), "/static/sub/").status, 403);  // no index, no listing (nginx)

  constexpr int kRequests = 60;
  const auto start = Clock::now();
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kRequests; ++i) {
    clients.push_back(std::make_unique<Client>(server.port(), 5s));
    ASSERT_TRUE(clients.back()->send(get(server.port(), "/static/pipe")));
  }
  int not_found = 0;
  for (auto& c : clients) {
    const auto r = c->read_response();
    if (!r) break;  // timed out: the rest had as long (keeps a failing run under 5 s)
    if (r->status == 404) ++not_found;
  }
  EXPECT_EQ(not_found, kRequests);
  EXPECT_LT(Clock::now() - start, 4s);
  // Ms running Ps (2) and in blocking calls (at most the cap), plus sysmon and the signal
  // thread: nowhere near one thread per request.
  EXPECT_LE(server.threads(), 2 + 20 + 4);
  run_command("rm -rf '" + root + "'");
}

// /work from clients that sent it and left stops at once (the netpoller cancels its request
// context): CPU use stops rising and /plaintext stays fast. It used to compute for the full
// 8 s each (100 such clients burned 12 CPU-seconds and pushed /plaintext to 2 s).
TEST(Endpoints, WorkStopsWhenItsClientLeaves) {
  constexpr int kClients = 20;
  ServerProcess server({"--max-work-concurrency", "100"});
  ASSERT_NE(server.port(), 0);
  const double cpu_before = server.cpu_seconds();
  for (int i = 0; i < kClients; ++i) send_and_leave(server.port(), "/work?ms=8000");
  EXPECT_TRUE(eventually(
      [&] { return metric(server.port(), "greenhttp_requests_total{code=\"499\"}") == kClients; },
      3s))
      << "every /work saw its client leave";
  // Measured over half a second: nothing is computing any more.
  const double cpu_stopped = server.cpu_seconds();
  std::this_thread::sleep_for(500ms);  // the window measured, not a wait
  EXPECT_LT(server.cpu_seconds() - cpu_stopped, 0.2);
  EXPECT_LT(cpu_stopped - cpu_before, 4.0) << "not 20 x 8 s of computing";
  const auto t = Clock::now();
  EXPECT_EQ(fetch(server.port(), "/plaintext").status, 200);
  EXPECT_LT(Clock::now() - t, 500ms);
}

// /blocking stops too: its condition-variable wait is notified when the request context is
// cancelled, and the thread is free.
TEST(Endpoints, BlockingStopsWhenItsClientLeaves) {
  constexpr int kClients = 10;
  ServerProcess server({});
  ASSERT_NE(server.port(), 0);
  for (int i = 0; i < kClients; ++i) send_and_leave(server.port(), "/blocking?ms=8000");
  EXPECT_TRUE(eventually(
      [&] { return metric(server.port(), "greenhttp_requests_total{code=\"499\"}") == kClients; },
      3s));
  EXPECT_TRUE(
      eventually([&] { return metric(server.port(), "greenrt_blocking_machines") == 0; }, 2s));
}

// A client that half-closes after its request counts as gone (as in Go and nginx), and the
// 499 the log records for it is never sent: nginx's "client closed request" is a log status.
// The connection just ends.
TEST(Endpoints, AGoneClientIsLogged499ButSentNothing) {
  ServerProcess server({});
  ASSERT_NE(server.port(), 0);
  for (const char* target : {"/work?ms=3000", "/blocking?ms=3000"}) {
    Client c(server.port(), 5s);
    ASSERT_TRUE(c.send(get(server.port(), target)));
    ::shutdown(c.fd(), SHUT_WR);
    const auto start = Clock::now();
    EXPECT_EQ(c.read_all(), "") << target << ": the client must read nothing, then the end";
    EXPECT_LT(Clock::now() - start, 2s) << target << ": stopped, not run to its end";
  }
  EXPECT_TRUE(eventually(
      [&] { return metric(server.port(), "greenhttp_requests_total{code=\"499\"}") == 2; }, 3s));
}

// Past --max-work-concurrency / --max-blocking-concurrency a request is answered 503 with
// Retry-After at once; when a slot frees, requests are served again. limit + 1 long requests
// at once: whatever their order, exactly one finds every slot taken.
TEST(Endpoints, WorkAndBlockingOverTheirLimitGet503) {
  ServerProcess server({"--max-work-concurrency", "1", "--max-blocking-concurrency", "2"});
  ASSERT_NE(server.port(), 0);
  for (const auto& [target, limit] : {std::pair<std::string, int>{"/work", 1}, {"/blocking", 2}}) {
    std::vector<std::unique_ptr<Client>> holders;
    std::vector<pollfd> fds;
    for (int i = 0; i <= limit; ++i) {
      holders.push_back(std::make_unique<Client>(server.port(), 10s));
      ASSERT_TRUE(holders.back()->send(get(server.port(), target + "?ms=5000")));
      fds.push_back({holders.back()->fd(), POLLIN, 0});
    }
    // The refused one answers at once; the others hold their slots for 5 s.
    ASSERT_EQ(poll(fds.data(), fds.size(), 3000), 1) << target;
    for (std::size_t i = 0; i < fds.size(); ++i) {
      if ((fds[i].revents & POLLIN) == 0) continue;
      const auto refused = holders[i]->read_response();
      ASSERT_TRUE(refused) << target;
      EXPECT_EQ(refused->status, 503) << target;
      EXPECT_EQ(refused->header("Retry-After"), "1") << target;
    }
    holders.clear();  // they leave: their handlers stop and free the slots
    EXPECT_TRUE(
        eventually([&] { return fetch(server.port(), target + "?ms=1").status == 200; }, 3s))
        << target;
  }
}

// Threads started for a burst of /blocking calls exit after GREEN_THREAD_IDLE, down to a
// small reserve; before, 1,000 calls left 1,000 threads for good.
TEST(Endpoints, ThreadsOfABlockingBurstExitWhenIdle) {
  constexpr int kCalls = 24;
  ServerProcess server({}, {"GREEN_THREAD_IDLE=200ms"});
  ASSERT_NE(server.port(), 0);
  const int baseline = server.threads();
  std::vector<std::unique_ptr<Client>> clients;
  for (int i = 0; i < kCalls; ++i) {
    clients.push_back(std::make_unique<Client>(server.port(), 10s));
    ASSERT_TRUE(clients.back()->send(get(server.port(), "/blocking?ms=400")));
  }
  int peak = 0;
  for (auto& c : clients) {
    peak = std::max(peak, server.threads());
    const auto r = c->read_response();
    EXPECT_TRUE(r && r->status == 200);
  }
  EXPECT_GE(peak, kCalls / 2);
  // The reserve is Ps + 2 Ms (here 4): at most 2 more than at start, when fewer Ms ran.
  EXPECT_TRUE(eventually([&] { return server.threads() <= baseline + 2; }, 5s))
      << server.threads() << " threads, " << baseline << " at start, peak " << peak;
}

// --debug-listen moves /metrics, /debug/* and / off the public port (404 there); /healthz and
// /readyz stay public. A bad address is refused at start.
TEST(Endpoints, DebugListenMovesTheDebugRoutesOffThePublicPort) {
  const uint16_t debug = free_port();
  ServerProcess server({"--debug-listen", "127.0.0.1:" + std::to_string(debug)});
  ASSERT_NE(server.port(), 0);
  for (const char* target : {"/metrics", "/debug/vars", "/debug/greenthreads", "/"}) {
    EXPECT_EQ(fetch(server.port(), target).status, 404) << "public " << target;
    EXPECT_EQ(fetch(debug, target).status, 200) << "debug " << target;
  }
  for (const char* target : {"/healthz", "/readyz", "/plaintext"}) {
    EXPECT_EQ(fetch(server.port(), target).status, 200) << "public " << target;
  }
  EXPECT_EQ(fetch(debug, "/plaintext").status, 404);
  Client idle(debug);  // an idle keep-alive connection to the debug port does not delay exit
  ASSERT_TRUE(idle.connected());
  EXPECT_EQ(server.signal_and_wait(SIGTERM, 5s), 0) << "both listeners shut down";

  int status = 0;
  const std::string err = run_command(
      std::string(GREENHTTP_BINARY) + " --debug-listen nowhere 2>&1 >/dev/null", &status);
  EXPECT_EQ(status, 2);
  EXPECT_NE(err.find("--debug-listen"), std::string::npos) << err;
}

// The green-thread dump lists at most ?limit= green threads and says how many it left out.
TEST(Endpoints, GreenThreadDumpIsBoundedByLimit) {
  ServerProcess server({});
  ASSERT_NE(server.port(), 0);
  std::vector<std::unique_ptr<Client>> idle;  // each connection is a green thread
  for (int i = 0; i < 30; ++i) idle.push_back(std::make_unique<Client>(server.port()));
  std::string dump;
  ASSERT_TRUE(eventually(
      [&] {
        dump = fetch(server.port(), "/debug/greenthreads?limit=5").body;
        return dump.find("more green threads") != std::string::npos &&
               std::stoi(dump.substr(dump.rfind("\xe2\x80\xa6 ") + 4)) >= 25;
      },
      3s))
      << dump;
  std::size_t listed = 0;
  for (std::size_t at = 0; (at = dump.find("green thread ", at)) != std::string::npos; ++at) {
    ++listed;
  }
  EXPECT_EQ(listed, 5u) << dump;
  const std::string all = fetch(server.port(), "/debug/greenthreads").body;
  EXPECT_EQ(all.find("more green threads"), std::string::npos) << "30 is under the default cap";
}

// The settings: safe defaults, the flags, and the same keys in a TOML file.
TEST(Endpoints, SettingsHaveSafeDefaultsFlagsAndTomlKeys) {
  auto load = [](std::vector<std::string> args) {
    args.insert(args.begin(), "greenhttp");
    std::vector<const char*> argv;
    for (const std::string& a : args) argv.push_back(a.c_str());
    return config::load(static_cast<int>(argv.size()), argv.data());
  };
  config::LoadResult r = load({});
  ASSERT_TRUE(r.config) << r.message;
  EXPECT_EQ(r.config->debug_listen, "");
  EXPECT_EQ(r.config->max_work_concurrency, 0);  // the number of Ps
  EXPECT_EQ(r.config->max_blocking_concurrency, 64);
  r = load({"--debug-listen", "127.0.0.1:6060", "--max-work-concurrency", "3",
            "--max-blocking-concurrency", "5"});
  ASSERT_TRUE(r.config) << r.message;
  EXPECT_EQ(r.config->debug_listen, "127.0.0.1:6060");
  EXPECT_EQ(r.config->max_work_concurrency, 3);
  EXPECT_EQ(r.config->max_blocking_concurrency, 5);
  char name[] = "/tmp/greenhttp-ep-config-XXXXXX";
  close(mkstemp(name));
  std::ofstream(name) << "debug_listen = \"[::1]:6060\"\n[limits]\nmax_work_concurrency = 7\n"
                         "max_blocking_concurrency = 9\n";
  r = load({"--config", name});
  unlink(name);
  ASSERT_TRUE(r.config) << r.message;
  EXPECT_EQ(r.config->debug_listen, "[::1]:6060");
  EXPECT_EQ(r.config->max_work_concurrency, 7);
  EXPECT_EQ(r.config->max_blocking_concurrency, 9);
  EXPECT_EQ(load({"--max-blocking-concurrency", "0"}).exit_code, 2);
}

}  // namespace
}  // namespace green::http
