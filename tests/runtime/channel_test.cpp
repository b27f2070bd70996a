// Channels: Go's semantics, from green and plain threads.
#include "green/channel.h"

#include <atomic>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "green/green.h"
#include "green/sync.h"
#include "tests/runtime/test_util.h"

using namespace std::chrono_literals;

TEST(Channel, UnbufferedSendBlocksUntilReceiverArrives) {
  green::run({.procs = 2}, [] {
    green::Channel<int> ch(0);
    std::atomic<bool> sent{false};
    green::WaitGroup wg;
    wg.add(1);
    green::go([&] {
      EXPECT_TRUE(ch.send(7));
      sent.store(true);
      wg.done();
    });
    // Parked in send (the dump shows it), not done: nobody has received.
    ASSERT_TRUE(green::testing::wait_until_waiting("chan send", 1));
    EXPECT_FALSE(sent.load()) << "unbuffered send completed with no receiver";
    EXPECT_EQ(ch.recv(), 7);
    wg.wait();
    EXPECT_TRUE(sent.load());
  });
}

TEST(Channel, BufferedChannelIsFifoAndBlocksWhenFull) {
  green::run({.procs = 2}, [] {
    green::Channel<std::string> ch(3);
    for (int i = 0; i < 3; ++i) EXPECT_EQ(ch.try_send(std::to_string(i)), green::ChanStatus::kOk);
    EXPECT_EQ(ch.try_send("x"), green::ChanStatus::kWouldBlock);
    EXPECT_EQ(ch.size(), 3u);
    green::WaitGroup wg;
    wg.add(1);
    green::go([&] {
      EXPECT_TRUE(ch.send("3"));  // parks until a slot frees
      wg.done();
    });
    for (int i = 0; i < 4; ++i) EXPECT_EQ(ch.recv(), std::to_string(i));
    wg.wait();
  });
}

TEST(Channel, ReceiveFromClosedDrainsBufferThenReportsClosed) {
  green::run({.procs = 1}, [] {
    green::Channel<int> ch(2);
    EXPECT_TRUE(ch.send(1));
    EXPECT_TRUE(ch.send(2));
    EXPECT_TRUE(ch.close());
    EXPECT_EQ(ch.recv(), 1);
    EXPECT_EQ(ch.recv(), 2);
    EXPECT_EQ(ch.recv(), std::nullopt);
    int out = 0;
    EXPECT_EQ(ch.try_recv(out), green::ChanStatus::kClosed);
  });
}

TEST(Channel, SendOnClosedAndDoubleCloseAreErrors) {
  green::run({.procs = 1}, [] {
    green::Channel<int> ch(1);
    EXPECT_TRUE(ch.close());
    EXPECT_FALSE(ch.send(1));
    EXPECT_EQ(ch.try_send(1), green::ChanStatus::kClosed);
    EXPECT_FALSE(ch.close());
  });
}

TEST(Channel, CloseWakesAllParkedReceiversAndSenders) {
  green::run({.procs = 2}, [] {
    green::Channel<int> receivers_ch(0), senders_ch(0);
    constexpr int kEach = 50;
    std::atomic<int> got_closed{0}, send_failed{0};
    green::WaitGroup wg;
    for (int i = 0; i < kEach; ++i) {
      wg.add(2);
      green::go([&] {
        if (!receivers_ch.recv()) got_closed.fetch_add(1);
        wg.done();
      });
      green::go([&, i] {
        if (!senders_ch.send(i)) send_failed.fetch_add(1);
        wg.done();
      });
    }
    // Every one parked (the dump shows them), so the closes wake parked ones.
    ASSERT_TRUE(green::testing::wait_until_waiting("chan receive", kEach));
    ASSERT_TRUE(green::testing::wait_until_waiting("chan send", kEach));
    EXPECT_TRUE(receivers_ch.close());
    EXPECT_TRUE(senders_ch.close());
    wg.wait();
    EXPECT_EQ(got_closed.load(), kEach);
    EXPECT_EQ(send_failed.load(), kEach);
  });
}

TEST(Channel, TryOperationsNeverBlock) {
  green::run({.procs = 1}, [] {
    green::Channel<int> ch(0);
    int out = 0;
    EXPECT_EQ(ch.try_recv(out), green::ChanStatus::kWouldBlock);
    EXPECT_EQ(ch.try_send(1), green::ChanStatus::kWouldBlock);  // nobody receiving
    green::WaitGroup wg;
    wg.add(1);
    green::go([&] {
      EXPECT_EQ(ch.recv(), 5);
      wg.done();
    });
    // Succeeds once the receiver waits (one P: each yield lets it get there), 10 s at most.
    ASSERT_TRUE(
        green::testing::yield_until([&] { return ch.try_send(5) == green::ChanStatus::kOk; }, 10s));
    wg.wait();
  });
}

TEST(Channel, ManyProducersAndConsumersTransferEveryValueOnce) {
  const int64_t per_producer = green::testing::scaled(20'000, 2'000);
  constexpr int kProducers = 8, kConsumers = 8;
  std::vector<std::atomic<int>> seen(static_cast<size_t>(per_producer * kProducers));
  green::run({.procs = 2}, [&] {
    green::Channel<int64_t> ch(16);
    green::WaitGroup producers, consumers;
    for (int p = 0; p < kProducers; ++p) {
      producers.add(1);
      green::go([&, p] {
        for (int64_t i = 0; i < per_producer; ++i) EXPECT_TRUE(ch.send(p * per_producer + i));
        producers.done();
      });
    }
    for (int c = 0; c < kConsumers; ++c) {
      consumers.add(1);
      green::go([&] {
        while (auto v = ch.recv()) seen[static_cast<size_t>(*v)].fetch_add(1);
        consumers.done();
      });
    }
    producers.wait();
    ch.close();
    consumers.wait();
  });
  for (auto& s : seen) ASSERT_EQ(s.load(), 1);
}

TEST(Channel, WorksBetweenPlainThreadAndGreenThreads) {
  green::run({.procs = 2}, [] {
    green::Channel<int> to_green(0), to_thread(0);
    green::WaitGroup wg;
    wg.add(1);
    green::go([&] {
      while (auto v = to_green.recv()) EXPECT_TRUE(to_thread.send(*v * 2));
      to_thread.close();
      wg.done();
    });
    std::thread plain([&] {
      for (int i = 0; i < 1000; ++i) {
        EXPECT_TRUE(to_green.send(i));
        EXPECT_EQ(to_thread.recv(), i * 2);
      }
      to_green.close();
      EXPECT_EQ(to_thread.recv(), std::nullopt);
    });
    wg.wait();
    plain.join();
  });
}
