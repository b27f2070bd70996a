// green::http::Client and ReverseProxy over TLS (https:// URLs), through real sockets on
// 127.0.0.1, against:
//   - greenhttp's own Server with an HTTPS listener (ServerOptions::listen_tls and a
//     TlsServerContext) on a certificate that config/tls/make-cert.sh makes at test time:
//     GET and POST, keep-alive reuse, session resumption on a new connection (seen by the
//     server's counters), verification failures (another CA, another host name), the pool key's
//     scheme, redirects between http:// and https://, and the proxy in front of both;
//   - peers written here that stall, close or answer garbage in the middle of the handshake,
//     and a cancel from another green thread while the handshake is parked.
// Every test runs inside one green::run and checks afterwards that descriptors and green
// threads are back where they were: a failed handshake must leave nothing behind.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include <gtest/gtest.h>

#include "green/channel.h"
#include "green/context.h"
#include "green/green.h"
#include "green/http/client.h"
#include "green/http/reverse_proxy.h"
#include "green/http/router.h"
#include "green/http/server.h"
#include "green/net.h"
#include "green/sync.h"
#include "green/tls.h"
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
using green::testing::is;
using green::testing::name;
using green::testing::run_client_test;
using green::testing::wait_until;

namespace {

using Clock = std::chrono::steady_clock;
namespace net = green::net;

// ---------------------------------------------------------------------------------------------
// Certificates: two throwaway CAs made once for the suite, each with a server certificate for
// localhost, 127.0.0.1 and ::1 (config/tls/make-cert.sh). `a` is the one the servers use; `b`
// is a CA the servers' certificates do not chain to.

std::string g_dir;  // the suite's temporary directory

std::string cert_dir(std::string_view which) { return g_dir + "/" + std::string(which); }
std::string ca_a() { return cert_dir("a") + "/ca.pem"; }
std::string ca_b() { return cert_dir("b") + "/ca.pem"; }

class ClientTls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    char tmpl[] = "/tmp/greenhttp-client-tls-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    g_dir = tmpl;
    for (const char* which : {"a", "b"}) {
      const std::string cmd = std::string("sh " GREENHTTP_SOURCE_DIR "/config/tls/make-cert.sh ") +
                              cert_dir(which) + " server";
      ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;  // NOLINT(concurrency-mt-unsafe)
    }
  }
  static void TearDownTestSuite() {
    if (g_dir.empty()) return;
    const std::string cmd = "rm -rf " + g_dir;
    (void)std::system(cmd.c_str());  // NOLINT(concurrency-mt-unsafe)
  }
};

std::shared_ptr<net::TlsServerContext> server_tls() {
  net::TlsServerSettings s;
  s.cert_file = cert_dir("a") + "/server.pem";
  s.key_file = cert_dir("a") + "/server.key";
  std::string error;
  auto ctx = net::TlsServerContext::create(s, &error);
  EXPECT_NE(ctx, nullptr) << error;
  return ctx;
}

ClientOptions trusting(const std::string& ca_file) {
  ClientOptions o;
  o.tls_ca_file = ca_file;
  return o;
}

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

// ---------------------------------------------------------------------------------------------
// greenhttp's Server with a plain and an HTTPS listener, in this runtime.

class Upstream {
 public:
  explicit Upstream(const std::function<void(Router&)>& routes,
                    const std::string& host = "127.0.0.1", ServerOptions options = {}) {
    options.listen = host + ":0";
    options.listen_tls = host + ":0";
    options.tls = server_tls();
    tls_ = options.tls;
    if (tls_ == nullptr) return;
    served_ = std::make_unique<green::testing::ServedServer>(routes, std::move(options));
  }

