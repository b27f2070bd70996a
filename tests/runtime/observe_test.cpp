// Observability: GREEN_SCHEDTRACE lines, the green-thread dump, SIGQUIT.
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "green/channel.h"
#include "green/green.h"
#include "green/net.h"
#include "green/sync.h"
#include "tests/runtime/test_util.h"

using namespace std::chrono_literals;

namespace {

// Sends this process's stderr to a file while alive; text() returns what was written.
class CaptureStderr {
 public:
  CaptureStderr() : path_("/tmp/greenrt-stderr-" + std::to_string(getpid())) {
    std::fflush(stderr);
    saved_ = dup(2);
    FILE* f = std::fopen(path_.c_str(), "w");
    dup2(fileno(f), 2);
    std::fclose(f);
  }
  ~CaptureStderr() {
    restore();
    std::remove(path_.c_str());
  }
  void restore() {
    if (saved_ < 0) return;
    std::fflush(stderr);
    dup2(saved_, 2);
    close(saved_);
    saved_ = -1;
  }
  std::string text() {
    std::ifstream in(path_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }

 private:
  std::string path_;
  int saved_ = -1;
};

int count_matches(const std::string& text, const std::regex& re) {
  int n = 0;
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) n += std::regex_match(line, re) ? 1 : 0;
  return n;
}

}  // namespace

TEST(Observe, IdleProcsAverageFollowsTheLoad) {
  // Two Ps. Idle for 1.5 s (the average starts at procs, as nothing ran before, and stays
  // near it), then two CPU-bound green threads hold both Ps for 1.5 s (towards 0). sysmon
  // weights each sample by the time since the one before, so a busy machine that runs it
  // rarely gives about the same answer.
  double idle_avg = -1, busy_avg = -1;
  green::run({.procs = 2}, [&] {
    green::sleep_for(std::chrono::milliseconds(1500));  // the idle window measured, not a wait
    idle_avg = green::stats().idle_procs_avg;
    std::atomic<bool> stop{false};
    green::WaitGroup wg;
    for (int i = 0; i < 2; ++i) {
      wg.add(1);
      green::go([&] {
        while (!stop.load(std::memory_order_relaxed)) green::checkpoint();
        wg.done();
      });
    }
    // The busy window measured, not a wait: main holds its P too (an OS-thread sleep, no park).
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));
    busy_avg = green::stats().idle_procs_avg;
    stop.store(true);
    wg.wait();
  });
  EXPECT_GE(idle_avg, 1.2);
  EXPECT_LE(idle_avg, 2.0);
  EXPECT_LE(busy_avg, 0.7);
  EXPECT_GE(busy_avg, 0.0);
}

TEST(Observe, MachineWakeupsCountIdlePsPutToWork) {
  // With the other P idle and its OS thread asleep, a spawn hands that P to it (counted in
  // machine_wakeups), and the new green thread runs there while main keeps computing.
  uint64_t wakeups = 0;
  int main_p = -1;
  std::atomic<int> worker_p{-1};
  green::run({.procs = 2}, [&] {
    green::testing::compute_until_the_other_p_sleeps(5ms);
    const uint64_t before = green::stats().machine_wakeups;
    green::go([&] { worker_p.store(green::this_green_thread::processor_id()); });
    const auto busy_until = std::chrono::steady_clock::now() + 10s;
    while (worker_p.load() < 0 && std::chrono::steady_clock::now() < busy_until) {
    }
    // Main's P is read after the spin, not before the spawn: go() is a preemption point, and
    // when sysmon has flagged main (it computed past its time slice above) main yields there
    // and may resume on the woken P while the worker runs on main's old one. The spin itself
    // has no preemption point, so the P read here is the one main held while the worker ran.
    main_p = green::this_green_thread::processor_id();
    wakeups = green::stats().machine_wakeups - before;
  });
  EXPECT_NE(worker_p.load(), -1) << "the spawned green thread never ran beside main";
  EXPECT_NE(worker_p.load(), main_p);
  EXPECT_GE(wakeups, 1u);
}

