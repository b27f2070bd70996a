// A reverse proxy: every request that reaches --listen is forwarded to one of the --upstream
// servers (round robin, an upstream that fails is skipped for a while), and the answer is
// streamed back. green::http::ReverseProxy does the work; this file is its flags.
//
//   proxy --listen 127.0.0.1:8080 --upstream http://127.0.0.1:9001 --upstream http://127.0.0.1:9002
//         [--upstream-timeout 30s] [--connect-timeout 10s] [--max-fails 1] [--fail-timeout 10s]
//         [--rewrite-host] [--metrics-listen 127.0.0.1:9100]
//         [--upstream-ca FILE] [--upstream-insecure]
//
// An https:// upstream's certificate is checked for the URL's host against the system's CA
// store, or against the PEM certificates of --upstream-ca (a private CA: config/tls/make-cert.sh
// makes one); --upstream-insecure trusts any certificate (tests only). A CA file that does not
// load is an error at startup (exit 2).
//
// --metrics-listen serves GET /metrics on a port of its own (Prometheus text: the proxy's
// counters, per upstream calls, failures and down state, and the client's pool and errors), so
// that the proxied port forwards every path, /metrics included.
//
// Try: greenhttp --listen 127.0.0.1:9001 & proxy --upstream http://127.0.0.1:9001 &
//      curl -i 127.0.0.1:8080/plaintext
// HTTPS upstream: config/tls/make-cert.sh /tmp/tls &&
//      greenhttp --listen off --listen-tls 127.0.0.1:9443 --tls-cert /tmp/tls/localhost.pem
//                --tls-key /tmp/tls/localhost.key &
//      proxy --upstream https://localhost:9443 --upstream-ca /tmp/tls/ca.pem &
#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "green/green.h"
#include "green/http/reverse_proxy.h"
#include "green/http/server.h"
#include "green/net.h"
#include "green/sync.h"
#include "green/tls.h"

using namespace green::http;

namespace {

// "250ms", "30s", "2m"; nullopt for anything else.
std::optional<std::chrono::nanoseconds> parse_duration(std::string_view text) {
  int64_t n = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc() || n < 0) return std::nullopt;
  const std::string_view unit(end, text.data() + text.size() - end);
  if (unit == "ms") return std::chrono::milliseconds(n);
  if (unit == "s") return std::chrono::seconds(n);
  if (unit == "m") return std::chrono::minutes(n);
  return std::nullopt;
}

// "1048576", "64KiB", "16MiB", "1GiB"; nullopt for anything else.
std::optional<uint64_t> parse_size(std::string_view text) {
  uint64_t n = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), n);
  if (ec != std::errc()) return std::nullopt;
  const std::string_view unit(end, text.data() + text.size() - end);
  int shift = 0;
  if (unit == "KiB") {
    shift = 10;
  } else if (unit == "MiB") {
    shift = 20;
  } else if (unit == "GiB") {
    shift = 30;
  } else if (!unit.empty()) {
    return std::nullopt;
  }
  if (n > (UINT64_MAX >> shift)) return std::nullopt;
  return n << shift;
}

struct Flags {
  std::string listen = "127.0.0.1:8080";
  std::vector<std::string> upstreams;
  std::string upstream_timeout = "30s";
  std::string connect_timeout = "10s";
  int max_fails = 1;
  std::string fail_timeout = "10s";
  bool rewrite_host = false;
  std::string metrics_listen;
  // A request body streams through (the proxy holds a read buffer of it, whatever its size),
  // so the limit is the upstream's business; this one only bounds what a client may push
  // (nginx's client_max_body_size is 1m, Go's ReverseProxy has none).
  std::string max_body = "1GiB";
  std::string upstream_ca;  // PEM CA certificates for https:// upstreams; empty: the system's
  bool upstream_insecure = false;
};

