// green::http::Client: the pool, dialling, sending a request, redirects and retries. The
// response parser is in client_conn.cpp; the contract in green/http/client.h.
//
// The pool (ClientShared) keeps idle connections per "host:port" in vectors (most recently used
// last, taken from the back as Go's Transport does, so a burst's extra connections age out) and
// all of them on one list in the order they went idle, for the total cap and for expiry. It is
// under one green::Mutex: every critical section is a few pointer moves, and sockets are closed
// after it is released. A janitor green thread, started with the first idle connection, closes
// those idle past idle_timeout (Go arms a timer per idle connection; one sweeper is cheaper and
// as good at this granularity); it holds only a weak reference, so a destroyed Client ends it.
//
// Cancellation: the call's Context is bound to the connection's stream for as long as the
// response is read (TcpStream::bind_context: one registration for every read and write), so a
// cancelled context wakes whatever the call is parked on, and the connection is then closed.
//
// HTTPS: a new https:// connection is bound to the call's context before its TLS handshake
// (TlsSession::connect, under the connect deadline), so a stalled handshake ends as a stalled
// connect does. The TlsClientContext (trust store and session cache) is the options' or one
// made on the first https:// call; the pool key carries the scheme, so an http:// and an
// https:// URL to the same host:port never share a connection.
#include "green/http/client.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <unordered_map>
#include <vector>

#include "green/channel.h"
#include "green/context.h"
#include "green/detail/park.h"
#include "green/green.h"
#include "green/select.h"
#include "green/sync.h"
#include "server/client_conn.h"
#include "server/http_text.h"
#include "server/prometheus.h"

namespace green::http {

namespace detail {

struct ClientCounters {
  std::atomic<uint64_t> requests{0}, responses{0}, retries{0}, pool_hits{0}, pool_misses{0},
      stale_closed{0}, tls_full{0}, tls_resumed{0};
  // By net::TlsHandshakeFailure, as the server counts its own (a context that failed to load
  // is kOther).
  std::array<std::atomic<uint64_t>, net::kTlsHandshakeFailureCount> tls_failures{};
  std::array<std::atomic<uint64_t>, kClientErrorCount> errors{};
  std::atomic<int64_t> open{0}, idle{0};
};

struct ClientShared : std::enable_shared_from_this<ClientShared> {
  explicit ClientShared(ClientOptions o) : options(std::move(o)) {}
  ~ClientShared() { close_all_idle(); }

  struct Host {
    std::vector<ClientConn*> idle;  // most recently used last
    int open = 0;                   // connections of this host, busy or idle (and being dialled)
    std::vector<std::shared_ptr<Channel<bool>>> waiters;  // for max_conns_per_host, FIFO
  };

  const ClientOptions options;
  ClientCounters counters;
  Mutex mu;
  std::unordered_map<std::string, Host> hosts GREEN_GUARDED_BY(mu);
  ClientConn* lru_head GREEN_GUARDED_BY(mu) = nullptr;  // idle longest
  ClientConn* lru_tail GREEN_GUARDED_BY(mu) = nullptr;
  int idle_total GREEN_GUARDED_BY(mu) = 0;
  bool janitor_started GREEN_GUARDED_BY(mu) = false;
  CancelFn stop_janitor;  // set with janitor_started, called by ~Client
  // Done when the janitor green thread has let go of everything it holds: ~Client waits for
  // it, or a Client destroyed just before run() returns would leave the janitor to be
  // discarded with its weak_ptr and Context never released (LeakSanitizer reports them).
  WaitGroup janitor_exited;

  // The TLS context of https:// calls: options.tls, or made on the first one (loading the
  // system's CA store costs milliseconds and a few hundred KiB: not for a Client that never
  // calls https://). Its own lock: making it must not hold up the pool.
  Mutex tls_mu;
  std::shared_ptr<net::TlsClientContext> tls GREEN_GUARDED_BY(tls_mu);

  // The context, or null and *error.
  std::shared_ptr<net::TlsClientContext> tls_context(std::string* error) {
    MutexGuard g(tls_mu);
    if (tls != nullptr) return tls;
    if (options.tls != nullptr) {
      tls = options.tls;
      return tls;
    }
    net::TlsClientSettings settings;
    settings.ca_file = options.tls_ca_file;
    settings.verify = !options.tls_insecure_skip_verify;
    tls = net::TlsClientContext::create(settings, error);
    return tls;
  }

  void lru_remove(ClientConn* c) GREEN_REQUIRES(mu) {
    (c->lru_prev != nullptr ? c->lru_prev->lru_next : lru_head) = c->lru_next;
    (c->lru_next != nullptr ? c->lru_next->lru_prev : lru_tail) = c->lru_prev;
    c->lru_prev = c->lru_next = nullptr;
  }
  void lru_append(ClientConn* c) GREEN_REQUIRES(mu) {
    c->lru_prev = lru_tail;
    c->lru_next = nullptr;
    (lru_tail != nullptr ? lru_tail->lru_next : lru_head) = c;
    lru_tail = c;
  }
  // Takes c out of the idle lists (it stays counted in its host's open).
  void unlink_idle(ClientConn* c) GREEN_REQUIRES(mu) {
    Host& h = hosts[c->key];
    h.idle.erase(std::find(h.idle.begin(), h.idle.end(), c));
    lru_remove(c);
    --idle_total;
    counters.idle.fetch_sub(1, std::memory_order_relaxed);
  }
  // One connection of `key` is gone: its slot goes to the first waiter.
  void forget_locked(const std::string& key) GREEN_REQUIRES(mu) {
    auto it = hosts.find(key);
    if (it == hosts.end()) return;
    Host& h = it->second;
    --h.open;
    if (!h.waiters.empty()) {
      (void)h.waiters.front()->try_send(true);
      h.waiters.erase(h.waiters.begin());
    }
    if (h.open == 0 && h.idle.empty() && h.waiters.empty()) hosts.erase(it);
  }
  // Closes a connection that is not in the idle lists.
  void discard(std::unique_ptr<ClientConn> c) {
    if (c == nullptr) return;
    {
      MutexGuard g(mu);
      forget_locked(c->key);
    }
    counters.open.fetch_sub(1, std::memory_order_relaxed);
    c.reset();  // closes the socket, outside the lock
  }

