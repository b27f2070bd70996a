// green::http::Client through real sockets on 127.0.0.1, against two kinds of upstream:
//   - greenhttp itself (an in-process Server on port 0 with the test's routes): methods,
//     bodies both ways by length and chunked, a 50 MB download and a streamed upload in
//     bounded memory, keep-alive reuse, a thousand concurrent calls, metrics, IPv6, DNS;
//   - misbehaving upstreams written here (a TcpListener whose connections run a script of raw
//     bytes): slow, stalled, reset, malformed, oversized, silent, and the keep-alive races.
// Every test runs inside one green::run (client and upstreams on the same runtime, as a proxy
// would be), asserts the exact ClientError, and checks afterwards that the runtime's open
// descriptors (and the process's) are back where they started: a connection that an error
// leaves behind is a bug even when the call itself reported the right thing.
#include "green/http/client.h"

#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "green/channel.h"
#include "green/context.h"
#include "green/green.h"
#include "green/http/router.h"
#include "green/http/server.h"
#include "green/net.h"
#include "green/sync.h"
#include "tests/http/client_test_util.h"
#include "tests/runtime/test_util.h"

using namespace std::chrono_literals;
using green::http::Client;
using green::http::ClientError;
using green::http::ClientOptions;
using green::http::ClientRequest;
using green::http::ClientResponse;
using green::http::Header;
using green::http::Method;
using green::http::Request;
using green::http::ResponseWriter;
using green::http::Router;
using green::http::ServerOptions;
using green::testing::Bounded;
using green::testing::final_error;
using green::testing::is;
using green::testing::name;
using green::testing::run_client_test;
using green::testing::scaled;
using green::testing::wait_until;

namespace {

using Clock = std::chrono::steady_clock;
namespace net = green::net;

// ---------------------------------------------------------------------------------------------
// A generated body: the byte at offset i is a function of i with a period (251) prime to every
// buffer size, so a piece delivered twice, dropped or reordered shows.

constexpr std::size_t kPiece = 64 * 1024;

// Sizes of the large transfers: smaller where the sanitizers make every byte dear (not
// testing::scaled, which caps counts at 5,000 under TSan), with a looser RSS bound for their
// allocators' quarantine and shadow.
#if defined(GREEN_SANITIZER_BUILD)
constexpr bool kSanitizer = true;
#else
constexpr bool kSanitizer = false;
#endif

std::string_view pattern(uint64_t offset, std::size_t n) {
  static const std::string table = [] {
    std::string t(kPiece + 251, '\0');
    for (std::size_t i = 0; i < t.size(); ++i) t[i] = static_cast<char>('!' + i % 251 % 90);
    return t;
  }();
  return std::string_view(table).substr(offset % 251, std::min(n, kPiece));
}

// ---------------------------------------------------------------------------------------------
// Upstream (a): greenhttp's own Server, in this runtime.

class GreenUpstream {
 public:
  explicit GreenUpstream(const std::function<void(Router&)>& routes, ServerOptions options = {},
                         const std::string& listen = "127.0.0.1:0")
      : served_(routes, listening_on(std::move(options), listen)) {
    if (served_.listening()) port_ = served_.server().local_address().port();
  }

  bool listening() const { return served_.listening(); }
  uint16_t port() const { return port_; }
  std::string url(std::string_view target) const {
    return "http://127.0.0.1:" + std::to_string(port_) + std::string(target);
  }
  uint64_t accepted() const { return served_.accepted(); }
  int64_t open_connections() const { return served_.open_connections(); }

 private:
  static ServerOptions listening_on(ServerOptions options, const std::string& listen) {
    options.listen = listen;
    return options;
  }
  green::testing::ServedServer served_;
  uint16_t port_ = 0;
};

// The routes most tests of (a) use.
void echo_routes(Router& r) {
  // What the upstream saw of the request, as text.
  auto echo = [](Request& req, ResponseWriter& w) {
    std::optional<std::string_view> body = req.body().read_all();
    std::string out = std::string(req.method_name()) + " " + std::string(req.target());
    out += " body=" + std::string(body ? *body : "<error>");
    out += " host=" + std::string(req.header("Host"));
    out += " ua=" + std::string(req.header("User-Agent"));
    out += " cl=" + std::string(req.header("Content-Length"));
    out += " te=" + std::string(req.header("Transfer-Encoding"));
    out += " x=" + std::string(req.header("X-Test"));
    w.set_header("X-Reply", "yes");
    w.send(200, "text/plain", out);
  };
  for (Method m : {Method::kGet, Method::kPost, Method::kPut, Method::kDelete}) {
    r.handle(m, "/echo", echo);
  }
  r.handle(Method::kGet, "/plaintext",
           [](Request&, ResponseWriter& w) { w.send(200, "text/plain", "Hello, World!"); });
  r.handle(Method::kGet, "/query",
           [](Request& req, ResponseWriter& w) { w.send(200, "text/plain", req.query()); });
  // `bytes` of pattern(), in 64 KiB writes: chunked, or with a Content-Length when ?length.
  r.handle(Method::kGet, "/download", [](Request& req, ResponseWriter& w) {
    const auto total = static_cast<uint64_t>(req.query_int("bytes", 0, int64_t{1} << 32));
    if (req.query_param("length")) w.set_content_length(total);
    w.set_content_type("application/octet-stream");
    for (uint64_t off = 0; off < total;) {
      const std::string_view piece = pattern(off, std::min<uint64_t>(kPiece, total - off));
      w.write(piece);
      off += piece.size();
      if (!w.flush()) return;  // the client went away
    }
  });
  // Reads the body in pieces and says how much came and whether it was pattern().
  r.handle(Method::kPost, "/upload", [](Request& req, ResponseWriter& w) {
    std::vector<char> buf(kPiece);
    uint64_t got = 0;
    bool same = true;
    long n = 0;
    while ((n = req.body().read(buf)) > 0) {
      const auto size = static_cast<std::size_t>(n);
      same = same && pattern(got, size) == std::string_view(buf.data(), size);
      got += size;
    }
    const char* framing = req.has_header("Transfer-Encoding") ? "chunked" : "length";
    w.send(200, "text/plain",
           n < 0 ? std::string("error")
                 : std::to_string(got) + (same ? " same " : " differs ") + framing);
  });
}

// ---------------------------------------------------------------------------------------------
// Upstream (b): a listener whose every connection runs a script of raw bytes in its own green
// thread. stop() (and the destructor) closes the listener and every connection still open, so
// a script parked on its socket ends, and waits for every script to end.

class RawUpstream;

// One accepted connection, as a script sees it.
class RawConn {
 public:
  RawConn(net::TcpStream& s, int index, RawUpstream& up) : s_(s), index_(index), up_(up) {}
  int index() const { return index_; }
  net::TcpStream& stream() { return s_; }

  // Reads one request, head and body (by Content-Length or chunked); returns its head, or
  // nullopt when the client closed (or the upstream is stopping).
  std::optional<std::string> read_request();
  const std::string& last_body() const { return body_; }
  bool send(std::string_view bytes) {
    return s_.write(bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size());
  }
  // Reads and drops until the client closes the connection (counted in closed_by_client()).
  void wait_closed();
  // Parks without reading until the upstream stops (a peer whose window stays shut).
  void park_until_stopped();
  // SO_LINGER 0 and close: the client gets a reset.
  void reset() {
    s_.set_linger_zero();
    s_.close();
  }
  // Half-closes (FIN) and waits until the client's kernel has acknowledged the FIN, so that
  // the client's socket shows end of stream from here on.
  void shutdown_write_and_wait_acked();
  // Waits until the client's kernel has acknowledged every byte sent, so they sit in its
  // socket's receive buffer.
  void wait_acked();
  // Sets a mark the test waits for (RawUpstream::marks()).
  void mark();

 private:
  // Reads more into in_; false at end of stream or on error.
  bool fill();
  bool fill_to(std::size_t n) {
    while (in_.size() < n) {
      if (!fill()) return false;
    }
    return true;
  }

  net::TcpStream& s_;
  int index_;
  RawUpstream& up_;
  std::string in_;
  std::string body_;
  bool client_closed_ = false;
};

class RawUpstream {
 public:
  using Script = std::function<void(RawConn&)>;
  explicit RawUpstream(Script script, const std::string& listen = "127.0.0.1:0")
      : script_(std::move(script)) {
    const std::optional<net::Address> at = net::Address::parse(listen);
    listening_ = at && net::TcpListener::listen(*at, &listener_) == 0;
    if (!listening_) return;
    port_ = listener_.local_address().port();
    scripts_.add(1);
    green::go([this] {
      accept_loop();
      scripts_.done();
    });
  }
  ~RawUpstream() { stop(); }
  RawUpstream(const RawUpstream&) = delete;
  RawUpstream& operator=(const RawUpstream&) = delete;

  void stop() {
    {
      green::MutexGuard g(mu_);
      if (stopped_) return;
      stopped_ = true;
      stopping_.close();
      for (net::TcpStream* s : live_) s->close();
    }
    listener_.close();
    scripts_.wait();
  }

  uint16_t port() const { return port_; }
  std::string url(std::string_view target = "/") const {
    return "http://127.0.0.1:" + std::to_string(port_) + std::string(target);
  }
  int accepted() const { return accepted_.load(); }
  int requests() const { return requests_.load(); }  // complete requests read, all connections
  int ended() const { return ended_.load(); }        // scripts that have returned
  int closed_by_client() const { return closed_by_client_.load(); }
  // A mark a script sets when it has reached a point the test waits for.
  void mark() { marks_.fetch_add(1); }
  int marks() const { return marks_.load(); }

 private:
  friend class RawConn;
  void accept_loop() {
    for (;;) {
      net::TcpStream s;
      if (listener_.accept(&s) != 0) return;  // closed by stop()
      const int index = accepted_.fetch_add(1);
      scripts_.add(1);
      green::go([this, index, s = std::move(s)]() mutable {
        serve(s, index);
        scripts_.done();
      });
    }
  }
  void serve(net::TcpStream& s, int index) {
    {
      green::MutexGuard g(mu_);
      if (stopped_) s.close();
      live_.insert(&s);
    }
    RawConn c(s, index, *this);
    script_(c);
    {
      green::MutexGuard g(mu_);
      live_.erase(&s);
    }
    s.close();
    ended_.fetch_add(1);
  }

