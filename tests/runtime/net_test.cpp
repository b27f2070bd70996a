// Sockets on the netpoller: real TCP over 127.0.0.1 (and ::1), green threads on both ends.
#include "green/net.h"

#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "green/channel.h"
#include "green/green.h"
#include "green/sync.h"
#include "runtime/netpoll.h"
#include "tests/runtime/test_util.h"

using namespace std::chrono_literals;
using green::net::Address;
using green::net::TcpListener;
using green::net::TcpStream;
using green::testing::scaled;

namespace {

// Whether OS thread `tid` of this process is inside poll(2) or ppoll(2) now.
bool in_poll(pid_t tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/syscall");
  long nr = -1;
  f >> nr;
#if defined(SYS_poll)
  if (nr == SYS_poll) return true;
#endif
  return nr == SYS_ppoll;
}

bool reader_parked() { return green::testing::wait_until_waiting("netpoll read", 1); }

}  // namespace

namespace {

Address loopback(uint16_t port = 0) { return *Address::parse("127.0.0.1:" + std::to_string(port)); }

// Raises the soft open-files limit to the hard one; returns the new soft limit.
rlim_t raise_nofile() {
  rlimit r{};
  getrlimit(RLIMIT_NOFILE, &r);
  r.rlim_cur = r.rlim_max;
  setrlimit(RLIMIT_NOFILE, &r);
  getrlimit(RLIMIT_NOFILE, &r);
  return r.rlim_cur;
}

// An echo server: one green thread per connection, until the listener is closed.
struct EchoServer {
  TcpListener listener;
  Address address;
  green::WaitGroup connections;
  std::atomic<int64_t> accepted{0};

  void start(const Address& at = loopback()) {
    ASSERT_EQ(TcpListener::listen(at, &listener), 0);
    address = listener.local_address();
    connections.add(1);
    green::go([this] {
      for (;;) {
        TcpStream conn;
        const int rc = listener.accept(&conn);
        if (rc == -ECANCELED) break;
        if (rc != 0) {
          ADD_FAILURE() << "accept: " << std::strerror(-rc);
          break;
        }
        accepted.fetch_add(1);
        connections.add(1);
        green::go([this, c = std::move(conn)]() mutable {
          char buf[4096];
          for (;;) {
            const ssize_t n = c.read(buf, sizeof buf);
            if (n <= 0) break;
            if (c.write(buf, static_cast<size_t>(n)) != n) break;
          }
          connections.done();
        });
      }
      connections.done();
    });
  }
  void stop() {
    listener.close();
    connections.wait();
  }
};

std::string payload_for(int64_t i, size_t size) {
  std::string s(size, '\0');
  for (size_t k = 0; k < size; ++k) s[k] = static_cast<char>('a' + (i * 7 + k * 13) % 26);
  return s;
}

// Reads exactly n bytes (or fails).
bool read_exactly(TcpStream& s, char* buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    const ssize_t r = s.read(buf + got, n - got);
    if (r <= 0) return false;
    got += static_cast<size_t>(r);
  }
  return true;
}

// A listener on an ephemeral loopback port and one connection through it, both ends.
void connected_pair(TcpListener& listener, TcpStream& client, TcpStream& server) {
  ASSERT_EQ(TcpListener::listen(loopback(), &listener), 0);
  ASSERT_EQ(TcpStream::connect(listener.local_address(), &client), 0);
  ASSERT_EQ(listener.accept(&server), 0);
}

}  // namespace

