// build/greenhttp: configuration (config/), the built-in handlers (handlers/) and the server
// (server/), wired together. Not part of the greenhttp_server library.
//
// Signals (documented in --help, config/config.cpp): SIGTERM, SIGINT, SIGHUP, SIGUSR1 and
// SIGUSR2 are blocked in every thread (the mask is set before the runtime starts its threads)
// and taken by one plain thread with sigwait; no handler ever runs on a thread in the middle of
// scheduling. SIGTERM/SIGINT hand the graceful shutdown to a green thread. SIGHUP reopens the
// access log file (logrotate's convention); SIGUSR1 does the same, as with nginx; SIGUSR2 is
// ignored (nginx's binary upgrade has no counterpart here). None of them kills the process.
// SIGQUIT is the runtime's (runtime/sysmon.cpp: a dump of every green thread, as Go's).
//
// --debug-listen runs a second Server on its own router with the debug routes (metrics, dumps,
// the front page), as Go programs serve net/http/pprof on localhost:6060; it shuts down with
// the public one.
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <thread>

#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>

#include "config/config.h"
#include "green/green.h"
#include "green/http/access_log.h"
#include "green/http/file_server.h"
#include "green/http/router.h"
#include "green/http/server.h"
#include "green/net.h"
#include "green/sync.h"
#include "green/tls.h"
#include "handlers/handlers.h"

namespace {

void raise_open_files_limit() {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur < r.rlim_max) {
    r.rlim_cur = r.rlim_max;
    setrlimit(RLIMIT_NOFILE, &r);
  }
}

green::http::ServerOptions server_options(const green::config::Config& c) {
  green::http::ServerOptions o;
  o.listen = c.listen;
  o.limits.max_body_bytes = c.max_body_bytes;
  o.limits.max_header_bytes = c.max_header_bytes;
  o.limits.max_target_bytes = c.max_target_bytes;
  o.limits.max_headers = static_cast<std::size_t>(c.max_headers);
  o.read_header_timeout = c.read_header_timeout;
  o.idle_timeout = c.idle_timeout;
  o.write_timeout = c.write_timeout;
  o.shutdown_timeout = c.shutdown_timeout;
  o.max_connections = c.max_connections;
  if (!c.static_dir.empty()) o.reserved_descriptors = c.static_cache_entries;  // the file cache
  o.reuse_port = c.reuse_port;
  o.read_timeout = c.read_timeout;
  o.max_buffered_body_bytes = c.max_buffered_body_bytes;
  o.handler_timeout = c.handler_timeout;
  o.listen_tls = c.listen_tls;
  o.tls_handshake_timeout = c.tls_handshake_timeout;
  o.http2.enabled = c.http2;
  o.http2.cleartext = c.http2 && c.h2c;  // --http2 false: no HTTP/2 anywhere
  o.http2.max_concurrent_streams = static_cast<uint32_t>(c.http2_max_concurrent_streams);
  o.http2.stream_window = static_cast<uint32_t>(c.http2_stream_window);
  o.http2.header_table_size = static_cast<uint32_t>(c.http2_header_table_size);
  o.http2.reset_rate = static_cast<uint32_t>(c.http2_reset_rate);
  o.http2.control_rate = static_cast<uint32_t>(c.http2_control_rate);
  return o;
}

green::net::TlsServerSettings tls_settings(const green::config::Config& c) {
  green::net::TlsServerSettings t;
  t.cert_file = c.tls_cert;
  t.key_file = c.tls_key;
  t.min_version =
      c.tls_min_version == "1.3" ? green::net::TlsVersion::kTls13 : green::net::TlsVersion::kTls12;
  t.ciphers = c.tls_ciphers;
  t.ciphersuites = c.tls_ciphersuites;
  t.session_tickets = c.tls_session_tickets;
  t.session_cache_size = static_cast<std::size_t>(c.tls_session_cache);
  t.ticket_key_rotation =
      std::chrono::duration_cast<std::chrono::seconds>(c.tls_ticket_key_rotation);
  t.max_handshakes = static_cast<int>(c.tls_max_handshakes);
  // ALPN, in our order of preference: h2 first (Go's and nginx's order).
  if (c.http2) t.alpn = {"h2", "http/1.1"};
  return t;
}

