// Run options: Options' fields and the GREEN_* environment variables, resolved once by run().
// GREEN_MAXPROCS (Go's GOMAXPROCS), GREEN_MAX_THREADS (Go's debug.SetMaxThreads) and
// GREEN_THREAD_IDLE; a malformed value exits with status 2 and says what it wants.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "runtime/scheduler.h"
#include "runtime/stack.h"

namespace green::detail {

long env_integer(const char* name, const char* unit, long lo, long hi) {
  const char* env = std::getenv(name);
  if (env == nullptr || *env == '\0') return 0;
  char* end = nullptr;
  const long v = std::strtol(env, &end, 10);
  if (*end != '\0' || v < lo || v > hi) {
    std::fprintf(stderr, "greenrt: %s=%s: want %s from %ld to %ld\n", name, env, unit, lo, hi);
    // NOLINTNEXTLINE(concurrency-mt-unsafe): green::run() reads it before the runtime's threads
    std::exit(2);
  }
  return v;
}

int procs_from(const Options& options) {
  if (options.procs > 0) return std::min(options.procs, static_cast<int>(kRunQueueSize));
  if (long v = env_integer("GREEN_MAXPROCS", "an integer", 1, kRunQueueSize); v != 0) {
    return static_cast<int>(v);
  }
  long cpus = sysconf(_SC_NPROCESSORS_ONLN);
  return static_cast<int>(std::clamp<long>(cpus, 1, kRunQueueSize));
}

int max_threads_from_env() {
  const long v = env_integer("GREEN_MAX_THREADS", "an integer", 1, 1'000'000);
  return v != 0 ? static_cast<int>(v) : 10000;
}

// Options::thread_idle_timeout, else GREEN_THREAD_IDLE (Go-style: "10s", "250ms"; "0": idle
// Ms never exit), else 10 s.
int64_t thread_idle_ns_from(const Options& options) {
  if (options.thread_idle_timeout.count() != 0) {
    return std::max<int64_t>(0, options.thread_idle_timeout.count());
  }
  const char* env = std::getenv("GREEN_THREAD_IDLE");
  if (env == nullptr || *env == '\0') return 10'000'000'000;
  char* end = nullptr;
  const long long v = std::strtoll(env, &end, 10);
  const std::string unit = end;
  int64_t scale = 0;
  if (unit == "ms") scale = 1'000'000;
  else if (unit == "s") scale = 1'000'000'000;
  else if (unit.empty() && v == 0 && end != env) scale = 1;
  if (scale == 0 || end == env || v < 0 || v > 86'400'000) {
    std::fprintf(stderr, "greenrt: GREEN_THREAD_IDLE=%s: want a duration such as 10s or 250ms\n",
                 env);
    // NOLINTNEXTLINE(concurrency-mt-unsafe): green::run() reads it before the runtime's threads
    std::exit(2);
  }
  return v * scale;
}

std::size_t round_to_pages(std::size_t n) {
  const std::size_t page = page_size();
  return std::max(page * 4, (n + page - 1) / page * page);
}

}  // namespace green::detail