  bool listening() const { return served_ != nullptr && served_->listening(); }
  uint16_t port() const { return served_->server().local_address().port(); }
  uint16_t tls_port() const { return served_->server().tls_local_address().port(); }
  std::string http(std::string_view target, std::string_view host = "127.0.0.1") const {
    return "http://" + std::string(host) + ":" + std::to_string(port()) + std::string(target);
  }
  std::string https(std::string_view target, std::string_view host = "127.0.0.1") const {
    return "https://" + std::string(host) + ":" + std::to_string(tls_port()) + std::string(target);
  }
  net::TlsServerStats tls_stats() const { return tls_->stats(); }
  uint64_t accepted() const { return served_->accepted(); }
  int64_t open_connections() const { return served_->open_connections(); }

 private:
  std::shared_ptr<net::TlsServerContext> tls_;  // outlives served_ (declared first)
  std::unique_ptr<green::testing::ServedServer> served_;
};

// What the upstream saw: method, scheme, body and a few headers, as text; the count of
// requests in `*seen`.
void echo_routes(Router& r, std::atomic<int>* seen) {
  auto echo = [seen](Request& req, ResponseWriter& w) {
    seen->fetch_add(1);
    std::optional<std::string_view> body = req.body().read_all();
    std::string out = std::string(req.method_name()) + " " + std::string(req.scheme()) + " " +
                      std::string(req.target());
    out += " body=" + std::string(body ? *body : "<error>");
    out += " host=" + std::string(req.header("Host"));
    out += " auth=" + std::string(req.header("Authorization"));
    out += " xfp=" + std::string(req.header("X-Forwarded-Proto"));
    out += " sni=" + std::string(req.tls() != nullptr ? req.tls()->server_name() : "-");
    w.send(200, "text/plain", out);
  };
  for (Method m : {Method::kGet, Method::kPost}) r.handle(m, "/echo", echo);
}

std::string body_of(ClientResponse& r) {
  std::optional<std::string> b = r.read_all();
  return b ? *b : "<" + std::string(name(r.error())) + ": " + r.error_message() + ">";
}

// ---------------------------------------------------------------------------------------------
// A peer that accepts TCP connections and misbehaves in the handshake: it reads the ClientHello
// and then stalls (reading on until the client closes), closes, or answers garbage.

class HandshakePeer {
 public:
  enum class Mode { kStall, kCloseAfterHello, kCloseAtOnce, kGarbage };
  explicit HandshakePeer(Mode mode) : mode_(mode) {
    listening_ = net::TcpListener::listen(*net::Address::parse("127.0.0.1:0"), &listener_) == 0;
    if (!listening_) return;
    port_ = listener_.local_address().port();
    done_.add(1);
    green::go([this] {
      for (;;) {
        net::TcpStream s;
        if (listener_.accept(&s) != 0) break;
        done_.add(1);
        green::go([this, s = std::move(s)]() mutable {
          serve(s);
          done_.done();
        });
      }
      done_.done();
    });
  }
  ~HandshakePeer() {
    listener_.close();
    done_.wait();
  }
  HandshakePeer(const HandshakePeer&) = delete;
  HandshakePeer& operator=(const HandshakePeer&) = delete;

  std::string url() const { return "https://127.0.0.1:" + std::to_string(port_) + "/"; }
  int hellos() const { return hellos_.load(); }  // ClientHello bytes seen, per connection
  int closed_by_client() const { return closed_.load(); }

 private:
  void serve(net::TcpStream& s) {
    // Bounded: a client that never closes fails the test on its leak check, not by a hang.
    s.set_read_deadline(net::deadline_after(10s));
    char buf[4096];
    if (mode_ != Mode::kCloseAtOnce) {
      if (s.read(buf, sizeof buf) <= 0) return;
      hellos_.fetch_add(1);
    }
    switch (mode_) {
      case Mode::kStall:
        for (;;) {
          const ssize_t n = s.read(buf, sizeof buf);
          if (n == 0) closed_.fetch_add(1);
          if (n <= 0) return;
        }
      case Mode::kGarbage: {
        const std::string_view junk = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n";
        (void)s.write(junk.data(), junk.size());
        break;
      }
      case Mode::kCloseAfterHello:
      case Mode::kCloseAtOnce:
        break;
    }
    s.close();
  }

