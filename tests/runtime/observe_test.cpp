// Observability: GREEN_SCHEDTRACE lines, the green-thread dump, SIGQUIT.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <regex>
#include <sstream>
#include <string>
#include <vector>

#include "runtime/channel.h"
#include "runtime/green.h"
#include "runtime/net.h"
#include "runtime/sync.h"

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

TEST(Observe, SchedtracePrintsGosLine) {
  setenv("GREEN_SCHEDTRACE", "20", 1);
  CaptureStderr capture;
  green::run({.procs = 2}, [] {
    green::WaitGroup wg;
    for (int i = 0; i < 100; ++i) {
      wg.add(1);
      green::go([&] {
        green::sleep_for(1ms);
        wg.done();
      });
    }
    green::sleep_for(130ms);
    wg.wait();
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
    ASSERT_EQ(green::net::TcpListener::listen(*green::net::Address::parse("127.0.0.1:0"),
                                               &listener),
              0);
    green::Channel<int> never;
    green::Mutex mu;
    mu.lock();
    green::WaitGroup finished;
    finished.add(5);
    green::go([&] {  // netpoll read (accept)
      green::net::TcpStream s;
      (void)listener.accept(&s);
      finished.done();
    });
    green::go([&] {  // chan receive
      (void)never.recv();
      finished.done();
    });
    green::go([&] {  // sleep
      green::sleep_for(400ms);
      finished.done();
    });
    green::go([&] {  // mutex
      mu.lock();
      mu.unlock();
      finished.done();
    });
    green::go([&] {  // blocking call
      green::blocking([] { usleep(300'000); });
      finished.done();
    });
    green::sleep_for(150ms);
    green::WaitGroup runnable_done;
    runnable_done.add(1);
    green::go([&] { runnable_done.done(); });  // queued behind us on the only P: runnable
    dump = green::dump_green_threads();
    runnable_done.wait();
    listener.close();
    never.close();
    mu.unlock();
    finished.wait();
  });
  auto has = [&](const std::string& pattern) {
    return std::regex_search(dump, std::regex(pattern));
  };
  EXPECT_TRUE(has(R"(green thread 1 \[running\]: \(the caller\)\n\tspawned at \S+:\d+)")) << dump;
  EXPECT_TRUE(has(R"(green thread \d+ \[runnable\]:\n\tspawned at \S*observe_test.cpp:\d+)"))
      << dump;
  for (const char* reason :
       {"netpoll read", "chan receive", "sleep", "mutex", "blocking call"}) {
    EXPECT_TRUE(has(std::string(R"(green thread \d+ \[waiting: )") + reason +
                    R"(, (\d{3}ms|\d+\.\ds)\]:\n\tspawned at \S*observe_test.cpp:\d+)"))
        << reason << "\n"
        << dump;
  }
}

TEST(Observe, SigquitDumpsAndTheProcessKeepsRunning) {
  CaptureStderr capture;
  int after = 0;
  green::run({.procs = 2}, [&] {
    green::WaitGroup wg;
    wg.add(1);
    green::go([&] {
      green::sleep_for(300ms);
      wg.done();
    });
    green::sleep_for(20ms);
    kill(getpid(), SIGQUIT);
    green::sleep_for(100ms);
    wg.wait();
    after = 1;
  });
  capture.restore();
  EXPECT_EQ(after, 1);
  const std::string text = capture.text();
  EXPECT_TRUE(std::regex_search(text, std::regex(R"(green thread 1 \[waiting: sleep, \d+ms\]:)")))
      << text;
  EXPECT_TRUE(std::regex_search(text, std::regex(R"(green thread \d+ \[waiting: sleep)"))) << text;
}
