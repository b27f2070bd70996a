// Blocking operations that take a Context (sleep_for, Channel::recv/send, select's done_case,
// TcpStream read/write/connect), after_func, and the netpoller's hang-up hook
// (TcpStream::on_hangup) that cancels a server request's context when its client leaves.
#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "green/context.h"
#include "green/green.h"
#include "green/net.h"
#include "green/select.h"
#include "green/sync.h"
#include "tests/runtime/test_util.h"

using namespace std::chrono_literals;
using green::net::Address;
using green::net::TcpListener;
using green::net::TcpStream;

namespace {

using Clock = std::chrono::steady_clock;

void wait_for_watchers() {
  EXPECT_TRUE(green::testing::yield_until([] { return green::num_green_threads() == 1; }, 10s))
      << green::num_green_threads() << " green threads left";
}

// Cancels after d, from another green thread.
void cancel_later(green::CancelFn cancel, std::chrono::milliseconds d) {
  green::go([cancel = std::move(cancel), d] {
    green::sleep_for(d);  // the cancellation's timing is what the tests vary, not a wait
    cancel();
  });
}

Address loopback() { return *Address::parse("127.0.0.1:0"); }

void connected_pair(TcpListener& listener, TcpStream& client, TcpStream& server) {
  ASSERT_EQ(TcpListener::listen(loopback(), &listener), 0);
  ASSERT_EQ(TcpStream::connect(listener.local_address(), &client), 0);
  ASSERT_EQ(listener.accept(&server), 0);
}

// Waits (yielding) until pred holds or 5 s pass.
template <typename P>
bool eventually(P pred) {
  const auto until = Clock::now() + 5s;
  while (!pred()) {
    if (Clock::now() > until) return false;
    green::sleep_for(1ms);
  }
  return true;
}

}  // namespace

TEST(ContextOps, SleepForEndsEarlyWhenCancelledAndRunsFullOtherwise) {
  green::run({.procs = 2}, [] {
    auto [ctx, cancel] = green::with_cancel(green::Context::background());
    EXPECT_TRUE(green::sleep_for(5ms, ctx));
    const auto start = Clock::now();
    cancel_later(cancel, 20ms);
    EXPECT_FALSE(green::sleep_for(10s, ctx));
    EXPECT_LT(Clock::now() - start, 5s);
    EXPECT_FALSE(green::sleep_for(10s, ctx));  // already cancelled: does not park
    // A deadline context ends the sleep too.
    auto [tctx, tcancel] = green::with_timeout(green::Context::background(), 20ms);
    EXPECT_FALSE(green::sleep_for(10s, tctx));
    EXPECT_EQ(tctx.err(), green::ContextError::kDeadlineExceeded);
    tcancel();
    wait_for_watchers();
  });
}

TEST(ContextOps, ChannelRecvAndSendGiveUpWhenCancelled) {
  green::run({.procs = 2}, [] {
    green::Channel<int> ch(0);
    auto [ctx, cancel] = green::with_cancel(green::Context::background());
    // A value that arrives first is received.
    green::go([&ch] { (void)ch.send(7); });
    EXPECT_EQ(ch.recv(ctx), std::optional<int>(7));
    // Nothing arrives: the receive ends with nullopt at cancellation, the channel still open.
    cancel_later(cancel, 20ms);
    EXPECT_EQ(ch.recv(ctx), std::nullopt);
    EXPECT_TRUE(ctx.cancelled());
    // No receiver: the send gives up (and does not park at all once cancelled).
    auto [ctx2, cancel2] = green::with_cancel(green::Context::background());
    cancel_later(cancel2, 20ms);
    EXPECT_FALSE(ch.send(1, ctx2));
    EXPECT_FALSE(ch.send(1, ctx2));
    // The channel still works for others.
    green::go([&ch] { (void)ch.send(9); });
    EXPECT_EQ(ch.recv(), std::optional<int>(9));
    wait_for_watchers();
  });
}

TEST(ContextOps, SelectDoneCaseFires) {
  green::run({.procs = 2}, [] {
    green::Channel<int> ch(0);
    auto [ctx, cancel] = green::with_cancel(green::Context::background());
    cancel_later(cancel, 10ms);
    bool done = false;
    const int fired = green::select(green::recv_case(ch, [](std::optional<int>) {}),
                                    green::done_case(ctx, [&] { done = true; }));
    EXPECT_EQ(fired, 1);
    EXPECT_TRUE(done);
    wait_for_watchers();
  });
}

