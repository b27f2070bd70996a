// ReverseProxy (green/http/reverse_proxy.h): one request in, one upstream call out, the answer
// streamed back.
//
// The request's green thread does everything: it builds the upstream request from views into
// the client's request (only X-Forwarded-For, Via and the URL are new strings), sends it with
// the request's context (so the client's hang-up cancels the upstream call), then copies the
// response: one read from the upstream into a 16 KiB buffer on its stack, one write to the
// client, repeated. The writer sends a write that takes its buffer past 64 KiB straight from
// that buffer (ResponseSink::write_direct), parking until the client's socket has taken it, so
// the next upstream read waits for the client: backpressure without a queue between the two.
//
// Passive health lives in ProxyUpstream: a failure count, when the first failure of the current
// window happened, and until when the upstream is marked down. The three are relaxed atomics
// updated without a lock: two requests failing at once may both start a window or both mark the
// upstream down, which changes nothing that matters (nginx updates its peers under a lock, but
// its counts are per worker process anyway, so they are approximate there too).
#include "green/http/reverse_proxy.h"

#include <charconv>
#include <cstdio>
#include <cstring>
#include <optional>
#include <utility>

#include <spdlog/spdlog.h>

#include "green/context.h"
#include "green/detail/park.h"
#include "server/http_text.h"
#include "server/prometheus.h"

namespace green::http {

namespace detail {

struct ProxyUpstream {
  std::string authority;  // "host:port", for the Host header, metrics and logs
  std::string base;       // "http://host:port/prefix" without a trailing slash: base + target
  std::atomic<uint64_t> requests{0};
  std::atomic<uint64_t> failures{0};
  std::atomic<int> fails{0};                // in the current window
  std::atomic<int64_t> window_start_ns{0};  // the window's first failure
  std::atomic<int64_t> down_until_ns{0};    // skipped until then (0: up)
};

}  // namespace detail

namespace {

using detail::ProxyUpstream;

// Bodies up to this declared length are read whole before the upstream call (they are usually
// in the connection's read buffer already, so this costs nothing), which lets the client resend
// them on a keep-alive race; longer ones, and chunked ones, stream.
constexpr int64_t kInlineBodyBytes = 16 * 1024;
// Between two checks of the client's socket while the upstream keeps data coming (a flush on a
// failed connection returns false without a syscall; on a live one it sends what is buffered).
constexpr uint64_t kFlushEveryBytes = 256 * 1024;

// The headers a proxy never forwards (RFC 9110 7.6.1, plus Proxy-Connection and Keep-Alive as
// Go's hopHeaders). TE goes too, "trailers" included: the client does not pass trailers on.
constexpr std::string_view kHopByHop[] = {
    "Connection", "Proxy-Connection",   "Keep-Alive",          "TE",      "Transfer-Encoding",
    "Upgrade",    "Proxy-Authenticate", "Proxy-Authorization", "Trailer",
};

// The hop-by-hop headers of one message: the fixed ones and those its Connection headers name.
class HopByHop {
 public:
  explicit HopByHop(std::span<const Header> headers) {
    for (const Header& h : headers) {
      if (!iequals(h.name, "Connection")) continue;
      std::string_view rest = h.value;
      while (!rest.empty() && named_count_ < kMaxNamed) {
        const std::size_t comma = rest.find(',');
        const std::string_view token = trim(rest.substr(0, comma));
        if (!token.empty()) named_[named_count_++] = token;
        rest = comma == std::string_view::npos ? std::string_view{} : rest.substr(comma + 1);
      }
    }
  }
  bool contains(std::string_view name) const {
    for (const std::string_view h : kHopByHop) {
      if (iequals(h, name)) return true;
    }
    for (int i = 0; i < named_count_; ++i) {
      if (iequals(named_[i], name)) return true;
    }
    return false;
  }

