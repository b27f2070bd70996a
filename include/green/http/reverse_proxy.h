// ReverseProxy: a handler that forwards each request to one of a set of upstream servers and
// streams the answer back (Go's httputil.ReverseProxy; nginx's proxy_pass with an upstream
// block), on green::http::Client.
//
//   ReverseProxyOptions options;
//   options.upstreams = {"http://127.0.0.1:9000", "http://127.0.0.1:9001"};
//   std::string error;
//   std::unique_ptr<ReverseProxy> proxy = ReverseProxy::create(options, &error);  // null: error
//   router.use([&](const Handler&) { return proxy->handler(); });   // every request
//   // or one route: router.handle(Method::kGet, "/api/*", proxy->handler());
//
// What goes to the upstream:
//   - the method and the target exactly as received (Request::target(); an absolute-form target
//     is sent in origin form), behind the upstream URL's path prefix when it has one
//     ("http://10.0.0.2:8080/api" + "/users?id=7": Go's singleJoiningSlash);
//   - the headers, minus the hop-by-hop ones (RFC 9110 7.6.1: Connection and every header it
//     names, Keep-Alive, Proxy-Connection, TE, Transfer-Encoding, Upgrade, Trailer,
//     Proxy-Authenticate, Proxy-Authorization), with
//       X-Forwarded-For   the client's address appended to the incoming list (Go and nginx's
//                         $proxy_add_x_forwarded_for),
//       X-Forwarded-Proto "https" for a request that came over TLS, else "http";
//       X-Forwarded-Host  the client's Host (both replacing incoming ones, as Go's
//                         ProxyRequest.SetXForwarded),
//       Via               "1.1 greenhttp" appended (RFC 9110 7.6.3; "1.0" for an HTTP/1.0
//                         client);
//     without Expect (100-continue is this hop's business: the server answers it when the
//     body is first read), and Host as the client sent it (Go's NewSingleHostReverseProxy), or the
//     upstream's host:port with preserve_host = false (nginx's default, $proxy_host);
//   - the body streamed as it arrives (never collected whole, except a short one with a
//     declared length), with the client's Content-Length when it declared one, else chunked.
// What comes back: the status and headers, minus the hop-by-hop ones and the upstream's Server
// and Date (nginx's proxy_hide_header defaults: the writer sends its own), with Via appended;
// the upstream's Content-Length kept (no needless chunking); the body streamed with
// backpressure: the next upstream read waits until the client took the last one, so a slow
// client slows the upstream down and the proxy holds at most a read buffer and the writer's
// 64 KiB per request. The response is flushed whenever the upstream has nothing more buffered,
// so a stream of small events (Server-Sent Events) is never held back.
//
// Failures (nginx's mapping):
//   - 502 Bad Gateway: the upstream refused, reset, sent garbage or ended early, before the
//     response head; 504 Gateway Timeout: the connect, a write or a read took longer than the
//     client's timeouts (ClientOptions), or the request's deadline passed;
//   - after the head has gone out, a failure cuts the response short: the connection closes
//     without completing it (no last chunk, fewer bytes than the Content-Length), so the
//     client sees a truncated response, never a complete wrong one;
//   - the client going away (its request context is cancelled) ends the upstream call at once:
//     the upstream sees its connection closed, and nothing is answered (the server logs 499).
//
// HTTPS upstreams ("https://HOST:PORT"): the upstream's certificate is verified for the URL's
// host (which is also the SNI, whatever Host the request carries: nginx's proxy_ssl_name
// default), against client.tls, or a context that create() makes from client.tls_ca_file and
// client.tls_insecure_skip_verify (empty and false: the system's CA store); a CA file that does
// not load fails create(). A failed handshake is 502 (a stalled one 504), counts against the
// upstream's health, and moves on to the next upstream as a failed connect does. Upstream
// sessions are resumed from the context's cache, and pooled connections kept alive, as for
// http:// (nginx's proxy_ssl_session_reuse).
//
// Upstream choice: round robin over the upstreams that are not marked down. Passive health, as
// nginx's max_fails / fail_timeout: an upstream that failed max_fails times within
// fail_timeout (connect refused, DNS, timeout, reset, garbage: not a client's cancellation) is
// skipped for fail_timeout; a success clears its count. A request whose connect failed (nothing
// was sent, so any method is safe) moves on to the next upstream (nginx's proxy_next_upstream
// "error", limited to the connect). When every upstream is down, one is tried all the same,
// rather than failing without trying (nginx answers "no live upstreams" there at once).
//
// Threads: one ReverseProxy serves any number of requests at once, from any green threads; its
// counters are relaxed atomics. It must outlive every request it serves (and so the server).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "green/http/client.h"
#include "green/http/middleware.h"  // Handler
#include "green/http/request.h"
#include "green/http/response.h"