  Script script_;
  net::TcpListener listener_;
  bool listening_ = false;
  uint16_t port_ = 0;
  green::WaitGroup scripts_;
  green::Mutex mu_;
  bool stopped_ = false;            // under mu_
  green::Channel<bool> stopping_;   // closed by stop()
  std::set<net::TcpStream*> live_;  // under mu_
  std::atomic<int> accepted_{0};
  std::atomic<int> requests_{0};
  std::atomic<int> ended_{0};
  std::atomic<int> closed_by_client_{0};
  std::atomic<int> marks_{0};
};

bool RawConn::fill() {
  char buf[16384];
  const ssize_t n = s_.read(buf, sizeof buf);
  if (n > 0) {
    in_.append(buf, static_cast<std::size_t>(n));
    return true;
  }
  // End of stream, or a reset: the client closed. -ECANCELED: stop() closed our side.
  if (n != -ECANCELED && !client_closed_) {
    client_closed_ = true;
    up_.closed_by_client_.fetch_add(1);
  }
  return false;
}

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::optional<std::string> RawConn::read_request() {
  std::size_t end = 0;
  while ((end = in_.find("\r\n\r\n")) == std::string::npos) {
    if (!fill()) return std::nullopt;
  }
  std::string head = in_.substr(0, end + 4);
  in_.erase(0, end + 4);
  const std::string h = lower(head);
  body_.clear();
  if (h.find("\r\ntransfer-encoding: chunked\r\n") != std::string::npos) {
    for (;;) {
      std::size_t eol = 0;
      while ((eol = in_.find("\r\n")) == std::string::npos) {
        if (!fill()) return std::nullopt;
      }
      const std::size_t size = std::strtoul(in_.substr(0, eol).c_str(), nullptr, 16);
      in_.erase(0, eol + 2);
      if (!fill_to(size + 2)) return std::nullopt;  // the data and its CRLF (or the last CRLF)
      body_.append(in_, 0, size);
      in_.erase(0, size + 2);
      if (size == 0) break;
    }
  } else if (const std::size_t at = h.find("\r\ncontent-length:"); at != std::string::npos) {
    const std::size_t size = std::strtoul(h.c_str() + at + 17, nullptr, 10);
    if (!fill_to(size)) return std::nullopt;
    body_ = in_.substr(0, size);
    in_.erase(0, size);
  }
  up_.requests_.fetch_add(1);
  return head;
}

void RawConn::mark() { up_.mark(); }

void RawConn::park_until_stopped() { (void)up_.stopping_.recv(); }

void RawConn::wait_closed() {
  while (fill()) in_.clear();
}

void RawConn::wait_acked() {
  (void)wait_until(
      [&] {
        int unacked = 0;
        return ioctl(s_.fd(), SIOCOUTQ, &unacked) != 0 || unacked == 0;
      },
      5s);
}

void RawConn::shutdown_write_and_wait_acked() {
  (void)s_.shutdown(SHUT_WR);
  (void)wait_until(
      [&] {
        tcp_info ti{};
        socklen_t len = sizeof ti;
        if (getsockopt(s_.fd(), IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) return true;
        return ti.tcpi_state != TCP_FIN_WAIT1;  // FIN_WAIT2 (or later): the FIN was acked
      },
      5s);
}

// A complete response with a Content-Length.
std::string response(int status, std::string_view body, std::string_view extra_headers = "") {
  return "HTTP/1.1 " + std::to_string(status) +
         " X\r\nContent-Length: " + std::to_string(body.size()) + "\r\n" +
         std::string(extra_headers) + "\r\n" + std::string(body);
}

// A well-behaved keep-alive upstream: answers every request with "conn N" (N: the connection's
// index), so a test can tell which connection served a call.
void serve_keep_alive(RawConn& c) {
  std::optional<std::string> head;
  while ((head = c.read_request())) {
    std::string reply = response(200, "conn " + std::to_string(c.index()));
    if (head->rfind("HEAD ", 0) == 0) reply.resize(reply.size() - 6);  // the head alone
    if (!c.send(reply)) return;
  }
}

// Sends `bytes` for every request on the connection, then waits for the client to close it.
RawUpstream::Script answer_with(std::string bytes) {
  return [bytes = std::move(bytes)](RawConn& c) {
    if (!c.read_request()) return;
    if (!c.send(bytes)) return;
    c.wait_closed();
  };
}

// ---------------------------------------------------------------------------------------------
// (a) Against greenhttp itself.

TEST(Client, MethodsHeadersAndBodiesAgainstGreenhttp) {
  run_client_test([] {
    GreenUpstream up(echo_routes);
    ASSERT_TRUE(up.listening());
    Bounded b;
    Client client;

    ClientResponse r = client.get(b.ctx(), up.url("/echo?a=1&b=2"));
    ASSERT_TRUE(r.ok()) << r.error_message();
    EXPECT_EQ(r.status(), 200);
    EXPECT_EQ(r.reason(), "OK");
    EXPECT_EQ(r.version_minor(), 1);
    EXPECT_EQ(r.header("x-reply"), "yes") << "header lookup is case-insensitive";
    EXPECT_EQ(r.header("Content-Type"), "text/plain");
    EXPECT_TRUE(r.has_body());
    const std::string host = "127.0.0.1:" + std::to_string(up.port());
    const std::string get_body =
        "GET /echo?a=1&b=2 body= host=" + host + " ua=greenhttp cl= te= x=";
    EXPECT_EQ(r.content_length(), static_cast<int64_t>(get_body.size()));
    EXPECT_FALSE(r.chunked());
    EXPECT_EQ(r.read_all(), get_body);
    EXPECT_EQ(r.body_bytes(), get_body.size());
    r.close();

    const Header extra[] = {{"X-Test", "v1"}, {"User-Agent", "mine/1.0"}};
    for (std::string_view method : {"POST", "PUT", "DELETE"}) {
      ClientRequest req;
      req.method = method;
      const std::string url = up.url("/echo");
      req.url = url;
      req.headers = extra;
      req.body = "payload";
      ClientResponse resp = client.send(b.ctx(), req);
      ASSERT_TRUE(resp.ok()) << method << ": " << resp.error_message();
      EXPECT_EQ(resp.status(), 200);
      EXPECT_EQ(resp.read_all(), std::string(method) + " /echo body=payload host=" + host +
                                     " ua=mine/1.0 cl=7 te= x=v1");
    }

    // HEAD: the length a GET would have, no body, and the call does not wait for one.
    ClientRequest head;
    head.method = "HEAD";
    const std::string head_url = up.url("/plaintext");
    head.url = head_url;
    ClientResponse h = client.send(b.ctx(), head);
    ASSERT_TRUE(h.ok()) << h.error_message();
    EXPECT_EQ(h.status(), 200);
    EXPECT_FALSE(h.has_body());
    EXPECT_EQ(h.header("Content-Length"), "13");
    char buf[64];
    EXPECT_EQ(h.read(buf), 0);
    EXPECT_EQ(h.read_all(), "");
    h.close();

    // A Host given by the caller replaces the URL's.
    const Header host_header[] = {{"Host", "example.test"}};
    ClientRequest with_host;
    const std::string echo_url = up.url("/echo");
    with_host.url = echo_url;
    with_host.headers = host_header;
    ClientResponse wh = client.send(b.ctx(), with_host);
    ASSERT_TRUE(wh.ok());
    EXPECT_NE(wh.read_all().value_or("").find(" host=example.test "), std::string::npos);

    // No User-Agent when the options say none.
    ClientOptions no_ua;
    no_ua.user_agent = "";
    Client bare(no_ua);
    ClientResponse nu = bare.get(b.ctx(), up.url("/echo"));
    ASSERT_TRUE(nu.ok());
    EXPECT_NE(nu.read_all().value_or("").find(" ua= "), std::string::npos);

    // Every call above went over one connection per client.
    EXPECT_EQ(up.accepted(), 2u);
    const green::http::ClientStats s = client.stats();
    EXPECT_EQ(s.requests, 6u);
    EXPECT_EQ(s.responses, 6u);
    EXPECT_EQ(s.pool_misses, 1u);
    EXPECT_EQ(s.pool_hits, 5u);
  });
}

// Request bodies by length (in memory, or a body_source with content_length) and chunked (a
// body_source without); response bodies by length and chunked.
TEST(Client, BodiesByLengthAndChunkedBothWays) {
  run_client_test(
      [] {
        GreenUpstream up(echo_routes);
        ASSERT_TRUE(up.listening());
        Bounded b;
        Client client;
        const std::string url = up.url("/echo");
        const std::string parts[] = {"first,", "second,", "", "third"};

        auto source = [&parts](std::size_t* next) {
          return [&parts, next](std::span<char> out) -> long {
            while (*next < std::size(parts)) {
              const std::string& p = parts[(*next)++];
              if (p.empty()) continue;  // (a source never returns 0 before its end)
              EXPECT_GE(out.size(), p.size());
              std::memcpy(out.data(), p.data(), p.size());
              return static_cast<long>(p.size());
            }
            return 0;
          };
        };

        std::size_t next = 0;
        ClientRequest chunked;
        chunked.method = "POST";
        chunked.url = url;
        chunked.body_source = source(&next);
        ClientResponse r1 = client.send(b.ctx(), chunked);
        ASSERT_TRUE(r1.ok()) << r1.error_message();
        const std::string got1 = r1.read_all().value_or("<error>");
        EXPECT_NE(got1.find("body=first,second,third "), std::string::npos) << got1;
        EXPECT_NE(got1.find(" cl= te=chunked "), std::string::npos) << got1;
        r1.close();  // (back to the pool: the next call may take it)

        next = 0;
        ClientRequest sized;
        sized.method = "PUT";
        sized.url = url;
        sized.body_source = source(&next);
        sized.content_length = 18;
        ClientResponse r2 = client.send(b.ctx(), sized);
        ASSERT_TRUE(r2.ok()) << r2.error_message();
        const std::string got2 = r2.read_all().value_or("<error>");
        EXPECT_NE(got2.find("body=first,second,third "), std::string::npos) << got2;
        EXPECT_NE(got2.find(" cl=18 te= "), std::string::npos) << got2;
        r2.close();

        // An empty body in memory on a POST still says Content-Length: 0.
        ClientRequest empty;
        empty.method = "POST";
        empty.url = url;
        ClientResponse r3 = client.send(b.ctx(), empty);
        ASSERT_TRUE(r3.ok());
        const std::string got3 = r3.read_all().value_or("<error>");
        EXPECT_NE(got3.find("body= host="), std::string::npos) << got3;
        r3.close();
        EXPECT_NE(got3.find(" cl=0 "), std::string::npos)
            << "RFC 9110 8.6: a POST says its length: " << got3;

        // Responses: by length, and chunked (a streamed handler).
        ClientResponse fixed = client.get(b.ctx(), up.url("/download?bytes=100000&length=1"));
        ASSERT_TRUE(fixed.ok());
        EXPECT_EQ(fixed.content_length(), 100000);
        EXPECT_FALSE(fixed.chunked());
        std::optional<std::string> fixed_body = fixed.read_all();
        ASSERT_TRUE(fixed_body);
        EXPECT_EQ(fixed_body->size(), 100000u);
        EXPECT_EQ(fixed_body->substr(0, 1000), pattern(0, 1000));
        fixed.close();

        ClientResponse streamed = client.get(b.ctx(), up.url("/download?bytes=200000"));
        ASSERT_TRUE(streamed.ok());
        EXPECT_EQ(streamed.content_length(), -1);
        EXPECT_TRUE(streamed.chunked());
        std::optional<std::string> streamed_body = streamed.read_all();
        ASSERT_TRUE(streamed_body);
        ASSERT_EQ(streamed_body->size(), 200000u);
        EXPECT_EQ(streamed_body->substr(kPiece - 10, 20), pattern(kPiece - 10, 20));
        EXPECT_EQ(up.accepted(), 1u)
            << "chunked bodies read to their end leave the connection reusable";
      });
}

// Reads `url` with read() in 64 KiB pieces, checking every byte against pattern(), and returns
// how much RSS grew past what it was before the call (sampled when the head is in and at every
// MiB of the body).
int64_t download_growth(Client& client, const green::Context& ctx, const std::string& url,
                        uint64_t total) {
  std::vector<char> buf(kPiece);
  const int64_t base = green::testing::rss_bytes();
  ClientResponse r = client.get(ctx, url);
  EXPECT_TRUE(r.ok()) << r.error_message();
  if (!r.ok()) return -1;
  int64_t peak = green::testing::rss_bytes();
  uint64_t got = 0;
  uint64_t wrong = 0;
  long n = 0;
  while ((n = r.read(buf)) > 0) {
    const auto size = static_cast<std::size_t>(n);
    if (pattern(got, size) != std::string_view(buf.data(), size)) ++wrong;
    const uint64_t before = got;
    got += size;
    if ((got >> 20) != (before >> 20)) peak = std::max(peak, green::testing::rss_bytes());
  }
  EXPECT_EQ(n, 0) << "error " << name(r.error()) << ": " << r.error_message();
  EXPECT_EQ(got, total);
  EXPECT_EQ(r.body_bytes(), total);
  EXPECT_EQ(wrong, 0u) << "pieces that were not the pattern";
  return peak - base;
}

// A large download read in pieces never sits whole in memory: RSS of the whole process (the
// upstream is in it too) stays within a few MiB of what it was before the call.
TEST(Client, LargeDownloadIsStreamedInBoundedMemory) {
  run_client_test([] {
    GreenUpstream up(echo_routes);
    ASSERT_TRUE(up.listening());
    Bounded b(60s);
    Client client;
    const uint64_t total = kSanitizer ? 24 << 20 : 50 << 20;
    const int64_t limit = kSanitizer ? 16 << 20 : 8 << 20;
    const std::string n = std::to_string(total);
    const int64_t by_length =
        download_growth(client, b.ctx(), up.url("/download?length=1&bytes=" + n), total);
    EXPECT_LT(by_length, limit) << "RSS grew by " << by_length << " bytes (Content-Length)";
    ::testing::Test::RecordProperty("rss_growth_length", std::to_string(by_length));
    const int64_t chunked = download_growth(client, b.ctx(), up.url("/download?bytes=" + n), total);
    EXPECT_LT(chunked, limit) << "RSS grew by " << chunked << " bytes (chunked)";
    ::testing::Test::RecordProperty("rss_growth_chunked", std::to_string(chunked));
    EXPECT_EQ(up.accepted(), 1u);
  });
}

// A large upload from a body_source streams too, chunked and with a Content-Length.
TEST(Client, LargeUploadFromABodySourceIsStreamed) {
  run_client_test([] {
    ServerOptions o;
    o.limits.max_body_bytes = uint64_t{1} << 30;
    GreenUpstream up(echo_routes, o);
    ASSERT_TRUE(up.listening());
    Bounded b(60s);
    Client client;
    const uint64_t total = kSanitizer ? 12 << 20 : 32 << 20;
    const int64_t limit = kSanitizer ? 16 << 20 : 8 << 20;
    const std::string url = up.url("/upload");
    for (const bool sized : {true, false}) {
      uint64_t sent = 0;
      int64_t base = 0;
      int64_t peak = 0;
      ClientRequest req;
      req.method = "POST";
      req.url = url;
      req.content_length = sized ? static_cast<int64_t>(total) : -1;
      req.body_source = [&](std::span<char> out) -> long {
        const std::string_view piece = pattern(sent, std::min<uint64_t>(out.size(), total - sent));
        std::memcpy(out.data(), piece.data(), piece.size());
        const uint64_t before = sent;
        sent += piece.size();
        if (before < (4u << 20) && sent >= (4u << 20)) base = green::testing::rss_bytes();
        if (base != 0 && (sent >> 20) != (before >> 20)) {
          peak = std::max(peak, green::testing::rss_bytes());
        }
        return static_cast<long>(piece.size());
      };
      ClientResponse r = client.send(b.ctx(), req);
      ASSERT_TRUE(r.ok()) << r.error_message();
      EXPECT_EQ(r.status(), 200);
      EXPECT_EQ(r.read_all(), std::to_string(total) + " same " + (sized ? "length" : "chunked"));
      EXPECT_LT(peak - base, limit) << "RSS grew by " << peak - base << " bytes while uploading";
      ::testing::Test::RecordProperty(sized ? "rss_growth_length" : "rss_growth_chunked",
                                      std::to_string(peak - base));
    }
  });
}

// Sequential calls share one connection: greenhttp accepts one, the pool counts hits. A
// response dropped unread whose body is already buffered leaves its connection reusable; one
// dropped in the middle of a large body closes it.
TEST(Client, KeepAliveReusesOneConnectionForSequentialCalls) {
  run_client_test([] {
    GreenUpstream up(echo_routes);
    ASSERT_TRUE(up.listening());
    Bounded b;
    Client client;
    for (int i = 0; i < 10; ++i) {
      ClientResponse r = client.get(b.ctx(), up.url("/query?i=" + std::to_string(i)));
      ASSERT_TRUE(r.ok()) << r.error_message();
      EXPECT_EQ(r.read_all(), "i=" + std::to_string(i));
    }
    EXPECT_EQ(up.accepted(), 1u);
    green::http::ClientStats s = client.stats();
    EXPECT_EQ(s.requests, 10u);
    EXPECT_EQ(s.pool_misses, 1u);
    EXPECT_EQ(s.pool_hits, 9u);
    EXPECT_EQ(s.open_connections, 1);
    EXPECT_EQ(s.idle_connections, 1);

    { (void)client.get(b.ctx(), up.url("/plaintext")); }  // dropped unread: 13 bytes, buffered
    ClientResponse again = client.get(b.ctx(), up.url("/plaintext"));
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again.read_all(), "Hello, World!");
    again.close();
    EXPECT_EQ(up.accepted(), 1u);

    {
      ClientResponse big = client.get(b.ctx(), up.url("/download?bytes=20000000"));
      ASSERT_TRUE(big.ok());
      char buf[1000];
      EXPECT_GT(big.read(buf), 0);
    }  // dropped with most of its body unread: closed, not pooled
    s = client.stats();
    EXPECT_EQ(s.open_connections, 0);
    EXPECT_EQ(s.idle_connections, 0);
    EXPECT_TRUE(wait_until([&] { return up.open_connections() == 0; }, 5s))
        << "the upstream sees the connection closed";
    ClientResponse after = client.get(b.ctx(), up.url("/plaintext"));
    ASSERT_TRUE(after.ok());
    EXPECT_EQ(after.read_all(), "Hello, World!");
    EXPECT_EQ(up.accepted(), 2u);
  });
}

// A thousand calls at once from green threads of one process all complete.
TEST(Client, StressThousandConcurrentCallsComplete) {
  run_client_test([] {
    GreenUpstream up(echo_routes);
    ASSERT_TRUE(up.listening());
    Bounded b(60s);
    Client client;
    const int calls = static_cast<int>(scaled(1200, 1000));
    std::atomic<int> right{0};
    std::atomic<int> failed{0};
    green::WaitGroup wg;
    for (int i = 0; i < calls; ++i) {
      wg.add(1);
      green::go([&, i] {
        ClientResponse r = client.get(b.ctx(), up.url("/query?n=" + std::to_string(i)));
        if (r.ok() && r.status() == 200 && r.read_all() == "n=" + std::to_string(i)) {
          right.fetch_add(1);
        } else {
          failed.fetch_add(1);
        }
        r.close();  // before done(): the pool is checked once all are back
        wg.done();
      });
    }
    wg.wait();
    EXPECT_EQ(right.load(), calls);
    EXPECT_EQ(failed.load(), 0);
    const green::http::ClientStats s = client.stats();
    EXPECT_EQ(s.requests, static_cast<uint64_t>(calls));
    EXPECT_EQ(s.responses, static_cast<uint64_t>(calls));
    EXPECT_EQ(s.pool_hits + s.pool_misses, static_cast<uint64_t>(calls));
    EXPECT_LE(s.idle_connections, client.options().max_idle_per_host);
    EXPECT_EQ(s.open_connections, s.idle_connections) << "every response is done";
  });
}

// The same burst through max_conns_per_host = 20: the calls queue for the connections, all
// complete, and no more than 20 are ever dialled.
TEST(Client, StressThousandCallsThroughTwentyConnections) {
  run_client_test([] {
    GreenUpstream up(echo_routes);
    ASSERT_TRUE(up.listening());
    Bounded b(60s);
    ClientOptions o;
    o.max_conns_per_host = 20;
    Client client(o);
    const int calls = static_cast<int>(scaled(1000, 1000));
    std::atomic<int> right{0};
    green::WaitGroup wg;
    for (int i = 0; i < calls; ++i) {
      wg.add(1);
      green::go([&, i] {
        ClientResponse r = client.get(b.ctx(), up.url("/query?n=" + std::to_string(i)));
        if (r.ok() && r.read_all() == "n=" + std::to_string(i)) right.fetch_add(1);
        r.close();
        wg.done();
      });
    }
    wg.wait();
    EXPECT_EQ(right.load(), calls);
    EXPECT_LE(up.accepted(), 20u);
    EXPECT_LE(client.stats().open_connections, 20);
    EXPECT_EQ(client.stats().requests, static_cast<uint64_t>(calls));
  });
}

// The value of the line `name value` in Prometheus text, or -1.
double metric(const std::string& text, const std::string& name) {
  const std::string key = name + " ";
  for (std::size_t at = 0; at < text.size();) {
    const std::size_t eol = std::min(text.find('\n', at), text.size());
    const std::string_view line(text.data() + at, eol - at);
    if (line.substr(0, key.size()) == key) return std::stod(std::string(line.substr(key.size())));
    at = eol + 1;
  }
  return -1;
}

TEST(Client, MetricsCountRequestsErrorsAndThePool) {
  run_client_test([] {
    GreenUpstream up(echo_routes);
    ASSERT_TRUE(up.listening());
    Bounded b;
    Client client;
    for (int i = 0; i < 3; ++i) {
      ClientResponse r = client.get(b.ctx(), up.url("/plaintext"));
      ASSERT_TRUE(r.ok());
      (void)r.read_all();
    }
    uint16_t closed_port = 0;
    {
      net::TcpListener l;
      ASSERT_EQ(net::TcpListener::listen(*net::Address::parse("127.0.0.1:0"), &l), 0);
      closed_port = l.local_address().port();
    }
    ClientResponse refused =
        client.get(b.ctx(), "http://127.0.0.1:" + std::to_string(closed_port) + "/");
    EXPECT_TRUE(is(refused.error(), ClientError::kConnect));
    ClientResponse bad = client.get(b.ctx(), "http://127.0.0.1:99999/");
    EXPECT_TRUE(is(bad.error(), ClientError::kBadRequest));

    const green::http::ClientStats s = client.stats();
    EXPECT_EQ(s.requests, 5u);
    EXPECT_EQ(s.responses, 3u);
    EXPECT_EQ(s.errors[static_cast<int>(ClientError::kConnect)], 1u);
    EXPECT_EQ(s.errors[static_cast<int>(ClientError::kBadRequest)], 1u);
    EXPECT_EQ(s.errors[static_cast<int>(ClientError::kTimeout)], 0u);

    std::string text;
    client.write_metrics(text);
    EXPECT_EQ(metric(text, "greenhttp_client_requests_total"), 5) << text;
    EXPECT_EQ(metric(text, "greenhttp_client_responses_total"), 3) << text;
    EXPECT_EQ(metric(text, "greenhttp_client_pool_hits_total"), 2) << text;
    EXPECT_EQ(metric(text, "greenhttp_client_pool_misses_total"), 2) << text;
    EXPECT_EQ(metric(text, "greenhttp_client_retries_total"), 0) << text;
    EXPECT_EQ(metric(text, "greenhttp_client_errors_total{kind=\"connect\"}"), 1) << text;
    EXPECT_EQ(metric(text, "greenhttp_client_errors_total{kind=\"bad_request\"}"), 1) << text;
    EXPECT_EQ(metric(text, "greenhttp_client_open_connections"), 1) << text;
    EXPECT_EQ(metric(text, "greenhttp_client_idle_connections"), 1) << text;
    EXPECT_NE(text.find("# TYPE greenhttp_client_requests_total counter"), std::string::npos);

    std::string other;
    client.write_metrics(other, "upstream");
    EXPECT_EQ(metric(other, "upstream_requests_total"), 5) << other;
    EXPECT_EQ(other.find("greenhttp_client"), std::string::npos) << "the prefix is the caller's";
  });
}

TEST(Client, Ipv6Loopback) {
  run_client_test([] {
    GreenUpstream up(echo_routes, {}, "[::1]:0");
    if (!up.listening()) GTEST_SKIP() << "no IPv6 loopback here";
    Bounded b;
    Client client;
    const std::string url = "http://[::1]:" + std::to_string(up.port()) + "/echo";
    ClientResponse r = client.get(b.ctx(), url);
    ASSERT_TRUE(r.ok()) << r.error_message();
    const std::string body = r.read_all().value_or("");
    EXPECT_NE(body.find(" host=[::1]:" + std::to_string(up.port()) + " "), std::string::npos)
        << body;
    r.close();
    ClientResponse again = client.get(b.ctx(), url);
    ASSERT_TRUE(again.ok());
    (void)again.read_all();
    EXPECT_EQ(client.stats().pool_hits, 1u);
  });
}

// A name goes through getaddrinfo (where localhost also says ::1, and says it first, nothing
// listens there: the next address is tried), and is pooled under the name as written.
TEST(Client, ResolvesANameThroughGetaddrinfo) {
  run_client_test([] {
    GreenUpstream up(echo_routes);
    ASSERT_TRUE(up.listening());
    Bounded b;
    Client client;
    const std::string url = "http://localhost:" + std::to_string(up.port()) + "/echo";
    ClientResponse r = client.get(b.ctx(), url);
    ASSERT_TRUE(r.ok()) << r.error_message();
    const std::string body = r.read_all().value_or("");
    EXPECT_NE(body.find(" host=localhost:" + std::to_string(up.port()) + " "), std::string::npos)
        << body;
    r.close();
    ClientResponse again = client.get(b.ctx(), url);
    ASSERT_TRUE(again.ok());
    EXPECT_EQ(again.read_all(), body);
    EXPECT_EQ(client.stats().pool_hits, 1u) << "pooled by the name as written";
    EXPECT_EQ(up.accepted(), 1u);
  });
}

// A name that cannot resolve (.invalid, RFC 6761) is kDns. Skipped where the resolver takes
// long to say so (a sandbox without DNS).
TEST(Client, UnresolvableNameIsDnsError) {
  run_client_test([] {
    Bounded b;
    Client client;
    const auto start = Clock::now();
    ClientResponse r = client.get(b.ctx(), "http://no-such-host.invalid/");
    if (r.error() == ClientError::kDeadlineExceeded) GTEST_SKIP() << "the resolver is too slow";
    EXPECT_TRUE(is(r.error(), ClientError::kDns)) << r.error_message();
    EXPECT_FALSE(r.error_message().empty());
    EXPECT_LT(Clock::now() - start, 15s);
  });
}

// URLs and headers that are not valid are refused before anything is sent.
TEST(Client, InvalidUrlOrHeaderIsBadRequestAndSendsNothing) {
  run_client_test([] {
    RawUpstream up(serve_keep_alive);
    Bounded b;
    Client client;
    const std::string port = std::to_string(up.port());
    const std::string bad_urls[] = {
        "",
        "127.0.0.1:" + port + "/",
        "ftp://127.0.0.1:" + port + "/",
        "ws://127.0.0.1:" + port + "/",
        "https//127.0.0.1:" + port + "/",
        "http://",
        "http:///path",
        "http://127.0.0.1:99999/",
        "http://127.0.0.1:12ab/",
        "http://user@127.0.0.1:" + port + "/",
        "http://127.0.0.1:" + port + "/a b",
        "http://127.0.0.1:" + port + "/a\r\nX-Injected: 1",
        "http://127.0.0.1:" + port + "/a\nb",
        "http://[::1/",
    };
    for (const std::string& url : bad_urls) {
      ClientResponse r = client.get(b.ctx(), url);
      EXPECT_TRUE(is(r.error(), ClientError::kBadRequest)) << "url: " << url;
      EXPECT_FALSE(r.ok());
      EXPECT_FALSE(r.error_message().empty());
    }
    const std::string url = up.url("/");
    const std::vector<std::vector<Header>> bad_headers = {
        {{"Content-Length", "5"}},
        {{"transfer-encoding", "chunked"}},
        {{"X-A", "v\r\nX-Injected: 1"}},
        {{"X-A", "v\nb"}},
        {{"X A", "v"}},
        {{"X:A", "v"}},
        {{"", "v"}},
        {{"X-A", std::string_view("a\0b", 3)}},
        {{std::string_view("X\0A", 3), "v"}},  // a NUL in the name (strchr finds the NUL too)
    };
    for (const std::vector<Header>& headers : bad_headers) {
      ClientRequest req;
      req.url = url;
      req.headers = headers;
      ClientResponse r = client.send(b.ctx(), req);
      EXPECT_TRUE(is(r.error(), ClientError::kBadRequest))
          << "header: " << headers[0].name << ": " << headers[0].value;
    }
    for (std::string_view method : {"GE T", "GET\r\nX: y", "G(T"}) {
      ClientRequest req;
      req.method = method;
      req.url = url;
      ClientResponse r = client.send(b.ctx(), req);
      EXPECT_TRUE(is(r.error(), ClientError::kBadRequest)) << "method: " << method;
    }
    // Then a good request: it is the first connection the upstream ever accepted.
    ClientResponse good = client.get(b.ctx(), url);
    ASSERT_TRUE(good.ok()) << good.error_message();
    EXPECT_EQ(good.read_all(), "conn 0");
    EXPECT_EQ(up.accepted(), 1);
    EXPECT_EQ(up.requests(), 1);
    EXPECT_EQ(client.stats().errors[static_cast<int>(ClientError::kBadRequest)],
              std::size(bad_urls) + bad_headers.size() + 3);
  });
}

TEST(Client, ParseUrl) {
  using green::http::parse_url;
  auto u = parse_url("http://[::1]:8080/x/y?q=1#frag");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->port, 8080);
  EXPECT_EQ(u->authority, "[::1]:8080");
  EXPECT_EQ(u->target, "/x/y?q=1");
  u = parse_url("http://example.com");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->host, "example.com");
  EXPECT_EQ(u->port, 80);
  EXPECT_EQ(u->target, "/");
  u = parse_url("http://10.0.0.1:65535?x");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->port, 65535);
  EXPECT_EQ(u->target, "/?x");
  // https://: the default port is 443, and the scheme is kept (Url::https).
  u = parse_url("HTTPS://example.com/a");
  ASSERT_TRUE(u);
  EXPECT_TRUE(u->https);
  EXPECT_EQ(u->scheme(), "https");
  EXPECT_EQ(u->port, 443);
  EXPECT_EQ(u->authority, "example.com");
  EXPECT_EQ(u->target, "/a");
  u = parse_url("https://[::1]:8443");
  ASSERT_TRUE(u);
  EXPECT_EQ(u->port, 8443);
  EXPECT_FALSE(parse_url("http://a")->https);
  for (std::string_view bad : {"ftp://a/", "httpss://a/", "https:/a", "https://", "http://a:65536/",
                               "http://u@a/", "http:// a/", "http://a/b c", "HTTP//a",
                               "http://a:-1/", "http://a:8x/", "http://a\r\n/", ""}) {
    EXPECT_FALSE(parse_url(bad)) << bad;
  }
}

