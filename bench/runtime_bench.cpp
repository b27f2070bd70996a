// Runtime microbenchmarks, the same shapes as loadtest/peers/go-micro (Go's figures):
//   spawn_join_ns   spawn + run + join of an empty green thread (WaitGroup), per green thread
//   pingpong_rt_ns  round trip through two unbuffered channels between two green threads
//   yield_ns        one green thread calling green::yield() alone
//   parked_bytes    RSS growth per green thread with parked_count parked on one channel
//   parked_pagetable_bytes  page-table growth (VmPTE) per parked green thread, not in RSS
//   parked_maps     the process's memory mappings (/proc/self/maps lines) while they park
//   echo_rt_us      1 KB written and echoed back over loopback TCP, 100 connections at once,
//                   each with its own client and server green thread: mean round trip seen by
//                   a client
//   sleep_wake_us   how late sleep_for(1ms) wakes, mean over 200 sleeps (timer precision)
// Each timed figure is the median of 3 runs after a warm-up. Output: `BENCH <name> <value>
// <unit>` lines on stdout, nothing else; details on stderr. Usage: runtime_bench [-n N]
// [-parked N] [-only NAME,...] (names: spawn_join pingpong yield echo sleep_wake parked).
// Never run as a test: timings belong here, not in unit tests.
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "green/channel.h"
#include "green/green.h"
#include "green/net.h"
#include "green/sync.h"

namespace {

using Clock = std::chrono::steady_clock;

double elapsed_ns(Clock::time_point start) {
  return std::chrono::duration<double, std::nano>(Clock::now() - start).count();
}

double median3(double (*f)(long), long n) {
  f(std::max(1L, n / 10));  // warm-up: fills the free-G caches and faults in stacks
  std::vector<double> v;
  for (int i = 0; i < 3; ++i) {
    // Green threads that other Ps stole during the run: how much work crossed cores.
    const uint64_t before = green::stats().steals;
    v.push_back(f(n));
    std::fprintf(stderr, "  run %d: %.1f (%llu stolen)\n", i + 1, v.back(),
                 static_cast<unsigned long long>(green::stats().steals - before));
  }
  std::sort(v.begin(), v.end());
  std::fprintf(stderr, "  samples: %.1f %.1f %.1f\n", v[0], v[1], v[2]);
  return v[1];
}

double spawn_join(long n) {
  green::WaitGroup wg;
  auto start = Clock::now();
  for (long i = 0; i < n; ++i) {
    wg.add(1);
    green::go([&wg] { wg.done(); });
  }
  wg.wait();
  return elapsed_ns(start) / static_cast<double>(n);
}

double pingpong(long n) {
  green::Channel<int> ping(0), pong(0);
  green::WaitGroup wg;
  wg.add(1);
  green::go([&] {
    for (long i = 0; i < n; ++i) {
      auto v = ping.recv();
      (void)pong.send(*v);
    }
    wg.done();
  });
  auto start = Clock::now();
  for (long i = 0; i < n; ++i) {
    (void)ping.send(static_cast<int>(i));
    (void)pong.recv();
  }
  double ns = elapsed_ns(start) / static_cast<double>(n);
  wg.wait();
  return ns;
}

double yield_loop(long n) {
  double ns = 0;
  green::WaitGroup wg;
  wg.add(1);
  green::go([&] {
    auto start = Clock::now();
    for (long i = 0; i < n; ++i) green::yield();
    ns = elapsed_ns(start) / static_cast<double>(n);
    wg.done();
  });
  wg.wait();
  return ns;
}

long rss_bytes() {
  std::ifstream statm("/proc/self/statm");
  long size = 0, resident = 0;
  statm >> size >> resident;
  return resident * sysconf(_SC_PAGESIZE);
}

// Page-table bytes (VmPTE): not in RSS, but each parked G's resident top page needs a
// page-table page of its own once stacks are more than 2 MiB apart.
long page_table_bytes() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmPTE:", 0) == 0) return std::atol(line.c_str() + 6) * 1024;
  }
  return 0;
}

long map_count() {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  long n = 0;
  while (std::getline(maps, line)) ++n;
  return n;
}

void parked(long count) {
  green::Channel<int> gate(0);
  green::WaitGroup started, exited;
  const long before = rss_bytes();
  const long pte_before = page_table_bytes();
  for (long i = 0; i < count; ++i) {
    started.add(1);
    exited.add(1);
    green::go([&] {
      started.done();
      (void)gate.recv();  // parks until close
      exited.done();
    });
  }
  started.wait();
  // The last few may have marked themselves started but not parked yet.
  green::sleep_for(std::chrono::milliseconds(50));
  const long after = rss_bytes();
  const long pte_after = page_table_bytes();
  const long maps = map_count();
  std::fprintf(stderr, "  rss before %ld, with %ld parked %ld\n", before, count, after);
  gate.close();
  exited.wait();
  std::printf("BENCH parked_count %ld green_threads\n", count);
  std::printf("BENCH parked_bytes %.1f bytes\n",
              static_cast<double>(after - before) / static_cast<double>(count));
  std::printf("BENCH parked_pagetable_bytes %.1f bytes\n",
              static_cast<double>(pte_after - pte_before) / static_cast<double>(count));
  std::printf("BENCH parked_maps %ld mappings\n", maps);
}

