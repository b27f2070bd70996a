// net::TlsStream and net::TlsSession on their own, inside green::run: both ends of real TLS
// connections over 127.0.0.1, with a throwaway CA made by config/tls/make-cert.sh at test time
// (no key material in the repository). What TcpStream promises (negative errno, 0 at end of
// stream, deadlines, close() from another green thread, a bound context) must hold through
// TLS; what TLS adds (verification, resumption, the server's refusals) is checked from the
// client's side. The concurrent test is the M:N hazard: a green thread that parks inside
// OpenSSL (in our BIO) may resume on another OS thread, and OpenSSL keeps its error queue per
// OS thread; it runs in the ASan and TSan trees too.
#include <sys/ioctl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "green/channel.h"
#include "green/context.h"
#include "green/green.h"
#include "green/net.h"
#include "green/sync.h"
#include "green/tls.h"
#include "tests/runtime/test_util.h"

using namespace std::chrono_literals;
using green::net::Address;
using green::net::Deadline;
using green::net::deadline_after;
using green::net::kNoDeadline;
using green::net::TcpListener;
using green::net::TcpStream;
using green::net::TlsClientContext;
using green::net::TlsClientSettings;
using green::net::TlsHandshakeFailure;
using green::net::TlsServerContext;
using green::net::TlsServerSettings;
using green::net::TlsSession;
using green::net::TlsStream;
using green::net::TlsVersion;

namespace {

Address loopback() { return *Address::parse("127.0.0.1:0"); }

// A pattern that shows a shifted or repeated piece, unlike a constant fill.
std::string pattern(std::size_t size, int seed) {
  std::string s(size, '\0');
  for (std::size_t i = 0; i < size; ++i) s[i] = static_cast<char>((i * 131 + i / 7 + seed) & 0xff);
  return s;
}

// Reads exactly n bytes; false on an error or the end of the stream first.
bool read_exactly(TlsStream& s, char* buf, std::size_t n) {
  std::size_t got = 0;
  while (got < n) {
    const ssize_t r = s.read(buf + got, n - got);
    if (r <= 0) return false;
    got += static_cast<std::size_t>(r);
  }
  return true;
}

class TlsStreamTest : public ::testing::Test {
 protected:
  // A CA and a server certificate for localhost and 127.0.0.1, in "certs".
  static void SetUpTestSuite() {
    char d[] = "/tmp/greenhttp-tls-stream-XXXXXX";
    ASSERT_NE(mkdtemp(d), nullptr);
    dir_ = d;
    const std::string script = std::string(GREENHTTP_SOURCE_DIR) + "/config/tls/make-cert.sh";
    // NOLINTNEXTLINE(concurrency-mt-unsafe): before any test thread exists
    ASSERT_EQ(std::system(("sh '" + script + "' '" + dir_ + "/certs' server").c_str()), 0);
  }
  // The stranger's CA, made only by the test that needs it (each test runs in a process of its
  // own under CTest, and each make-cert.sh run costs a key generation or two).
  static void make_other_ca() {
    const std::string script = std::string(GREENHTTP_SOURCE_DIR) + "/config/tls/make-cert.sh";
    // NOLINTNEXTLINE(concurrency-mt-unsafe): before green::run starts its threads
    ASSERT_EQ(std::system(("sh '" + script + "' '" + dir_ + "/other' server").c_str()), 0);
  }
  static void TearDownTestSuite() {
    // NOLINTNEXTLINE(concurrency-mt-unsafe): after every test thread has ended
    (void)std::system(("rm -rf '" + dir_ + "'").c_str());
  }

  static std::string ca() { return dir_ + "/certs/ca.pem"; }
  static std::string other_ca() { return dir_ + "/other/ca.pem"; }

  static std::shared_ptr<TlsServerContext> server_context(TlsServerSettings settings = {}) {
    settings.cert_file = dir_ + "/certs/server.pem";
    settings.key_file = dir_ + "/certs/server.key";
    std::string error;
    auto ctx = TlsServerContext::create(settings, &error);
    EXPECT_NE(ctx, nullptr) << error;
    return ctx;
  }
  static std::shared_ptr<TlsClientContext> client_context(TlsClientSettings settings = {}) {
    if (settings.ca_file.empty()) settings.ca_file = ca();
    std::string error;
    auto ctx = TlsClientContext::create(settings, &error);
    EXPECT_NE(ctx, nullptr) << error;
    return ctx;
  }