TEST(Client, RefusedPortIsConnectError) {
  run_client_test([] {
    uint16_t port = 0;
    {
      net::TcpListener l;
      ASSERT_EQ(net::TcpListener::listen(*net::Address::parse("127.0.0.1:0"), &l), 0);
      port = l.local_address().port();
    }  // closed: nothing listens there now
    Bounded b;
    Client client;
    const auto start = Clock::now();
    ClientResponse r = client.get(b.ctx(), "http://127.0.0.1:" + std::to_string(port) + "/");
    EXPECT_TRUE(is(r.error(), ClientError::kConnect)) << r.error_message();
    EXPECT_NE(r.error_message().find(std::to_string(port)), std::string::npos)
        << "the message names the address: " << r.error_message();
    EXPECT_LT(Clock::now() - start, 5s);
    EXPECT_EQ(client.stats().open_connections, 0);
  });
}

// ---------------------------------------------------------------------------------------------
// (b) Against misbehaving upstreams.

// The head starts and then stalls: read_timeout ends the call, and the connection is dropped.
TEST(ClientMisbehavingUpstream, SlowHeadersTimeOut) {
  run_client_test([] {
    RawUpstream up([](RawConn& c) {
      if (!c.read_request()) return;
      c.send("HTTP/1.1 200 OK\r\nContent-");
      c.wait_closed();
    });
    ClientOptions o;
    o.read_timeout = 200ms;
    Client client(o);
    Bounded b;
    const auto start = Clock::now();
    ClientResponse r = client.get(b.ctx(), up.url());
    const auto took = Clock::now() - start;
    EXPECT_TRUE(is(r.error(), ClientError::kTimeout)) << r.error_message();
    // The message says what timed out and where (it was once empty: an argument read before
    // the call that fills it).
    EXPECT_NE(r.error_message().find("timed out reading the response from 127.0.0.1:"),
              std::string::npos)
        << r.error_message();
    EXPECT_GE(took, 150ms);
    EXPECT_LT(took, 5s);
    EXPECT_TRUE(wait_until([&] { return up.closed_by_client() == 1; }, 5s));
    EXPECT_EQ(client.stats().open_connections, 0);
    EXPECT_EQ(client.stats().errors[static_cast<int>(ClientError::kTimeout)], 1u);
  });
}