TEST(ContextOps, AfterFuncRunsOnceOnCancelUnlessStopped) {
  green::run({.procs = 2}, [] {
    auto [parent, cancel] = green::with_cancel(green::Context::background());
    auto [child, cancel_child] = green::with_cancel(parent);
    std::atomic<int> ran{0};
    std::atomic<int> stopped_one{0};
    auto stop1 = green::after_func(child, [&] { ran.fetch_add(1); });
    auto stop2 = green::after_func(child, [&] { stopped_one.fetch_add(1); });
    EXPECT_TRUE(stop2());   // unregistered before the cancel
    EXPECT_FALSE(stop2());  // and only once
    cancel();               // the parent's cancel reaches the child's hooks
    EXPECT_EQ(ran.load(), 1);
    EXPECT_EQ(stopped_one.load(), 0);
    EXPECT_FALSE(stop1());  // it ran
    cancel_child();
    EXPECT_EQ(ran.load(), 1);
    // On a cancelled context it runs at once.
    bool now = false;
    auto stop3 = green::after_func(child, [&] { now = true; });
    EXPECT_TRUE(now);
    EXPECT_FALSE(stop3());
    // background() is never cancelled: dropped.
    EXPECT_TRUE(green::after_func(green::Context::background(), [] {})());
  });
}

TEST(ContextOps, ParkedReadEndsWithECanceledAndTheSocketStaysUsable) {
  green::run({.procs = 2}, [] {
    TcpListener listener;
    TcpStream client, server;
    ASSERT_NO_FATAL_FAILURE(connected_pair(listener, client, server));
    auto [ctx, cancel] = green::with_cancel(green::Context::background());
    char buf[16];
    cancel_later(cancel, 20ms);
    const auto start = Clock::now();
    EXPECT_EQ(server.read(buf, sizeof buf, ctx), -ECANCELED);
    EXPECT_LT(Clock::now() - start, 5s);
    EXPECT_EQ(server.read(buf, sizeof buf, ctx), -ECANCELED);  // at once when cancelled
    // Not closed: data still flows.
    ASSERT_EQ(client.write("hi", 2), 2);
    EXPECT_EQ(server.read(buf, sizeof buf), 2);
    // With a live context, a read returns data as usual.
    auto [ctx2, cancel2] = green::with_cancel(green::Context::background());
    ASSERT_EQ(client.write("yo", 2), 2);
    EXPECT_EQ(server.read(buf, sizeof buf, ctx2), 2);
    cancel2();
    wait_for_watchers();
  });
}

TEST(ContextOps, ParkedWriteEndsWithECanceled) {
  green::run({.procs = 2}, [] {
    TcpListener listener;
    TcpStream client, server;
    ASSERT_NO_FATAL_FAILURE(connected_pair(listener, client, server));
    auto [ctx, cancel] = green::with_timeout(green::Context::background(), 50ms);
    // The client never reads: a large write fills both socket buffers and parks.
    std::string big(64 << 20, 'x');
    const auto start = Clock::now();
    EXPECT_EQ(server.write(big.data(), big.size(), ctx), -ECANCELED);
    EXPECT_LT(Clock::now() - start, 5s);
    EXPECT_EQ(ctx.err(), green::ContextError::kDeadlineExceeded);
    cancel();
    wait_for_watchers();
  });
}

// bind_context: one registration for every later operation of the stream (the HTTP client's
// way): a parked read, a parked write and wait_readable all end with -ECANCELED when the bound
// context is cancelled, reads in between work, and after unbind_context a cancelled context no
// longer matters.
TEST(ContextOps, BoundContextCancelsParkedReadsWritesAndWaits) {
  green::run({.procs = 2}, [] {
    TcpListener listener;
    TcpStream client, server;
    ASSERT_NO_FATAL_FAILURE(connected_pair(listener, client, server));
    auto [ctx, cancel] = green::with_cancel(green::Context::background());
    server.bind_context(ctx);
    EXPECT_TRUE(server.context_bound());
    char buf[16];
    ASSERT_EQ(client.write("ab", 2), 2);
    EXPECT_EQ(server.read(buf, sizeof buf), 2);  // data flows while bound and live
    cancel_later(cancel, 20ms);
    const auto start = Clock::now();
    EXPECT_EQ(server.read(buf, sizeof buf), -ECANCELED);  // parked, then woken by the cancel
    EXPECT_LT(Clock::now() - start, 5s);
    EXPECT_EQ(server.wait_readable(), -ECANCELED);  // at once: already cancelled
    std::string big(64 << 20, 'x');                 // the client never reads: the write parks
    EXPECT_EQ(server.write(big.data(), big.size()), -ECANCELED);
    // Unbound: the cancelled context no longer applies, the socket is usable.
    server.unbind_context();
    EXPECT_FALSE(server.context_bound());
    ASSERT_EQ(client.write("cd", 2), 2);
    EXPECT_EQ(server.read(buf, sizeof buf), 2);
    wait_for_watchers();
  });
}