  Mode mode_;
  net::TcpListener listener_;
  bool listening_ = false;
  uint16_t port_ = 0;
  std::atomic<int> hellos_{0};
  std::atomic<int> closed_{0};
  green::WaitGroup done_;
};

// ---------------------------------------------------------------------------------------------

// GET and POST over https://, the second call on the first one's connection (one handshake);
// the server sees TLS (scheme, SNI) and the client's counters and metrics say what happened.
TEST_F(ClientTls, GetAndPostOverHttpsReuseOneConnection) {
  run_client_test([] {
    std::atomic<int> seen{0};
    Upstream up([&](Router& r) { echo_routes(r, &seen); });
    ASSERT_TRUE(up.listening());
    Bounded b;
    Client client(trusting(ca_a()));

    ClientResponse r = client.get(b.ctx(), up.https("/echo?x=1", "localhost"));
    ASSERT_TRUE(r.ok()) << name(r.error()) << ": " << r.error_message();
    EXPECT_EQ(r.status(), 200);
    const std::string port = std::to_string(up.tls_port());
    EXPECT_EQ(body_of(r),
              "GET https /echo?x=1 body= host=localhost:" + port + " auth= xfp= sni=localhost");

    ClientRequest post;
    post.method = "POST";
    const std::string url = up.https("/echo", "localhost");
    post.url = url;
    post.body = "hello over tls";
    ClientResponse p = client.send(b.ctx(), post);
    ASSERT_TRUE(p.ok()) << p.error_message();
    EXPECT_EQ(body_of(p), "POST https /echo body=hello over tls host=localhost:" + port +
                              " auth= xfp= sni=localhost");

    const green::http::ClientStats s = client.stats();
    EXPECT_EQ(s.pool_misses, 1u);
    EXPECT_EQ(s.pool_hits, 1u);
    EXPECT_EQ(s.tls_handshakes_full, 1u);
    EXPECT_EQ(s.tls_handshakes_resumed, 0u);
    EXPECT_EQ(s.tls_handshake_failures, 0u);
    EXPECT_EQ(up.tls_stats().handshakes_full, 1u);
    EXPECT_EQ(up.accepted(), 1u);
    std::string text;
    client.write_metrics(text);
    EXPECT_TRUE(contains(text, "greenhttp_client_tls_handshakes_total{result=\"full\"} 1\n"))
        << text;
    EXPECT_TRUE(contains(text, "greenhttp_client_tls_handshakes_total{result=\"resumed\"} 0\n"));
    EXPECT_TRUE(contains(
        text, "greenhttp_client_tls_handshake_failures_total{reason=\"certificate\"} 0\n"));
    EXPECT_TRUE(contains(text, "greenhttp_client_errors_total{kind=\"tls\"} 0\n"));

    // An IP literal: verified against the certificate's IP address, and no SNI sent (RFC 6066
    // 3 allows only DNS names there).
    ClientResponse ip = client.get(b.ctx(), up.https("/echo"));
    ASSERT_TRUE(ip.ok()) << ip.error_message();
    const std::string ip_body = body_of(ip);
    EXPECT_TRUE(ip_body.ends_with(" sni=")) << ip_body;
  });
}