// The body stalls after a few bytes: read() returns them, then fails with kTimeout.
TEST(ClientMisbehavingUpstream, StalledBodyTimesOutAndIsNeverReportedComplete) {
  run_client_test([] {
    RawUpstream up([](RawConn& c) {
      if (!c.read_request()) return;
      c.send("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345");
      c.wait_closed();
    });
    ClientOptions o;
    o.read_timeout = 200ms;
    Client client(o);
    Bounded b;
    ClientResponse r = client.get(b.ctx(), up.url());
    ASSERT_TRUE(r.ok()) << r.error_message();
    std::string got;
    char buf[64];
    long n = 0;
    const auto start = Clock::now();
    while ((n = r.read(buf)) > 0) got.append(buf, static_cast<std::size_t>(n));
    EXPECT_EQ(n, -1);
    EXPECT_EQ(got, "12345");
    EXPECT_TRUE(is(r.error(), ClientError::kTimeout)) << r.error_message();
    EXPECT_LT(Clock::now() - start, 5s);
    EXPECT_EQ(r.read(buf), -1) << "every later read fails too";
    r.close();
    EXPECT_TRUE(wait_until([&] { return up.closed_by_client() == 1; }, 5s));
    EXPECT_EQ(client.stats().idle_connections, 0);
  });
}

