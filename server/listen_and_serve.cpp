// listen_and_serve: Go's http.ListenAndServe, a whole server in one call (see server.h).
//
// The one delicate part is signals. A signal handler may run on any OS thread of the runtime,
// including one that is halfway through a context switch or holds a scheduler spin lock, so the
// handler touches nothing of the runtime: it writes one byte to a pipe (write(2) is
// async-signal-safe) and returns. A plain thread, with every signal blocked so the handler never
// runs on it, sleeps in read(2) on that pipe and, on the first byte, spawns a green thread that
// calls Server::shutdown() (green::go is callable from plain threads while the runtime runs).
// server/main.cpp blocks the signals in every thread and sigwaits instead; that needs the mask
// set before green::run starts its threads, which a library call made inside green::run cannot
// do.
//
// SA_RESETHAND puts the default action back as the handler runs: the first SIGINT or SIGTERM
// drains, a second one during a long drain ends the process at once (Go programs using
// signal.NotifyContext behave the same way once its stop() has run).
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <thread>

#include "green/green.h"
#include "green/http/server.h"

namespace green::http {

namespace {

// The pipe's write end while a listen_and_serve() call serves, else -1. Read by the handler.
std::atomic<int> signal_pipe{-1};

void on_shutdown_signal(int) {
  const int saved_errno = errno;  // the interrupted code may be about to read errno
  const int fd = signal_pipe.load(std::memory_order_relaxed);
  if (fd >= 0) {
    const char byte = 1;
    [[maybe_unused]] const ssize_t n = ::write(fd, &byte, 1);  // full pipe: a byte is there
  }
  errno = saved_errno;
}

// SIGINT/SIGTERM -> server.shutdown(), from construction to destruction (see the top).
class ShutdownOnSignal {
 public:
  explicit ShutdownOnSignal(Server& server) {
    if (::pipe2(fds_, O_CLOEXEC) != 0) {
      // No pipe, no handler: the signals keep their default action (the process ends), which
      // is what the program did before it called us.
      fds_[0] = fds_[1] = -1;
      return;
    }
    signal_pipe.store(fds_[1], std::memory_order_relaxed);  // an fd, read relaxed by the handler
    struct sigaction sa {};
    sa.sa_handler = on_shutdown_signal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART | SA_RESETHAND;
    sigaction(SIGINT, &sa, &previous_int_);
    sigaction(SIGTERM, &sa, &previous_term_);
    thread_ = std::thread([this, &server] {
      sigset_t all;
      sigfillset(&all);
      pthread_sigmask(SIG_BLOCK, &all, nullptr);
      char byte = 0;
      ssize_t n = 0;
      do {
        n = ::read(fds_[0], &byte, 1);
      } while (n < 0 && errno == EINTR);
      // Only the first byte matters: the server shuts down once. A byte written by the
      // destructor (stopping_) means serve() has returned already.
      // Acquire, with the destructor's release store; the pipe write orders them in time.
      if (n == 1 && !stopping_.load(std::memory_order_acquire))
        green::go([&server] { server.shutdown(); });
    });
  }
  // From a green thread, after serve() returned: serve() returns only after shutdown() has
  // run, so the green thread spawned above no longer needs the server.
  ~ShutdownOnSignal() {
    if (fds_[0] < 0) return;
    stopping_.store(true, std::memory_order_release);  // before the byte below: see the reader
    sigaction(SIGINT, &previous_int_, nullptr);
    sigaction(SIGTERM, &previous_term_, nullptr);
    signal_pipe.store(-1, std::memory_order_relaxed);
    const char byte = 0;
    [[maybe_unused]] const ssize_t n = ::write(fds_[1], &byte, 1);  // wakes the reader if idle
    green::may_block([this] { thread_.join(); });                   // it returns at once
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  ShutdownOnSignal(const ShutdownOnSignal&) = delete;
  ShutdownOnSignal& operator=(const ShutdownOnSignal&) = delete;

 private:
  int fds_[2] = {-1, -1};
  struct sigaction previous_int_ {};
  struct sigaction previous_term_ {};
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

}  // namespace

int listen_and_serve(std::string_view address, const Router& router) {
  ServerOptions options;
  options.listen = std::string(address);
  return listen_and_serve(std::move(options), router, nullptr);
}

int listen_and_serve(ServerOptions options, const Router& router, AccessLog* access_log) {
  // Sockets never raise SIGPIPE (TcpStream writes with MSG_NOSIGNAL); this covers the rest of
  // the program, such as an access log on a stdout pipe whose reader has gone. nginx and Go
  // ignore the signal too.
  ::signal(SIGPIPE, SIG_IGN);
  Server server(std::move(options), router, access_log);
  if (const int rc = server.listen(); rc != 0) {
    std::fprintf(stderr, "cannot listen on %s: %s\n", server.options().listen.c_str(),
                 // NOLINTNEXTLINE(concurrency-mt-unsafe): thread-safe in glibc (.clang-tidy)
                 rc == -EINVAL ? "not a HOST:PORT address" : std::strerror(-rc));
    return rc;
  }
  {
    ShutdownOnSignal on_signal(server);
    // After the handlers are in: whoever waits for this line may signal at once.
    std::fprintf(stderr, "listening on %s\n", server.local_address().to_string().c_str());
    std::fflush(stderr);
    server.serve();
  }
  return 0;
}

}  // namespace green::http