  // Returns c to the pool (or closes it when it cannot carry another request, or over a cap).
  void put(std::unique_ptr<ClientConn> c) {
    if (c == nullptr) return;
    c->stream.unbind_context();
    c->ctx.reset();
    if (!c->reusable() || options.max_idle_per_host <= 0 || options.max_idle_total <= 0) {
      discard(std::move(c));
      return;
    }
    std::vector<std::unique_ptr<ClientConn>> evicted;
    bool start_janitor = false;
    {
      MutexGuard g(mu);
      Host& h = hosts[c->key];
      if (static_cast<int>(h.idle.size()) >= options.max_idle_per_host) {
        // The host's least recently used goes: the new one is the likeliest to live longest.
        ClientConn* old = h.idle.front();
        unlink_idle(old);
        forget_locked(old->key);
        evicted.emplace_back(old);
      }
      if (idle_total >= options.max_idle_total && lru_head != nullptr) {
        ClientConn* old = lru_head;
        unlink_idle(old);
        forget_locked(old->key);
        evicted.emplace_back(old);
      }
      c->idle_since_ns = green::detail::now_ns();
      c->reused = true;
      ClientConn* raw = c.release();
      Host& host = hosts[raw->key];  // forget_locked may have erased and rehashed
      host.idle.push_back(raw);
      lru_append(raw);
      ++idle_total;
      counters.idle.fetch_add(1, std::memory_order_relaxed);
      if (!host.waiters.empty()) {
        (void)host.waiters.front()->try_send(true);
        host.waiters.erase(host.waiters.begin());
      }
      if (!janitor_started && green::running()) janitor_started = start_janitor = true;
    }
    counters.open.fetch_sub(static_cast<int64_t>(evicted.size()), std::memory_order_relaxed);
    evicted.clear();
    if (start_janitor) launch_janitor();
  }

  // An idle connection of `key` that looks alive, or null.
  std::unique_ptr<ClientConn> take_idle(const std::string& key) {
    for (;;) {
      ClientConn* c = nullptr;
      {
        MutexGuard g(mu);
        auto it = hosts.find(key);
        if (it == hosts.end() || it->second.idle.empty()) return nullptr;
        c = it->second.idle.back();
        unlink_idle(c);
      }
      std::unique_ptr<ClientConn> conn(c);
      const int64_t idle_for = green::detail::now_ns() - conn->idle_since_ns;
      if (idle_for <= options.idle_timeout.count() && alive(*conn)) return conn;
      counters.stale_closed.fetch_add(1, std::memory_order_relaxed);
      discard(std::move(conn));
    }
  }