 private:
  // Past this many names in Connection the rest are forwarded: a message naming more is
  // hostile, and what it names reaches the upstream as ordinary headers, never as framing
  // (Content-Length and Transfer-Encoding are the client's own).
  static constexpr int kMaxNamed = 16;
  std::string_view named_[kMaxNamed];
  int named_count_ = 0;
};

// A decimal Content-Length, or -1.
int64_t parse_length(std::string_view value) {
  if (value.empty()) return -1;
  int64_t n = -1;
  const auto [end, ec] = std::from_chars(value.data(), value.data() + value.size(), n);
  return ec == std::errc() && end == value.data() + value.size() && n >= 0 ? n : -1;
}

// "http://host/p?q" (absolute form) -> "/p?q"; an origin-form target as it is.
std::string_view origin_form(std::string_view target) {
  if (target.empty() || target.front() == '/') return target;
  const std::size_t scheme = target.find("://");
  if (scheme == std::string_view::npos) return target;
  const std::size_t path = target.find_first_of("/?", scheme + 3);
  return path == std::string_view::npos ? std::string_view{"/"} : target.substr(path);
}

// Whether `error` says something about the upstream's health (nginx's proxy_next_upstream
// "error timeout" and "invalid_header"), as opposed to the client's doing.
bool upstream_fault(ClientError error) {
  switch (error) {
    case ClientError::kDns:
    case ClientError::kConnect:
    case ClientError::kTls:
    case ClientError::kTimeout:
    case ClientError::kWrite:
    case ClientError::kRead:
    case ClientError::kProtocol:
    case ClientError::kHeadersTooLarge:
      return true;
    default:
      return false;
  }
}

bool available(const ProxyUpstream& u, int64_t now) {
  return u.down_until_ns.load(std::memory_order_relaxed) <= now;
}

// nginx's max_fails within fail_timeout: counts failures in a window that starts at the first
// one; reaching max_fails marks the upstream down for fail_timeout.
void record_failure(ProxyUpstream& u, int max_fails, int64_t fail_timeout_ns) {
  u.failures.fetch_add(1, std::memory_order_relaxed);
  if (max_fails <= 0) return;
  const int64_t now = green::detail::now_ns();
  int fails = 0;
  if (now - u.window_start_ns.load(std::memory_order_relaxed) > fail_timeout_ns) {
    u.window_start_ns.store(now, std::memory_order_relaxed);
    u.fails.store(1, std::memory_order_relaxed);
    fails = 1;
  } else {
    fails = u.fails.fetch_add(1, std::memory_order_relaxed) + 1;
  }
  if (fails >= max_fails) {
    u.down_until_ns.store(now + fail_timeout_ns, std::memory_order_relaxed);
    u.fails.store(0, std::memory_order_relaxed);
    spdlog::warn("proxy: upstream {} marked down for {} ms after {} failure(s)", u.authority,
                 fail_timeout_ns / 1'000'000, fails);
  }
}

void record_success(ProxyUpstream& u) {
  // Read first: a success on a healthy upstream (the common case) writes nothing shared.
  if (u.fails.load(std::memory_order_relaxed) != 0) u.fails.store(0, std::memory_order_relaxed);
}

// The client adds no User-Agent of its own: a request without one reaches the upstream
// without one (Go's ReverseProxy sets it empty for the same reason).
ClientOptions without_user_agent(ClientOptions options) {
  options.user_agent.clear();
  return options;
}

}  // namespace

std::unique_ptr<ReverseProxy> ReverseProxy::create(ReverseProxyOptions options,
                                                   std::string* error) {
  if (options.upstreams.empty()) {
    *error = "no upstream";
    return nullptr;
  }
  bool https = false;
  for (const std::string& u : options.upstreams) {
    const std::optional<Url> url = parse_url(u);
    if (!url || url->target.find('?') != std::string::npos) {
      *error = "upstream \"" + u + "\": not an http[s]://HOST:PORT[/PREFIX] URL";
      return nullptr;
    }
    https = https || url->https;
  }
  if (https && options.client.tls == nullptr) {
    // Made now, not on the first request: a CA file that does not load is a startup error
    // (nginx checks proxy_ssl_trusted_certificate when it reads its configuration).
    net::TlsClientSettings settings;
    settings.ca_file = options.client.tls_ca_file;
    settings.verify = !options.client.tls_insecure_skip_verify;
    std::string why;
    options.client.tls = net::TlsClientContext::create(settings, &why);
    if (options.client.tls == nullptr) {
      *error = "upstream TLS: " + why;
      return nullptr;
    }
  }
  return std::unique_ptr<ReverseProxy>(new ReverseProxy(std::move(options)));
}

ReverseProxy::ReverseProxy(ReverseProxyOptions options)
    : options_(std::move(options)), client_(without_user_agent(options_.client)) {
  // spdlog's registry is made on first use, inside libspdlog.so, whose static-init fast path
  // TSan cannot see: first used by two requests at once, it is reported as a race. Made here,
  // before any request runs.
  (void)spdlog::default_logger_raw();
  for (const std::string& u : options_.upstreams) {
    const Url url = *parse_url(u);  // checked by create()
    auto upstream = std::make_unique<ProxyUpstream>();
    upstream->authority = url.authority;
    upstream->base = std::string(url.scheme()) + "://" + url.authority;
    std::string_view prefix = url.target;
    while (!prefix.empty() && prefix.back() == '/') prefix.remove_suffix(1);
    upstream->base += prefix;
    upstreams_.push_back(std::move(upstream));
  }
}

ReverseProxy::~ReverseProxy() = default;

Handler ReverseProxy::handler() {
  return [this](Request& r, ResponseWriter& w) { (*this)(r, w); };
}

void ReverseProxy::operator()(Request& r, ResponseWriter& w) {
  counters_.requests.fetch_add(1, std::memory_order_relaxed);
  if (r.method() == Method::kConnect) {
    // A tunnel is not a request to forward (Go's ReverseProxy would pass it on as one; nginx
    // answers 405 too).
    w.send_status(405);
    return;
  }

  // The outgoing headers: views into the request, plus the few this proxy writes.
  const HopByHop hop(r.headers());
  std::vector<Header> headers;
  headers.reserve(r.headers().size() + 5);
  std::string forwarded_for;
  std::string via;
  int64_t length = -1;
  bool chunked = false;
  std::string_view host;
  for (const Header& h : r.headers()) {
    if (iequals(h.name, "Transfer-Encoding")) chunked = true;  // the server checked it is chunked
    if (hop.contains(h.name)) continue;
    if (iequals(h.name, "Content-Length")) {
      length = parse_length(h.value);  // the client's to send, from content_length
    } else if (iequals(h.name, "Host")) {
      host = h.value;
    } else if (iequals(h.name, "X-Forwarded-For")) {
      // Every incoming list, in order, joined (Go joins repeated headers the same way).
      forwarded_for.append(h.value).append(", ");
    } else if (iequals(h.name, "Via")) {
      via.append(h.value).append(", ");
    } else if (!iequals(h.name, "X-Forwarded-Proto") && !iequals(h.name, "X-Forwarded-Host") &&
               !iequals(h.name, "Expect")) {
      // Expect: 100-continue is answered at this hop (the server sends 100 when the body is
      // first read, below); the upstream gets the body without being asked.
      headers.push_back(h);
    }
  }
  forwarded_for.append(r.remote_addr());
  via.append(r.version_minor() == 0 ? "1.0 " : "1.1 ").append(options_.via_name);
  if (options_.preserve_host && !host.empty()) headers.push_back({"Host", host});
  headers.push_back({"X-Forwarded-For", forwarded_for});
  headers.push_back({"X-Forwarded-Proto", r.scheme()});
  if (!host.empty()) headers.push_back({"X-Forwarded-Host", host});
  headers.push_back({"Via", via});

  ClientRequest request;
  request.method = r.method_name();
  request.headers = headers;
  if (length >= 0 && length <= kInlineBodyBytes) {
    // A failed read is answered by the server itself (413, 408, 400; nothing when the client
    // left: 499), since no response head went out.
    const std::optional<std::string_view> body = r.body().read_all();
    if (!body) return;
    request.body = *body;
  } else if (length > 0 || chunked) {
    request.body_source = [&r](std::span<char> buf) -> long { return r.body().read(buf); };
    request.content_length = length;
  }

  std::string url;
  ClientResponse response = send_upstream(r, request, url, origin_form(r.target()));
  if (!response.ok()) {
    const ClientError error = response.error();
    if (error == ClientError::kCanceled) {
      counters_.client_gone.fetch_add(1, std::memory_order_relaxed);
      return;  // the client left: nobody to answer (the server records 499)
    }
    if (error == ClientError::kRequestBody && r.body().error_status() != 0) {
      return;  // the client's body failed: the server answers that (413, 408, 400, 499)
    }
    spdlog::warn("proxy: {} {}: {}: {}", r.method_name(), url, client_error_name(error),
                 response.error_message());
    answer_error(w, error);
    return;
  }
  copy_response(r, w, response, url);
}

ClientResponse ReverseProxy::send_upstream(Request& r, const ClientRequest& request,
                                           std::string& url, std::string_view target) {
  ClientRequest req = request;  // views and the body source: cheap to copy
  auto attempt = [&](ProxyUpstream& u) {
    u.requests.fetch_add(1, std::memory_order_relaxed);
    url.assign(u.base).append(target);
    req.url = url;
    ClientResponse response = client_.send(r.context(), req);
    if (response.ok()) {
      record_success(u);
    } else if (upstream_fault(response.error())) {
      record_failure(u, options_.max_fails, options_.fail_timeout.count());
    }
    return response;
  };
  const std::size_t n = upstreams_.size();
  const std::size_t start = next_.fetch_add(1, std::memory_order_relaxed) % n;
  const int64_t now = green::detail::now_ns();
  // optional: a failed connect is kept while the next upstream is tried (ClientResponse is
  // only made by the client).
  std::optional<ClientResponse> failed;
  for (std::size_t k = 0; k < n; ++k) {
    ProxyUpstream& u = *upstreams_[(start + k) % n];
    if (!available(u, now)) continue;
    if (failed) counters_.next_upstream.fetch_add(1, std::memory_order_relaxed);
    ClientResponse response = attempt(u);
    // Only a failed connect (or TLS handshake) moves on: nothing reached the upstream, so even
    // a POST is safe to send elsewhere, and its body source has not been called yet.
    const ClientError e = response.error();
    if (e != ClientError::kConnect && e != ClientError::kDns && e != ClientError::kTls) {
      return response;
    }
    failed.emplace(std::move(response));
  }
  if (failed) return std::move(*failed);
  // Every upstream is down: try the one whose turn it is anyway. It may be back, and a proxy
  // that answers 502 without trying stays down until fail_timeout even when it need not.
  return attempt(*upstreams_[start]);
}

void ReverseProxy::answer_error(ResponseWriter& w, ClientError error) {
  const bool timeout = is_timeout(error);
  (timeout ? counters_.gateway_timeout : counters_.bad_gateway)
      .fetch_add(1, std::memory_order_relaxed);
  w.send_status(timeout ? 504 : 502);
}

void ReverseProxy::copy_response(Request& r, ResponseWriter& w, ClientResponse& response,
                                 std::string_view url) {
  const int status = response.status();
  if (status < 200 || status > 599) {
    // 1xx never reaches here (the client skips them), except 101, a protocol switch this proxy
    // does not carry out; a status past 599 has no meaning to pass on.
    counters_.bad_gateway.fetch_add(1, std::memory_order_relaxed);
    w.send_status(502);
    return;
  }
  w.set_status(status);
  const HopByHop hop(response.headers());
  std::string via;
  int64_t declared = response.content_length();
  for (const Header& h : response.headers()) {
    if (hop.contains(h.name) || iequals(h.name, "Server") || iequals(h.name, "Date")) continue;
    if (iequals(h.name, "Content-Length")) {
      // For HEAD the client reports no length (no body follows); the header still says what a
      // GET would get, and the writer sends it on.
      if (declared < 0) declared = parse_length(h.value);
      continue;
    }
    if (iequals(h.name, "Via")) {
      via.append(h.value).append(", ");
      continue;
    }
    w.set_header(h.name, h.value);
  }
  via.append(response.version_minor() == 0 ? "1.0 " : "1.1 ").append(options_.via_name);
  w.set_header("Via", via);
  if (declared >= 0) {
    w.set_content_length(static_cast<uint64_t>(declared));
  } else if (r.method() == Method::kHead) {
    // Without a length the writer would answer HEAD with Content-Length: 0; a streamed head
    // says Transfer-Encoding: chunked instead, as the upstream's GET would.
    w.flush();
  }
  if (!response.has_body()) return;

  char buf[16 * 1024];  // on the green thread's lazily committed stack (handlers/streaming.cpp)
  uint64_t since_flush = 0;
  for (;;) {
    const long n = response.read(buf);
    if (n == 0) return;  // complete: the writer ends it (last chunk, or the length is met)
    if (n < 0) break;
    w.write({buf, static_cast<std::size_t>(n)});
    since_flush += static_cast<uint64_t>(n);
    // Flush when the upstream has nothing more for us (an event stream's event must not wait
    // for the next one), and now and then on a fast one to see whether the client is still
    // there. A response whose last bytes are in is not flushed here: the connection sends it
    // with whatever else it has, in one write.
    if (!response.read_ready() || since_flush >= kFlushEveryBytes) {
      since_flush = 0;
      if (!w.flush()) {
        // The client's socket failed (reset, write timeout): stop reading the upstream. The
        // response closes its connection (the body is incomplete), which the upstream sees.
        counters_.client_gone.fetch_add(1, std::memory_order_relaxed);
        w.abort();
        return;
      }
    }
  }
  // The upstream failed mid-body.
  const ClientError error = response.error();
  if (error == ClientError::kCanceled) {
    counters_.client_gone.fetch_add(1, std::memory_order_relaxed);
    if (w.head_sent()) w.abort();
    return;  // head not sent: the server records 499 and sends nothing
  }
  spdlog::warn("proxy: {} {}: body cut short after {} bytes: {}: {}", r.method_name(), url,
               response.body_bytes(), client_error_name(error), response.error_message());
  if (w.reset()) {
    answer_error(w, error);  // nothing went out yet (a short body still buffered)
    return;
  }
  // The head is out: end the connection without completing the response (Go's ReverseProxy
  // panics with ErrAbortHandler here, and its server closes the connection the same way).
  counters_.aborted.fetch_add(1, std::memory_order_relaxed);
  w.abort();
}

ReverseProxyStats ReverseProxy::stats() const {
  ReverseProxyStats s;
  s.requests = counters_.requests.load(std::memory_order_relaxed);
  s.bad_gateway = counters_.bad_gateway.load(std::memory_order_relaxed);
  s.gateway_timeout = counters_.gateway_timeout.load(std::memory_order_relaxed);
  s.aborted = counters_.aborted.load(std::memory_order_relaxed);
  s.client_gone = counters_.client_gone.load(std::memory_order_relaxed);
  s.next_upstream = counters_.next_upstream.load(std::memory_order_relaxed);
  return s;
}

void ReverseProxy::write_metrics(std::string& out, std::string_view prefix) const {
  const ReverseProxyStats s = stats();
  auto counter = [&](std::string_view name, std::string_view help, uint64_t value) {
    append_metric(out, prefix, name, "counter", help, value);
  };
  counter("requests_total", "Requests handled by the proxy.", s.requests);
  counter("bad_gateway_total", "Requests answered 502.", s.bad_gateway);
  counter("gateway_timeout_total", "Requests answered 504.", s.gateway_timeout);
  counter("aborted_total", "Responses cut short by an upstream failure mid-body.", s.aborted);
  counter("client_gone_total", "Requests whose client left before the end.", s.client_gone);
  counter("next_upstream_total", "Failed connects retried on another upstream.", s.next_upstream);
  // One sample per upstream, labelled with its host:port.
  const int64_t now = green::detail::now_ns();
  auto per_upstream = [&](std::string_view name, std::string_view type, std::string_view help,
                          auto value_of) {
    append_metric_head(out, prefix, name, type, help);
    for (const auto& u : upstreams_) {
      append_sample(out, prefix, name, "{upstream=\"" + u->authority + "\"}", value_of(*u));
    }
  };
  per_upstream("upstream_requests_total", "counter", "Upstream calls per upstream.",
               [](const ProxyUpstream& u) {
                 return std::to_string(u.requests.load(std::memory_order_relaxed));
               });
  per_upstream("upstream_failures_total", "counter", "Failed upstream calls per upstream.",
               [](const ProxyUpstream& u) {
                 return std::to_string(u.failures.load(std::memory_order_relaxed));
               });
  per_upstream(
      "upstream_down", "gauge", "Whether the upstream is marked down now.",
      [now](const ProxyUpstream& u) { return std::string(available(u, now) ? "0" : "1"); });
  client_.write_metrics(out, std::string(prefix) + "_client");
}

}  // namespace green::http