namespace green::http {

struct ReverseProxyOptions {
  // "http[s]://HOST:PORT" or "http[s]://HOST:PORT/prefix"; at least one.
  std::vector<std::string> upstreams;
  // Timeouts, pool sizes and limits of the upstream calls (read_timeout and write_timeout are
  // nginx's proxy_read_timeout and proxy_send_timeout; connect_timeout its
  // proxy_connect_timeout).
  ClientOptions client;
  // Send the client's Host (true, Go's default) or the upstream's host:port (nginx's).
  bool preserve_host = true;
  // Passive health (nginx's defaults: max_fails=1 fail_timeout=10s). max_fails 0: never mark
  // an upstream down.
  int max_fails = 1;
  std::chrono::nanoseconds fail_timeout = std::chrono::seconds(10);
  // The name this proxy gives itself in Via (RFC 9110 7.6.3's pseudonym).
  std::string via_name = "greenhttp";
};

// Counters for /metrics. Relaxed atomics summed on read: cheap, not a consistent snapshot.
struct ReverseProxyStats {
  uint64_t requests = 0;         // requests handled
  uint64_t bad_gateway = 0;      // answered 502
  uint64_t gateway_timeout = 0;  // answered 504
  uint64_t aborted = 0;          // responses cut short: the upstream failed after the head
  uint64_t client_gone = 0;      // the client left before the response was complete
  uint64_t next_upstream = 0;    // connects that failed and moved on to another upstream
};

namespace detail {
struct ProxyUpstream;
}

class ReverseProxy {
 public:
  // A proxy for `options`, or null with *error set ("upstream \"x\": not an http:// URL").
  static std::unique_ptr<ReverseProxy> create(ReverseProxyOptions options, std::string* error);
  ~ReverseProxy();
  ReverseProxy(const ReverseProxy&) = delete;
  ReverseProxy& operator=(const ReverseProxy&) = delete;

  // Serves one request (see above). Parks the calling green thread while it waits for the
  // upstream and the client.
  void operator()(Request& r, ResponseWriter& w);
  // A Handler that calls this proxy (which must outlive it).
  Handler handler();

  // The client of the upstream calls (its stats and metrics: pool hits, errors by kind).
  Client& client() { return client_; }
  ReverseProxyStats stats() const;
  // Appends the proxy's counters in Prometheus text format ("greenhttp_proxy_requests_total",
  // per upstream "greenhttp_proxy_upstream_failures_total{upstream="host:port"}" and
  // "greenhttp_proxy_upstream_down"), then the client's under `prefix` + "_client".
  void write_metrics(std::string& out, std::string_view prefix = "greenhttp_proxy") const;

 private:
  struct Counters {
    std::atomic<uint64_t> requests{0};
    std::atomic<uint64_t> bad_gateway{0};
    std::atomic<uint64_t> gateway_timeout{0};
    std::atomic<uint64_t> aborted{0};
    std::atomic<uint64_t> client_gone{0};
    std::atomic<uint64_t> next_upstream{0};
  };

  explicit ReverseProxy(ReverseProxyOptions options);
  // The upstream response, or the error of the last upstream tried; `url` is what was called.
  ClientResponse send_upstream(Request& r, const ClientRequest& request, std::string& url,
                               std::string_view target);
  void answer_error(ResponseWriter& w, ClientError error);
  void copy_response(Request& r, ResponseWriter& w, ClientResponse& response, std::string_view url);

  ReverseProxyOptions options_;
  Client client_;
  std::vector<std::unique_ptr<detail::ProxyUpstream>> upstreams_;
  std::atomic<uint64_t> next_{0};  // round-robin position
  Counters counters_;
};

}  // namespace green::http