TEST(Observe, SchedtracePrintsGosLine) {
  setenv("GREEN_SCHEDTRACE", "20", 1);
  CaptureStderr capture;
  green::run({.procs = 2}, [&] {
    green::WaitGroup wg;
    for (int i = 0; i < 100; ++i) {
      wg.add(1);
      green::go([&] {
        green::sleep_for(1ms);  // work for the trace to show, not a wait
        wg.done();
      });
    }
    wg.wait();
    // Until four lines are out (the captured file shows them), not a guessed 130 ms.
    (void)green::testing::wait_until(
        [&] {
          const std::string t = capture.text();
          int lines = 0;
          for (std::size_t at = t.find("SCHED "); at != std::string::npos;
               at = t.find("SCHED ", at + 1)) {
            ++lines;
          }
          return lines >= 4;
        },
        10s);
  });
  capture.restore();
  unsetenv("GREEN_SCHEDTRACE");
  const std::string text = capture.text();
  const std::regex line(
      R"(SCHED \d+ms: gomaxprocs=2 idleprocs=[0-2] threads=\d+ spinningthreads=\d+ )"
      R"(idlethreads=\d+ runqueue=\d+ \[\d+ \d+\])");
  EXPECT_GE(count_matches(text, line), 4) << text;
  // The elapsed times grow, about 20 ms apart.
  std::vector<long> ms;
  const std::regex stamp(R"(SCHED (\d+)ms:)");
  for (std::sregex_iterator it(text.begin(), text.end(), stamp), end; it != end; ++it) {
    ms.push_back(std::stol((*it)[1]));
  }
  ASSERT_GE(ms.size(), 4u);
  for (size_t i = 1; i < ms.size(); ++i) EXPECT_GE(ms[i] - ms[i - 1], 15) << text;
}

TEST(Observe, DumpShowsEveryStateWaitReasonAndSpawnSite) {
  std::string dump;
  green::run({.procs = 1}, [&] {
    green::net::TcpListener listener;
    ASSERT_EQ(
        green::net::TcpListener::listen(*green::net::Address::parse("127.0.0.1:0"), &listener), 0);
    green::Channel<int> never;
    green::Mutex mu;
    mu.lock();
    std::atomic<bool> release_blocking{false};
    green::WaitGroup finished;
    finished.add(4);
    green::go([&] {  // netpoll read (accept)
      green::net::TcpStream s;
      (void)listener.accept(&s);
      finished.done();
    });
    green::go([&] {  // chan receive
      (void)never.recv();
      finished.done();
    });
    green::go([] {  // sleep: still parked when the run ends (abandoned, as run() allows)
      green::sleep_for(60s);
    });
    green::go([&] {  // mutex
      mu.lock();
      mu.unlock();
      finished.done();
    });
    green::go([&] {  // blocking call, until released
      green::blocking([&] {
        // Inside the call until released (the state the dump must show), at most 30 s. A plain
        // OS-thread poll: a blocking call must not park.
        const auto give_up = std::chrono::steady_clock::now() + 30s;
        while (!release_blocking.load() && std::chrono::steady_clock::now() < give_up) {
          usleep(2000);
        }
      });
      finished.done();
    });
    // Until all five wait (a loaded machine may take a while to run them) and every wait shows
    // three digits of milliseconds, as the dump itself says.
    std::vector<std::regex> long_waits;
    for (const char* reason : {"netpoll read", "chan receive", "sleep", "mutex", "blocking call"}) {
      long_waits.emplace_back(std::string(R"(\[waiting: )") + reason + R"(, (\d{3}ms|\d+\.\ds)\])");
    }
    (void)green::testing::wait_until(
        [&] {
          const std::string d = green::dump_green_threads();
          for (const std::regex& re : long_waits) {
            if (!std::regex_search(d, re)) return false;
          }
          return true;
        },
        20s);
    // A fresh time slice: a main that has computed for 10 ms (the dumps above, slow under TSan)
    // is flagged by sysmon and would yield at the spawn below (a preemption point), letting the
    // new green thread run and end before the dump.
    green::yield();
    green::WaitGroup runnable_done;
    runnable_done.add(1);
    green::go([&] { runnable_done.done(); });  // queued behind us on the only P: runnable
    dump = green::dump_green_threads();
    runnable_done.wait();
    listener.close();
    never.close();
    mu.unlock();
    release_blocking.store(true);
    finished.wait();
  });
  auto has = [&](const std::string& pattern) {
    return std::regex_search(dump, std::regex(pattern));
  };
  EXPECT_TRUE(has(R"(green thread 1 \[running\]: \(the caller\)\n\tspawned at \S+:\d+)")) << dump;
  EXPECT_TRUE(has(R"(green thread \d+ \[runnable\]:\n\tspawned at \S*observe_test.cpp:\d+)"))
      << dump;
  for (const char* reason : {"netpoll read", "chan receive", "sleep", "mutex", "blocking call"}) {
    EXPECT_TRUE(has(std::string(R"(green thread \d+ \[waiting: )") + reason +
                    R"(, (\d{3}ms|\d+\.\ds)\]:\n\tspawned at \S*observe_test.cpp:\d+)"))
        << reason << "\n"
        << dump;
  }
}