TEST(ContextOps, BoundContextWakesAWriterParkedBeforeTheCancel) {
  green::run({.procs = 2}, [] {
    TcpListener listener;
    TcpStream client, server;
    ASSERT_NO_FATAL_FAILURE(connected_pair(listener, client, server));
    auto [ctx, cancel] = green::with_timeout(green::Context::background(), 50ms);
    server.bind_context(ctx);
    std::string big(64 << 20, 'x');
    const auto start = Clock::now();
    EXPECT_EQ(server.write(big.data(), big.size()), -ECANCELED);
    EXPECT_LT(Clock::now() - start, 5s);
    EXPECT_EQ(ctx.err(), green::ContextError::kDeadlineExceeded);
    // A moved stream takes its binding along: the moved-to stream still sees the cancel.
    TcpStream moved = std::move(server);
    EXPECT_TRUE(moved.context_bound());
    char buf[4];
    EXPECT_EQ(moved.read(buf, sizeof buf), -ECANCELED);
    cancel();
    wait_for_watchers();
  });
}

TEST(ContextOps, ConnectWithACancelledContextFailsAtOnce) {
  green::run({.procs = 2}, [] {
    TcpListener listener;
    ASSERT_EQ(TcpListener::listen(loopback(), &listener), 0);
    auto [ctx, cancel] = green::with_cancel(green::Context::background());
    TcpStream s;
    EXPECT_EQ(TcpStream::connect(listener.local_address(), &s, ctx), 0);
    cancel();
    TcpStream t;
    EXPECT_EQ(TcpStream::connect(listener.local_address(), &t, ctx), -ECANCELED);
    EXPECT_FALSE(t.is_open());
  });
}

// The hook the server's request context uses: nobody reads the socket, yet the netpoller
// reports the peer's hang-up.
TEST(ContextOps, HangupHookFiresOnCloseAndHalfCloseButNotOnData) {
  green::run({.procs = 2}, [] {
    for (const int how : {-1, static_cast<int>(SHUT_WR)}) {
      TcpListener listener;
      TcpStream client, server;
      ASSERT_NO_FATAL_FAILURE(connected_pair(listener, client, server));
      auto [ctx, cancel] = green::with_cancel(green::Context::background());
      server.on_hangup(cancel);
      // Data (a pipelined request) is not a hang-up, and stays in the socket.
      ASSERT_EQ(client.write("GET / HTTP/1.1\r\n\r\n", 18), 18);
      green::sleep_for(30ms);  // a window for something not to happen, not a wait
      EXPECT_FALSE(ctx.cancelled());
      // The client leaves (closes, or shuts down its sending side).
      if (how < 0) {
        client.close();
      } else {
        client.shutdown(how);
      }
      EXPECT_TRUE(eventually([&] { return ctx.cancelled(); }));
      char buf[64];
      EXPECT_EQ(server.read(buf, sizeof buf), 18);  // the data was not consumed
      server.clear_hangup();
    }
  });
}

TEST(ContextOps, HangupHookFiresAtOnceWhenAlreadySeenAndNotAfterClear) {
  green::run({.procs = 2}, [] {
    TcpListener listener;
    TcpStream client, server;
    ASSERT_NO_FATAL_FAILURE(connected_pair(listener, client, server));
    // Cleared before the hang-up: never called.
    std::atomic<int> calls{0};
    server.on_hangup([&calls] { calls.fetch_add(1); });
    server.clear_hangup();
    client.close();
    char buf[8];
    EXPECT_EQ(server.read(buf, sizeof buf), 0);
    // The netpoller sees the FIN's event at its next poll (a read wait returns at once then).
    EXPECT_EQ(server.wait_readable(), 0);
    EXPECT_TRUE(eventually([&] { return server.peer_gone(); }));
    EXPECT_EQ(calls.load(), 0);
    // Registered after the hang-up was seen (peer_gone() above): runs at once.
    server.on_hangup([&calls] { calls.fetch_add(1); });
    EXPECT_TRUE(eventually([&] { return calls.load() == 1; }));
    server.clear_hangup();
  });
}

// A CPU-bound green thread on every P: the hang-up is still seen (the hook counts as a
// netpoll waiter, so sysmon polls for it).
TEST(ContextOps, HangupHookFiresWhileEveryPIsBusy) {
  green::run({.procs = 1}, [] {
    TcpListener listener;
    TcpStream client, server;
    ASSERT_NO_FATAL_FAILURE(connected_pair(listener, client, server));
    listener.close();
    auto [ctx, cancel] = green::with_cancel(green::Context::background());
    server.on_hangup(cancel);
    // The hang-up comes once the only P is busy (the loop below has begun), not after a
    // guessed delay.
    std::atomic<bool> busy{false};
    std::thread closer([&busy, fd = client.fd()] {
      (void)green::testing::wait_until([&] { return busy.load(); }, 10s);
      ::shutdown(fd, SHUT_RDWR);
    });
    const auto start = Clock::now();
    while (!ctx.cancelled() && Clock::now() - start < 5s) {
      busy.store(true);
      green::checkpoint();  // busy, never parks
    }
    closer.join();
    EXPECT_TRUE(ctx.cancelled());
    EXPECT_LT(Clock::now() - start, 2s);
    server.clear_hangup();
  });
}