// The options for `flags`, or nullopt after a one-line message on stderr.
std::optional<ReverseProxyOptions> proxy_options(const Flags& flags) {
  ReverseProxyOptions options;
  options.upstreams = flags.upstreams;
  options.preserve_host = !flags.rewrite_host;
  options.max_fails = flags.max_fails;
  if (!flags.upstream_ca.empty() || flags.upstream_insecure) {
    // Made here rather than by ReverseProxy::create, so that a CA file that does not load is
    // reported against its flag.
    green::net::TlsClientSettings tls;
    tls.ca_file = flags.upstream_ca;
    tls.verify = !flags.upstream_insecure;
    std::string error;
    options.client.tls = green::net::TlsClientContext::create(tls, &error);
    if (options.client.tls == nullptr) {
      std::fprintf(stderr, "proxy: --upstream-ca: %s\n", error.c_str());
      return std::nullopt;
    }
  }
  const struct {
    const char* flag;
    const std::string& value;
    std::chrono::nanoseconds* into;
  } durations[] = {
      {"--upstream-timeout", flags.upstream_timeout, &options.client.read_timeout},
      {"--connect-timeout", flags.connect_timeout, &options.client.connect_timeout},
      {"--fail-timeout", flags.fail_timeout, &options.fail_timeout},
  };
  for (const auto& d : durations) {
    const std::optional<std::chrono::nanoseconds> value = parse_duration(d.value);
    if (!value) {
      std::fprintf(stderr, "proxy: %s: invalid duration \"%s\" (like 250ms, 30s, 2m)\n", d.flag,
                   d.value.c_str());
      return std::nullopt;
    }
    *d.into = *value;
  }
  // nginx's proxy_send_timeout and proxy_read_timeout are two settings; one flag is enough here.
  options.client.write_timeout = options.client.read_timeout;
  auto valid_address = [](const char* flag, const std::string& address) {
    if (green::net::Address::parse(address)) return true;
    std::fprintf(stderr, "proxy: %s: invalid address \"%s\" (HOST:PORT)\n", flag, address.c_str());
    return false;
  };
  if (!valid_address("--listen", flags.listen)) return std::nullopt;
  if (!flags.metrics_listen.empty() && !valid_address("--metrics-listen", flags.metrics_listen)) {
    return std::nullopt;
  }
  return options;
}

// The signals that shut the proxy down.
sigset_t shutdown_signals() {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

// The one thread that takes SIGINT and SIGTERM (blocked everywhere, see main), from
// construction to destruction: the first one shuts down `server` and `metrics` (may be null).
class ShutdownOnSignal {
 public:
  ShutdownOnSignal(const sigset_t& signals, Server& server, Server* metrics)
      : signals_(signals), thread_([this, &server, metrics] {
          int sig = 0;
          while (sigwait(&signals_, &sig) != 0) {
          }
          // Acquire, with the destructor's release store; the signal orders them in time.
          if (stopping_.load(std::memory_order_acquire)) return;
          green::go([&server, metrics] {
            if (metrics != nullptr) metrics->shutdown();
            server.shutdown();
          });
        }) {}
  // From a green thread, after serve() returned (so after a signal, or never reached).
  ~ShutdownOnSignal() {
    stopping_.store(true, std::memory_order_release);
    // Thread-directed, and blocked there: sigwait returns it if the thread still waits.
    pthread_kill(thread_.native_handle(), SIGINT);
    green::may_block([this] { thread_.join(); });
  }
  ShutdownOnSignal(const ShutdownOnSignal&) = delete;
  ShutdownOnSignal& operator=(const ShutdownOnSignal&) = delete;

 private:
  const sigset_t signals_;
  std::atomic<bool> stopping_{false};
  std::thread thread_;  // last: it runs from construction
};

bool listen_or_say(Server& server, const char* flag) {
  const int err = server.listen();
  if (err == 0) return true;
  std::fprintf(stderr, "proxy: %s: cannot listen on %s: %s\n", flag,
               server.options().listen.c_str(),
               // NOLINTNEXTLINE(concurrency-mt-unsafe): thread-safe in glibc (.clang-tidy)
               err == -EINVAL ? "not a HOST:PORT address" : std::strerror(-err));
  return false;
}

// Parses the command line into `flags`: nullopt to go on, else the exit code (0 after --help,
// 2 after a one-line message for a bad flag).
std::optional<int> parse_flags(int argc, char** argv, Flags& flags) {
  std::string help;
  try {
    CLI::App app{"proxy: a reverse proxy on greenhttp", "proxy"};
    app.add_option("--listen", flags.listen, "HOST:PORT to serve on (port 0: any free port)");
    app.add_option("--upstream", flags.upstreams, "http[s]://HOST:PORT[/PREFIX], repeatable")
        ->required();
    app.add_option("--upstream-timeout", flags.upstream_timeout,
                   "longest wait for the upstream to take or give more (504 past it)");
    app.add_option("--connect-timeout", flags.connect_timeout, "longest connect to an upstream");
    app.add_option("--max-fails", flags.max_fails,
                   "failures within --fail-timeout that mark an upstream down (0: never)");
    app.add_option("--fail-timeout", flags.fail_timeout, "how long an upstream stays down");
    app.add_flag("--rewrite-host", flags.rewrite_host,
                 "send the upstream's HOST:PORT as Host instead of the client's");
    app.add_option("--metrics-listen", flags.metrics_listen, "HOST:PORT for GET /metrics");
    app.add_option("--max-body", flags.max_body, "largest request body, then 413 (like 16MiB)");
    app.add_option("--upstream-ca", flags.upstream_ca,
                   "PEM file of the CAs that https:// upstreams' certificates must chain to "
                   "(default: the system's store)");
    app.add_flag("--upstream-insecure", flags.upstream_insecure,
                 "do not verify https:// upstreams' certificates (tests only)");
    help = app.help();
    app.parse(argc, argv);
    return std::nullopt;
  } catch (const CLI::CallForHelp&) {
    std::fputs(help.c_str(), stdout);
    return 0;
  } catch (const std::exception& e) {  // CLI::ParseError, and anything else CLI11 throws
    std::fprintf(stderr, "proxy: %s\n", e.what());
    return 2;
  }
}

}  // namespace