// read_timeout bounds each wait, not the whole body (nginx's proxy_read_timeout): a body that
// keeps coming, slowly, arrives whole although it takes longer than read_timeout in all.
TEST(ClientMisbehavingUpstream, SlowButSteadyBodyOutlastsReadTimeout) {
  run_client_test([] {
    RawUpstream up([](RawConn& c) {
      if (!c.read_request()) return;
      c.send("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
      for (char ch = 'a'; ch < 'k'; ++ch) {
        green::sleep_for(100ms);  // the pace of the upstream under test, not synchronisation
        if (!c.send(std::string("1\r\n") + ch + "\r\n")) return;
      }
      c.send("0\r\n\r\n");
      c.wait_closed();
    });
    ClientOptions o;
    o.read_timeout = 700ms;
    Client client(o);
    Bounded b;
    const auto start = Clock::now();
    ClientResponse r = client.get(b.ctx(), up.url());
    ASSERT_TRUE(r.ok()) << r.error_message();
    EXPECT_EQ(r.read_all(), "abcdefghij") << name(r.error()) << ": " << r.error_message();
    EXPECT_GT(Clock::now() - start, 700ms) << "longer than read_timeout in all";
  });
}

// A reset in the middle of the body (or of the head) is kRead; read() never reports the short
// body as complete (0).
TEST(ClientMisbehavingUpstream, ResetMidResponseIsReadError) {
  const std::string heads[] = {
      "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + std::string(500, 'x'),
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n" + std::string(100, 'x'),
      "HTTP/1.1 200 OK\r\nContent-Le",
  };
  for (const std::string& sent : heads) {
    run_client_test([&] {
      RawUpstream up([&](RawConn& c) {
        if (!c.read_request()) return;
        c.send(sent);
        c.wait_acked();
        c.reset();
      });
      Client client;
      Bounded b;
      ClientResponse r = client.get(b.ctx(), up.url());
      if (r.ok()) {
        char buf[256];
        long n = 0;
        while ((n = r.read(buf)) > 0) {
        }
        EXPECT_EQ(n, -1) << "a short body must never read as complete";
      }
      EXPECT_TRUE(is(r.error(), ClientError::kRead)) << sent.substr(0, 40);
      r.close();
      EXPECT_EQ(client.stats().open_connections, 0);
    });
  }
}

// Malformed responses are kProtocol (the server's strictness: llhttp without leniency).
TEST(ClientMisbehavingUpstream, MalformedResponsesAreProtocolErrors) {
  const std::string cases[] = {
      "garbage\r\n\r\n",
      "HTTP/1.1 abc OK\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n",
      "XTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 200 OK\nContent-Length: 0\n\n",  // bare LF
      "HTTP/1.1 200 OK\r\nContent-Length: 0\n\r\n",
      "HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n",  // bare CR
      "HTTP/1.1 200 OK\r\nNo colon here\r\nContent-Length: 0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length : 0\r\n\r\n",  // space before the colon
      "HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
      "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
      "HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\nok",
      std::string("HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 0\r\n\r\n", 48),
      // Content-Length with Transfer-Encoding (request smuggling's shape).
      "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
      // Bad chunk framing.
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\nab\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n",
  };
  for (const std::string& bytes : cases) {
    run_client_test([&] {
      RawUpstream up(answer_with(bytes));
      Client client;
      Bounded b;
      ClientResponse r = client.get(b.ctx(), up.url());
      EXPECT_TRUE(is(final_error(r), ClientError::kProtocol)) << "response: " << bytes;
      r.close();
      EXPECT_TRUE(wait_until([&] { return up.closed_by_client() == 1; }, 5s))
          << "the connection is closed, not pooled: " << bytes;
      EXPECT_EQ(client.stats().idle_connections, 0);
    });
  }
}

// The connection ends before the declared body is in: kRead, never a short body.
TEST(ClientMisbehavingUpstream, BodyShorterThanDeclaredThenCloseIsReadError) {
  const std::string cases[] = {
      "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + std::string(50, 'x'),
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
  };
  for (const std::string& bytes : cases) {
    run_client_test([&] {
      RawUpstream up([&](RawConn& c) {
        if (c.read_request()) c.send(bytes);
      });  // the script returns: the connection closes
      Client client;
      Bounded b;
      ClientResponse r = client.get(b.ctx(), up.url());
      ASSERT_TRUE(r.ok()) << r.error_message();
      std::string body;
      EXPECT_TRUE(is(final_error(r, &body), ClientError::kRead)) << bytes;
      EXPECT_EQ(body, "");
      r.close();
      EXPECT_EQ(client.stats().open_connections, 0);
    });
  }
}

// A response head past max_response_header_bytes or max_response_headers: kHeadersTooLarge,
// with the client's memory bounded (the upstream would go on sending).
TEST(ClientMisbehavingUpstream, OversizedHeadersAreHeadersTooLarge) {
  struct Case {
    std::size_t max_bytes;
    std::size_t max_headers;
    std::string head;
  };
  std::string many;
  for (int i = 0; i < 20; ++i) many += "X-" + std::to_string(i) + ": v\r\n";
  const Case cases[] = {
      {4096, 100, "HTTP/1.1 200 OK\r\nX-Big: " + std::string(8000, 'a') + "\r\n"},
      {64 * 1024, 100, "HTTP/1.1 200 OK\r\nX-Big: " + std::string(4 << 20, 'a') + "\r\n"},
      {64 * 1024, 10, "HTTP/1.1 200 OK\r\n" + many + "Content-Length: 0\r\n\r\n"},
  };
  for (const Case& k : cases) {
    run_client_test([&] {
      RawUpstream up(answer_with(k.head));
      ClientOptions o;
      o.max_response_header_bytes = k.max_bytes;
      o.max_response_headers = k.max_headers;
      Client client(o);
      Bounded b;
      ClientResponse r = client.get(b.ctx(), up.url());
      EXPECT_TRUE(is(r.error(), ClientError::kHeadersTooLarge))
          << k.max_bytes << " / " << k.max_headers << ": " << r.error_message();
      r.close();
      EXPECT_TRUE(wait_until([&] { return up.ended() == 1; }, 5s));
      EXPECT_EQ(client.stats().open_connections, 0);
    });
  }
  // At the limits exactly, the head is fine.
  run_client_test([] {
    std::string ten;
    for (int i = 0; i < 9; ++i) ten += "X-" + std::to_string(i) + ": v\r\n";
    RawUpstream up(answer_with("HTTP/1.1 200 OK\r\n" + ten + "Content-Length: 2\r\n\r\nok"));
    ClientOptions o;
    o.max_response_headers = 10;
    Client client(o);
    Bounded b;
    ClientResponse r = client.get(b.ctx(), up.url());
    ASSERT_TRUE(r.ok()) << r.error_message();
    EXPECT_EQ(r.headers().size(), 10u);
    EXPECT_EQ(r.read_all(), "ok");
  });
}

// max_response_body_bytes for streamed reads, read_all's limit for collected ones.
TEST(ClientMisbehavingUpstream, OversizedBodyIsBodyTooLarge) {
  std::string chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < 20; ++i) chunked += "64\r\n" + std::string(100, 'c') + "\r\n";
  chunked += "0\r\n\r\n";
  const std::string by_length = response(200, std::string(2000, 'l'));
  for (const std::string* bytes : {&by_length, static_cast<const std::string*>(&chunked)}) {
    run_client_test([&] {
      RawUpstream up(answer_with(*bytes));
      ClientOptions o;
      o.max_response_body_bytes = 1000;
      Client client(o);
      Bounded b;
      ClientResponse r = client.get(b.ctx(), up.url());
      uint64_t got = 0;
      long n = 0;
      if (r.ok()) {
        char buf[300];
        while ((n = r.read(buf)) > 0) got += static_cast<uint64_t>(n);
        EXPECT_EQ(n, -1);
      }
      EXPECT_LE(got, 1000u) << "read() returned more than max_response_body_bytes";
      EXPECT_TRUE(is(r.error(), ClientError::kBodyTooLarge)) << r.error_message();
      r.close();
      EXPECT_TRUE(wait_until([&] { return up.closed_by_client() == 1; }, 5s));
    });
    run_client_test([&] {
      RawUpstream up(answer_with(*bytes));
      Client client;  // no limit on read()
      Bounded b;
      ClientResponse r = client.get(b.ctx(), up.url());
      ASSERT_TRUE(r.ok());
      EXPECT_EQ(r.read_all(1999), std::nullopt);
      EXPECT_TRUE(is(r.error(), ClientError::kBodyTooLarge));
      r.close();
      ClientResponse fits = client.get(b.ctx(), up.url());
      ASSERT_TRUE(fits.ok()) << fits.error_message() << " status " << fits.status() << " err "
                             << name(fits.error()) << " accepted " << up.accepted();
      std::optional<std::string> all = fits.read_all(2000);
      ASSERT_TRUE(all) << name(fits.error());
      EXPECT_EQ(all->size(), 2000u);
      EXPECT_EQ(up.accepted(), 2) << "the connection of the refused body was not reused";
    });
  }
  // A body of exactly max_response_body_bytes is fine.
  run_client_test([] {
    RawUpstream up(answer_with(response(200, std::string(1000, 'e'))));
    ClientOptions o;
    o.max_response_body_bytes = 1000;
    Client client(o);
    Bounded b;
    ClientResponse r = client.get(b.ctx(), up.url());
    ASSERT_TRUE(r.ok());
    std::optional<std::string> all = r.read_all();
    ASSERT_TRUE(all) << name(r.error());
    EXPECT_EQ(all->size(), 1000u);
  });
}

// An upstream that takes the head and then never reads: the upload fills the socket buffers
// and write_timeout ends the call.
TEST(ClientMisbehavingUpstream, UpstreamThatStopsReadingTimesOutTheWrite) {
  run_client_test([] {
    RawUpstream up([](RawConn& c) { c.park_until_stopped(); });
    ClientOptions o;
    o.write_timeout = 200ms;
    Client client(o);
    Bounded b;
    uint64_t sent = 0;
    ClientRequest req;
    req.method = "POST";
    const std::string url = up.url();
    req.url = url;
    req.body_source = [&](std::span<char> out) -> long {
      if (sent > (uint64_t{1} << 30)) return 0;  // (a bound, should the timeout never come)
      const std::string_view piece = pattern(sent, out.size());
      std::memcpy(out.data(), piece.data(), piece.size());
      sent += piece.size();
      return static_cast<long>(piece.size());
    };
    const auto start = Clock::now();
    ClientResponse r = client.send(b.ctx(), req);
    EXPECT_TRUE(is(r.error(), ClientError::kTimeout)) << r.error_message();
    EXPECT_LT(Clock::now() - start, 10s);
    EXPECT_EQ(client.stats().open_connections, 0);
  });
}

// An upstream that accepts, reads the request and never answers.
RawUpstream::Script silent() {
  return [](RawConn& c) {
    if (c.read_request()) c.wait_closed();
  };
}

TEST(ClientMisbehavingUpstream, SilentUpstreamEndsAtTheContextDeadline) {
  run_client_test([] {
    RawUpstream up(silent());
    Client client;
    auto [ctx, cancel] = green::with_timeout(green::Context::background(), 200ms);
    const auto start = Clock::now();
    ClientResponse r = client.get(ctx, up.url());
    const auto took = Clock::now() - start;
    cancel();
    EXPECT_TRUE(is(r.error(), ClientError::kDeadlineExceeded)) << r.error_message();
    EXPECT_GE(took, 150ms);
    EXPECT_LT(took, 3s);
    EXPECT_TRUE(wait_until([&] { return up.closed_by_client() == 1; }, 5s));
    EXPECT_EQ(client.stats().open_connections, 0);
    EXPECT_EQ(client.stats().idle_connections, 0);
  });
}

TEST(ClientMisbehavingUpstream, SilentUpstreamEndsAtTheClientTimeout) {
  run_client_test([] {
    RawUpstream up(silent());
    ClientOptions o;
    o.timeout = 200ms;
    Client client(o);
    Bounded b;
    const auto start = Clock::now();
    ClientResponse r = client.get(b.ctx(), up.url());
    const auto took = Clock::now() - start;
    EXPECT_TRUE(is(r.error(), ClientError::kTimeout)) << r.error_message();
    // The message says what timed out and where (it was once empty: an argument read before
    // the call that fills it).
    EXPECT_NE(r.error_message().find("timed out reading the response from 127.0.0.1:"),
              std::string::npos)
        << r.error_message();
    EXPECT_GE(took, 150ms);
    EXPECT_LT(took, 3s);
    EXPECT_TRUE(wait_until([&] { return up.closed_by_client() == 1; }, 5s));
  });
  // ClientOptions::timeout covers reading the body too: a body that keeps coming, a byte at a
  // time, still ends there.
  run_client_test([] {
    RawUpstream up([](RawConn& c) {
      if (!c.read_request()) return;
      c.send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
      for (int i = 0; i < 100; ++i) {
        if (!c.send("x")) return;
        green::sleep_for(20ms);  // the upstream's pace
      }
    });
    ClientOptions o;
    o.timeout = 300ms;
    Client client(o);
    Bounded b;
    const auto start = Clock::now();
    ClientResponse r = client.get(b.ctx(), up.url());
    ASSERT_TRUE(r.ok()) << r.error_message();
    EXPECT_EQ(r.read_all(), std::nullopt);
    const auto took = Clock::now() - start;
    EXPECT_TRUE(is(r.error(), ClientError::kTimeout)) << r.error_message();
    EXPECT_GE(took, 250ms);
    EXPECT_LT(took, 1500ms) << "the body would have taken 2 s";
  });
}

