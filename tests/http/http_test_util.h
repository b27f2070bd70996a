// Helpers for the HTTP integration tests: an in-process server on its own runtime, plain
// blocking client sockets with timeouts (so a server bug shows up as a failed test, never a
// hung one), and a small HTTP/1.1 response reader.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "green/green.h"
#include "green/http/router.h"
#include "green/http/server.h"
#include "handlers/handlers.h"
#include "tests/runtime/test_util.h"

namespace green::http::testing {

// The runtime tests' wait_until (tests/runtime/test_util.h): a state, under a deadline.
using green::testing::wait_until;

using green::testing::scaled;  // counts scaled down in sanitizer builds

// A server with the built-in handlers (plus `extra` routes) on 127.0.0.1:ephemeral, running in
// green::run on a background thread until stop() or destruction.
// The tag of TestServer's constructor for a server with only the test's own routes. It has no
// default constructor, so `TestServer s({}, ...)` still means default ServerOptions.
struct RoutesOnly {
  explicit constexpr RoutesOnly(int) {}
};
inline constexpr RoutesOnly kRoutesOnly{0};

class TestServer {
 public:
  explicit TestServer(ServerOptions options = {}, std::function<void(Router&)> extra = nullptr,
                      std::string access_log = "off", std::string static_dir = "") {
    std::string error;
    log_ = AccessLog::open(access_log, &error);
    if (!static_dir.empty()) {
      FileServerOptions files;
      files.root = static_dir;
      context_.files = FileServer::create(files, &error);
    }
    handlers::register_all(router_, context_);
    if (extra) extra(router_);
    start(std::move(options), log_.get());
  }

  // TestServer s(kRoutesOnly, setup): a Server with only the routes `setup` registers
  // (no built-in handlers) and no access log of its own: `setup` gets the log opened at `log_path`
  // ("off" when empty), which is started and stopped with the server, for a stack that logs through
  // middleware::access_log().
  TestServer(RoutesOnly, const std::function<void(Router&, AccessLog*)>& setup,
             const std::string& log_path = "") {
    std::string error;
    log_ = AccessLog::open(log_path.empty() ? "off" : log_path, &error);
    setup(router_, log_.get());
    start({}, nullptr);
  }
  ~TestServer() { stop(); }

  uint16_t port() const { return port_; }
  Server& server() { return *server_; }
  AccessLog* access_log() { return log_.get(); }

  // Graceful shutdown; returns when serve() has returned.
  void stop() {
    if (!thread_.joinable()) return;
    shutdown_async();
    thread_.join();
  }
  void shutdown_async() {
    std::lock_guard<std::mutex> g(lock_);
    if (server_ != nullptr && !server_->draining()) {
      Server* s = server_;
      green::go([s] { s->shutdown(); });
    }
  }
  bool finished() {
    std::lock_guard<std::mutex> g(lock_);
    return server_ == nullptr;
  }
  // What serve() returned: connections still running after the drain.
  std::size_t still_running() {
    std::lock_guard<std::mutex> g(lock_);
    return still_running_;
  }

 private:
  // Runs the Server on a background thread inside green::run; returns once it listens.
  void start(ServerOptions options, AccessLog* server_log) {
    options.listen = "127.0.0.1:0";
    thread_ = std::thread([this, options, server_log] {
      green::Options o;
      o.procs = 2;
      green::run(o, [this, options, server_log] {
        Server server(options, router_, server_log);
        context_.server = &server;
        const int rc = server.listen();
        log_->start();
        {
          std::lock_guard<std::mutex> g(lock_);
          server_ = &server;
          port_ = rc == 0 ? server.local_address().port() : 0;
        }
        ready_.notify_all();
        const std::size_t left = rc == 0 ? server.serve() : 0;
        log_->stop();
        {
          std::lock_guard<std::mutex> g(lock_);
          server_ = nullptr;
          still_running_ = left;
        }
      });  // ~Server (at the end of this scope) waits for connections still running
    });
    std::unique_lock<std::mutex> g(lock_);
    ready_.wait(g, [this] { return server_ != nullptr || port_ != 0; });
  }