// A new connection to the same server resumes the session the first one got: the server
// counts a resumed handshake, and so does the client.
TEST_F(ClientTls, NewConnectionResumesTheSession) {
  run_client_test([] {
    std::atomic<int> seen{0};
    Upstream up([&](Router& r) { echo_routes(r, &seen); });
    ASSERT_TRUE(up.listening());
    Bounded b;
    Client client(trusting(ca_a()));
    for (int i = 0; i < 3; ++i) {
      ClientResponse r = client.get(b.ctx(), up.https("/echo", "localhost"));
      ASSERT_TRUE(r.ok()) << r.error_message();
      EXPECT_EQ(r.read_all().value_or("").substr(0, 10), "GET https ");
      client.close_idle();  // the next call dials
    }
    const green::http::ClientStats s = client.stats();
    EXPECT_EQ(s.pool_misses, 3u);
    EXPECT_EQ(s.tls_handshakes_full, 1u);
    EXPECT_EQ(s.tls_handshakes_resumed, 2u);
    const net::TlsServerStats st = up.tls_stats();
    EXPECT_EQ(st.handshakes_full, 1u);
    EXPECT_EQ(st.handshakes_resumed, 2u);
    EXPECT_TRUE(wait_until([&] { return up.accepted() == 3; }, 5s));

    // A second Client with its own context has no session to offer: a full handshake.
    Client other(trusting(ca_a()));
    ClientResponse r = other.get(b.ctx(), up.https("/echo", "localhost"));
    ASSERT_TRUE(r.ok()) << r.error_message();
    (void)r.read_all();
    EXPECT_EQ(other.stats().tls_handshakes_full, 1u);
    EXPECT_EQ(up.tls_stats().handshakes_full, 2u);

    // Two Clients sharing one context share its session cache.
    std::string error;
    net::TlsClientSettings settings;
    settings.ca_file = ca_a();
    ClientOptions o;
    o.tls = net::TlsClientContext::create(settings, &error);
    ASSERT_NE(o.tls, nullptr) << error;
    {
      Client first(o);
      ClientResponse f = first.get(b.ctx(), up.https("/echo", "localhost"));
      ASSERT_TRUE(f.ok()) << f.error_message();
      (void)f.read_all();
    }
    Client second(o);
    ClientResponse s2 = second.get(b.ctx(), up.https("/echo", "localhost"));
    ASSERT_TRUE(s2.ok()) << s2.error_message();
    (void)s2.read_all();
    EXPECT_EQ(second.stats().tls_handshakes_resumed, 1u);
  });
}

// A certificate from a CA the client does not trust, or for another host name: kTls with the
// reason, and not one byte of the request reached the server.
TEST_F(ClientTls, UntrustedCertificateIsTlsErrorAndSendsNothing) {
  run_client_test([] {
    std::atomic<int> seen{0};
    Upstream up([&](Router& r) { echo_routes(r, &seen); });
    ASSERT_TRUE(up.listening());
    Bounded b;
    {
      Client client(trusting(ca_b()));
      ClientResponse r = client.get(b.ctx(), up.https("/echo", "localhost"));
      EXPECT_TRUE(is(r.error(), ClientError::kTls));
      EXPECT_TRUE(contains(r.error_message(), "certificate")) << r.error_message();
      EXPECT_EQ(client.stats().tls_handshake_failures, 1u);
      EXPECT_EQ(
          client.stats()
              .tls_handshake_failures_by[static_cast<int>(net::TlsHandshakeFailure::kCertificate)],
          1u);
      std::string text;
      client.write_metrics(text);
      EXPECT_TRUE(contains(
          text, "greenhttp_client_tls_handshake_failures_total{reason=\"certificate\"} 1\n"))
          << text;
      EXPECT_EQ(client.stats().errors[static_cast<int>(ClientError::kTls)], 1u);
      EXPECT_EQ(client.stats().open_connections, 0);
      // The default context (the system's store) does not know the test CA either.
      Client system_store;
      ClientResponse d = system_store.get(b.ctx(), up.https("/echo", "localhost"));
      EXPECT_TRUE(is(d.error(), ClientError::kTls)) << d.error_message();
    }
    {
      // A CA file that does not load: kTls on the call, naming it.
      Client client(trusting(g_dir + "/missing.pem"));
      ClientResponse r = client.get(b.ctx(), up.https("/echo", "localhost"));
      EXPECT_TRUE(is(r.error(), ClientError::kTls));
      EXPECT_TRUE(contains(r.error_message(), "missing.pem")) << r.error_message();
    }
    {
      // Verification off (tests only): the same server answers.
      ClientOptions o;
      o.tls_insecure_skip_verify = true;
      Client client(o);
      ClientResponse r = client.get(b.ctx(), up.https("/echo", "localhost"));
      ASSERT_TRUE(r.ok()) << r.error_message();
      (void)r.read_all();
    }
    EXPECT_EQ(seen.load(), 1) << "only the unverified client's request";
  });
}