// Cancelling the context from another green thread ends the parked call at once; the
// connection is closed, not pooled. Also while the body is being read, and before the call.
TEST(ClientMisbehavingUpstream, CancelFromAnotherGreenThreadEndsTheCallPromptly) {
  run_client_test([] {
    RawUpstream up([](RawConn& c) {
      if (!c.read_request()) return;
      if (c.index() == 1) c.send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc");
      c.wait_closed();
    });
    Client client;
    for (int call = 0; call < 2; ++call) {
      auto [ctx, cancel] = green::with_cancel(green::Context::background());
      std::atomic<int64_t> cancelled_at{0};
      std::atomic<bool> reading{false};  // call 1: the head and the first bytes are in
      green::WaitGroup wg;
      wg.add(1);
      green::go([&, cancel = cancel] {
        EXPECT_TRUE(
            wait_until([&] { return call == 0 ? up.requests() == 1 : reading.load(); }, 5s));
        cancelled_at.store(Clock::now().time_since_epoch().count());
        cancel();
        wg.done();
      });
      ClientResponse r = client.get(ctx, up.url());
      if (call == 1 && r.ok()) {  // cancelled while reading the body
        char buf[16];
        EXPECT_EQ(r.read(buf), 3);
        reading.store(true);
        EXPECT_EQ(r.read(buf), -1);
      } else {
        reading.store(true);
      }
      const auto ended = Clock::now();
      wg.wait();
      if (call == 1) {
        EXPECT_EQ(r.status(), 200) << "the head came before the cancel";
      }
      EXPECT_TRUE(is(r.error(), ClientError::kCanceled)) << "call " << call;
      EXPECT_LT(ended - Clock::time_point(Clock::duration(cancelled_at.load())), 1s);
      r.close();
      cancel();
      EXPECT_TRUE(wait_until([&] { return up.closed_by_client() == call + 1; }, 5s));
      EXPECT_EQ(client.stats().open_connections, 0);
      EXPECT_EQ(client.stats().idle_connections, 0);
    }
    // Already cancelled: fails at once.
    auto [ctx, cancel] = green::with_cancel(green::Context::background());
    cancel();
    ClientResponse r = client.get(ctx, up.url());
    EXPECT_TRUE(is(r.error(), ClientError::kCanceled));
    EXPECT_EQ(client.stats().errors[static_cast<int>(ClientError::kCanceled)], 3u);
  });
}

// The upstream answers one request and then closes the idle connection: the pooled connection
// is found closed before reuse (its FIN is in), and the next call dials a new one.
TEST(ClientMisbehavingUpstream, IdleConnectionClosedByUpstreamIsReplaced) {
  run_client_test([] {
    RawUpstream up([](RawConn& c) {
      if (c.index() > 0) return serve_keep_alive(c);
      if (!c.read_request()) return;
      c.send(response(200, "conn 0"));
      c.shutdown_write_and_wait_acked();
      c.stream().close();
    });
    Client client;
    Bounded b;
    ClientResponse r1 = client.get(b.ctx(), up.url());
    ASSERT_TRUE(r1.ok());
    EXPECT_EQ(r1.read_all(), "conn 0");
    r1.close();
    ASSERT_TRUE(wait_until([&] { return up.ended() == 1; }, 5s));
    ClientResponse r2 = client.get(b.ctx(), up.url());
    ASSERT_TRUE(r2.ok()) << r2.error_message();
    EXPECT_EQ(r2.read_all(), "conn 1");
    const green::http::ClientStats s = client.stats();
    EXPECT_EQ(s.stale_closed, 1u);
    EXPECT_EQ(s.retries, 0u) << "found by the check before reuse, not by a failed request";
    EXPECT_EQ(s.pool_misses, 2u);
    EXPECT_EQ(s.requests, 2u);
    EXPECT_EQ(up.accepted(), 2);
  });
}

// The keep-alive race: the upstream reads the next request on an idle connection and closes
// without a byte of answer. An idempotent request (or one with an Idempotency-Key) whose body
// can be sent again is retried once on a new connection; a POST, or any request whose
// body_source has been called, is not.
struct RaceResult {
  ClientError error = ClientError::kNone;
  std::string body;
  uint64_t retries = 0;
  int accepted = 0;
  int source_calls = 0;
};

RaceResult keep_alive_race(std::string_view method, std::span<const Header> headers,
                           std::string_view body, bool streamed) {
  RaceResult out;
  run_client_test([&] {
    RawUpstream up([](RawConn& c) {
      if (c.index() > 0) return serve_keep_alive(c);
      if (!c.read_request()) return;
      c.send(response(200, "conn 0"));
      (void)c.read_request();  // the second request arrives (whole) ...
    });                        // ... and the connection closes unanswered
    Client client;
    Bounded b;
    ClientResponse first = client.get(b.ctx(), up.url());
    EXPECT_EQ(first.read_all(), "conn 0");
    first.close();
    ClientRequest req;
    req.method = method;
    const std::string url = up.url();
    req.url = url;
    req.headers = headers;
    std::size_t sent = 0;
    if (streamed) {
      req.content_length = static_cast<int64_t>(body.size());
      req.body_source = [&](std::span<char> to) -> long {
        ++out.source_calls;
        const std::size_t n = std::min(to.size(), body.size() - sent);
        std::memcpy(to.data(), body.data() + sent, n);
        sent += n;
        return static_cast<long>(n);
      };
    } else {
      req.body = body;
    }
    ClientResponse r = client.send(b.ctx(), req);
    out.error = final_error(r, &out.body);
    r.close();
    out.retries = client.stats().retries;
    out.accepted = up.accepted();
    EXPECT_EQ(client.stats().requests, 2u);
  });
  return out;
}

TEST(ClientMisbehavingUpstream, KeepAliveRaceRetriesIdempotentRequestsOnce) {
  const Header key[] = {{"Idempotency-Key", "k-1"}};
  struct Case {
    std::string_view method;
    std::span<const Header> headers;
    std::string_view body;
  };
  const Case cases[] = {
      {"GET", {}, ""},     {"HEAD", {}, ""},    {"DELETE", {}, ""},
      {"PUT", {}, "data"}, {"OPTIONS", {}, ""}, {"POST", key, "data"},
  };
  for (const Case& k : cases) {
    const RaceResult r = keep_alive_race(k.method, k.headers, k.body, false);
    EXPECT_TRUE(is(r.error, ClientError::kNone)) << k.method;
    EXPECT_EQ(r.body, k.method == "HEAD" ? "" : "conn 1") << k.method;
    EXPECT_EQ(r.retries, 1u) << k.method;
    EXPECT_EQ(r.accepted, 2) << k.method;
  }
}

// The retry happens once, and only after a failure on a reused connection: a fresh connection
// that closes unanswered is an error at once.
TEST(ClientMisbehavingUpstream, KeepAliveRaceRetriesOnlyOnceAndNeverOnAFreshConnection) {
  run_client_test([] {
    RawUpstream up([](RawConn& c) {
      if (c.index() == 0 && c.read_request()) c.send(response(200, "conn 0"));
      (void)c.read_request();  // and close unanswered
    });
    Client client;
    Bounded b;
    ClientResponse first = client.get(b.ctx(), up.url());
    EXPECT_EQ(first.read_all(), "conn 0");
    first.close();
    ClientResponse second = client.get(b.ctx(), up.url());  // reused, then retried on conn 1
    EXPECT_TRUE(is(final_error(second), ClientError::kRead)) << second.error_message();
    second.close();
    EXPECT_EQ(client.stats().retries, 1u);
    EXPECT_EQ(up.accepted(), 2) << "one retry, not two";
    ClientResponse third = client.get(b.ctx(), up.url());  // a fresh connection: no retry
    EXPECT_TRUE(is(final_error(third), ClientError::kRead)) << third.error_message();
    third.close();
    EXPECT_EQ(client.stats().retries, 1u);
    EXPECT_EQ(up.accepted(), 3);
    EXPECT_EQ(client.stats().errors[static_cast<int>(ClientError::kRead)], 2u)
        << "a call's error counts once, however many attempts";
  });
}

TEST(ClientMisbehavingUpstream, KeepAliveRaceNeverRetriesPostOrACalledBodySource) {
  const Header key[] = {{"Idempotency-Key", "k-1"}};
  struct Case {
    std::string_view method;
    std::span<const Header> headers;
    bool streamed;
  };
  const Case cases[] = {
      {"POST", {}, false},  {"POST", {}, true},
      {"PATCH", {}, false}, {"PUT", {}, true},  // idempotent, but its body cannot be sent again
      {"POST", key, true},
  };
  for (const Case& k : cases) {
    const RaceResult r = keep_alive_race(k.method, k.headers, "data", k.streamed);
    EXPECT_TRUE(is(r.error, ClientError::kRead)) << k.method << " streamed=" << k.streamed;
    EXPECT_EQ(r.retries, 0u) << k.method << " streamed=" << k.streamed;
    EXPECT_EQ(r.accepted, 1) << k.method << " streamed=" << k.streamed;
    if (k.streamed) {
      EXPECT_GE(r.source_calls, 1);
    }
  }
}

// A response without a length is read until the upstream closes, and its connection is not
// reused; nor is one after `Connection: close` or an HTTP/1.0 answer, even when the upstream
// leaves the socket open.
TEST(ClientMisbehavingUpstream, ConnectionsThatCannotBeReusedAreNot) {
  run_client_test([] {
    RawUpstream up([](RawConn& c) {
      if (!c.read_request()) return;
      c.send("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close " +
             std::to_string(c.index()));
    });
    Client client;
    Bounded b;
    for (int i = 0; i < 2; ++i) {
      ClientResponse r = client.get(b.ctx(), up.url());
      ASSERT_TRUE(r.ok()) << r.error_message();
      EXPECT_EQ(r.content_length(), -1);
      EXPECT_FALSE(r.chunked());
      EXPECT_TRUE(r.has_body());
      EXPECT_EQ(r.read_all(), "until close " + std::to_string(i));
    }
    EXPECT_EQ(up.accepted(), 2);
    EXPECT_EQ(client.stats().pool_hits, 0u);
    EXPECT_EQ(client.stats().open_connections, 0);
  });
  for (std::string_view reply :
       {"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"}) {
    run_client_test([&] {
      RawUpstream up([&](RawConn& c) {
        while (c.read_request()) c.send(reply);  // says close, but keeps the socket open
      });
      Client client;
      Bounded b;
      for (int i = 0; i < 2; ++i) {
        ClientResponse r = client.get(b.ctx(), up.url());
        ASSERT_TRUE(r.ok()) << r.error_message();
        EXPECT_EQ(r.read_all(), "ok");
      }
      EXPECT_EQ(up.accepted(), 2) << reply;
      EXPECT_EQ(client.stats().pool_hits, 0u);
      EXPECT_TRUE(wait_until([&] { return up.closed_by_client() == 2; }, 5s))
          << "the client closes what it cannot reuse";
    });
  }
  // The caller's own Connection: close is kept too.
  run_client_test([] {
    RawUpstream up(serve_keep_alive);
    Client client;
    Bounded b;
    const Header close[] = {{"Connection", "close"}};
    const std::string url = up.url();
    for (int i = 0; i < 2; ++i) {
      ClientRequest req;
      req.url = url;
      req.headers = close;
      ClientResponse r = client.send(b.ctx(), req);
      ASSERT_TRUE(r.ok()) << r.error_message();
      EXPECT_EQ(r.read_all(), "conn " + std::to_string(i));
    }
    EXPECT_EQ(client.stats().pool_hits, 0u);
    EXPECT_TRUE(wait_until([&] { return up.closed_by_client() == 2; }, 5s));
  });
}

// Interim 1xx responses (100 Continue, 103 Early Hints) are skipped: the call returns the final
// response, without their headers, and the connection stays reusable.
TEST(ClientMisbehavingUpstream, InformationalResponsesAreSkipped) {
  run_client_test([] {
    RawUpstream up([](RawConn& c) {
      while (c.read_request()) {
        c.send("HTTP/1.1 100 Continue\r\n\r\n");
        c.send("HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n");
        if (!c.send(response(201, "made", "X-Final: 1\r\n"))) return;
      }
    });
    Client client;
    Bounded b;
    for (int i = 0; i < 2; ++i) {
      ClientRequest req;
      req.method = "POST";
      const std::string url = up.url();
      req.url = url;
      req.body = "x";
      ClientResponse r = client.send(b.ctx(), req);
      ASSERT_TRUE(r.ok()) << r.error_message();
      EXPECT_EQ(r.status(), 201);
      EXPECT_EQ(r.header("X-Final"), "1");
      EXPECT_EQ(r.header("Link"), "") << "an interim response's headers are not the final's";
      EXPECT_EQ(r.read_all(), "made");
    }
    EXPECT_EQ(up.accepted(), 1);
  });
}