// Written as PATH.tmp.PID, then renamed over PATH: a test polling the file reads the whole
// number or nothing, never a prefix of it.
bool write_port_file(const std::string& path, uint16_t port, std::string* error) {
  const std::string temp = path + ".tmp." + std::to_string(getpid());
  {
    std::ofstream out(temp);
    out << port << '\n';
    out.close();
    if (!out) {
      *error = "cannot write \"" + temp + "\"";
      unlink(temp.c_str());
      return false;
    }
  }
  if (rename(temp.c_str(), path.c_str()) != 0) {
    // NOLINTNEXTLINE(concurrency-mt-unsafe): thread-safe in glibc (.clang-tidy)
    *error = "cannot rename \"" + temp + "\" to \"" + path + "\": " + std::strerror(errno);
    unlink(temp.c_str());
    return false;
  }
  return true;
}

sigset_t handled_signals() {
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGUSR1, SIGUSR2}) sigaddset(&set, sig);
  return set;
}

// The one thread that takes the handled signals (see the top of the file), from construction
// to destruction. Destroy it before the server and the access log it acts on.
class SignalWaiter {
 public:
  // `debug_server` (may be null) shuts down with `server`.
  SignalWaiter(green::http::Server& server, green::http::Server* debug_server,
               green::http::AccessLog& access_log, green::net::TlsServerContext* tls)
      : server_(server),
        debug_server_(debug_server),
        access_log_(access_log),
        tls_(tls),
        thread_([this] { loop(); }) {}
  // From a green thread: joins (inside may_block, the wait is short).
  ~SignalWaiter() {
    // Release, with loop()'s acquire load; the signal below orders them in time.
    stopping_.store(true, std::memory_order_release);
    // Thread-directed, and blocked there like the rest: sigwait returns it, sees stopping_.
    pthread_kill(thread_.native_handle(), SIGUSR2);
    green::may_block([this] { thread_.join(); });
  }
  SignalWaiter(const SignalWaiter&) = delete;
  SignalWaiter& operator=(const SignalWaiter&) = delete;

 private:
  void loop() {
    const sigset_t set = handled_signals();
    bool shutting_down = false;
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0) continue;
      if (stopping_.load(std::memory_order_acquire)) return;
      const char* name = sigabbrev_np(sig);
      if (sig == SIGHUP || sig == SIGUSR1) {
        std::string error;
        if (!access_log_.is_file()) {
          spdlog::info("SIG{}: no access log file to reopen", name);
        } else if (access_log_.reopen(&error)) {
          spdlog::info("SIG{}: access log reopened", name);
        } else {
          spdlog::error("SIG{}: access log not reopened: {}", name, error);
        }
        // nginx reloads its certificates on SIGHUP too. A pair that does not load leaves the
        // current one serving: a typo in a renewal script must not take HTTPS down.
        if (sig == SIGHUP && tls_ != nullptr) {
          if (tls_->reload(&error)) {
            spdlog::info("SIGHUP: TLS certificate reloaded");
          } else {
            spdlog::error("SIGHUP: TLS certificate not reloaded: {}", error);
          }
        }
      } else if (sig == SIGUSR2) {
        spdlog::info("SIGUSR2: ignored");
      } else if (!shutting_down) {  // SIGTERM, SIGINT
        shutting_down = true;
        spdlog::info("SIG{}: shutting down", name);
        green::go([&server = server_, debug = debug_server_] {
          if (debug != nullptr) debug->shutdown();
          server.shutdown();
        });
      } else {
        spdlog::info("SIG{}: already shutting down", name);
      }
    }
  }

  green::http::Server& server_;
  green::http::Server* debug_server_;
  green::http::AccessLog& access_log_;
  green::net::TlsServerContext* tls_;  // may be null
  std::atomic<bool> stopping_{false};
  std::thread thread_;  // last: it starts running loop() at construction
};

}  // namespace