  Router router_;
  handlers::AppState context_;
  std::unique_ptr<AccessLog> log_;
  std::thread thread_;
  std::mutex lock_;
  std::condition_variable ready_;
  Server* server_ = nullptr;
  uint16_t port_ = 0;
  std::size_t still_running_ = 0;
};

// A blocking client socket with a receive timeout.
class Client {
 public:
  explicit Client(uint16_t port, std::chrono::milliseconds timeout = std::chrono::seconds(5)) {
    fd_ = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    timeval tv{static_cast<time_t>(timeout.count() / 1000),
               static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
    setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    const int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    connected_ = connect(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  }
  ~Client() {
    if (fd_ >= 0) close(fd_);
  }
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  Client(Client&& o) noexcept : fd_(std::exchange(o.fd_, -1)), connected_(o.connected_) {}

  bool connected() const { return connected_; }
  int fd() const { return fd_; }

  bool send(std::string_view data) {
    while (!data.empty()) {
      const ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
      if (n <= 0) return false;
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }
  // Everything until the server closes (or the timeout: then timed_out() is true).
  std::string read_all() {
    std::string out;
    char buf[16384];
    for (;;) {
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n > 0) {
        out.append(buf, static_cast<std::size_t>(n));
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) timed_out_ = true;
      break;
    }
    return out;
  }
  bool timed_out() const { return timed_out_; }

  // One response (head and body, by Content-Length or chunked; HEAD: pass head_only).
  // nullopt on timeout or a malformed response.
  struct Response {
    int status = 0;
    std::string head;  // status line and headers
    std::string body;
    std::string header(std::string_view name) const {
      std::string lower_head;
      for (char c : head) lower_head.push_back(static_cast<char>(std::tolower(c)));
      std::string key = "\r\n";
      for (char c : name) key.push_back(static_cast<char>(std::tolower(c)));
      key += ": ";
      const std::size_t at = lower_head.find(key);
      if (at == std::string::npos) return {};
      const std::size_t start = at + key.size();
      return head.substr(start, head.find("\r\n", start) - start);
    }
  };
  std::optional<Response> read_response(bool head_only = false) {
    Response r;
    std::size_t end;
    while ((end = pending_.find("\r\n\r\n")) == std::string::npos) {
      if (!fill()) return std::nullopt;
    }
    r.head = pending_.substr(0, end);
    pending_.erase(0, end + 4);
    if (r.head.size() < 12) return std::nullopt;
    r.status = std::atoi(r.head.c_str() + 9);
    if (head_only || r.status < 200 || r.status == 204 || r.status == 304) return r;
    const std::string te = r.header("Transfer-Encoding");
    if (te == "chunked") {
      for (;;) {
        std::size_t eol;
        while ((eol = pending_.find("\r\n")) == std::string::npos) {
          if (!fill()) return std::nullopt;
        }
        const std::size_t size = std::stoul(pending_.substr(0, eol), nullptr, 16);
        while (pending_.size() < eol + 2 + size + 2) {
          if (!fill()) return std::nullopt;
        }
        r.body += pending_.substr(eol + 2, size);
        pending_.erase(0, eol + 2 + size + 2);
        if (size == 0) return r;
      }
    }
    const std::string cl = r.header("Content-Length");
    if (cl.empty()) {  // until close
      while (fill()) {
      }
      r.body = std::move(pending_);
      pending_.clear();
      return r;
    }
    const std::size_t length = std::stoul(cl);
    while (pending_.size() < length) {
      if (!fill()) return std::nullopt;
    }
    r.body = pending_.substr(0, length);
    pending_.erase(0, length);
    return r;
  }
  // True if the server closed the connection (EOF) with nothing more to read.
  bool at_eof() {
    if (!pending_.empty()) return false;
    char c;
    return ::recv(fd_, &c, 1, 0) == 0;
  }
  void reset() {  // close with RST
    linger l{1, 0};
    setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    close(fd_);
    fd_ = -1;
  }

 private:
  bool fill() {
    char buf[16384];
    const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) {
      if (n < 0) timed_out_ = true;
      return false;
    }
    pending_.append(buf, static_cast<std::size_t>(n));
    return true;
  }
  int fd_ = -1;
  bool connected_ = false;
  bool timed_out_ = false;
  std::string pending_;
};

// Runs a shell command; returns its stdout and sets *status to its exit status.
inline std::string run_command(const std::string& cmd, int* status = nullptr) {
  std::string out;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return out;
  char buf[4096];
  std::size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) out.append(buf, n);
  const int rc = pclose(p);
  if (status != nullptr) *status = WIFEXITED(rc) ? WEXITSTATUS(rc) : -1;
  return out;
}

inline std::string get(uint16_t port, std::string_view target, std::string_view extra = "") {
  return "GET " + std::string(target) + " HTTP/1.1\r\nHost: 127.0.0.1:" + std::to_string(port) +
         "\r\n" + std::string(extra) + "\r\n";
}

// How many of a server's connection green threads (spawned in server/server.cpp) a green-thread
// dump (green::dump_green_threads(), or the binary's /debug/greenthreads) shows asleep: parked
// in green::sleep_for, whose wait reads "sleep" (or "select" with a context, a select on its
// done channel and a timeout). "The handler is asleep", observed rather than guessed. Only
// those reasons: a connection may park elsewhere (a lock, a buffer) before its handler runs.
inline int asleep_in_handlers(const std::string& dump) {
  int n = 0;
  std::size_t at = 0;
  while ((at = dump.find("green thread ", at)) != std::string::npos) {
    const std::size_t head_end = dump.find('\n', at);
    const std::size_t entry_end = dump.find("\n\n", at);
    const std::string head = dump.substr(at, head_end - at);
    const std::string entry =
        dump.substr(at, entry_end == std::string::npos ? std::string::npos : entry_end - at);
    if ((head.find("[waiting: sleep,") != std::string::npos ||
         head.find("[waiting: select,") != std::string::npos) &&
        entry.find("server/server.cpp:") != std::string::npos) {
      ++n;
    }
    at = entry_end == std::string::npos ? dump.size() : entry_end;
  }
  return n;
}

}  // namespace green::http::testing