  // Both ends of one connection, the handshakes done (or failed) concurrently.
  struct Pair {
    TlsStream client, server;
    int client_rc = 1, server_rc = 1;
    TlsHandshakeFailure client_why = TlsHandshakeFailure::kNone;
    TlsHandshakeFailure server_why = TlsHandshakeFailure::kNone;
  };
  static void handshake(Pair* p, const TlsServerContext& server, const TlsClientContext& client,
                        std::string_view name = "localhost") {
    TcpListener listener;
    ASSERT_EQ(TcpListener::listen(loopback(), &listener), 0);
    handshake(p, listener, server, client, name);
  }
  // The same through `listener`: the client's session cache is per server name and port.
  static void handshake(Pair* p, TcpListener& listener, const TlsServerContext& server,
                        const TlsClientContext& client, std::string_view name = "localhost") {
    green::WaitGroup accepted;
    accepted.add(1);
    green::go([&] {
      TcpStream tcp;
      p->server_rc = listener.accept(&tcp);
      if (p->server_rc == 0) {
        p->server_rc = TlsStream::accept(std::move(tcp), server, deadline_after(10s), &p->server,
                                         &p->server_why);
      }
      accepted.done();
    });
    p->client_rc = TlsStream::connect(listener.local_address(), client, name, &p->client,
                                      deadline_after(10s), &p->client_why);
    accepted.wait();
  }

  static std::string dir_;
};

std::string TlsStreamTest::dir_;

}  // namespace