TEST_F(ClientTls, CertificateForAnotherHostIsTlsError) {
  run_client_test([] {
    std::atomic<int> seen{0};
    // 127.0.0.2 is loopback too, but not a name in the certificate (localhost, 127.0.0.1, ::1).
    Upstream up([&](Router& r) { echo_routes(r, &seen); }, "127.0.0.2");
    if (!up.listening()) GTEST_SKIP() << "127.0.0.2 is not a local address here";
    Bounded b;
    Client client(trusting(ca_a()));
    ClientResponse r = client.get(b.ctx(), up.https("/echo", "127.0.0.2"));
    EXPECT_TRUE(is(r.error(), ClientError::kTls));
    EXPECT_TRUE(contains(r.error_message(), "certificate")) << r.error_message();
    EXPECT_EQ(seen.load(), 0);
    EXPECT_EQ(client.stats().open_connections, 0);
  });
}

// The pool key has the scheme: an http:// call to the HTTPS port never rides the pooled TLS
// connection there (it gets the server's 400 on a plain one), and an https:// call to a plain
// port fails its handshake.
TEST_F(ClientTls, SchemeIsPartOfThePoolKey) {
  run_client_test([] {
    std::atomic<int> seen{0};
    Upstream up([&](Router& r) { echo_routes(r, &seen); });
    ASSERT_TRUE(up.listening());
    Bounded b;
    Client client(trusting(ca_a()));
    ClientResponse r = client.get(b.ctx(), up.https("/echo"));
    ASSERT_TRUE(r.ok()) << r.error_message();
    (void)r.read_all();
    EXPECT_EQ(client.stats().idle_connections, 1);

    const std::string plain_to_tls_port =
        "http://127.0.0.1:" + std::to_string(up.tls_port()) + "/echo";
    ClientResponse p = client.get(b.ctx(), plain_to_tls_port);
    ASSERT_TRUE(p.ok()) << p.error_message();
    EXPECT_EQ(p.status(), 400);
    EXPECT_TRUE(contains(body_of(p), "plain HTTP request was sent to HTTPS port"));
    EXPECT_EQ(client.stats().pool_hits, 0u);

    const std::string tls_to_plain_port =
        "https://127.0.0.1:" + std::to_string(up.port()) + "/echo";
    ClientResponse t = client.get(b.ctx(), tls_to_plain_port);
    EXPECT_TRUE(is(t.error(), ClientError::kTls)) << t.error_message();
    EXPECT_EQ(seen.load(), 1);
  });
}