TEST(Address, ParsesAndFormats) {
  EXPECT_EQ(Address::parse("127.0.0.1:8080")->to_string(), "127.0.0.1:8080");
  EXPECT_EQ(Address::parse("[::1]:443")->to_string(), "[::1]:443");
  EXPECT_EQ(Address::parse(":80")->to_string(), "0.0.0.0:80");
  EXPECT_EQ(Address::parse("localhost:1")->to_string(), "127.0.0.1:1");
  EXPECT_FALSE(Address::parse("127.0.0.1"));
  EXPECT_FALSE(Address::parse("127.0.0.1:65536"));
  EXPECT_FALSE(Address::parse("127.0.0.1:8x"));
  EXPECT_FALSE(Address::parse("300.0.0.1:80"));
  EXPECT_FALSE(Address::parse("[::1:80"));
  EXPECT_FALSE(Address::parse("example.com:80"));
}

// The headline: 10,000 connections open at once in one process, every byte echoed.
TEST(Net, EchoTenThousandConcurrentConnections) {
  const rlim_t limit = raise_nofile();
  // Two descriptors per connection (client and server side) plus a margin for the process.
  const int64_t fit = (static_cast<int64_t>(limit) - 64) / 2;
  const int64_t n = std::min<int64_t>(scaled(10'000, 1'000), fit);
  if (n < 10'000)
    std::printf("open-files limit %llu: %lld connections\n", static_cast<unsigned long long>(limit),
                static_cast<long long>(n));
  constexpr size_t kBytes = 3000;  // three round trips of 1000 per connection
  std::atomic<int64_t> echoed{0};
  std::atomic<int64_t> failures{0};
  green::run({.procs = 2}, [&] {
    EchoServer server;
    server.start();
    green::WaitGroup connected, finished;
    // Clients hold their connection open until every client is connected.
    std::atomic<int64_t> open{0};
    green::WaitGroup gate;
    gate.add(1);
    for (int64_t i = 0; i < n; ++i) {
      connected.add(1);
      finished.add(1);
      green::go([&, i] {
        TcpStream s;
        int rc = TcpStream::connect(server.address, &s);
        connected.done();
        if (rc != 0) {
          failures.fetch_add(1);
          finished.done();
          return;
        }
        open.fetch_add(1);
        gate.wait();
        const std::string out = payload_for(i, kBytes);
        std::string in(kBytes, '\0');
        bool ok = true;
        for (size_t off = 0; off < kBytes && ok; off += 1000) {
          ok = s.write(out.data() + off, 1000) == 1000 && read_exactly(s, in.data() + off, 1000);
        }
        if (ok && in == out) {
          echoed.fetch_add(static_cast<int64_t>(kBytes));
        } else {
          failures.fetch_add(1);
        }
        finished.done();
      });
    }
    connected.wait();
    EXPECT_EQ(open.load(), n) << "every connection is open at the same time";
    // connect() returns once the kernel completed the handshake; the server's accepts follow.
    EXPECT_TRUE(green::testing::wait_until([&] { return server.accepted.load() == n; }, 10s))
        << server.accepted.load() << " of " << n << " accepted";
    gate.done();
    finished.wait();
    server.stop();
  });
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(echoed.load(), n * static_cast<int64_t>(kBytes));
}

TEST(Net, LargeWriteParksUntilTheReaderCatchesUp) {
  constexpr size_t kSize = 8 << 20;  // far more than the socket buffers hold
  green::run({.procs = 2}, [&] {
    TcpListener listener;
    ASSERT_EQ(TcpListener::listen(loopback(), &listener), 0);
    const Address at = listener.local_address();
    green::WaitGroup wg;
    wg.add(1);
    green::go([&] {
      TcpStream s;
      ASSERT_EQ(TcpStream::connect(at, &s), 0);
      std::vector<char> data(kSize);
      for (size_t i = 0; i < kSize; ++i) data[i] = static_cast<char>(i * 31);
      EXPECT_EQ(s.write(data.data(), kSize), static_cast<ssize_t>(kSize));
      s.shutdown(SHUT_WR);
      wg.done();
    });
    TcpStream conn;
    ASSERT_EQ(listener.accept(&conn), 0);
    std::vector<char> got;
    char buf[1000];  // small reads: the writer must park on a full buffer
    for (;;) {
      const ssize_t r = conn.read(buf, sizeof buf);
      ASSERT_GE(r, 0);
      if (r == 0) break;
      got.insert(got.end(), buf, buf + r);
      // A slow reader on purpose (a pause per MiB), not a wait: the writer meets a full buffer.
      if (got.size() % (1 << 20) < 1000) green::sleep_for(1ms);
    }
    wg.wait();
    ASSERT_EQ(got.size(), kSize);
    for (size_t i = 0; i < kSize; ++i) {
      if (got[i] != static_cast<char>(i * 31)) FAIL() << "byte " << i << " differs";
    }
  });
}

TEST(Net, ReadDeadlineTimesOutAndLeavesTheSocketUsable) {
  green::run({.procs = 2}, [&] {
    TcpListener listener;
    TcpStream client, server;
    ASSERT_NO_FATAL_FAILURE(connected_pair(listener, client, server));

    client.set_read_deadline(green::net::deadline_after(50ms));
    char c = 0;
    const auto start = std::chrono::steady_clock::now();
    EXPECT_EQ(client.read(&c, 1), -ETIMEDOUT);
    EXPECT_GE(std::chrono::steady_clock::now() - start, 50ms);
    // A deadline already in the past fails at once, without parking.
    EXPECT_EQ(client.read(&c, 1), -ETIMEDOUT);

    client.set_read_deadline(green::net::kNoDeadline);
    ASSERT_EQ(server.write("x", 1), 1);
    EXPECT_EQ(client.read(&c, 1), 1);
    EXPECT_EQ(c, 'x');
    // The same for writes, on a peer that never reads.
    client.set_write_deadline(green::net::deadline_after(50ms));
    std::vector<char> big(1 << 20, 'y');
    ssize_t rc = 0;
    for (int i = 0; i < 64 && rc >= 0; ++i) rc = client.write(big.data(), big.size());
    EXPECT_EQ(rc, -ETIMEDOUT);
  });
}

// Writing to a peer that has gone fails with -EPIPE (or -ECONNRESET) and never raises
// SIGPIPE, whose default action would end the process: a library cannot count on its program
// ignoring the signal, as nginx and Go's runtime do.
TEST(Net, WriteToAGonePeerFailsWithoutSigpipe) {
  struct sigaction old {};
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  ASSERT_EQ(sigaction(SIGPIPE, &dfl, &old), 0);
  green::run({.procs = 2}, [&] {
    TcpListener listener;
    TcpStream client, server;
    ASSERT_NO_FATAL_FAILURE(connected_pair(listener, client, server));
    server.close();
    ssize_t rc = 0;
    // The first write may still be accepted (the RST comes back with it); later ones fail.
    for (int i = 0; i < 100 && rc >= 0; ++i) rc = client.write("x", 1);
    EXPECT_TRUE(rc == -EPIPE || rc == -ECONNRESET) << rc;
  });
  sigaction(SIGPIPE, &old, nullptr);
}

// A descriptor's deadline timer is armed lazily: it stays in the timer heap across waits and
// follows each wait's deadline when it fires. Every wait must still time out at its own
// deadline, never before it and not much after it, whether that deadline is earlier or later
// than the one the timer was pending for. (Lower bounds are exact; upper bounds generous.)
TEST(Net, EachWaitTimesOutAtItsOwnDeadlineEarlierOrLaterThanThePreviousOne) {
  green::run({.procs = 2}, [&] {
    TcpListener listener;
    TcpStream client, server;
    ASSERT_NO_FATAL_FAILURE(connected_pair(listener, client, server));
    char buf[16];
    auto send_after = [&](std::chrono::milliseconds d) {
      green::go([&server, d] {
        green::sleep_for(d);  // the data's delay is what this test varies, not a wait
        (void)server.write("x", 1);
      });
    };
    auto timed_read = [&](std::chrono::milliseconds deadline, ssize_t* rc) {
      client.set_read_deadline(green::net::deadline_after(deadline));
      const auto start = std::chrono::steady_clock::now();
      *rc = client.read(buf, sizeof buf);
      return std::chrono::steady_clock::now() - start;
    };
    ssize_t rc = 0;
    // 1. Data well before a long deadline: the timer stays pending at ~2 s.
    send_after(20ms);
    EXPECT_LT(timed_read(2000ms, &rc), 1500ms);
    EXPECT_EQ(rc, 1);
    // 2. An earlier deadline than the pending timer's: it must be moved, not waited out.
    auto took = timed_read(100ms, &rc);
    EXPECT_EQ(rc, -ETIMEDOUT);
    EXPECT_GE(took, 100ms);
    EXPECT_LT(took, 1500ms);
    // 3. Many quick waits (the keep-alive pattern) with a 1 s deadline each, then a later
    //    wait with a 150 ms deadline and no data: on time.
    client.set_read_deadline(green::net::deadline_after(1000ms));
    for (int i = 0; i < 50; ++i) {
      ASSERT_EQ(server.write("y", 1), 1);
      EXPECT_EQ(client.read(buf, sizeof buf), 1) << i;
      client.set_read_deadline(green::net::deadline_after(1000ms));
    }
    took = timed_read(150ms, &rc);
    EXPECT_EQ(rc, -ETIMEDOUT);
    EXPECT_GE(took, 150ms);
    EXPECT_LT(took, 1500ms);
    // 4. A short deadline whose wait got data, then a longer one without data: the timer,
    //    still pending at the short one, must follow the new deadline, not fire the old one.
    send_after(10ms);
    EXPECT_EQ((timed_read(60ms, &rc), rc), 1);
    took = timed_read(400ms, &rc);
    EXPECT_EQ(rc, -ETIMEDOUT);
    EXPECT_GE(took, 400ms);
    // 5. And the socket is still fine.
    client.set_read_deadline(green::net::kNoDeadline);
    ASSERT_EQ(server.write("z", 1), 1);
    EXPECT_EQ(client.read(buf, sizeof buf), 1);
    EXPECT_EQ(buf[0], 'z');
  });
}

// The idle keep-alive pattern: read until a short read, then wait_readable() without a buffer.
// Data and the peer's FIN often arrive in one epoll edge; a read that consumed that edge and
// returned only the data must not leave the next wait parked until its deadline (end of stream
// is a state), and a wait_readable() that consumed an edge must not make the next read() wait
// for another one. Repeated because the edges' grouping depends on timing.
TEST(Net, WaitReadableAfterAShortReadSeesNewDataAndEndOfStream) {
  green::run({.procs = 2}, [&] {
    for (int round = 0; round < 30; ++round) {
      TcpListener listener;
      TcpStream client, server;
      ASSERT_NO_FATAL_FAILURE(connected_pair(listener, client, server));
      server.set_read_deadline(green::net::deadline_after(5s));
      green::Channel<int> step;
      green::Channel<std::string> got;
      green::go([&] {
        char buf[64];
        std::string log;
        auto read_once = [&] {
          const ssize_t n = server.read(buf, sizeof buf);
          if (n > 0) {
            log.append(buf, static_cast<size_t>(n));
          } else {
            log += '<';
            log += std::to_string(n);
            log += '>';
          }
        };
        read_once();  // parks: nothing sent yet; a short read
        (void)step.send(1);
        log += '|';
        log += std::to_string(server.wait_readable());
        log += '|';
        read_once();  // must not wait for an edge wait_readable() consumed
        (void)step.send(2);
        read_once();  // parks again; the data and the FIN follow together
        log += '|';
        log += std::to_string(server.wait_readable());
        log += '|';
        read_once();  // end of stream
        (void)got.send(log);
      });
      // Each write goes to a parked reader (the dump shows it in its netpoll wait): the edge
      // paths below, not a read that finds data waiting.
      ASSERT_TRUE(reader_parked()) << "round " << round;
      ASSERT_EQ(client.write("abc", 3), 3);
      ASSERT_TRUE(step.recv().has_value());
      ASSERT_EQ(client.write("def", 3), 3);
      ASSERT_TRUE(step.recv().has_value());
      ASSERT_TRUE(reader_parked()) << "round " << round;
      ASSERT_EQ(client.write("ghi", 3), 3);
      ASSERT_EQ(client.shutdown(SHUT_WR), 0);
      const auto start = std::chrono::steady_clock::now();
      EXPECT_EQ(got.recv(), std::optional<std::string>("abc|0|defghi|0|<0>")) << "round " << round;
      EXPECT_LT(std::chrono::steady_clock::now() - start, 4s) << "round " << round;
    }
  });
}

TEST(Net, CloseWakesAParkedReaderAndAParkedAccept) {
  green::run({.procs = 2}, [&] {
    TcpListener listener;
    TcpStream client, server;
    ASSERT_NO_FATAL_FAILURE(connected_pair(listener, client, server));

    green::Channel<ssize_t> read_result, accept_result;
    green::go([&] {
      char buf[16];
      (void)read_result.send(client.read(buf, sizeof buf));
    });
    green::go([&] {
      TcpStream extra;
      (void)accept_result.send(listener.accept(&extra));
    });
    // Both parked (an accept waits as a netpoll read too), seen in the dump, not guessed.
    ASSERT_TRUE(green::testing::wait_until_waiting("netpoll read", 2))
        << green::dump_green_threads();
    client.close();
    listener.close();
    EXPECT_EQ(read_result.recv(), std::optional<ssize_t>(-ECANCELED));
    EXPECT_EQ(accept_result.recv(), std::optional<ssize_t>(-ECANCELED));
    // Operations on a closed stream fail cleanly.
    char c;
    EXPECT_EQ(client.read(&c, 1), -ECANCELED);
    EXPECT_EQ(client.write("x", 1), -ECANCELED);
  });
}

// The graceful drain's wake (server/connection.cpp): a parked reader returns as if readable,
// finds nothing, and the socket and what later arrives stay its own. From a plain thread too.
TEST(Net, WakeReaderWakesAParkedReaderWithoutClosingTheSocket) {
  green::run({.procs = 2}, [&] {
    TcpListener listener;
    TcpStream client, server;
    ASSERT_NO_FATAL_FAILURE(connected_pair(listener, client, server));

    // Nobody parked: the wake is remembered, and the next wait returns at once.
    server.wake_reader();
    server.set_read_deadline(green::net::deadline_after(10s));
    EXPECT_EQ(server.wait_readable(), 0);
    char buf[16];
    EXPECT_EQ(server.try_read(buf, sizeof buf), -EAGAIN);

    green::Channel<int> woken;
    green::go([&] { (void)woken.send(server.wait_readable()); });
    // Parked: the netpoller counts it as a waiter.
    ASSERT_TRUE(
        green::testing::wait_until([] { return green::detail::netpoll_waiters() > 0; }, 10s));
    std::thread([&] { server.wake_reader(); }).join();  // from a plain thread
    EXPECT_EQ(woken.recv(), std::optional<int>(0));
    EXPECT_EQ(server.try_read(buf, sizeof buf), -EAGAIN);
    EXPECT_TRUE(server.is_open());
    // Still a working socket, both ways.
    ASSERT_EQ(client.write("hello", 5), 5);
    ASSERT_TRUE(read_exactly(server, buf, 5));
    EXPECT_EQ(std::string(buf, 5), "hello");
    ASSERT_EQ(server.write("back", 4), 4);
    ASSERT_TRUE(read_exactly(client, buf, 4));
    EXPECT_EQ(std::string(buf, 4), "back");
    // A closed stream ignores it.
    server.close();
    server.wake_reader();
  });
}

// A reader parked on a socket that another green thread closes must never see the data of a
// new connection that reuses the descriptor number, and every new connection must get its own
// bytes, while connections churn on several Ps.
TEST(Net, DescriptorReuseRightAfterCloseUnderLoad) {
  const int workers = 8;
  const int rounds = static_cast<int>(scaled(300, 60));
  std::atomic<int64_t> wrong{0}, ok{0}, reused{0};
  green::run({.procs = 2}, [&] {
    EchoServer server;
    server.start();
    green::WaitGroup wg;
    for (int w = 0; w < workers; ++w) {
      wg.add(1);
      green::go([&, w] {
        for (int r = 0; r < rounds; ++r) {
          TcpStream victim;
          if (TcpStream::connect(server.address, &victim) != 0) {
            wrong.fetch_add(1);
            continue;
          }
          const int old_fd = victim.fd();
          green::WaitGroup reader;
          reader.add(1);
          std::atomic<ssize_t> got{1};
          green::go([&] {
            char buf[64];
            got.store(victim.read(buf, sizeof buf));  // parks: the server echoes nothing yet
            reader.done();
          });
          green::yield();
          victim.close();
          // Odd rounds let the woken reader finish first, so that the descriptor is really
          // closed and its number free for the next socket; even rounds reuse at once (the
          // number is then still held by the reader's operation in progress).
          if (r % 2 == 1) reader.wait();
          // Make data arrive on a new connection right away.
          TcpStream fresh;
          if (TcpStream::connect(server.address, &fresh) != 0) {
            wrong.fetch_add(1);
            reader.wait();
            continue;
          }
          if (fresh.fd() == old_fd) reused.fetch_add(1);
          const std::string msg = payload_for(w * 100000 + r, 48);
          char back[48];
          if (fresh.write(msg.data(), msg.size()) != 48 || !read_exactly(fresh, back, 48) ||
              std::memcmp(back, msg.data(), 48) != 0) {
            wrong.fetch_add(1);
          }
          if (r % 2 == 0) reader.wait();
          // The old reader either was woken by the close or read nothing before it.
          if (got.load() != -ECANCELED) wrong.fetch_add(1);
          ok.fetch_add(1);
        }
        wg.done();
      });
    }
    wg.wait();
    server.stop();
  });
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(ok.load(), workers * rounds);
  std::printf("descriptor numbers reused right after close: %lld times\n",
              static_cast<long long>(reused.load()));
}

TEST(Net, Ipv6Loopback) {
  green::run({.procs = 2}, [&] {
    TcpListener listener;
    const int rc = TcpListener::listen(*Address::parse("[::1]:0"), &listener);
    if (rc == -EADDRNOTAVAIL || rc == -EAFNOSUPPORT) GTEST_SKIP() << "no IPv6 loopback";
    ASSERT_EQ(rc, 0);
    EXPECT_EQ(listener.local_address().host(), "::1");
    green::go([&] {
      TcpStream s;
      ASSERT_EQ(TcpStream::connect(listener.local_address(), &s), 0);
      s.write("ping", 4);
    });
    TcpStream conn;
    Address peer;
    ASSERT_EQ(listener.accept(&conn, &peer), 0);
    EXPECT_EQ(peer.family(), AF_INET6);
    char buf[4];
    ASSERT_TRUE(read_exactly(conn, buf, 4));
    EXPECT_EQ(std::string(buf, 4), "ping");
  });
}

TEST(Net, ConnectErrorsAndReusePort) {
  green::run({.procs = 1}, [&] {
    // A port nobody listens on: bind one, close it, connect to it.
    Address dead;
    {
      TcpListener l;
      ASSERT_EQ(TcpListener::listen(loopback(), &l), 0);
      dead = l.local_address();
    }
    TcpStream s;
    EXPECT_EQ(TcpStream::connect(dead, &s), -ECONNREFUSED);
    EXPECT_FALSE(s.is_open());

    // Two listeners on one port with SO_REUSEPORT; without it the second bind fails.
    TcpListener a, b, c;
    green::net::ListenOptions reuse;
    reuse.reuse_port = true;
    ASSERT_EQ(TcpListener::listen(loopback(), &a, reuse), 0);
    const Address at = a.local_address();
    EXPECT_EQ(TcpListener::listen(at, &b, reuse), 0);
    EXPECT_EQ(TcpListener::listen(at, &c), -EADDRINUSE);
  });
}

TEST(Net, PlainThreadsCanUseSockets) {
  // Outside the runtime the same calls block the OS thread (poll(2)) instead of parking.
  TcpListener listener;
  ASSERT_EQ(TcpListener::listen(loopback(), &listener), 0);
  TcpStream client;
  ASSERT_EQ(TcpStream::connect(listener.local_address(), &client), 0);
  TcpStream server;
  ASSERT_EQ(listener.accept(&server), 0);
  // The writer waits until the reader's OS thread is blocked in poll(2) (its current system
  // call, from /proc), so the read below is known to have blocked, not found data waiting.
  const pid_t reader = static_cast<pid_t>(syscall(SYS_gettid));
  bool reader_blocked = false;
  std::thread writer([&] {
    reader_blocked = green::testing::wait_until([reader] { return in_poll(reader); }, 10s);
    server.write("hello", 5);
  });
  char buf[5];
  ASSERT_TRUE(read_exactly(client, buf, 5));
  EXPECT_EQ(std::string(buf, 5), "hello");
  writer.join();
  EXPECT_TRUE(reader_blocked) << "the plain thread's read never blocked in poll(2)";
  client.set_read_deadline(green::net::deadline_after(20ms));
  EXPECT_EQ(client.read(buf, 1), -ETIMEDOUT);
}

TEST(Net, AcceptedSocketsHaveNodelayAndVectoredIoWorks) {
  green::run({.procs = 2}, [&] {
    TcpListener listener;
    ASSERT_EQ(TcpListener::listen(loopback(), &listener), 0);
    TcpStream client;
    ASSERT_EQ(TcpStream::connect(listener.local_address(), &client), 0);
    TcpStream server;
    Address peer;
    ASSERT_EQ(listener.accept(&server, &peer), 0);
    EXPECT_EQ(peer.to_string(), client.local_address().to_string());
    int nodelay = 0;
    socklen_t len = sizeof nodelay;
    ASSERT_EQ(getsockopt(server.fd(), IPPROTO_TCP, TCP_NODELAY, &nodelay, &len), 0);
    EXPECT_NE(nodelay, 0);

    char a[] = "head-", b[] = "body";
    iovec out[2] = {{a, 5}, {b, 4}};
    ASSERT_EQ(client.writev(out, 2), 9);
    char x[3], y[6];
    iovec in[2] = {{x, 3}, {y, 6}};
    size_t got = 0;
    while (got < 9) {
      const ssize_t n = server.readv(in, 2);
      ASSERT_GT(n, 0);
      got += static_cast<size_t>(n);
      if (got < 9) {  // rare on loopback: advance the iovecs past what arrived
        size_t skip = static_cast<size_t>(n);
        for (iovec& v : in) {
          const size_t step = std::min(skip, v.iov_len);
          v.iov_base = static_cast<char*>(v.iov_base) + step;
          v.iov_len -= step;
          skip -= step;
        }
      }
    }
    EXPECT_EQ(std::string(x, 3) + std::string(y, 6), "head-body");
    // Half close: the peer reads end of stream, and can still answer.
    ASSERT_EQ(client.shutdown(SHUT_WR), 0);
    char c;
    EXPECT_EQ(server.read(&c, 1), 0);
    ASSERT_EQ(server.write("k", 1), 1);
    EXPECT_EQ(client.read(&c, 1), 1);
  });
}