TEST_F(TlsStreamTest, ReadsAndWritesBothWaysIncludingFiveMegabytes) {
  green::run({.procs = 2}, [] {
    auto server = server_context();
    auto client = client_context();
    Pair p;
    handshake(&p, *server, *client);
    ASSERT_EQ(p.client_rc, 0) << green::net::to_string(p.client_why);
    ASSERT_EQ(p.server_rc, 0) << green::net::to_string(p.server_why);
    // What each side agreed on: TLS 1.3 (both allow it), ALPN http/1.1, the SNI sent.
    EXPECT_EQ(p.client.session().version(), TlsVersion::kTls13);
    EXPECT_EQ(p.server.session().version(), TlsVersion::kTls13);
    EXPECT_EQ(p.client.session().cipher(), p.server.session().cipher());
    EXPECT_FALSE(p.client.session().cipher().empty());
    EXPECT_EQ(p.client.session().alpn(), "http/1.1");
    EXPECT_EQ(p.server.session().alpn(), "http/1.1");
    EXPECT_EQ(p.server.session().server_name(), "localhost");
    EXPECT_FALSE(p.client.session().resumed());

    // The server's counters see the open connection under its version and cipher.
    const auto open = server->stats();
    EXPECT_EQ(open.handshakes_full, 1u);
    uint64_t in_use = 0;
    for (const auto& u : open.in_use) {
      if (u.version == "TLSv1.3" && u.cipher == p.server.session().cipher()) {
        in_use += u.connections;
      }
    }
    EXPECT_EQ(in_use, 1u);

    // 5 MB each way: the server in one write() (many records), the client with writev() of
    // pieces large and small.
    const std::string down = pattern(5'000'000, 1);
    const std::string up = pattern(5'000'000, 2);
    green::WaitGroup wrote;
    wrote.add(1);
    green::go([&] {
      EXPECT_EQ(p.server.write(down.data(), down.size()), static_cast<ssize_t>(down.size()));
      wrote.done();
    });
    std::string got(down.size(), '\0');
    ASSERT_TRUE(read_exactly(p.client, got.data(), got.size()));
    wrote.wait();
    EXPECT_TRUE(got == down) << "the 5 MB the server wrote arrived changed";

    wrote.add(1);
    green::go([&] {
      std::vector<iovec> iov;
      const std::size_t pieces[] = {1, 10, 100, 4000, 70'000, 1'000'000};
      std::size_t at = 0;
      for (std::size_t i = 0; at < up.size(); ++i) {
        const std::size_t n = std::min(pieces[i % 6], up.size() - at);
        iov.push_back({const_cast<char*>(up.data() + at), n});
        at += n;
      }
      EXPECT_EQ(p.client.writev(iov.data(), static_cast<int>(iov.size())),
                static_cast<ssize_t>(up.size()));
      wrote.done();
    });
    got.assign(up.size(), '\0');
    ASSERT_TRUE(read_exactly(p.server, got.data(), got.size()));
    wrote.wait();
    EXPECT_TRUE(got == up) << "the 5 MB the client wrote arrived changed";

    // close(): close_notify, then the socket; the peer reads the end of the stream.
    p.server.close();
    char c;
    EXPECT_EQ(p.client.read(&c, 1), 0);
    p.client.close();
    p.server = TlsStream();  // the session is gone: it no longer counts as open
    p.client = TlsStream();
    uint64_t still = 0;
    for (const auto& u : server->stats().in_use) still += u.connections;
    EXPECT_EQ(still, 0u);
  });
}

TEST_F(TlsStreamTest, TryReadIsEagainAndWaitReadableSeesBufferedBytes) {
  green::run({.procs = 2}, [] {
    auto server = server_context();
    auto client = client_context();
    Pair p;
    handshake(&p, *server, *client);
    ASSERT_EQ(p.client_rc, 0);
    ASSERT_EQ(p.server_rc, 0);
    char buf[64];
    EXPECT_EQ(p.client.try_read(buf, sizeof buf), -EAGAIN);
    ASSERT_EQ(p.server.write("hello world", 11), 11);  // one record
    ASSERT_EQ(p.client.wait_readable(), 0);
    ASSERT_EQ(p.client.read(buf, 5), 5);
    EXPECT_EQ(std::string(buf, 5), "hello");
    EXPECT_TRUE(p.client.session().has_buffered());
    // The rest of the record is decrypted and buffered: waiting for it must not touch the
    // socket, so a deadline that has passed does not matter.
    p.client.set_read_deadline(std::chrono::steady_clock::now() - 1s);
    EXPECT_EQ(p.client.wait_readable(), 0);
    EXPECT_EQ(p.client.try_read(buf, sizeof buf), 6);
    EXPECT_EQ(std::string(buf, 6), " world");
    EXPECT_FALSE(p.client.session().has_buffered());
    EXPECT_EQ(p.client.try_read(buf, sizeof buf), -EAGAIN);
    // And now, nothing buffered, the passed deadline applies (after at most a stale wakeup or
    // two, which the netpoller may give and a read loop absorbs).
    int rc = 0;
    int stale = 0;
    while ((rc = p.client.wait_readable()) == 0 && stale < 1000) {
      ++stale;
      EXPECT_EQ(p.client.try_read(buf, sizeof buf), -EAGAIN);
    }
    EXPECT_EQ(rc, -ETIMEDOUT);
    EXPECT_LE(stale, 2);
  });
}

// A client that sends the first bytes of a record and stalls (a slowloris below TLS): the
// bytes are not data, so a connection waiting for its next request must park, not spin
// between a wait_readable() that returns at once and a try_read() that finds no whole record.
TEST_F(TlsStreamTest, PartialRecordIsNotReadableUntilItIsWhole) {
  green::run({.procs = 2}, [] {
    auto server = server_context();
    auto client = client_context();
    // client -> proxy -> server: the proxy forwards both ways; once `split` is set it sends
    // the server only the first 3 bytes of the client's next write until `release`.
    TcpListener front, back;
    ASSERT_EQ(TcpListener::listen(loopback(), &front), 0);
    ASSERT_EQ(TcpListener::listen(loopback(), &back), 0);
    std::atomic<bool> split{false}, held{false};
    green::Channel<int> release(1);
    green::WaitGroup pumps;
    pumps.add(1);
    green::go([&] {
      TcpStream down, up;
      if (front.accept(&down) != 0 || TcpStream::connect(back.local_address(), &up) != 0) {
        ADD_FAILURE() << "proxy: no connection";
        pumps.done();
        return;
      }
      pumps.add(1);
      green::go([&] {  // server -> client, as it comes
        char buf[16384];
        for (ssize_t n; (n = up.read(buf, sizeof buf)) > 0;) {
          if (down.write(buf, static_cast<std::size_t>(n)) != n) break;
        }
        down.shutdown(SHUT_WR);
        pumps.done();
      });
      char buf[16384];
      for (ssize_t n; (n = down.read(buf, sizeof buf)) > 0;) {
        std::size_t at = 0;
        if (split.exchange(false) && n > 3) {
          if (up.write(buf, 3) != 3) break;
          held = true;
          (void)release.recv();
          at = 3;
        }
        const auto rest = static_cast<std::size_t>(n) - at;
        if (up.write(buf + at, rest) != static_cast<ssize_t>(rest)) break;
      }
      up.shutdown(SHUT_WR);
      pumps.done();
    });
    Pair p;
    green::WaitGroup accepted;
    accepted.add(1);
    green::go([&] {
      TcpStream tcp;
      p.server_rc = back.accept(&tcp);
      if (p.server_rc == 0) {
        p.server_rc = TlsStream::accept(std::move(tcp), *server, deadline_after(10s), &p.server);
      }
      accepted.done();
    });
    p.client_rc = TlsStream::connect(front.local_address(), *client, "localhost", &p.client,
                                     deadline_after(10s));
    accepted.wait();
    ASSERT_EQ(p.client_rc, 0);
    ASSERT_EQ(p.server_rc, 0);

    split = true;
    ASSERT_EQ(p.client.write("hello", 5), 5);
    // The 3 bytes are in the server's socket; try_read takes them and finds no whole record.
    const int fd = p.server.tcp().fd();
    ASSERT_TRUE(green::testing::wait_until(
        [&] {
          int queued = 0;
          return held.load() && ioctl(fd, FIONREAD, &queued) == 0 && queued == 3;
        },
        10s));
    char buf[16];
    EXPECT_EQ(p.server.try_read(buf, sizeof buf), -EAGAIN);
    // Nothing more has come: wait_readable parks until its deadline.
    p.server.set_read_deadline(deadline_after(200ms));
    const auto start = std::chrono::steady_clock::now();
    int woken = 0;
    int rc = 0;
    while ((rc = p.server.wait_readable()) == 0 && woken < 1000) {
      ++woken;  // a spurious return: what a server loop would do next
      EXPECT_EQ(p.server.try_read(buf, sizeof buf), -EAGAIN);
    }
    EXPECT_EQ(rc, -ETIMEDOUT);
    // One early return is the netpoller's (the 3 bytes' readiness, reported after try_read
    // took them, as Go's poller may); more is a loop that spins on the partial record.
    EXPECT_LE(woken, 2) << "wait_readable keeps returning at once for a partial record";
    EXPECT_GE(std::chrono::steady_clock::now() - start, 190ms);

    ASSERT_TRUE(release.send(1));
    p.server.set_read_deadline(deadline_after(10s));
    ASSERT_EQ(p.server.read(buf, sizeof buf), 5);
    EXPECT_EQ(std::string(buf, 5), "hello");
    p.client.close();
    p.server.close();
    pumps.wait();
  });
}

// The server's read loop: wait_readable(), then try_read() into a large buffer. try_read()
// returns a record's worth (16 KiB) at most, so a short read does not mean the socket is empty:
// with more records already in the socket (or in OpenSSL's read-ahead), wait_readable() must
// return at once, not park for readiness that the netpoller reported before and will not
// report again (its epoll is edge-triggered).
TEST_F(TlsStreamTest, WaitReadableAfterAShortTryReadReturnsWhileRecordsRemain) {
  green::run({.procs = 2}, [] {
    auto server = server_context();
    auto client = client_context();
    Pair p;
    handshake(&p, *server, *client);
    ASSERT_EQ(p.client_rc, 0);
    ASSERT_EQ(p.server_rc, 0);
    const std::string sent = pattern(200'000, 4);  // 13 records
    ASSERT_EQ(p.client.write(sent.data(), sent.size()), static_cast<ssize_t>(sent.size()));
    std::string got;
    std::vector<char> room(64 * 1024);
    int timeouts = 0;
    while (got.size() < sent.size() && timeouts == 0) {
      p.server.set_read_deadline(deadline_after(2s));
      const int w = p.server.wait_readable();
      if (w == -ETIMEDOUT) {
        ++timeouts;
        break;
      }
      ASSERT_EQ(w, 0);
      const ssize_t n = p.server.try_read(room.data(), room.size());
      if (n == -EAGAIN) continue;  // a stale wakeup
      ASSERT_GT(n, 0);
      got.append(room.data(), static_cast<std::size_t>(n));
    }
    EXPECT_EQ(timeouts, 0) << "wait_readable parked with " << sent.size() - got.size()
                           << " bytes sent and unread";
    EXPECT_TRUE(got == sent);
  });
}

TEST_F(TlsStreamTest, ReadDeadlineIsEtimedoutAndTheStreamStaysUsable) {
  green::run({.procs = 2}, [] {
    auto server = server_context();
    auto client = client_context();
    Pair p;
    handshake(&p, *server, *client);
    ASSERT_EQ(p.client_rc, 0);
    ASSERT_EQ(p.server_rc, 0);
    char buf[16];
    const auto start = std::chrono::steady_clock::now();
    p.client.set_read_deadline(deadline_after(100ms));
    EXPECT_EQ(p.client.read(buf, sizeof buf), -ETIMEDOUT);
    EXPECT_GE(std::chrono::steady_clock::now() - start, 90ms);
    p.client.set_read_deadline(deadline_after(10s));
    ASSERT_EQ(p.server.write("after", 5), 5);
    ASSERT_TRUE(read_exactly(p.client, buf, 5));
    EXPECT_EQ(std::string(buf, 5), "after");
  });
}

TEST_F(TlsStreamTest, CloseFromAnotherGreenThreadWakesParkedReadAndWrite) {
  green::run({.procs = 2}, [] {
    auto server = server_context();
    auto client = client_context();
    Pair p;
    handshake(&p, *server, *client);
    ASSERT_EQ(p.client_rc, 0);
    ASSERT_EQ(p.server_rc, 0);
    std::atomic<ssize_t> read_rc{1};
    green::WaitGroup done;
    done.add(1);
    green::go([&] {
      char buf[16];
      read_rc = p.client.read(buf, sizeof buf);
      done.done();
    });
    ASSERT_TRUE(green::testing::wait_until_waiting("netpoll read", 1));
    p.client.tcp().close();  // SocketHandle::close: any green thread
    done.wait();
    EXPECT_EQ(read_rc.load(), -ECANCELED);

    // A writer parked because its peer reads nothing: the socket buffers fill.
    Pair q;
    handshake(&q, *server, *client);
    ASSERT_EQ(q.client_rc, 0);
    ASSERT_EQ(q.server_rc, 0);
    std::atomic<ssize_t> write_rc{1};
    const std::string big(32 << 20, 'x');
    done.add(1);
    green::go([&] {
      write_rc = q.server.write(big.data(), big.size());
      done.done();
    });
    ASSERT_TRUE(green::testing::wait_until_waiting("netpoll write", 1));
    q.server.tcp().close();
    done.wait();
    EXPECT_EQ(write_rc.load(), -ECANCELED);
  });
}

TEST_F(TlsStreamTest, BoundContextCancellationEndsTheClientHandshake) {
  green::run({.procs = 2}, [] {
    auto client = client_context();
    // A peer that completes TCP's handshake (the kernel does) and never says a word of TLS.
    TcpListener silent;
    ASSERT_EQ(TcpListener::listen(loopback(), &silent), 0);
    TcpStream tcp;
    ASSERT_EQ(TcpStream::connect(silent.local_address(), &tcp), 0);
    auto [ctx, cancel] = green::with_cancel(green::Context::background());
    tcp.bind_context(ctx);
    int rc = 1;
    TlsHandshakeFailure why = TlsHandshakeFailure::kNone;
    std::unique_ptr<TlsSession> session;
    green::WaitGroup done;
    done.add(1);
    green::go([&] {
      rc = TlsSession::connect(tcp, *client, "localhost", silent.local_address().port(),
                               kNoDeadline, &session, &why);
      done.done();
    });
    ASSERT_TRUE(green::testing::wait_until_waiting("netpoll read", 1));
    cancel();
    done.wait();
    EXPECT_EQ(rc, -ECANCELED);
    EXPECT_EQ(why, TlsHandshakeFailure::kCanceled) << green::net::to_string(why);
    // A failed handshake leaves at most a dead session, for its last_error().
    if (session != nullptr) {
      EXPECT_FALSE(session->last_error().empty());
    }
  });
}

TEST_F(TlsStreamTest, ServerHandshakeEndsAtItsDeadlineAndWhenTheSocketIsClosed) {
  green::run({.procs = 2}, [] {
    auto server = server_context();
    TcpListener listener;
    ASSERT_EQ(TcpListener::listen(loopback(), &listener), 0);
    // A client that connects and says nothing: the deadline ends the server's handshake.
    TcpStream quiet;
    ASSERT_EQ(TcpStream::connect(listener.local_address(), &quiet), 0);
    TcpStream tcp;
    ASSERT_EQ(listener.accept(&tcp), 0);
    std::unique_ptr<TlsSession> session;
    TlsHandshakeFailure why = TlsHandshakeFailure::kNone;
    const auto start = std::chrono::steady_clock::now();
    EXPECT_EQ(TlsSession::accept(tcp, *server, deadline_after(200ms), &session, &why), -ETIMEDOUT);
    EXPECT_GE(std::chrono::steady_clock::now() - start, 190ms);
    EXPECT_EQ(why, TlsHandshakeFailure::kTimeout) << green::net::to_string(why);

    // Another, closed from another green thread while the handshake waits: kCanceled.
    TcpStream quiet2;
    ASSERT_EQ(TcpStream::connect(listener.local_address(), &quiet2), 0);
    TcpStream tcp2;
    ASSERT_EQ(listener.accept(&tcp2), 0);
    int rc = 1;
    why = TlsHandshakeFailure::kNone;
    green::WaitGroup done;
    done.add(1);
    green::go([&] {
      rc = TlsSession::accept(tcp2, *server, kNoDeadline, &session, &why);
      done.done();
    });
    ASSERT_TRUE(green::testing::wait_until_waiting("netpoll read", 1));
    tcp2.close();
    done.wait();
    EXPECT_EQ(rc, -ECANCELED);
    EXPECT_EQ(why, TlsHandshakeFailure::kCanceled) << green::net::to_string(why);
    EXPECT_EQ(server->stats().handshake_failures[static_cast<int>(TlsHandshakeFailure::kTimeout)],
              1u);
    EXPECT_EQ(server->stats().handshake_failures[static_cast<int>(TlsHandshakeFailure::kCanceled)],
              1u);
  });
}

// Table: what a client sends instead of a ClientHello, and what the server's accept says.
TEST_F(TlsStreamTest, ServerRefusesPlainHttpAndGarbage) {
  struct Case {
    std::string bytes;
    TlsHandshakeFailure why;
    std::string reply_starts;  // what the client reads back before the close
  };
  const Case cases[] = {
      {"GET / HTTP/1.1\r\nHost: x\r\n\r\n", TlsHandshakeFailure::kPlainHttp,
       "HTTP/1.1 400 Bad Request"},
      {std::string("\x00\xffnot TLS at all\r\n", 18), TlsHandshakeFailure::kNotTls, ""},
  };
  green::run({.procs = 2}, [&] {
    auto server = server_context();
    TcpListener listener;
    ASSERT_EQ(TcpListener::listen(loopback(), &listener), 0);
    for (const Case& c : cases) {
      TcpStream raw;
      ASSERT_EQ(TcpStream::connect(listener.local_address(), &raw), 0);
      ASSERT_EQ(raw.write(c.bytes.data(), c.bytes.size()), static_cast<ssize_t>(c.bytes.size()));
      raw.shutdown(SHUT_WR);  // all it has to say: the 400 need not wait for more
      TcpStream tcp;
      ASSERT_EQ(listener.accept(&tcp), 0);
      std::unique_ptr<TlsSession> session;
      TlsHandshakeFailure why = TlsHandshakeFailure::kNone;
      EXPECT_LT(TlsSession::accept(tcp, *server, deadline_after(5s), &session, &why), 0);
      EXPECT_EQ(why, c.why) << green::net::to_string(why) << " for " << c.bytes;
      tcp.close();
      std::string reply;
      char buf[1024];
      raw.set_read_deadline(deadline_after(5s));
      for (ssize_t n; (n = raw.read(buf, sizeof buf)) > 0;)
        reply.append(buf, static_cast<std::size_t>(n));
      EXPECT_EQ(reply.substr(0, c.reply_starts.size()), c.reply_starts) << reply;
      if (c.why == TlsHandshakeFailure::kPlainHttp) {
        EXPECT_NE(reply.find("The plain HTTP request was sent to HTTPS port"), std::string::npos)
            << reply;
      }
    }
  });
}

TEST_F(TlsStreamTest, ClientRefusesAWrongCaOrAWrongName) {
  make_other_ca();
  green::run({.procs = 2}, [] {
    auto server = server_context();
    struct Case {
      const char* what;
      TlsClientSettings settings;
      const char* name;
      bool ok;
    };
    const Case cases[] = {
        {"the right CA and name", {.ca_file = ca()}, "localhost", true},
        {"an IP address literal in the certificate", {.ca_file = ca()}, "127.0.0.1", true},
        {"another CA", {.ca_file = other_ca()}, "localhost", false},
        {"a name the certificate lacks", {.ca_file = ca()}, "example.com", false},
        {"another CA, verification off",
         {.ca_file = other_ca(), .verify = false},
         "example.com",
         true},
    };
    for (const Case& c : cases) {
      auto client = client_context(c.settings);
      Pair p;
      handshake(&p, *server, *client, c.name);
      if (c.ok) {
        EXPECT_EQ(p.client_rc, 0) << c.what << ": " << green::net::to_string(p.client_why);
        EXPECT_EQ(p.server_rc, 0) << c.what << ": " << green::net::to_string(p.server_why);
      } else {
        EXPECT_EQ(p.client_rc, -EPROTO) << c.what;
        EXPECT_EQ(p.client_why, TlsHandshakeFailure::kCertificate)
            << c.what << ": " << green::net::to_string(p.client_why);
        EXPECT_NE(p.server_rc, 0) << c.what << ": the server finished a refused handshake";
      }
    }
  });
}

TEST_F(TlsStreamTest, ClientResumesThroughItsSessionCache) {
  green::run({.procs = 2}, [] {
    auto server = server_context();
    TcpListener listener;
    ASSERT_EQ(TcpListener::listen(loopback(), &listener), 0);
    for (const std::size_t cache : {std::size_t{256}, std::size_t{0}}) {
      auto client = client_context({.ca_file = ca(), .session_cache_size = cache});
      bool resumed[2] = {};
      for (bool& r : resumed) {
        Pair p;
        handshake(&p, listener, *server, *client);
        ASSERT_EQ(p.client_rc, 0);
        ASSERT_EQ(p.server_rc, 0);
        // TLS 1.3's tickets follow the handshake: a byte read after them brings them in.
        ASSERT_EQ(p.server.write("x", 1), 1);
        char c;
        ASSERT_EQ(p.client.read(&c, 1), 1);
        EXPECT_EQ(p.client.session().resumed(), p.server.session().resumed());
        r = p.client.session().resumed();
        p.client.close();
        p.server.close();
      }
      EXPECT_FALSE(resumed[0]) << "cache " << cache;
      EXPECT_EQ(resumed[1], cache != 0) << "cache " << cache;
    }
    EXPECT_EQ(server->stats().handshakes_resumed, 1u);
    EXPECT_EQ(server->stats().handshakes_full, 3u);
  });
}

// Ticket keys rotate (rotate_ticket_keys(), what the timer does); a ticket stays good while
// its key is among the ticket_keys_kept newest, then the client falls back to a full handshake.
TEST_F(TlsStreamTest, TicketsOutliveRotationsWhileTheirKeyIsKept) {
  green::run({.procs = 2}, [] {
    TlsServerSettings settings;
    settings.ticket_keys_kept = 2;
    auto server = server_context(settings);
    auto client = client_context();
    TcpListener listener;
    ASSERT_EQ(TcpListener::listen(loopback(), &listener), 0);
    // One connection; returns whether it resumed. Reading a byte lets TLS 1.3's new tickets
    // in, and the client's cache keeps the newest.
    auto connect = [&] {
      Pair p;
      handshake(&p, listener, *server, *client);
      EXPECT_EQ(p.client_rc, 0);
      EXPECT_EQ(p.server_rc, 0);
      if (p.client_rc != 0 || p.server_rc != 0) return false;
      char c;
      EXPECT_EQ(p.server.write("x", 1), 1);
      EXPECT_EQ(p.client.read(&c, 1), 1);
      const bool resumed = p.client.session().resumed();
      p.client.close();
      p.server.close();
      return resumed;
    };
    EXPECT_FALSE(connect());
    server->rotate_ticket_keys();  // the ticket's key is now the older of the two kept
    EXPECT_TRUE(connect()) << "a ticket under the previous key did not resume";
    server->rotate_ticket_keys();
    server->rotate_ticket_keys();  // the newest ticket's key is dropped
    EXPECT_FALSE(connect()) << "a ticket under a dropped key resumed";
    EXPECT_TRUE(connect());
  });
}

TEST_F(TlsStreamTest, PeerCloseWithoutCloseNotifyIsEndOfStreamAndResetIsAnError) {
  green::run({.procs = 2}, [] {
    auto server = server_context();
    auto client = client_context();
    Pair p;
    handshake(&p, *server, *client);
    ASSERT_EQ(p.client_rc, 0);
    ASSERT_EQ(p.server_rc, 0);
    p.server.tcp().close();  // TCP's FIN, no close_notify
    char buf[16];
    EXPECT_EQ(p.client.read(buf, sizeof buf), 0);

    Pair q;
    handshake(&q, *server, *client);
    ASSERT_EQ(q.client_rc, 0);
    ASSERT_EQ(q.server_rc, 0);
    q.server.tcp().set_linger_zero();
    q.server.tcp().close();  // RST
    EXPECT_EQ(q.client.read(buf, sizeof buf), -ECONNRESET);
  });
}

// Stress (bounded: 64 connections): handshakes and records on 4 Ps at once, with failures
// among them on both sides: a quarter of the clients refuse the server's certificate (a wrong
// name: OpenSSL errors on the client side), an eighth send a broken handshake record (errors on
// the server side). Green threads park inside OpenSSL's calls and resume on whichever OS thread
// runs them next, and OpenSSL keeps its error queue per OS thread: an error one connection
// leaves there must not fail or misname another's handshake or read. A plain thread reloads
// the certificate and rotates the ticket keys all the while.
TEST_F(TlsStreamTest, StressManyConcurrentHandshakesAcrossPs) {
  constexpr int kClients = 64;
  constexpr int kBadName = kClients / 4;  // i % 8 == 3 or 7
  constexpr int kJunk = kClients / 8;     // i % 8 == 5
  constexpr int kGood = kClients - kBadName - kJunk;
  constexpr std::size_t kMessage = 4096;
  std::atomic<int> served{0}, echoed{0}, refused{0}, junk_closed{0}, wrong{0};
  green::run({.procs = 4}, [&] {
    TlsServerSettings settings;
    settings.max_handshakes = 2;  // some handshakes park for a slot
    auto server = server_context(settings);
    auto client = client_context();
    TcpListener listener;
    ASSERT_EQ(TcpListener::listen(loopback(), &listener), 0);
    green::WaitGroup connections;
    connections.add(1);
    green::go([&] {
      for (;;) {
        TcpStream tcp;
        if (listener.accept(&tcp) != 0) break;
        connections.add(1);
        green::go([&, tcp = std::move(tcp)]() mutable {
          TlsStream s;
          if (TlsStream::accept(std::move(tcp), *server, deadline_after(30s), &s) == 0) {
            served.fetch_add(1);
            char buf[kMessage];
            for (ssize_t n; (n = s.read(buf, sizeof buf)) > 0;) {
              if (s.write(buf, static_cast<std::size_t>(n)) != n) break;
            }
            s.close();
          }
          connections.done();
        });
      }
      connections.done();
    });
    // Meanwhile, SIGHUP's work and the rotation timer's, from a plain thread: new connections
    // take the current certificate generation and ticket key while they are replaced.
    std::atomic<bool> stop_reloading{false};
    std::atomic<int> reload_errors{0};
    std::thread reloader([&] {
      while (!stop_reloading.load()) {
        std::string error;
        if (!server->reload(&error)) reload_errors.fetch_add(1);
        server->rotate_ticket_keys();
      }
    });
    green::WaitGroup clients;
    for (int i = 0; i < kClients; ++i) {
      clients.add(1);
      green::go([&, i] {
        if (i % 8 == 5) {
          // A handshake record whose body is no ClientHello: OpenSSL fails on the server.
          TcpStream raw;
          std::string junk("\x16\x03\x01\x00\x40", 5);
          junk += pattern(64, i);
          char c;
          const bool closed =
              TcpStream::connect(listener.local_address(), &raw) == 0 &&
              raw.write(junk.data(), junk.size()) == static_cast<ssize_t>(junk.size());
          raw.set_read_deadline(deadline_after(30s));
          ssize_t n = 0;
          while (closed && (n = raw.read(&c, 1)) > 0) {
          }
          (closed && n != -ETIMEDOUT ? junk_closed : wrong).fetch_add(1);
          clients.done();
          return;
        }
        const bool bad_name = i % 4 == 3;
        TlsStream s;
        TlsHandshakeFailure why = TlsHandshakeFailure::kNone;
        const int rc = TlsStream::connect(listener.local_address(), *client,
                                          bad_name ? "example.com" : "localhost", &s,
                                          deadline_after(30s), &why);
        if (bad_name) {
          if (rc == -EPROTO && why == TlsHandshakeFailure::kCertificate) {
            refused.fetch_add(1);
          } else {
            wrong.fetch_add(1);
            ADD_FAILURE() << "client " << i << " (wrong name): " << rc << " "
                          << green::net::to_string(why);
          }
        } else if (rc != 0) {
          wrong.fetch_add(1);
          ADD_FAILURE() << "client " << i << ": " << rc << " " << green::net::to_string(why);
        } else {
          bool ok = true;
          for (int round = 0; round < 3 && ok; ++round) {
            const std::string out = pattern(kMessage, i * 3 + round);
            std::string in(kMessage, '\0');
            ok = s.write(out.data(), out.size()) == static_cast<ssize_t>(out.size()) &&
                 read_exactly(s, in.data(), in.size()) && in == out;
          }
          (ok ? echoed : wrong).fetch_add(1);
          s.close();
        }
        clients.done();
      });
    }
    clients.wait();
    stop_reloading = true;
    green::may_block([&] { reloader.join(); });
    listener.close();
    connections.wait();
    const auto stats = server->stats();
    EXPECT_EQ(reload_errors.load(), 0);
    EXPECT_GE(stats.reloads, 1u);
    EXPECT_EQ(stats.handshakes_full + stats.handshakes_resumed, static_cast<uint64_t>(kGood));
    EXPECT_EQ(stats.handshakes_waiting, 0u);
    uint64_t failed = 0;
    for (const uint64_t n : stats.handshake_failures) failed += n;
    EXPECT_EQ(failed, static_cast<uint64_t>(kBadName + kJunk));
    EXPECT_EQ(stats.handshake_failures[static_cast<int>(TlsHandshakeFailure::kOther)], 0u);
    EXPECT_EQ(stats.handshake_failures[static_cast<int>(TlsHandshakeFailure::kTimeout)], 0u);
    EXPECT_GE(stats.handshake_failures[static_cast<int>(TlsHandshakeFailure::kProtocol)],
              static_cast<uint64_t>(kJunk));
  });
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(refused.load(), kBadName);
  EXPECT_EQ(junk_closed.load(), kJunk);
  EXPECT_EQ(echoed.load(), kGood);
  EXPECT_EQ(served.load(), kGood);
}