// Redirects cross schemes both ways; credentials follow an upgrade to https:// on the same
// host but never a downgrade to http://.
TEST_F(ClientTls, RedirectsBetweenHttpAndHttps) {
  run_client_test([] {
    std::atomic<int> seen{0};
    uint16_t plain = 0;
    uint16_t tls = 0;
    Upstream up([&](Router& r) {
      echo_routes(r, &seen);
      r.handle(Method::kGet, "/up", [&](Request&, ResponseWriter& w) {
        w.set_header("Location", "https://localhost:" + std::to_string(tls) + "/down");
        w.send_status(302);
      });
      r.handle(Method::kGet, "/down", [&](Request& req, ResponseWriter& w) {
        if (req.tls() == nullptr) return w.send_status(400);
        w.set_header("Location", "http://localhost:" + std::to_string(plain) + "/echo");
        w.send_status(302);
      });
      r.handle(Method::kGet, "/same", [&](Request&, ResponseWriter& w) {
        w.set_header("Location", "/echo?relative");  // stays on https://
        w.send_status(301);
      });
    });
    ASSERT_TRUE(up.listening());
    plain = up.port();
    tls = up.tls_port();
    Bounded b;
    ClientOptions o = trusting(ca_a());
    o.max_redirects = 5;
    Client client(o);
    const Header auth[] = {{"Authorization", "Bearer secret"}};
    ClientRequest req;
    const std::string url = up.http("/up", "localhost");
    req.url = url;
    req.headers = auth;
    ClientResponse r = client.send(b.ctx(), req);
    ASSERT_TRUE(r.ok()) << r.error_message();
    EXPECT_EQ(r.status(), 200);
    const std::string body = body_of(r);
    EXPECT_TRUE(contains(body, "GET http /echo ")) << body;
    EXPECT_TRUE(contains(body, " auth= ")) << "dropped on the way down to http://: " << body;

    const std::string same = up.https("/same", "localhost");
    req.url = same;
    ClientResponse s = client.send(b.ctx(), req);
    ASSERT_TRUE(s.ok()) << s.error_message();
    const std::string sbody = body_of(s);
    EXPECT_TRUE(contains(sbody, "GET https /echo?relative ")) << sbody;
    EXPECT_TRUE(contains(sbody, " auth=Bearer secret ")) << sbody;
  });
}

// Peers that break the handshake: a stall ends at connect_timeout (kTimeout) or the context's
// deadline (kDeadlineExceeded), a close or garbage is kTls; each connection is closed at once.
TEST_F(ClientTls, BrokenHandshakesFailCleanly) {
  run_client_test([] {
    Bounded b;
    {
      HandshakePeer peer(HandshakePeer::Mode::kStall);
      ClientOptions o;
      o.connect_timeout = 300ms;
      o.tls_insecure_skip_verify = true;
      Client client(o);
      const auto start = Clock::now();
      ClientResponse r = client.get(b.ctx(), peer.url());
      const auto took = Clock::now() - start;
      EXPECT_TRUE(is(r.error(), ClientError::kTimeout)) << r.error_message();
      EXPECT_TRUE(contains(r.error_message(), "TLS handshake")) << r.error_message();
      EXPECT_GE(took, 250ms);
      EXPECT_LT(took, 3s);
      EXPECT_TRUE(wait_until([&] { return peer.closed_by_client() == 1; }, 5s));
      EXPECT_EQ(peer.hellos(), 1);
      EXPECT_EQ(client.stats().tls_handshake_failures, 1u);
      EXPECT_EQ(
          client.stats()
              .tls_handshake_failures_by[static_cast<int>(net::TlsHandshakeFailure::kTimeout)],
          1u);
      EXPECT_EQ(client.stats().open_connections, 0);

      auto [ctx, cancel] = green::with_timeout(green::Context::background(), 200ms);
      ClientResponse d = client.get(ctx, peer.url());
      cancel();
      EXPECT_TRUE(is(d.error(), ClientError::kDeadlineExceeded)) << d.error_message();
      EXPECT_TRUE(wait_until([&] { return peer.closed_by_client() == 2; }, 5s));
    }
    for (HandshakePeer::Mode mode :
         {HandshakePeer::Mode::kCloseAfterHello, HandshakePeer::Mode::kCloseAtOnce,
          HandshakePeer::Mode::kGarbage}) {
      HandshakePeer peer(mode);
      ClientOptions o;
      o.tls_insecure_skip_verify = true;
      // One connection per host: a failed handshake must give its slot back, or the second
      // call waits for it until connect_timeout.
      o.max_conns_per_host = 1;
      o.connect_timeout = 5s;
      Client client(o);
      for (int call = 0; call < 2; ++call) {
        const auto start = Clock::now();
        ClientResponse r = client.get(b.ctx(), peer.url());
        EXPECT_TRUE(is(r.error(), ClientError::kTls))
            << static_cast<int>(mode) << ": " << r.error_message();
        EXPECT_TRUE(contains(r.error_message(), "TLS handshake with 127.0.0.1:"))
            << r.error_message();
        EXPECT_LT(Clock::now() - start, 3s);
      }
      EXPECT_EQ(client.stats().open_connections, 0);
      EXPECT_EQ(client.stats().tls_handshake_failures, 2u);
    }
  });
}