// this_green_thread::set_label: the dump shows the label under its green thread (HTTP/2 stream
// handlers label themselves "h2 stream N"), a later label replaces it, and a green thread that
// reuses the slot of a labelled one that ended starts without one.
TEST(Observe, LabelsShowInTheDumpAndEndWithTheirGreenThread) {
  std::string dump, relabelled, after;
  green::run({.procs = 1}, [&] {
    green::Channel<int> relabel, release;
    green::WaitGroup done;
    done.add(1);
    green::go([&] {
      green::this_green_thread::set_label("h2 stream", 7);
      (void)relabel.recv();
      green::this_green_thread::set_label("h2 stream", 9);
      (void)release.recv();
      done.done();
    });
    green::yield();  // the labelled green thread runs up to its first receive
    dump = green::dump_green_threads();
    (void)relabel.send(1);
    green::yield();
    relabelled = green::dump_green_threads();
    (void)release.send(1);
    done.wait();
    green::WaitGroup next;
    next.add(1);
    green::Channel<int> hold;
    green::go([&] {
      (void)hold.recv();
      next.done();
    });
    green::yield();
    after = green::dump_green_threads();
    (void)hold.send(1);
    next.wait();
  });
  const std::regex labelled(
      R"(\[waiting: chan receive, \d+ms\]:\n\tspawned at \S*observe_test.cpp:\d+\n\tlabel: h2 stream 7\n\n)");
  EXPECT_TRUE(std::regex_search(dump, labelled)) << dump;
  EXPECT_NE(relabelled.find("\tlabel: h2 stream 9\n"), std::string::npos) << relabelled;
  EXPECT_EQ(relabelled.find("h2 stream 7"), std::string::npos) << relabelled;
  EXPECT_EQ(after.find("label:"), std::string::npos) << after;
}

TEST(Observe, SigquitDumpsAndTheProcessKeepsRunning) {
  CaptureStderr capture;
  int after = 0;
  std::atomic<bool> dumped{false};
  green::run({.procs = 2}, [&] {
    green::Channel<int> release;
    green::WaitGroup wg;
    wg.add(1);
    green::go([&] {
      (void)release.recv();
      wg.done();
    });
    // The signal comes once the receiver is parked (the dump says so), from another thread,
    // which also watches for the dump: a handler may run late (TSan defers signals to its next
    // safe point), so nothing here assumes when.
    ASSERT_TRUE(green::testing::wait_until_waiting("chan receive", 1));
    std::thread signaller([&] {
      kill(getpid(), SIGQUIT);
      const auto give_up = std::chrono::steady_clock::now() + 20s;
      while (capture.text().find("[waiting: chan receive") == std::string::npos &&
             std::chrono::steady_clock::now() < give_up) {
        std::this_thread::sleep_for(5ms);
      }
      dumped.store(true);
    });
    // dumped is set within the signaller's 20 s either way.
    EXPECT_TRUE(green::testing::wait_until([&] { return dumped.load(); }, 30s));
    release.close();
    wg.wait();
    green::blocking([&] { signaller.join(); });
    after = 1;
  });
  capture.restore();
  EXPECT_EQ(after, 1);
  const std::string text = capture.text();
  // Green thread 1 sleeps between looks at the flag (it is running for a few nanoseconds of
  // every 5 ms, and may be caught so).
  EXPECT_TRUE(std::regex_search(
      text, std::regex(R"(green thread 1 \[(waiting: sleep, \d+ms|running)\]:\n\tspawned at)")))
      << text;
  EXPECT_TRUE(std::regex_search(
      text,
      std::regex(
          R"(green thread \d+ \[waiting: chan receive, \d+ms\]:\n\tspawned at \S*observe_test.cpp:\d+)")))
      << text;
}