// Responses that have no body whatever their headers say (HEAD, 204, 304) return without
// waiting for one, and their connection is reused.
// A response dribbled a few bytes per write (a head whose lines, and a 60 KiB header value,
// span many reads; chunk sizes, data and trailers cut anywhere) parses whole, and leaves the
// connection reusable.
TEST(ClientMisbehavingUpstream, ResponseInTinyPiecesParsesWhole) {
  run_client_test([] {
    const std::string big(60000, 'v');
    std::string body;
    std::string chunked;
    for (int i = 0; i < 50; ++i) {
      const std::string piece(static_cast<std::size_t>(i * 7 % 23 + 1),
                              static_cast<char>('a' + i % 26));
      body += piece;
      char size[16];
      std::snprintf(size, sizeof size, "%zx", piece.size());
      chunked += std::string(size) + "\r\n" + piece + "\r\n";
    }
    chunked += "0\r\nX-Trailer: t\r\n\r\n";
    const std::string reply = "HTTP/1.1 200 OK\r\nX-Big: " + big +
                              "\r\nTransfer-Encoding: chunked\r\nX-After: after\r\n\r\n" + chunked;
    RawUpstream up([&](RawConn& c) {
      while (c.read_request()) {
        for (std::size_t at = 0, k = 0; at < reply.size(); ++k) {
          const std::size_t n =
              std::min<std::size_t>(k % 7 + 1 + (k % 50 == 0 ? 3000 : 0), reply.size() - at);
          if (!c.send(std::string_view(reply).substr(at, n))) return;
          at += n;
        }
      }
    });
    Client client;
    Bounded b;
    for (int i = 0; i < 2; ++i) {
      ClientResponse r = client.get(b.ctx(), up.url());
      ASSERT_TRUE(r.ok()) << r.error_message();
      EXPECT_EQ(r.header("X-Big"), big);
      EXPECT_EQ(r.header("X-After"), "after");
      EXPECT_EQ(r.read_all(), body);
    }
    EXPECT_EQ(up.accepted(), 1) << "trailers consumed, connection reused";
  });
}

// An upstream that answers before it has read the upload (413) and closes (a reset, with the
// upload unread): the write fails, and the call returns the answer that came, as Go's
// Transport and nginx do.
TEST(ClientMisbehavingUpstream, EarlyAnswerDuringAnUploadIsReturned) {
  run_client_test([] {
    RawUpstream up([](RawConn& c) {
      c.send(
          "HTTP/1.1 413 Payload Too Large\r\nContent-Length: 8\r\nConnection: close\r\n\r\ntoo "
          "big\n");
      c.wait_acked();
      c.stream().close();
    });
    ClientOptions o;
    o.write_timeout = 300ms;
    Client client(o);
    Bounded b;
    uint64_t sent = 0;
    ClientRequest req;
    req.method = "POST";
    const std::string url = up.url();
    req.url = url;
    req.body_source = [&](std::span<char> out) -> long {
      if (sent > (uint64_t{1} << 30)) return 0;
      const std::string_view piece = pattern(sent, out.size());
      std::memcpy(out.data(), piece.data(), piece.size());
      sent += piece.size();
      return static_cast<long>(piece.size());
    };
    ClientResponse r = client.send(b.ctx(), req);
    ASSERT_TRUE(r.ok()) << name(r.error()) << ": " << r.error_message();
    EXPECT_EQ(r.status(), 413);
    EXPECT_EQ(r.read_all(), "too big\n");
    r.close();
    EXPECT_EQ(client.stats().open_connections, 0);
  });
}

TEST(ClientMisbehavingUpstream, BodilessResponsesDoNotWaitForABody) {
  run_client_test([] {
    RawUpstream up([](RawConn& c) {
      std::optional<std::string> head;
      while ((head = c.read_request())) {
        std::string reply;
        if (head->rfind("HEAD ", 0) == 0) {
          reply = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
        } else if (head->find(" /204 ") != std::string::npos) {
          reply = "HTTP/1.1 204 No Content\r\n\r\n";
        } else if (head->find(" /304 ") != std::string::npos) {
          reply = "HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\n\r\n";
        } else {
          reply = response(200, "conn " + std::to_string(c.index()));
        }
        if (!c.send(reply)) return;
      }
    });
    ClientOptions o;
    o.read_timeout = 5s;
    Client client(o);
    Bounded b;
    const std::string url = up.url("/x");
    ClientRequest head;
    head.method = "HEAD";
    head.url = url;
    const auto start = Clock::now();
    ClientResponse h = client.send(b.ctx(), head);
    ASSERT_TRUE(h.ok()) << h.error_message();
    EXPECT_FALSE(h.has_body());
    EXPECT_EQ(h.read_all(), "");
    h.close();
    for (const char* path : {"/204", "/304"}) {
      ClientResponse r = client.get(b.ctx(), up.url(path));
      ASSERT_TRUE(r.ok()) << path << ": " << r.error_message();
      EXPECT_FALSE(r.has_body()) << path;
      EXPECT_EQ(r.read_all(), "") << path;
    }
    ClientResponse last = client.get(b.ctx(), url);
    ASSERT_TRUE(last.ok());
    EXPECT_EQ(last.read_all(), "conn 0");
    EXPECT_LT(Clock::now() - start, 3s) << "nothing waited for a body";
    EXPECT_EQ(up.accepted(), 1);
  });
  // A 204 that carries bytes anyway (a Content-Length and 5 bytes): they are no body of it
  // (RFC 9112 6.3), and the connection that holds them is not reused.
  run_client_test([] {
    RawUpstream up([](RawConn& c) {
      if (c.index() > 0) return serve_keep_alive(c);
      if (c.read_request()) c.send("HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello");
      c.wait_closed();
    });
    Client client;
    Bounded b;
    ClientResponse r = client.get(b.ctx(), up.url());
    ASSERT_TRUE(r.ok()) << r.error_message();
    EXPECT_EQ(r.status(), 204);
    EXPECT_FALSE(r.has_body());
    EXPECT_EQ(r.read_all(), "");
    r.close();
    ClientResponse next = client.get(b.ctx(), up.url());
    ASSERT_TRUE(next.ok()) << next.error_message();
    EXPECT_EQ(next.read_all(), "conn 1");
  });
}

// Bytes an upstream sends on an idle connection (an answer nobody asked for) must never be
// taken for the next call's response: that connection is dropped.
TEST(ClientMisbehavingUpstream, UnsolicitedBytesOnAnIdleConnectionAreNeverAResponse) {
  // `later`: the bytes come once the connection is idle in the pool (the check before reuse
  // finds them); else right behind the response (in the same read, as likely as not).
  for (const bool later : {true, false}) {
    run_client_test([&] {
      std::atomic<bool> released{false};
      RawUpstream up([&](RawConn& c) {
        if (c.index() > 0) return serve_keep_alive(c);
        if (!c.read_request()) return;
        c.send(response(200, "conn 0"));
        if (later) (void)wait_until([&] { return released.load(); }, 5s);
        c.send(response(200, "evil!"));
        c.wait_acked();
        c.mark();
        c.wait_closed();
      });
      Client client;
      Bounded b;
      ClientResponse r1 = client.get(b.ctx(), up.url());
      ASSERT_TRUE(r1.ok());
      EXPECT_EQ(r1.read_all(), "conn 0");
      r1.close();
      released.store(true);
      ASSERT_TRUE(wait_until([&] { return up.marks() == 1; }, 5s));
      ClientResponse r2 = client.get(b.ctx(), up.url());
      ASSERT_TRUE(r2.ok()) << r2.error_message();
      EXPECT_EQ(r2.read_all(), "conn 1") << "later=" << later;
      EXPECT_EQ(up.accepted(), 2);
      if (later) {
        EXPECT_EQ(client.stats().stale_closed, 1u);
      }
      EXPECT_TRUE(wait_until([&] { return up.closed_by_client() == 1; }, 5s));
    });
  }
}

// Chaos: many green threads call an upstream that, request by request, answers, answers and
// closes, resets mid-body, closes unanswered, sends garbage, stalls, or sends an extra answer
// nobody asked for. Every call ends with its own body (the id in its path: never another
// request's answer) or an error of the expected kinds, and nothing leaks.
TEST(ClientMisbehavingUpstream, StressChaosUpstreamNeverCrossesAnswers) {
  run_client_test([] {
    RawUpstream up([](RawConn& c) {
      std::optional<std::string> head;
      while ((head = c.read_request())) {
        const std::size_t at = head->find("/r/");
        const int id = at == std::string::npos ? 0 : std::atoi(head->c_str() + at + 3);
        const std::string body = "payload-" + std::to_string(id);
        switch (id % 7) {
          case 0:
            if (!c.send(response(200, body))) return;
            break;
          case 1:
            c.send(response(200, body, "Connection: close\r\n"));
            return;
          case 2:
            c.send("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npay");
            c.wait_acked();
            c.reset();
            return;
          case 3:
            return;  // closes unanswered
          case 4:
            c.send("HTTP/1.1 2x0 OK\r\n\r\n");
            c.wait_closed();
            return;
          case 5:
            c.wait_closed();  // stalls until the client gives up
            return;
          default:  // an answer, then one for a request that was never made
            if (!c.send(response(200, body) + response(200, "payload-999999"))) return;
            break;
        }
      }
    });
    ClientOptions o;
    o.read_timeout = 200ms;
    Client client(o);
    Bounded b(60s);
    const int threads = 40;
    const int calls_each = 8;
    std::atomic<int> right{0};
    std::atomic<int> failed{0};
    std::atomic<int> crossed{0};
    std::atomic<int> wrong_error{0};
    green::WaitGroup wg;
    for (int t = 0; t < threads; ++t) {
      wg.add(1);
      green::go([&, t] {
        for (int k = 0; k < calls_each; ++k) {
          const int id = t * calls_each + k + 1;
          ClientResponse r = client.get(b.ctx(), up.url("/r/" + std::to_string(id)));
          std::string body;
          const ClientError e = final_error(r, &body);
          r.close();
          if (e == ClientError::kNone) {
            (body == "payload-" + std::to_string(id) ? right : crossed).fetch_add(1);
          } else if (e == ClientError::kRead || e == ClientError::kProtocol ||
                     e == ClientError::kTimeout) {
            failed.fetch_add(1);
          } else {
            wrong_error.fetch_add(1);
          }
        }
        wg.done();
      });
    }
    wg.wait();
    EXPECT_EQ(crossed.load(), 0) << "answers given to the wrong request";
    EXPECT_EQ(wrong_error.load(), 0);
    EXPECT_EQ(right.load() + failed.load(), threads * calls_each);
    // Ids 0 and 6 mod 7 answer; so does 1 (and closes); the rest fail.
    int answering = 0;
    for (int id = 1; id <= threads * calls_each; ++id) answering += id % 7 <= 1 || id % 7 == 6;
    EXPECT_EQ(right.load(), answering);
    EXPECT_EQ(client.stats().open_connections, client.stats().idle_connections);
  });
}