// Cancelling the call's context from another green thread while the handshake is parked ends
// it at once (kCanceled), and the connection is closed.
TEST_F(ClientTls, CancelDuringTheHandshakeEndsItPromptly) {
  run_client_test([] {
    HandshakePeer peer(HandshakePeer::Mode::kStall);
    ClientOptions o;
    o.tls_insecure_skip_verify = true;
    Client client(o);
    auto [ctx, cancel] = green::with_cancel(green::Context::background());
    std::atomic<int64_t> cancelled_at{0};
    green::WaitGroup wg;
    wg.add(1);
    green::go([&, cancel = cancel] {
      EXPECT_TRUE(wait_until([&] { return peer.hellos() == 1; }, 5s));
      cancelled_at.store(Clock::now().time_since_epoch().count());
      cancel();
      wg.done();
    });
    ClientResponse r = client.get(ctx, peer.url());
    const auto ended = Clock::now();
    wg.wait();
    cancel();
    EXPECT_TRUE(is(r.error(), ClientError::kCanceled)) << r.error_message();
    EXPECT_LT(ended - Clock::time_point(Clock::duration(cancelled_at.load())), 1s);
    EXPECT_TRUE(wait_until([&] { return peer.closed_by_client() == 1; }, 5s));
    EXPECT_EQ(client.stats().open_connections, 0);
    EXPECT_EQ(client.stats()
                  .tls_handshake_failures_by[static_cast<int>(net::TlsHandshakeFailure::kCanceled)],
              1u);
  });
}

// A pooled TLS connection the server closed while it was idle (its close_notify and FIN are
// waiting on the socket) is found dead before reuse and replaced, and the replacement resumes
// the session.
TEST_F(ClientTls, IdleConnectionClosedByTheServerIsReplaced) {
  run_client_test([] {
    std::atomic<int> seen{0};
    ServerOptions options;
    options.idle_timeout = 200ms;
    Upstream up([&](Router& r) { echo_routes(r, &seen); }, "127.0.0.1", options);
    ASSERT_TRUE(up.listening());
    Bounded b;
    Client client(trusting(ca_a()));
    ClientResponse r = client.get(b.ctx(), up.https("/echo", "localhost"));
    ASSERT_TRUE(r.ok()) << r.error_message();
    (void)r.read_all();
    EXPECT_EQ(client.stats().idle_connections, 1);
    ASSERT_TRUE(wait_until([&] { return up.open_connections() == 0; }, 5s));
    ClientResponse again = client.get(b.ctx(), up.https("/echo", "localhost"));
    ASSERT_TRUE(again.ok()) << name(again.error()) << ": " << again.error_message();
    (void)again.read_all();
    const green::http::ClientStats s = client.stats();
    EXPECT_EQ(s.stale_closed, 1u);
    EXPECT_EQ(s.pool_hits, 0u);
    EXPECT_EQ(s.retries, 0u) << "found dead before use, not by a failed request";
    EXPECT_EQ(s.tls_handshakes_resumed, 1u);
    EXPECT_EQ(seen.load(), 2);
  });
}