  // Whether a pooled connection can carry a request: nothing to read on it. End of stream
  // (the server closed it) and unsolicited bytes (it talks out of turn) both disqualify it.
  // One recv(MSG_PEEK) per reuse: Go learns the same from a background read per connection,
  // nginx from the read event it keeps armed on idle upstream connections.
  //
  // Over TLS the same peek sees records, not bytes: a close_notify, a record the server sent
  // unasked (even a late session ticket) or a TCP close all make it not reusable, which costs
  // at worst one needless new connection. Decrypted bytes left in the session are unsolicited
  // too.
  static bool alive(const ClientConn& c) {
    const int fd = c.stream.fd();
    if (fd < 0) return false;
    if (c.tls != nullptr && c.tls->has_buffered()) return false;
    char b;
    for (;;) {
      const ssize_t r = ::recv(fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
      if (r < 0 && errno == EINTR) continue;
      return r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
  }

  // Closes idle connections past idle_timeout; all of them with `all`.
  void sweep(bool all) {
    std::vector<std::unique_ptr<ClientConn>> closing;
    {
      MutexGuard g(mu);
      const int64_t now = green::detail::now_ns();
      while (lru_head != nullptr &&
             (all || now - lru_head->idle_since_ns > options.idle_timeout.count())) {
        ClientConn* c = lru_head;
        unlink_idle(c);
        forget_locked(c->key);
        closing.emplace_back(c);
      }
    }
    counters.open.fetch_sub(static_cast<int64_t>(closing.size()), std::memory_order_relaxed);
  }
  void close_all_idle() { sweep(true); }

  void launch_janitor() {
    auto [ctx, cancel] = green::with_cancel(Context::background());
    stop_janitor = cancel;
    const auto period = std::clamp<std::chrono::nanoseconds>(
        options.idle_timeout / 4, std::chrono::milliseconds(10), std::chrono::seconds(5));
    std::weak_ptr<ClientShared> weak = weak_from_this();
    janitor_exited.add(1);
    // `exited` is a raw pointer: ~Client keeps it alive until done(), the janitor's last act.
    green::go([weak = std::move(weak), ctx = ctx, period, exited = &janitor_exited]() mutable {
      {
        const std::weak_ptr<ClientShared> w = std::move(weak);
        const Context c = std::move(ctx);
        while (green::sleep_for(period, c)) {
          std::shared_ptr<ClientShared> s = w.lock();
          if (s == nullptr) break;
          s->sweep(false);
        }
      }
      exited->done();
    });
  }
};

}  // namespace detail

using detail::ClientConn;
using detail::ClientShared;

namespace {

// A field value may hold visible bytes, spaces and tabs (and obs-text), never CR, LF or NUL:
// those would let a value smuggle another header or request through us.
bool is_field_value(std::string_view v) {
  return std::none_of(v.begin(), v.end(), [](char c) { return c == '\r' || c == '\n' || c == 0; });
}

bool idempotent(std::string_view method, std::span<const Header> headers) {
  for (std::string_view m : {"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"}) {
    if (method == m) return true;
  }
  // Go's Transport also retries a request that carries an idempotency key.
  return std::any_of(headers.begin(), headers.end(), [](const Header& h) {
    return iequals(h.name, "Idempotency-Key") || iequals(h.name, "X-Idempotency-Key");
  });
}

ClientError context_error(const Context& ctx) {
  switch (ctx.err()) {
    case ContextError::kCanceled:
      return ClientError::kCanceled;
    case ContextError::kDeadlineExceeded:
      return ClientError::kDeadlineExceeded;
    case ContextError::kNone:
      break;
  }
  return ClientError::kNone;
}

struct DialResult {
  int rc = 0;
  std::vector<net::Address> addresses;
  std::string message;
};

// getaddrinfo(3) may block for seconds: it runs in its own green thread inside
// green::blocking() (its P goes to another OS thread meanwhile), and the caller waits for it
// under its context and deadline, so a cancelled call returns at once (Go's resolver runs the
// lookup on its own goroutine for the same reason). A lookup the caller gave up on finishes
// and drops its result.
DialResult resolve(const Url& url, const Context& ctx, int64_t deadline_ns) {
  DialResult out;
  in6_addr a6{};
  in_addr a4{};
  if (inet_pton(AF_INET, url.host.c_str(), &a4) == 1 ||
      inet_pton(AF_INET6, url.host.c_str(), &a6) == 1) {
    const std::string hp =
        (url.host.find(':') != std::string::npos ? "[" + url.host + "]" : url.host) + ":" +
        std::to_string(url.port);
    if (auto a = net::Address::parse(hp)) out.addresses.push_back(*a);
    if (out.addresses.empty()) out.rc = -EINVAL;
    return out;
  }
  auto result = std::make_shared<Channel<DialResult>>(1);
  green::go([result, host = url.host, port = url.port] {
    DialResult r;
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    addrinfo* list = nullptr;
    const std::string service = std::to_string(port);
    const int rc = green::blocking(
        [&] { return ::getaddrinfo(host.c_str(), service.c_str(), &hints, &list); });
    if (rc != 0) {
      r.rc = -EHOSTUNREACH;
      r.message = gai_strerror(rc);
    } else {
      for (addrinfo* ai = list; ai != nullptr; ai = ai->ai_next) {
        r.addresses.push_back(net::Address::from_sockaddr(ai->ai_addr, ai->ai_addrlen));
      }
      freeaddrinfo(list);
    }
    (void)result->try_send(std::move(r));
  });
  const int64_t wait_ns = std::max<int64_t>(deadline_ns - green::detail::now_ns(), 0);
  bool got = false;
  const int fired = green::select(green::recv_case(*result,
                                                   [&](std::optional<DialResult> r) {
                                                     if (r) {
                                                       out = std::move(*r);
                                                       got = true;
                                                     }
                                                   }),
                                  green::recv_case(ctx.done(), [](std::optional<bool>) {}),
                                  green::timeout(std::chrono::nanoseconds(wait_ns)));
  if (!got) {
    out.rc = fired == green::kSelectTimeout ? -ETIMEDOUT : -ECANCELED;
    out.message = fired == green::kSelectTimeout ? "timed out" : "cancelled";
  }
  return out;
}

// The pool's key: "host:port" for http://, "https://host:port" for https:// (one host may serve
// both on one port; a plain connection must never carry an https:// request, nor the reverse).
std::string authority_key(const Url& u) {
  return (u.https ? "https://" : "") +
         (u.host.find(':') != std::string::npos ? "[" + u.host + "]" : u.host) + ":" +
         std::to_string(u.port);
}

}  // namespace

// ---- URLs ----

std::optional<Url> parse_url(std::string_view url) {
  constexpr std::string_view kHttp = "http://";
  constexpr std::string_view kHttps = "https://";
  Url u;
  if (url.size() >= kHttps.size() && iequals(url.substr(0, kHttps.size()), kHttps)) {
    u.https = true;
    u.port = 443;
    url.remove_prefix(kHttps.size());
  } else if (url.size() >= kHttp.size() && iequals(url.substr(0, kHttp.size()), kHttp)) {
    url.remove_prefix(kHttp.size());
  } else {
    return std::nullopt;
  }
  for (char c : url) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return std::nullopt;
  }
  if (const std::size_t hash = url.find('#'); hash != std::string_view::npos) {
    url = url.substr(0, hash);
  }
  const std::size_t end = url.find_first_of("/?");
  std::string_view authority = url.substr(0, end);
  std::string_view rest = end == std::string_view::npos ? std::string_view() : url.substr(end);
  if (authority.empty() || authority.find('@') != std::string_view::npos) return std::nullopt;
  u.authority = std::string(authority);
  std::string_view host = authority;
  std::string_view port;
  if (authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return std::nullopt;
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return std::nullopt;
      port = after.substr(1);
    }
    in6_addr a{};
    if (inet_pton(AF_INET6, std::string(host).c_str(), &a) != 1) return std::nullopt;
  } else {
    const std::size_t colon = authority.rfind(':');
    if (colon != std::string_view::npos) {
      host = authority.substr(0, colon);
      port = authority.substr(colon + 1);
    }
    if (host.find(':') != std::string_view::npos) return std::nullopt;
    if (!std::all_of(host.begin(), host.end(), [](char c) {
          return std::isalnum(static_cast<unsigned char>(c)) != 0 || c == '-' || c == '.' ||
                 c == '_';
        })) {
      return std::nullopt;
    }
  }
  if (host.empty()) return std::nullopt;
  if (authority.back() == ':') port = {};  // "host:" means the default port (RFC 3986 3.2.3)
  if (!port.empty()) {
    unsigned v = 0;
    auto [p, ec] = std::from_chars(port.data(), port.data() + port.size(), v);
    if (ec != std::errc() || p != port.data() + port.size() || v == 0 || v > 65535) {
      return std::nullopt;
    }
    u.port = static_cast<uint16_t>(v);
  }
  u.host = std::string(host);
  u.target = rest.empty() ? "/" : std::string(rest);
  if (u.target.front() == '?') u.target.insert(0, "/");
  return u;
}

// ---- errors ----

const char* client_error_name(ClientError e) {
  switch (e) {
    case ClientError::kNone:
      return "none";
    case ClientError::kBadRequest:
      return "bad_request";
    case ClientError::kDns:
      return "dns";
    case ClientError::kConnect:
      return "connect";
    case ClientError::kTls:
      return "tls";
    case ClientError::kTimeout:
      return "timeout";
    case ClientError::kCanceled:
      return "canceled";
    case ClientError::kDeadlineExceeded:
      return "deadline_exceeded";
    case ClientError::kWrite:
      return "write";
    case ClientError::kRead:
      return "read";
    case ClientError::kProtocol:
      return "protocol";
    case ClientError::kHeadersTooLarge:
      return "headers_too_large";
    case ClientError::kBodyTooLarge:
      return "body_too_large";
    case ClientError::kRequestBody:
      return "request_body";
    case ClientError::kTooManyRedirects:
      return "too_many_redirects";
  }
  return "unknown";
}

// ---- ClientResponse ----

ClientResponse::ClientResponse() = default;
ClientResponse::~ClientResponse() { close(); }

ClientResponse::ClientResponse(ClientResponse&& other) noexcept { *this = std::move(other); }

ClientResponse& ClientResponse::operator=(ClientResponse&& other) noexcept {
  if (this != &other) {
    close();
    conn_ = std::move(other.conn_);
    shared_ = std::move(other.shared_);
    // The views in headers_ point into head_'s buffer, which a move keeps unless the string
    // is short enough to live inside the object: re-point them then.
    const char* old_base = other.head_.data();
    head_ = std::move(other.head_);
    headers_ = std::move(other.headers_);
    rebase_headers(old_base);
    reason_offset_ = other.reason_offset_;
    reason_length_ = other.reason_length_;
    error_ = std::exchange(other.error_, ClientError::kNone);
    message_ = std::move(other.message_);
    status_ = std::exchange(other.status_, 0);
    version_minor_ = other.version_minor_;
    content_length_ = other.content_length_;
    chunked_ = other.chunked_;
    has_body_ = other.has_body_;
    body_bytes_ = std::exchange(other.body_bytes_, 0);
  }
  return *this;
}

void ClientResponse::fail(ClientError e, std::string message) {
  if (error_ != ClientError::kNone) return;
  error_ = e;
  message_ = std::move(message);
  if (shared_ != nullptr) {
    shared_->counters.errors[static_cast<int>(e)].fetch_add(1, std::memory_order_relaxed);
  }
}

std::string_view ClientResponse::reason() const {
  return std::string_view(head_).substr(reason_offset_, reason_length_);
}

std::span<const Header> ClientResponse::headers() const { return headers_; }

void ClientResponse::rebase_headers(const char* old_base) {
  const char* base = head_.data();
  if (base == old_base) return;
  for (Header& h : headers_) {
    h.name = std::string_view(base + (h.name.data() - old_base), h.name.size());
    h.value = std::string_view(base + (h.value.data() - old_base), h.value.size());
  }
}

void ClientResponse::take_head(detail::ClientConn& c) {
  const char* old_base = c.head.data();
  head_.swap(c.head);
  headers_.swap(c.headers);
  rebase_headers(old_base);
  reason_offset_ = c.reason_offset;
  reason_length_ = c.reason_length;
}

void ClientResponse::release(bool failed) {
  if (conn_ == nullptr) return;
  if (failed) {
    shared_->discard(std::move(conn_));  // closed now, not when the response goes
  } else {
    shared_->put(std::move(conn_));
  }
}

std::string_view ClientResponse::header(std::string_view name) const {
  for (const Header& h : headers()) {
    if (iequals(h.name, name)) return h.value;
  }
  return {};
}

long ClientResponse::read(std::span<char> buf) { return read_body(buf, true); }

long ClientResponse::read_body(std::span<char> buf, bool release_at_end) {
  if (error_ != ClientError::kNone || status_ == 0) return -1;
  if (conn_ == nullptr) return 0;  // closed, or a body-less response already given back
  const long n = conn_->read_body(buf.data(), buf.size());
  if (n < 0) {
    fail(conn_->error, conn_->message);
    release(true);
    return -1;
  }
  body_bytes_ += static_cast<uint64_t>(n);
  // The end of the body: the connection can serve the next call now.
  if (!release_at_end) return n;
  if ((n == 0 && !buf.empty()) ||
      (conn_->message_done && conn_->span_index >= conn_->body_spans.size())) {
    release(false);
  }
  return n;
}

bool ClientResponse::read_ready() const {
  if (conn_ == nullptr || error_ != ClientError::kNone) return true;
  return conn_->message_done || conn_->span_index < conn_->body_spans.size() ||
         conn_->error != ClientError::kNone;
}

std::optional<std::string> ClientResponse::read_all(std::size_t limit) {
  std::string out;
  if (content_length_ > 0) {
    if (static_cast<uint64_t>(content_length_) > limit) {
      fail(ClientError::kBodyTooLarge, "response body over the read_all limit");
      release(true);
      return std::nullopt;
    }
    out.reserve(static_cast<std::size_t>(content_length_));
  }
  // The connection is released only after the limit check: a body over it fails the response,
  // and a failed response never gives its connection back, even when its bytes are all in.
  char buf[16 * 1024];
  for (;;) {
    const long n = read_body(buf, false);
    if (n < 0) return std::nullopt;
    if (n == 0) break;
    if (out.size() + static_cast<std::size_t>(n) > limit) {
      fail(ClientError::kBodyTooLarge, "response body over the read_all limit");
      release(true);
      return std::nullopt;
    }
    out.append(buf, static_cast<std::size_t>(n));
  }
  release(false);
  return out;
}

void ClientResponse::close() {
  if (conn_ == nullptr) return;
  // The rest of a body that already arrived completes it without a wait.
  conn_->parse_buffered();
  while (conn_->error == ClientError::kNone && !conn_->message_done &&
         conn_->span_index < conn_->body_spans.size()) {
    conn_->span_index = conn_->body_spans.size();
    conn_->parse_buffered();
  }
  shared_->put(std::move(conn_));
}

// ---- Client ----

Client::Client(ClientOptions options)
    : shared_(std::make_shared<ClientShared>(std::move(options))) {}

Client::~Client() {
  if (shared_->stop_janitor && green::running()) {
    shared_->stop_janitor();
    shared_->janitor_exited.wait();  // it ends at once: its sleep is cancelled
  }
  shared_->close_all_idle();
}

const ClientOptions& Client::options() const { return shared_->options; }

void Client::close_idle() { shared_->close_all_idle(); }

ClientResponse Client::get(const Context& ctx, std::string_view url) {
  ClientRequest req;
  req.url = url;
  return send(ctx, req);
}

ClientResponse Client::send(const Context& ctx, const ClientRequest& req) {
  shared_->counters.requests.fetch_add(1, std::memory_order_relaxed);
  const ClientOptions& o = shared_->options;
  ClientRequest cur = req;
  std::string url_storage;         // the current URL while following redirects
  std::vector<Header> redirected;  // headers for a redirect that drops some
  for (int hop = 0;; ++hop) {
    bool retryable = false;
    ClientResponse resp = send_once(ctx, cur, &retryable, false);
    if (!resp.ok() && retryable && idempotent(cur.method, cur.headers) && !cur.body_source) {
      // The keep-alive race: the server closed the pooled connection as we sent on it. Once,
      // on a new connection (Go's Transport and nginx's proxy_next_upstream do the same).
      shared_->counters.retries.fetch_add(1, std::memory_order_relaxed);
      resp = send_once(ctx, cur, &retryable, true);
    }
    if (!resp.ok()) {
      shared_->counters.errors[static_cast<int>(resp.error_)].fetch_add(1,
                                                                        std::memory_order_relaxed);
      return resp;
    }
    const int s = resp.status();
    const bool redirect = s == 301 || s == 302 || s == 303 || s == 307 || s == 308;
    if (o.max_redirects <= 0 || !redirect || resp.header("Location").empty()) return resp;
    if (hop >= o.max_redirects) {
      ClientResponse failed;
      failed.shared_ = shared_;
      failed.fail(ClientError::kTooManyRedirects,
                  "stopped after " + std::to_string(o.max_redirects) + " redirects");
      return failed;
    }
    // Where to: an absolute http:// or https:// URL, or a path on the same scheme and authority.
    std::string_view location = resp.header("Location");
    std::optional<Url> from = parse_url(cur.url);
    std::string next;
    if (location.front() == '/' && (location.size() < 2 || location[1] != '/')) {
      next = std::string(from->scheme()) + "://" + from->authority + std::string(location);
    } else {
      next = std::string(location);
    }
    std::optional<Url> to = parse_url(next);
    if (!to) return resp;  // not one we can follow (another scheme, relative): the 3xx as it is
    // Credentials never go from https:// down to http://, where anyone on the path reads them
    // (Go keeps them on a same-host downgrade; curl drops them on any change of scheme).
    const bool same_host = iequals(to->authority, from->authority) && !(from->https && !to->https);
    // 301/302 after a POST and 303 after anything but HEAD become a GET without a body, as
    // browsers and Go do; 307/308 repeat the request, which needs a body we can send again.
    const bool to_get =
        s == 303 ? cur.method != "HEAD" : (s != 307 && s != 308 && cur.method == "POST");
    if (!to_get && cur.body_source) return resp;
    resp.close();
    url_storage = std::move(next);
    cur.url = url_storage;
    if (to_get) {
      cur.method = "GET";
      cur.body = {};
      cur.content_length = -1;
    }
    // Credentials stay with the host they were meant for (Go drops the same on a new host).
    std::vector<Header> kept;
    for (const Header& h : cur.headers) {
      if (!same_host && (iequals(h.name, "Authorization") || iequals(h.name, "Cookie") ||
                         iequals(h.name, "Proxy-Authorization"))) {
        continue;
      }
      if (iequals(h.name, "Host")) continue;  // the new URL's
      kept.push_back(h);  // views into the caller's request: valid for the whole call
    }
    redirected = std::move(kept);
    cur.headers = std::span<const Header>(redirected);
  }
}

ClientError Client::handshake(const Context& ctx, const Url& url, const std::string& key,
                              net::TcpStream& stream, int64_t deadline_ns,
                              std::unique_ptr<net::TlsSession>* out, std::string* why) {
  detail::ClientCounters& counters = shared_->counters;
  std::string error;
  const std::shared_ptr<net::TlsClientContext> tls = shared_->tls_context(&error);
  auto failed = [&](net::TlsHandshakeFailure f) {
    counters.tls_failures[static_cast<int>(f)].fetch_add(1, std::memory_order_relaxed);
  };
  if (tls == nullptr) {
    failed(net::TlsHandshakeFailure::kOther);
    *why = "TLS client context: " + error;
    return ClientError::kTls;
  }
  // The context ends the handshake as it ends a read (send_once binds it again, to the same).
  stream.bind_context(ctx);
  net::TlsHandshakeFailure failure = net::TlsHandshakeFailure::kNone;
  const int rc =
      net::TlsSession::connect(stream, *tls, url.host, url.port,
                               net::Deadline(std::chrono::nanoseconds(deadline_ns)), out, &failure);
  if (rc == 0) {
    ((*out)->resumed() ? counters.tls_resumed : counters.tls_full)
        .fetch_add(1, std::memory_order_relaxed);
    return ClientError::kNone;
  }
  // The peer's host:port, without the key's scheme.
  const std::string_view peer = std::string_view(key).substr(key.find("://") + 3);
  const ClientError ce = context_error(ctx);
  if (ce != ClientError::kNone) {
    // A deadline of the context is a timeout to count, a cancel a cancel.
    failed(ce == ClientError::kCanceled ? net::TlsHandshakeFailure::kCanceled
                                        : net::TlsHandshakeFailure::kTimeout);
    *why = "context done in the TLS handshake with " + std::string(peer);
    return ce;
  }
  if (rc == -ETIMEDOUT || failure == net::TlsHandshakeFailure::kTimeout ||
      green::detail::now_ns() >= deadline_ns) {
    failed(net::TlsHandshakeFailure::kTimeout);
    *why = "TLS handshake with " + std::string(peer) + ": timed out";
    return ClientError::kTimeout;
  }
  failed(failure == net::TlsHandshakeFailure::kNone ? net::TlsHandshakeFailure::kOther : failure);
  *why = "TLS handshake with " + std::string(peer) + ": " + std::string(net::to_string(failure));
  if (*out != nullptr && !(*out)->last_error().empty()) {
    why->append(": ").append((*out)->last_error());
  } else if (rc != -EPROTO) {
    why->append(": ").append(detail::errno_text(-rc));
  }
  out->reset();
  return ClientError::kTls;
}

ClientResponse Client::send_once(const Context& ctx, const ClientRequest& req, bool* retryable,
                                 bool fresh_only) {
  *retryable = false;
  const ClientOptions& o = shared_->options;
  ClientResponse resp;
  resp.shared_ = shared_;
  auto fail = [&](ClientError e, std::string why) {
    resp.error_ = e;
    resp.message_ = std::move(why);
    return std::move(resp);
  };
  // Not counted in fail(): send() counts the error of the call once, whatever the attempts.
  std::optional<Url> url = parse_url(req.url);
  if (!url)
    return fail(ClientError::kBadRequest,
                "not an http:// or https:// URL: " + std::string(req.url));
  if (!is_token(req.method)) return fail(ClientError::kBadRequest, "bad method");
  bool has_host = false;
  bool has_user_agent = false;
  bool close_after = false;
  for (const Header& h : req.headers) {
    if (!is_token(h.name) || !is_field_value(h.value)) {
      return fail(ClientError::kBadRequest, "bad header " + std::string(h.name));
    }
    if (iequals(h.name, "Content-Length") || iequals(h.name, "Transfer-Encoding")) {
      return fail(ClientError::kBadRequest,
                  std::string(h.name) + " is the client's: use body or content_length");
    }
    has_host = has_host || iequals(h.name, "Host");
    has_user_agent = has_user_agent || iequals(h.name, "User-Agent");
    close_after = close_after || (iequals(h.name, "Connection") && has_token(h.value, "close"));
  }
  if (ctx.cancelled()) return fail(context_error(ctx), "context done before the request");

  const int64_t start = green::detail::now_ns();
  const int64_t call_deadline =
      o.timeout.count() > 0 ? start + o.timeout.count() : green::detail::kNoDeadlineNs;
  const std::string key = authority_key(*url);

  // A connection: a pooled one, or a new one (waiting for a slot under max_conns_per_host).
  std::unique_ptr<ClientConn> conn;
  if (!fresh_only) conn = shared_->take_idle(key);
  if (conn == nullptr) {
    const int64_t connect_deadline =
        std::min(o.connect_timeout.count() > 0 ? start + o.connect_timeout.count()
                                               : green::detail::kNoDeadlineNs,
                 call_deadline);
    // Reserve a slot for the new connection.
    for (;;) {
      std::shared_ptr<Channel<bool>> wait;
      {
        MutexGuard g(shared_->mu);
        ClientShared::Host& h = shared_->hosts[key];
        if (o.max_conns_per_host <= 0 || h.open < o.max_conns_per_host) {
          ++h.open;
          break;
        }
        wait = std::make_shared<Channel<bool>>(1);
        h.waiters.push_back(wait);
      }
      const int64_t left = std::max<int64_t>(connect_deadline - green::detail::now_ns(), 0);
      bool woken = false;
      (void)green::select(green::recv_case(*wait, [&](std::optional<bool>) { woken = true; }),
                          green::recv_case(ctx.done(), [](std::optional<bool>) {}),
                          green::timeout(std::chrono::nanoseconds(left)));
      if (!woken) {
        bool handed = false;
        {
          MutexGuard g(shared_->mu);
          auto& ws = shared_->hosts[key].waiters;
          auto it = std::find(ws.begin(), ws.end(), wait);
          if (it != ws.end()) {
            ws.erase(it);
          } else {
            handed = true;  // a slot was sent to us as we gave up: pass it on
          }
          if (handed) {
            bool v = false;
            if (wait->try_recv(v) == ChanStatus::kOk && !ws.empty()) {
              (void)ws.front()->try_send(true);
              ws.erase(ws.begin());
            }
          }
        }
        const ClientError ce = context_error(ctx);
        if (ce != ClientError::kNone) return fail(ce, "context done waiting for a connection");
        return fail(ClientError::kTimeout, "timed out waiting for a connection to " + key);
      }
      // Woken: an idle connection came back or a slot freed; look again.
      if (!fresh_only) conn = shared_->take_idle(key);
      if (conn != nullptr) break;
    }
    if (conn == nullptr) {
      // Dial, with the slot reserved above.
      shared_->counters.pool_misses.fetch_add(1, std::memory_order_relaxed);
      DialResult d = resolve(*url, ctx, connect_deadline);
      if (d.rc != 0 || d.addresses.empty()) {
        {
          MutexGuard g(shared_->mu);
          shared_->forget_locked(key);
        }
        const ClientError ce = context_error(ctx);
        if (ce != ClientError::kNone) return fail(ce, "context done resolving " + url->host);
        if (d.rc == -ETIMEDOUT)
          return fail(ClientError::kTimeout, "timed out resolving " + url->host);
        return fail(ClientError::kDns, "resolve " + url->host + ": " + d.message);
      }
      net::TcpStream stream;
      int rc = -ECONNREFUSED;
      std::string last;
      for (const net::Address& a : d.addresses) {
        rc = net::TcpStream::connect(a, &stream, ctx,
                                     net::Deadline(std::chrono::nanoseconds(connect_deadline)));
        if (rc == 0) break;
        last = a.to_string() + ": " + detail::errno_text(-rc);
        if (rc == -ETIMEDOUT || rc == -ECANCELED) break;
      }
      if (rc != 0) {
        {
          MutexGuard g(shared_->mu);
          shared_->forget_locked(key);
        }
        const ClientError ce = context_error(ctx);
        if (ce != ClientError::kNone) return fail(ce, "context done connecting to " + key);
        if (rc == -ETIMEDOUT) return fail(ClientError::kTimeout, "connect " + key + ": timed out");
        return fail(ClientError::kConnect, "connect " + last);
      }
      std::unique_ptr<net::TlsSession> tls;
      if (url->https) {
        std::string why;
        const ClientError te = handshake(ctx, *url, key, stream, connect_deadline, &tls, &why);
        if (te != ClientError::kNone) {
          {
            MutexGuard g(shared_->mu);
            shared_->forget_locked(key);
          }
          return fail(te, std::move(why));  // `stream` closes here: nothing was sent on it
        }
      }
      conn = std::make_unique<ClientConn>(std::move(stream), key, o);
      conn->tls = std::move(tls);
      shared_->counters.open.fetch_add(1, std::memory_order_relaxed);
    }
  }

  // From here on the connection is ours: every failure closes it (discard), a complete
  // response returns it (ClientResponse::release).
  const bool reused = conn->reused;
  if (reused) shared_->counters.pool_hits.fetch_add(1, std::memory_order_relaxed);
  conn->ctx = ctx;
  conn->call_deadline_ns = call_deadline;
  conn->close_after = close_after;
  conn->stream.bind_context(ctx);
  const bool is_head = req.method == "HEAD";
  conn->begin_response(is_head);

  // The head.
  std::string head;
  head.reserve(256 + req.url.size());
  head.append(req.method).append(" ").append(url->target).append(" HTTP/1.1\r\n");
  if (!has_host) head.append("Host: ").append(url->authority).append("\r\n");
  if (!has_user_agent && !o.user_agent.empty()) {
    head.append("User-Agent: ").append(o.user_agent).append("\r\n");
  }
  for (const Header& h : req.headers) {
    head.append(h.name).append(": ").append(h.value).append("\r\n");
  }
  const bool streamed = static_cast<bool>(req.body_source);
  const bool chunked = streamed && req.content_length < 0;
  if (streamed && !chunked) {
    head.append("Content-Length: ").append(std::to_string(req.content_length)).append("\r\n");
  } else if (chunked) {
    head.append("Transfer-Encoding: chunked\r\n");
  } else if (!req.body.empty() || req.method == "POST" || req.method == "PUT" ||
             req.method == "PATCH") {
    // A POST without a body still says so (Go sends Content-Length: 0 for them too).
    head.append("Content-Length: ").append(std::to_string(req.body.size())).append("\r\n");
  }
  head.append("\r\n");

  // A failed write: the connection is done for. But a server may answer before it has read
  // the whole request and then stop reading (an early 413 or 401): the answer may be waiting,
  // so look for it before giving up, as Go's Transport and nginx do. nullopt: a response head
  // arrived after all (the connection then closes after it).
  bool body_started = false;
  auto write_failed = [&](ssize_t rc) -> std::optional<ClientResponse> {
    std::string why;
    const ClientError e = conn->socket_error(rc, false, &why);
    if (e == ClientError::kWrite) {
      conn->close_after = true;
      if (conn->read_head() == ClientError::kNone) return std::nullopt;
    }
    // Nothing of a response arrived on a connection that had served before: the server may
    // have closed it as we sent (the keep-alive race; a timeout is not that).
    *retryable = reused && !conn->got_bytes && !body_started && e == ClientError::kWrite;
    shared_->discard(std::move(conn));
    return fail(e, std::move(why));
  };
  bool have_head = false;

  conn->arm_write_deadline();
  ssize_t w;
  if (!streamed && !req.body.empty() && req.body.size() <= 64 * 1024) {
    iovec iov[2] = {{head.data(), head.size()},
                    {const_cast<char*>(req.body.data()), req.body.size()}};
    w = conn->writev(iov, 2);
  } else {
    w = conn->write(head.data(), head.size());
    if (w >= 0 && !streamed && !req.body.empty()) {
      conn->arm_write_deadline();
      w = conn->write(req.body.data(), req.body.size());
    }
  }
  if (w < 0) {
    auto r = write_failed(w);
    if (r) return std::move(*r);
    have_head = true;
  }

  if (streamed && !have_head) {
    // The body from the source, under the write deadline per chunk (backpressure: a slow
    // server slows the source).
    std::unique_ptr<char[]> buf(new char[16 * 1024 + 16]);
    constexpr std::size_t kChunk = 16 * 1024;
    char* data = buf.get() + 10;  // room before for the chunk-size line
    uint64_t sent = 0;
    for (;;) {
      body_started = true;  // the source has been called: the request cannot be sent again
      const long n = req.body_source(std::span<char>(data, kChunk));
      if (n < 0 || (!chunked && (n > 0 && sent + static_cast<uint64_t>(n) >
                                              static_cast<uint64_t>(req.content_length)))) {
        shared_->discard(std::move(conn));
        return fail(ClientError::kRequestBody, n < 0 ? "the request body source failed"
                                                     : "the request body is longer than declared");
      }
      if (n == 0) break;
      sent += static_cast<uint64_t>(n);
      conn->arm_write_deadline();
      if (chunked) {
        char line[12];
        const int len = std::snprintf(line, sizeof line, "%lx\r\n", static_cast<unsigned long>(n));
        iovec iov[3] = {{line, static_cast<std::size_t>(len)},
                        {data, static_cast<std::size_t>(n)},
                        {const_cast<char*>("\r\n"), 2}};
        w = conn->writev(iov, 3);
      } else {
        w = conn->write(data, static_cast<std::size_t>(n));
      }
      if (w < 0) break;
    }
    if (w >= 0 && !chunked && sent != static_cast<uint64_t>(req.content_length)) {
      shared_->discard(std::move(conn));
      return fail(ClientError::kRequestBody, "the request body is shorter than declared");
    }
    if (w >= 0 && chunked) {
      conn->arm_write_deadline();
      w = conn->write("0\r\n\r\n", 5);
    }
    if (w < 0) {
      auto r = write_failed(w);
      if (r) return std::move(*r);
      have_head = true;
    }
  }

  // The response head.
  const ClientError e = have_head ? ClientError::kNone : conn->read_head();
  if (e != ClientError::kNone) {
    if (e == ClientError::kRead) *retryable = reused && !conn->got_bytes && !body_started;
    std::string why = conn->message;
    shared_->discard(std::move(conn));
    return fail(e, std::move(why));
  }
  shared_->counters.responses.fetch_add(1, std::memory_order_relaxed);
  resp.status_ = conn->parser.status_code;
  resp.version_minor_ = conn->parser.http_minor;
  const bool chunked_resp = (conn->parser.flags & F_CHUNKED) != 0;
  resp.chunked_ = chunked_resp;
  resp.content_length_ = (conn->parser.flags & F_CONTENT_LENGTH) != 0 && !chunked_resp
                             ? static_cast<int64_t>(conn->parser.content_length)
                             : -1;
  resp.has_body_ = !is_head && resp.status_ != 204 && resp.status_ != 304;
  // A HEAD response's Content-Length is the GET's, for the caller to see; 204 and 304 have none
  // (and are not chunked, whatever they say: client_conn.cpp skips their body).
  if (!is_head && !resp.has_body_) {
    resp.content_length_ = -1;
    resp.chunked_ = false;
  }
  conn->parse_buffered();
  resp.take_head(*conn);
  resp.conn_ = std::move(conn);
  if (!resp.has_body_ && resp.conn_->message_done) resp.release(false);  // nothing to read
  return resp;
}

// ---- stats ----

ClientStats Client::stats() const {
  const detail::ClientCounters& c = shared_->counters;
  ClientStats s;
  s.requests = c.requests.load(std::memory_order_relaxed);
  s.responses = c.responses.load(std::memory_order_relaxed);
  s.retries = c.retries.load(std::memory_order_relaxed);
  s.pool_hits = c.pool_hits.load(std::memory_order_relaxed);
  s.pool_misses = c.pool_misses.load(std::memory_order_relaxed);
  s.stale_closed = c.stale_closed.load(std::memory_order_relaxed);
  for (int i = 0; i < kClientErrorCount; ++i) {
    s.errors[i] = c.errors[i].load(std::memory_order_relaxed);
  }
  s.open_connections = c.open.load(std::memory_order_relaxed);
  s.idle_connections = c.idle.load(std::memory_order_relaxed);
  s.tls_handshakes_full = c.tls_full.load(std::memory_order_relaxed);
  s.tls_handshakes_resumed = c.tls_resumed.load(std::memory_order_relaxed);
  for (int i = 0; i < net::kTlsHandshakeFailureCount; ++i) {
    s.tls_handshake_failures_by[i] = c.tls_failures[i].load(std::memory_order_relaxed);
    s.tls_handshake_failures += s.tls_handshake_failures_by[i];
  }
  return s;
}

void Client::write_metrics(std::string& out, std::string_view prefix) const {
  const ClientStats s = stats();
  auto counter = [&](std::string_view name, std::string_view help, uint64_t v) {
    append_metric(out, prefix, name, "counter", help, v);
  };
  auto gauge = [&](std::string_view name, std::string_view help, int64_t v) {
    append_metric(out, prefix, name, "gauge", help, v);
  };
  counter("requests_total", "Requests sent by the client (a retry or redirect is not another).",
          s.requests);
  counter("responses_total", "Response heads received.", s.responses);
  counter("retries_total", "Requests sent again after a keep-alive race.", s.retries);
  counter("pool_hits_total", "Requests sent on a reused connection.", s.pool_hits);
  counter("pool_misses_total", "Requests that opened a new connection.", s.pool_misses);
  counter("stale_closed_total", "Pooled connections found closed before reuse.", s.stale_closed);
  append_metric_head(out, prefix, "errors_total", "counter", "Failed calls by kind.");
  for (int i = 1; i < kClientErrorCount; ++i) {
    const std::string labels =
        std::string("{kind=\"") + client_error_name(static_cast<ClientError>(i)) + "\"}";
    append_sample(out, prefix, "errors_total", labels, std::to_string(s.errors[i]));
  }
  gauge("open_connections", "Connections open now, busy or idle.", s.open_connections);
  gauge("idle_connections", "Connections idle in the pool now.", s.idle_connections);
  append_metric_head(out, prefix, "tls_handshakes_total", "counter",
                     "TLS handshakes of new https connections, full or resumed.");
  append_sample(out, prefix, "tls_handshakes_total", "{result=\"full\"}",
                std::to_string(s.tls_handshakes_full));
  append_sample(out, prefix, "tls_handshakes_total", "{result=\"resumed\"}",
                std::to_string(s.tls_handshakes_resumed));
  append_metric_head(out, prefix, "tls_handshake_failures_total", "counter",
                     "TLS handshakes of new https connections that failed, by reason.");
  for (int i = 1; i < net::kTlsHandshakeFailureCount; ++i) {
    const auto reason = static_cast<net::TlsHandshakeFailure>(i);
    // Only the reasons a client meets (the server's plain_http and not_tls are not).
    if (reason == net::TlsHandshakeFailure::kPlainHttp ||
        reason == net::TlsHandshakeFailure::kNotTls) {
      continue;
    }
    append_sample(out, prefix, "tls_handshake_failures_total",
                  "{reason=\"" + std::string(net::to_string(reason)) + "\"}",
                  std::to_string(s.tls_handshake_failures_by[i]));
  }
}

}  // namespace green::http