// max_conns_per_host = 1: a second call waits for the first's connection and then uses it;
// one under a deadline gives up with the deadline's error, one without at connect_timeout.
TEST(Client, MaxConnsPerHostMakesTheSecondCallWait) {
  run_client_test([] {
    std::atomic<int> entered{0};
    green::Channel<bool> gates[2];
    GreenUpstream up([&](Router& r) {
      echo_routes(r);
      r.handle(Method::kGet, "/hold/:gate", [&](Request& req, ResponseWriter& w) {
        entered.fetch_add(1);
        (void)gates[req.param("gate") == "1" ? 1 : 0].recv();  // until the test closes it
        w.send(200, "text/plain", "held");
      });
    });
    ASSERT_TRUE(up.listening());
    Bounded b;
    std::vector<std::string> bodies(3);
    green::WaitGroup wg;
    auto call = [&](Client& client, int i, std::string_view path) {
      wg.add(1);
      green::go([&, i, url = up.url(path)] {
        ClientResponse r = client.get(b.ctx(), url);
        bodies[i] = r.ok() ? r.read_all().value_or("<body error>") : name(r.error());
        r.close();  // before done(): the pool is checked once all are back
        wg.done();
      });
    };

    ClientOptions o;
    o.max_conns_per_host = 1;
    Client client(o);
    call(client, 0, "/hold/0");
    EXPECT_TRUE(wait_until([&] { return entered.load() == 1; }, 5s));
    call(client, 1, "/hold/0");
    EXPECT_TRUE(wait_until([&] { return client.stats().requests == 2; }, 5s));
    {
      auto [ctx, cancel] = green::with_timeout(b.ctx(), 200ms);
      const auto start = Clock::now();
      ClientResponse late = client.get(ctx, up.url("/plaintext"));
      cancel();
      EXPECT_TRUE(is(late.error(), ClientError::kDeadlineExceeded)) << late.error_message();
      EXPECT_LT(Clock::now() - start, 3s);
    }
    EXPECT_EQ(up.accepted(), 1u) << "nothing dialled a second connection";
    gates[0].close();

    // connect_timeout bounds the wait for a connection too.
    ClientOptions quick = o;
    quick.connect_timeout = 300ms;
    Client other(quick);
    call(other, 2, "/hold/1");
    EXPECT_TRUE(wait_until([&] { return entered.load() == 3; }, 5s));
    {
      const auto start = Clock::now();
      ClientResponse late = other.get(b.ctx(), up.url("/plaintext"));
      EXPECT_TRUE(is(late.error(), ClientError::kTimeout)) << late.error_message();
      EXPECT_GE(Clock::now() - start, 250ms);
      EXPECT_LT(Clock::now() - start, 3s);
    }
    gates[1].close();
    wg.wait();
    EXPECT_EQ(bodies[0], "held");
    EXPECT_EQ(bodies[1], "held");
    EXPECT_EQ(bodies[2], "held");
    EXPECT_EQ(entered.load(), 3);
    EXPECT_EQ(up.accepted(), 2u) << "one connection per client";
    EXPECT_EQ(client.stats().pool_hits, 1u);
  });
}

// Idle pooled connections older than idle_timeout are closed (the upstream sees them go
// without another call), and the next call dials a new one.
TEST(Client, IdleTimeoutClosesPooledConnections) {
  run_client_test([] {
    GreenUpstream up(echo_routes);
    ASSERT_TRUE(up.listening());
    ClientOptions o;
    o.idle_timeout = 200ms;
    Client client(o);
    Bounded b;
    ClientResponse r = client.get(b.ctx(), up.url("/plaintext"));
    ASSERT_TRUE(r.ok());
    (void)r.read_all();
    r.close();
    EXPECT_EQ(client.stats().idle_connections, 1);
    EXPECT_TRUE(wait_until([&] { return up.open_connections() == 0; }, 5s))
        << "the idle connection was closed after idle_timeout";
    EXPECT_TRUE(wait_until([&] { return client.stats().idle_connections == 0; }, 5s));
    ClientResponse again = client.get(b.ctx(), up.url("/plaintext"));
    ASSERT_TRUE(again.ok()) << again.error_message();
    EXPECT_EQ(again.read_all(), "Hello, World!");
    EXPECT_EQ(client.stats().pool_hits, 0u);
    EXPECT_EQ(up.accepted(), 2u);
  });
}

// Idle connections past max_idle_per_host are closed when they come back.
TEST(Client, IdleConnectionsAreCappedPerHost) {
  run_client_test([] {
    std::atomic<int> entered{0};
    green::Channel<bool> gate;
    GreenUpstream up([&](Router& r) {
      r.handle(Method::kGet, "/hold", [&](Request&, ResponseWriter& w) {
        entered.fetch_add(1);
        (void)gate.recv();
        w.send(200, "text/plain", "held");
      });
    });
    ASSERT_TRUE(up.listening());
    ClientOptions o;
    o.max_idle_per_host = 2;
    Client client(o);
    Bounded b;
    green::WaitGroup wg;
    for (int i = 0; i < 5; ++i) {
      wg.add(1);
      green::go([&] {
        ClientResponse r = client.get(b.ctx(), up.url("/hold"));
        EXPECT_EQ(r.read_all(), "held");
        r.close();  // before done(): the pool is checked once all are back
        wg.done();
      });
    }
    EXPECT_TRUE(wait_until([&] { return entered.load() == 5; }, 5s));
    gate.close();
    wg.wait();
    EXPECT_EQ(client.stats().idle_connections, 2);
    EXPECT_EQ(client.stats().open_connections, 2);
    EXPECT_TRUE(wait_until([&] { return up.open_connections() == 2; }, 5s));
    client.close_idle();
    EXPECT_EQ(client.stats().open_connections, 0);
    EXPECT_TRUE(wait_until([&] { return up.open_connections() == 0; }, 5s));
  });
}

// max_idle_total caps idle connections over all hosts: the least recently used goes.
TEST(Client, IdleConnectionsAreCappedInTotal) {
  run_client_test([] {
    GreenUpstream a(echo_routes);
    GreenUpstream b_up(echo_routes);
    ASSERT_TRUE(a.listening() && b_up.listening());
    ClientOptions o;
    o.max_idle_total = 1;
    Client client(o);
    Bounded b;
    for (GreenUpstream* up : {&a, &b_up}) {
      ClientResponse r = client.get(b.ctx(), up->url("/plaintext"));
      EXPECT_EQ(r.read_all(), "Hello, World!");
    }
    EXPECT_EQ(client.stats().idle_connections, 1);
    EXPECT_EQ(client.stats().open_connections, 1);
    EXPECT_TRUE(wait_until([&] { return a.open_connections() == 0; }, 5s)) << "a's went first";
    EXPECT_EQ(b_up.open_connections(), 1);
    ClientResponse r = client.get(b.ctx(), b_up.url("/plaintext"));
    EXPECT_EQ(r.read_all(), "Hello, World!");
    EXPECT_EQ(client.stats().pool_hits, 1u);
  });
}

// Redirects: returned as they are by default; followed with max_redirects (303 and 302 turn
// into a GET without body, 307 repeats the method and body), and kTooManyRedirects past it.
TEST(Client, RedirectsAreFollowedOnlyWhenAsked) {
  run_client_test([] {
    uint16_t port = 0;
    GreenUpstream up([&port](Router& r) {
      auto redirect = [](int status, std::string location) {
        return [status, location](Request&, ResponseWriter& w) {
          w.set_header("Location", location);
          w.send(status, "text/plain", "moved\n");
        };
      };
      r.handle(Method::kGet, "/r/302", redirect(302, "/method"));
      r.handle(Method::kPost, "/r/303", redirect(303, "/method"));
      r.handle(Method::kPost, "/r/307", redirect(307, "/method"));
      r.handle(Method::kPost, "/r/308", redirect(308, "/method"));
      r.handle(Method::kGet, "/loop", redirect(302, "/loop"));
      r.handle(Method::kGet, "/absolute", [&port](Request&, ResponseWriter& w) {
        w.set_header("Location", "http://127.0.0.1:" + std::to_string(port) + "/method");
        w.send(301, "text/plain", "moved\n");
      });
      // /chain?n=K: K more redirects, then 200.
      r.handle(Method::kGet, "/chain", [](Request& req, ResponseWriter& w) {
        const int64_t n = req.query_int("n", 0, 100);
        if (n == 0) return w.send(200, "text/plain", "end");
        w.set_header("Location", "/chain?n=" + std::to_string(n - 1));
        w.send(302, "text/plain", "");
      });
      for (Method m : {Method::kGet, Method::kPost, Method::kPut}) {
        r.handle(m, "/method", [](Request& req, ResponseWriter& w) {
          std::optional<std::string_view> body = req.body().read_all();
          w.send(200, "text/plain",
                 std::string(req.method_name()) + ":" + std::string(body.value_or("?")));
        });
      }
    });
    ASSERT_TRUE(up.listening());
    port = up.port();
    Bounded b;
    {
      Client client;
      ClientResponse r = client.get(b.ctx(), up.url("/r/302"));
      ASSERT_TRUE(r.ok());
      EXPECT_EQ(r.status(), 302);
      EXPECT_EQ(r.header("Location"), "/method");
      EXPECT_EQ(r.read_all(), "moved\n");
    }
    ClientOptions o;
    o.max_redirects = 3;
    Client client(o);
    auto post = [&](std::string_view path) {
      ClientRequest req;
      req.method = "POST";
      const std::string url = up.url(path);
      req.url = url;
      req.body = "data";
      ClientResponse r = client.send(b.ctx(), req);
      return r.ok() ? std::to_string(r.status()) + " " + r.read_all().value_or("?")
                    : std::string(name(r.error()));
    };
    EXPECT_EQ(post("/r/303"), "200 GET:");
    EXPECT_EQ(post("/r/307"), "200 POST:data");
    EXPECT_EQ(post("/r/308"), "200 POST:data");
    auto get = [&](std::string_view path) {
      ClientResponse r = client.get(b.ctx(), up.url(path));
      return r.ok() ? std::to_string(r.status()) + " " + r.read_all().value_or("?")
                    : std::string(name(r.error()));
    };
    EXPECT_EQ(get("/r/302"), "200 GET:");
    EXPECT_EQ(get("/absolute"), "200 GET:");
    EXPECT_EQ(get("/chain?n=3"), "200 end");
    EXPECT_EQ(get("/chain?n=4"), name(ClientError::kTooManyRedirects));
    EXPECT_EQ(get("/loop"), name(ClientError::kTooManyRedirects));
    EXPECT_EQ(client.stats().requests, 8u) << "a redirect is not another request";
    EXPECT_EQ(client.stats().errors[static_cast<int>(ClientError::kTooManyRedirects)], 2u);
  });
}

// A body_source that fails, or gives another length than declared, is kRequestBody, and the
// connection (whose request framing is now wrong) is closed.
TEST(Client, BodySourceFailureIsRequestBodyError) {
  run_client_test([] {
    GreenUpstream up(echo_routes);
    ASSERT_TRUE(up.listening());
    Client client;
    Bounded b;
    const std::string url = up.url("/echo");
    struct Case {
      int64_t declared;
      std::vector<long> returns;  // what the source returns, call by call
    };
    const Case cases[] = {
        {-1, {3, -1}},   // fails midway, chunked
        {10, {3, -1}},   // fails midway, with a length
        {10, {3, 0}},    // ends short of the declared length
        {3, {3, 3, 0}},  // gives more than declared
        {-1, {-1}},      // fails at once
    };
    for (const Case& k : cases) {
      std::size_t call = 0;
      ClientRequest req;
      req.method = "POST";
      req.url = url;
      req.content_length = k.declared;
      req.body_source = [&](std::span<char> out) -> long {
        const long n = call < k.returns.size() ? k.returns[call++] : 0;
        if (n > 0) std::memset(out.data(), 'b', static_cast<std::size_t>(n));
        return n;
      };
      ClientResponse r = client.send(b.ctx(), req);
      EXPECT_TRUE(is(final_error(r), ClientError::kRequestBody))
          << "declared " << k.declared << ", " << k.returns.size() << " calls";
      r.close();
      EXPECT_EQ(client.stats().idle_connections, 0);
    }
    EXPECT_EQ(client.stats().errors[static_cast<int>(ClientError::kRequestBody)], std::size(cases));
    ClientResponse ok = client.get(b.ctx(), url);
    ASSERT_TRUE(ok.ok()) << ok.error_message();
    EXPECT_EQ(ok.status(), 200);
  });
}

}  // namespace