int main(int argc, char** argv) {
  Flags flags;
  if (const std::optional<int> exit_code = parse_flags(argc, argv, flags)) return *exit_code;
  std::optional<ReverseProxyOptions> options = proxy_options(flags);
  if (!options) return 2;
  ServerOptions server_options;
  server_options.listen = flags.listen;
  if (const std::optional<uint64_t> max_body = parse_size(flags.max_body)) {
    server_options.limits.max_body_bytes = *max_body;
  } else {
    std::fprintf(stderr, "proxy: --max-body: invalid size \"%s\" (like 16MiB)\n",
                 flags.max_body.c_str());
    return 2;
  }

  // SIGINT and SIGTERM are blocked here, before the runtime starts its threads (they inherit
  // the mask), and taken by one plain thread with sigwait(2), as greenhttp's own main does: a
  // signal then never lands on a thread parked in the scheduler, and one waiter shuts down
  // both servers.
  const sigset_t signals = shutdown_signals();
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  std::signal(SIGPIPE, SIG_IGN);  // a peer that went away is an EPIPE, not the process's end

  int rc = 0;
  green::run({}, [&] {
    std::string error;
    const std::unique_ptr<ReverseProxy> proxy = ReverseProxy::create(std::move(*options), &error);
    if (!proxy) {
      std::fprintf(stderr, "proxy: --upstream: %s\n", error.c_str());
      rc = 2;
      return;
    }
    // A global middleware that ignores the handler it wraps: with no routes, every request
    // (any method, any path, the router's 404 and 405 included) reaches the proxy.
    Router router;
    router.use([&proxy](const Handler&) { return proxy->handler(); });
    Server server(server_options, router, nullptr);
    if (!listen_or_say(server, "--listen")) {
      rc = 1;
      return;
    }

    Router metrics_router;
    metrics_router.handle(Method::kGet, "/metrics", [&proxy](Request&, ResponseWriter& w) {
      std::string out;
      proxy->write_metrics(out);
      w.send(200, "text/plain; version=0.0.4", out);
    });
    std::unique_ptr<Server> metrics;
    green::WaitGroup metrics_done;
    if (!flags.metrics_listen.empty()) {
      ServerOptions metrics_options;
      metrics_options.listen = flags.metrics_listen;
      metrics = std::make_unique<Server>(metrics_options, metrics_router, nullptr);
      if (!listen_or_say(*metrics, "--metrics-listen")) {
        rc = 1;
        return;
      }
      // Before "listening on": whoever waits for that line finds this one too.
      std::fprintf(stderr, "metrics listening on %s\n",
                   metrics->local_address().to_string().c_str());
      metrics_done.add(1);
      green::go([&] {
        metrics->serve();
        metrics_done.done();
      });
    }
    {
      ShutdownOnSignal on_signal(signals, server, metrics.get());
      // After the waiter is in: whoever waits for this line may signal at once.
      std::fprintf(stderr, "listening on %s\n", server.local_address().to_string().c_str());
      std::fflush(stderr);
      server.serve();  // until SIGINT/SIGTERM, then drains
    }
    metrics_done.wait();  // shut down with the proxy's server
  });
  return rc;
}