// 100 connections, each doing `rounds` 1 KB round trips; returns the mean round trip in us.
double echo_round_trips(long rounds) {
  using green::net::TcpListener;
  using green::net::TcpStream;
  constexpr int kConns = 100;
  constexpr size_t kSize = 1024;
  TcpListener listener;
  if (TcpListener::listen(*green::net::Address::parse("127.0.0.1:0"), &listener) != 0) {
    std::fprintf(stderr, "echo: listen failed\n");
    std::exit(1);
  }
  green::WaitGroup servers;
  servers.add(1);
  green::go([&] {
    for (;;) {
      TcpStream c;
      if (listener.accept(&c) != 0) break;
      servers.add(1);
      green::go([&servers, c = std::move(c)]() mutable {
        char buf[kSize];
        for (;;) {
          ssize_t n = c.read(buf, sizeof buf);
          if (n <= 0 || c.write(buf, static_cast<size_t>(n)) != n) break;
        }
        servers.done();
      });
    }
    servers.done();
  });
  green::WaitGroup clients;
  const auto start = Clock::now();
  for (int k = 0; k < kConns; ++k) {
    clients.add(1);
    green::go([&] {
      TcpStream s;
      if (TcpStream::connect(listener.local_address(), &s) != 0) std::exit(1);
      char out[kSize], in[kSize];
      std::memset(out, 'e', sizeof out);
      for (long i = 0; i < rounds; ++i) {
        if (s.write(out, kSize) != static_cast<ssize_t>(kSize)) std::exit(1);
        size_t got = 0;
        while (got < kSize) {
          ssize_t n = s.read(in + got, kSize - got);
          if (n <= 0) std::exit(1);
          got += static_cast<size_t>(n);
        }
      }
      clients.done();
    });
  }
  clients.wait();
  const double us = elapsed_ns(start) / 1000.0 / static_cast<double>(rounds);
  listener.close();
  servers.wait();
  return us;
}

double echo_rt(long n) { return echo_round_trips(std::max(10L, n / 500)); }

double sleep_wake(long) {
  constexpr int kSleeps = 200;
  double late = 0;
  for (int i = 0; i < kSleeps; ++i) {
    const auto t = Clock::now();
    green::sleep_for(std::chrono::milliseconds(1));
    late += elapsed_ns(t) - 1e6;
  }
  return late / kSleeps / 1000.0;
}

}  // namespace

int main(int argc, char** argv) {
  long n = 1'000'000, parked_count = 1'000'000;
  const char* only = nullptr;  // comma-separated benchmark names; null: all
  for (int i = 1; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "-n") == 0) {
      n = std::atol(argv[i + 1]);
    } else if (std::strcmp(argv[i], "-parked") == 0) {
      parked_count = std::atol(argv[i + 1]);
    } else if (std::strcmp(argv[i], "-only") == 0) {
      only = argv[i + 1];
    } else {
      std::fprintf(stderr, "usage: %s [-n N] [-parked N] [-only NAME,...]\n", argv[0]);
      return 2;
    }
  }
  auto wanted = [only](const char* name) {
    if (only == nullptr) return true;
    const std::size_t len = std::strlen(name);
    for (const char* s = only; *s != '\0';) {
      const char* end = std::strchr(s, ',');
      const std::size_t n = end != nullptr ? static_cast<std::size_t>(end - s) : std::strlen(s);
      if (n == len && std::strncmp(s, name, n) == 0) return true;
      if (end == nullptr) break;
      s = end + 1;
    }
    return false;
  };
  green::run({}, [&] {
    std::fprintf(stderr, "runtime_bench: %d Ps, n=%ld\n", green::num_procs(), n);
    struct Timed {
      const char* name;
      const char* metric;
      const char* unit;
      double (*f)(long);
    };
    const Timed timed[] = {
        {"spawn_join", "spawn_join_ns", "ns", spawn_join},
        {"pingpong", "pingpong_rt_ns", "ns", pingpong},
        {"yield", "yield_ns", "ns", yield_loop},
        {"echo", "echo_rt_us", "us", echo_rt},
        {"sleep_wake", "sleep_wake_us", "us", sleep_wake},
    };
    for (const Timed& t : timed) {
      if (!wanted(t.name)) continue;
      std::fprintf(stderr, "%s\n", t.name);
      std::printf("BENCH %s %.1f %s\n", t.metric, median3(t.f, n), t.unit);
      std::fflush(stdout);
    }
    if (wanted("parked")) {
      std::fprintf(stderr, "parked\n");
      parked(parked_count);
    }
  });
  return 0;
}