int main(int argc, char** argv) {
  green::config::LoadResult loaded = green::config::load(argc, argv);
  if (!loaded.config) {
    std::fputs(loaded.message.c_str(), loaded.exit_code == 0 ? stdout : stderr);
    std::fputc('\n', loaded.exit_code == 0 ? stdout : stderr);
    return loaded.exit_code;
  }
  const green::config::Config& cfg = *loaded.config;
  if (!cfg.listen.empty() && !green::net::Address::parse(cfg.listen)) {
    std::fprintf(stderr, "greenhttp: --listen: invalid address \"%s\" (HOST:PORT)\n",
                 cfg.listen.c_str());
    return 2;
  }
  if (!cfg.listen_tls.empty() && !green::net::Address::parse(cfg.listen_tls)) {
    std::fprintf(stderr, "greenhttp: --listen-tls: invalid address \"%s\" (HOST:PORT)\n",
                 cfg.listen_tls.c_str());
    return 2;
  }
  if (!cfg.debug_listen.empty() && !green::net::Address::parse(cfg.debug_listen)) {
    std::fprintf(stderr, "greenhttp: --debug-listen: invalid address \"%s\" (HOST:PORT)\n",
                 cfg.debug_listen.c_str());
    return 2;
  }

  auto log = spdlog::stderr_color_mt("greenhttp");
  log->set_pattern("greenhttp: %v");
  log->set_level(spdlog::level::from_str(cfg.log_level));
  spdlog::set_default_logger(log);

  std::string error;
  std::unique_ptr<green::http::AccessLog> access_log =
      green::http::AccessLog::open(cfg.access_log, &error);
  if (!access_log) {
    std::fprintf(stderr, "greenhttp: --access-log: %s\n", error.c_str());
    return 2;
  }

  // The file server, before anything starts: a bad --static-cache-control is a config error.
  std::shared_ptr<green::http::FileServer> files;
  if (!cfg.static_dir.empty()) {
    green::http::FileServerOptions fo;
    fo.root = cfg.static_dir;
    fo.index = cfg.static_index;
    fo.autoindex = cfg.static_autoindex;
    fo.gzip_static = cfg.static_gzip;
    fo.symlinks = cfg.static_symlinks == "never"
                      ? green::http::FileServerOptions::Symlinks::kNever
                      : green::http::FileServerOptions::Symlinks::kInsideRoot;
    fo.cache_control = cfg.static_cache_control;
    fo.cache_entries = static_cast<std::size_t>(cfg.static_cache_entries);
    fo.cache_valid = cfg.static_cache_valid;
    if (!cfg.static_mime_types.empty()) {
      fo.mime_types = cfg.static_mime_types;
      fo.mime_types_required = true;
    }
    files = green::http::FileServer::create(fo, &error);
    if (!files) {
      const bool rules = error.starts_with("cache-control");
      std::fprintf(stderr, "greenhttp: %s: %s\n", rules ? "--static-cache-control" : "--static-dir",
                   error.c_str());
      return 2;
    }
  }

  raise_open_files_limit();
  if (files) {
    // The cache's descriptors come out of the connection cap (ServerOptions::
    // reserved_descriptors), and each response in flight holds one to three more (the file,
    // its .gz, the directory): say so when the cache takes a large part of the limit.
    rlimit r{};
    if (getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur != RLIM_INFINITY &&
        static_cast<uint64_t>(cfg.static_cache_entries) * 2 > r.rlim_cur) {
      spdlog::warn(
          "--static-cache-entries {} takes more than half of the open-files limit {}: "
          "raise the limit (ulimit -n) or lower the cache",
          cfg.static_cache_entries, static_cast<uint64_t>(r.rlim_cur));
    }
  }
  signal(SIGPIPE, SIG_IGN);  // a peer that went away is an EPIPE, not the end of the process
  const sigset_t signals = handled_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);

  int exit_code = 0;
  green::Options options;
  options.procs = cfg.threads;
  green::run(options, [&] {
    green::http::Router router;
    green::handlers::AppState app;
    app.files = files;
    app.static_prefix = cfg.static_prefix;
    app.limits.max_work = static_cast<int>(cfg.max_work_concurrency);
    app.limits.max_blocking = static_cast<int>(cfg.max_blocking_concurrency);
    app.separate_debug = !cfg.debug_listen.empty();
    green::handlers::register_all(router, app);
    green::http::ServerOptions options = server_options(cfg);
    std::shared_ptr<green::net::TlsServerContext> tls;
    if (!cfg.listen_tls.empty()) {
      tls = green::net::TlsServerContext::create(tls_settings(cfg), &error);
      if (!tls) {
        // Name the flag the error is about: the cipher lists, or else the certificate pair.
        const char* flag = error.starts_with("bad TLS 1.2 cipher list") ? "--tls-ciphers"
                           : error.starts_with("bad TLS 1.3 cipher suites")
                               ? "--tls-ciphersuites"
                               : "--tls-cert/--tls-key";
        std::fprintf(stderr, "greenhttp: %s: %s\n", flag, error.c_str());
        exit_code = 2;
        return;
      }
      options.tls = tls;
    }
    green::http::Server server(std::move(options), router, access_log.get());
    app.server = &server;
    const int rc = server.listen();
    if (rc != 0) {
      const std::string where = cfg.listen.empty()       ? cfg.listen_tls
                                : cfg.listen_tls.empty() ? cfg.listen
                                                         : cfg.listen + " and " + cfg.listen_tls;
      // NOLINTNEXTLINE(concurrency-mt-unsafe): thread-safe in glibc (.clang-tidy)
      spdlog::error("cannot listen on {}: {}", where, std::strerror(-rc));
      exit_code = 1;
      return;
    }
    // The debug listener: its own router and server, no access log, few connections.
    green::http::Router debug_router;
    std::unique_ptr<green::http::Server> debug_server;
    green::WaitGroup debug_done;
    if (app.separate_debug) {
      green::handlers::register_debug(debug_router, app);
      // File-server mode leaves the public port to the files: health checks move here too.
      if (app.static_prefix == "/") green::handlers::register_observability(debug_router, app);
      green::http::ServerOptions debug_options = server_options(cfg);
      debug_options.listen = cfg.debug_listen;
      debug_options.listen_tls.clear();  // the debug routes stay on plain HTTP (Go's pprof too)
      debug_options.tls = nullptr;
      debug_options.max_connections = 64;
      debug_options.reuse_port = false;
      debug_server = std::make_unique<green::http::Server>(debug_options, debug_router, nullptr);
      const int drc = debug_server->listen();
      if (drc != 0) {
        spdlog::error("cannot listen on {} (--debug-listen): {}", cfg.debug_listen,
                      // NOLINTNEXTLINE(concurrency-mt-unsafe): thread-safe in glibc (.clang-tidy)
                      std::strerror(-drc));
        exit_code = 1;
        return;
      }
      spdlog::info("debug routes on {}", debug_server->local_address().to_string());
      debug_done.add(1);
      green::go([&debug_server, &debug_done] {
        debug_server->serve();
        debug_done.done();
      });
    }
    // The line before the port files: whoever waits for a port file (a supervisor, the tests)
    // then finds the startup line already written (a test that read stderr once the port file
    // appeared found it empty).
    std::string bound = cfg.listen.empty() ? "" : server.local_address().to_string();
    if (tls) {
      bound += (bound.empty() ? "" : ", ") + ("https://" + server.tls_local_address().to_string());
    }
    spdlog::info("listening on {} ({} Ps, up to {} connections)", bound, green::num_procs(),
                 server.max_connections());
    if ((!cfg.port_file.empty() && !cfg.listen.empty() &&
         !write_port_file(cfg.port_file, server.local_address().port(), &error)) ||
        (!cfg.tls_port_file.empty() &&
         !write_port_file(cfg.tls_port_file, server.tls_local_address().port(), &error))) {
      // load() checked the directory; this is a race with whoever changed it since.
      spdlog::error("--port-file: {}", error);
      exit_code = 2;
      if (debug_server) debug_server->shutdown();
      debug_done.wait();  // the debug server's green thread must not outlive it
      return;
    }
    access_log->start();
    std::size_t still_running = 0;
    {
      SignalWaiter signal_waiter(server, debug_server.get(), *access_log, tls.get());
      still_running = server.serve();
    }
    debug_done.wait();  // shut down with the public server
    access_log->stop();
    if (still_running > 0) {
      // Their handlers outlived --shutdown-timeout and the forced close. Destroying the
      // server (and the router) would wait for them; the process exits on time instead.
      spdlog::warn(
          "{} connection(s) still in a handler at the shutdown deadline; exiting without "
          "waiting for them",
          still_running);
      spdlog::shutdown();  // flushes
      std::fflush(nullptr);
      std::_Exit(0);
    }
    spdlog::info("stopped");
  });
  return exit_code;
}