// The reverse proxy over TLS on both sides: a client calls the proxy's HTTPS listener, the
// proxy calls an https:// upstream (verified against the test CA), which sees
// X-Forwarded-Proto: https; a plain client sees "http". An upstream whose certificate does not
// verify is 502.
TEST_F(ClientTls, ReverseProxyToAnHttpsUpstream) {
  run_client_test([] {
    std::atomic<int> seen{0};
    Upstream up([&](Router& r) { echo_routes(r, &seen); });
    ASSERT_TRUE(up.listening());
    green::http::ReverseProxyOptions po;
    po.upstreams = {up.https("", "localhost")};
    po.client.tls_ca_file = ca_a();
    std::string error;
    std::unique_ptr<green::http::ReverseProxy> proxy =
        green::http::ReverseProxy::create(po, &error);
    ASSERT_NE(proxy, nullptr) << error;
    Upstream front([&](Router& r) { r.use([&](const auto&) { return proxy->handler(); }); });
    ASSERT_TRUE(front.listening());
    Bounded b;
    Client client(trusting(ca_a()));
    for (int i = 0; i < 2; ++i) {
      ClientResponse r = client.get(b.ctx(), front.https("/echo", "localhost"));
      ASSERT_TRUE(r.ok()) << r.error_message();
      EXPECT_EQ(r.status(), 200);
      const std::string body = body_of(r);
      EXPECT_TRUE(contains(body, "GET https /echo ")) << body;
      EXPECT_TRUE(contains(body, " xfp=https ")) << body;
      EXPECT_TRUE(contains(body, " sni=localhost")) << body;
    }
    ClientResponse plain = client.get(b.ctx(), front.http("/echo"));
    ASSERT_TRUE(plain.ok()) << plain.error_message();
    EXPECT_TRUE(contains(body_of(plain), " xfp=http ")) << "the client's hop was plain";
    EXPECT_EQ(proxy->client().stats().tls_handshakes_full, 1u);
    EXPECT_EQ(proxy->client().stats().pool_hits, 2u);

    // The same upstream, trusted against the wrong CA: 502, and it counts as a failure.
    po.client.tls_ca_file = ca_b();
    po.upstreams = {up.https("", "localhost")};
    std::unique_ptr<green::http::ReverseProxy> wrong =
        green::http::ReverseProxy::create(po, &error);
    ASSERT_NE(wrong, nullptr) << error;
    Upstream front2([&](Router& r) { r.use([&](const auto&) { return wrong->handler(); }); });
    ASSERT_TRUE(front2.listening());
    ClientResponse bad = client.get(b.ctx(), front2.http("/echo"));
    ASSERT_TRUE(bad.ok()) << bad.error_message();
    EXPECT_EQ(bad.status(), 502);
    (void)bad.read_all();
    EXPECT_EQ(wrong->client().stats().errors[static_cast<int>(ClientError::kTls)], 1u);

    // A failed handshake sent nothing: the request moves on to the next upstream (as a failed
    // connect does), whichever of the two round robin starts with.
    HandshakePeer garbage(HandshakePeer::Mode::kGarbage);
    po.client.tls_ca_file = ca_a();
    po.upstreams = {garbage.url(), up.https("", "localhost")};
    po.max_fails = 0;  // both stay in the rotation
    std::unique_ptr<green::http::ReverseProxy> two = green::http::ReverseProxy::create(po, &error);
    ASSERT_NE(two, nullptr) << error;
    Upstream front3([&](Router& r) { r.use([&](const auto&) { return two->handler(); }); });
    ASSERT_TRUE(front3.listening());
    for (int i = 0; i < 2; ++i) {
      ClientResponse r = client.get(b.ctx(), front3.http("/echo"));
      ASSERT_TRUE(r.ok()) << r.error_message();
      EXPECT_EQ(r.status(), 200);
      (void)r.read_all();
    }
    EXPECT_EQ(two->stats().next_upstream, 1u);
    EXPECT_EQ(garbage.hellos(), 1);

    // A CA file that does not load fails create().
    po.client.tls_ca_file = g_dir + "/missing.pem";
    EXPECT_EQ(green::http::ReverseProxy::create(po, &error), nullptr);
    EXPECT_TRUE(contains(error, "missing.pem")) << error;
  });
}

}  // namespace
