// sysmon, schedtrace and the green-thread dump. See sysmon.h.
#include "runtime/sysmon.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "runtime/netpoll.h"
#include "runtime/scheduler.h"
#include "runtime/stack.h"

namespace green::detail {
namespace {

constexpr int64_t kMinDelay = 20'000;       // 20 us
constexpr int64_t kMaxDelay = 10'000'000;   // 10 ms
constexpr int64_t kHogAfter = 10'000'000;   // a G running this long is flagged
constexpr int64_t kPatientFor = 1'000'000;  // may_block_patiently: retaken after this long
constexpr int64_t kForcePollAfter = 10'000'000;

std::thread monitor;
// The wake-up protocol with sysmon (on_sigquit, sysmon_stop): a waker sets its flag and then
// wake_word; loop() clears wake_word after its sleep and then reads the flags. All four are
// seq_cst (store-then-load on each side, Dekker-style): either loop() sees the flag, or its
// clear of wake_word came before the waker's set, and its next futex_wait returns at once.
std::atomic<uint32_t> wake_word{0};
std::atomic<bool> stop_requested{false};
std::atomic<bool> dump_requested{false};
int64_t schedtrace_ns = 0;
struct sigaction previous_quit {};
bool quit_installed = false;
int64_t last_forced_poll = 0;

void write_all(int fd, const std::string& text) {
  std::size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n <= 0) return;
    done += static_cast<std::size_t>(n);
  }
}

void on_sigquit(int) {
  // Async-signal-safe: flag and futex wake; sysmon formats the dump on its own thread.
  dump_requested.store(true, std::memory_order_seq_cst);  // the pair: see wake_word
  wake_word.store(1, std::memory_order_seq_cst);
  futex_wake(&wake_word, 1);
}

int64_t schedtrace_from_env() {
  return env_integer("GREEN_SCHEDTRACE", "milliseconds", 1, 3'600'000) * 1'000'000LL;
}

// Folds this round's idle-P count into a moving average over ~1 s, each sample weighted by
// the time since the previous one (sample and hold).
void average_idle_procs(int64_t elapsed_ns) {
  constexpr double kWindowNs = 1e9;
  const double weight = 1.0 - std::exp(-static_cast<double>(elapsed_ns) / kWindowNs);
  const double avg = sched.idle_procs_avg.load(std::memory_order_relaxed);
  const double idle = static_cast<double>(sched.npidle.load(std::memory_order_relaxed));
  sched.idle_procs_avg.store(avg + weight * (idle - avg), std::memory_order_relaxed);
}

// One look at every P. Returns true if it acted (keeps sysmon at its shortest period).
bool retake(int64_t now) {
  bool acted = false;
  // The counts sysmon reads here are hints, relaxed: a stale one costs one round (20 us to
  // 10 ms); what acts re-checks (wakep() has its own barrier, retake_from_syscall a CAS).
  const bool all_busy = sched.npidle.load(std::memory_order_relaxed) == 0;
  for (int i = 0; i < sched.nprocs; ++i) {
    Processor* p = &sched.procs[i];
    const uint32_t tick = p->run_tick.load(std::memory_order_relaxed);
    const bool running = (tick & 1) != 0;
    if (tick != p->sysmon_tick) {
      p->sysmon_tick = tick;
      p->sysmon_when = now;
    } else if (running && now - p->sysmon_when >= kHogAfter) {
      // One G has had this P for 10 ms: ask it to yield and let others take its queue.
      sched.hogs.fetch_add(1, std::memory_order_relaxed);
      p->sysmon_when = now;  // counted once per 10 ms of hogging
      request_preempt(p);
      if (!runq_empty(p)) {
        spill_runq(p);
        wakep();  // also for a G in runnext, which only a spinning M may take
      }
      acted = true;
    } else if (running && !runq_empty(p) && sched.npidle.load(std::memory_order_relaxed) > 0 &&
               sched.nmspinning.load(std::memory_order_relaxed) == 0) {
      // The same G has run since our last look while another waits on its P with a P idle:
      // a G woken into runnext wakes nobody (ready()), in the hope that its waker parks
      // soon. This one did not: wake a spinning M, which takes it.
      wakep();
      acted = true;
    }
    // A P whose M is inside green::may_block(): retake it if the call is still running at our
    // second look and the P is worth having (Go's retake: it has queued work or timers, or no
    // P is idle or spinning to pick up new work, or the call has run for 10 ms).
    // Relaxed: retake_from_syscall's CAS on this exact word is what orders (acquires) the M's
    // state; a stale word only fails that CAS.
    if (const uint64_t word = p->syscall_word.load(std::memory_order_relaxed); (word & 1) != 0) {
      const bool patient = (word & 2) != 0;  // may_block_patiently: only after kPatientFor
      if (word != p->sysmon_syscall_word) {
        p->sysmon_syscall_word = word;
        p->sysmon_syscall_since = now;
      } else if (!patient || now - p->sysmon_syscall_since >= kPatientFor) {
        const bool worth = !runq_empty(p) || p->timers.earliest() != INT64_MAX ||
                           sched.npidle.load(std::memory_order_relaxed) +
                                   sched.nmspinning.load(std::memory_order_relaxed) ==
                               0 ||
                           now - p->sysmon_syscall_since >= kHogAfter;
        if (worth && retake_from_syscall(p, word)) p->sysmon_syscall_word = 0;
      }
      if (!patient) acted = true;  // stay at the short period while a call may need retaking
    }
    if (running && all_busy && p->timers.earliest() <= now) {
      request_preempt(p);
      acted = true;
    }
  }
  return acted;
}

void loop() {
  int64_t delay = kMinDelay;
  int idle_rounds = 0;
  int64_t next_trace = schedtrace_ns > 0 ? sched.start_ns + schedtrace_ns : INT64_MAX;
  // Relaxed: a stale false costs one round; the seq_cst re-check after the sleep decides.
  while (!stop_requested.load(std::memory_order_relaxed)) {
    int64_t now = now_ns();
    int64_t sleep = delay;
    if (sched.npidle.load(std::memory_order_relaxed) == 0) {
      // Every P busy: be there when the next timer is due, in case its P does not yield.
      const int64_t t = earliest_timer();
      if (t > now) sleep = std::min(sleep, t - now);
    }
    if (next_trace != INT64_MAX) sleep = std::min(sleep, std::max<int64_t>(0, next_trace - now));
    if (sleep > 0) futex_wait(&wake_word, 0, sleep);
    wake_word.store(0, std::memory_order_seq_cst);  // then the flags: the pair, see wake_word
    if (stop_requested.load(std::memory_order_seq_cst)) break;
    const int64_t before = now;
    now = now_ns();
    sched.sysmon_now_ns.store(now, std::memory_order_relaxed);
    average_idle_procs(now - before);
    bool acted = false;
    if (dump_requested.exchange(false, std::memory_order_seq_cst))
      write_all(2, dump_green_threads());
    if (now >= next_trace) {
      write_all(2, schedtrace_line() + "\n");
      // As Go: the next line one period after this one was printed, so lines are never closer
      // than the period even when sysmon runs late.
      next_trace = now_ns() + schedtrace_ns;
    }
    // Every P busy and nobody polls: look at the network for them.
    // Hints again (relaxed): a poll that was not needed finds nothing, one that was is made
    // next round.
    if (netpoll_inited() && netpoll_waiters() > 0 &&
        sched.timer_waiter.load(std::memory_order_relaxed) == nullptr &&
        now - std::max(last_forced_poll,
                       netpoll_counters.last_poll_ns.load(std::memory_order_relaxed)) >=
            kForcePollAfter) {
      last_forced_poll = now;
      uint32_t n = 0;
      if (GreenThread* list = netpoll(0, &n)) {
        inject_list(list, n);
        acted = true;
      }
    }
    acted |= retake(now);
    reap_retired_machines();
    // Timers due on idle Ps and nobody waiting for them.
    // Relaxed hints: ensure_waiter() re-checks under sched.lock.
    if (sched.timer_waiter.load(std::memory_order_relaxed) == nullptr &&
        sched.npidle.load(std::memory_order_relaxed) > 0 && earliest_timer() <= now) {
      ensure_waiter();
    }
    if (acted) {
      idle_rounds = 0;
      delay = kMinDelay;
    } else if (++idle_rounds > 50) {
      delay = std::min(delay * 2, kMaxDelay);
    }
  }
}

}  // namespace

void sysmon_start() {
  schedtrace_ns = schedtrace_from_env();
  // Relaxed: the thread's creation below orders these before its first read.
  stop_requested.store(false, std::memory_order_relaxed);
  dump_requested.store(false, std::memory_order_relaxed);
  last_forced_poll = 0;
  struct sigaction sa {};
  sa.sa_handler = on_sigquit;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  quit_installed = sigaction(SIGQUIT, &sa, &previous_quit) == 0;
  monitor = std::thread([] {
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, nullptr);  // signals go to the Ms, not to sysmon
    loop();
  });
}

void sysmon_stop() {
  stop_requested.store(true, std::memory_order_seq_cst);  // the pair: see wake_word
  sysmon_wake();
  if (monitor.joinable()) monitor.join();
  if (quit_installed) sigaction(SIGQUIT, &previous_quit, nullptr);
  quit_installed = false;
}

void sysmon_wake() {
  wake_word.store(1, std::memory_order_seq_cst);  // after the caller's flag: see wake_word
  futex_wake(&wake_word, 1);
}

std::string schedtrace_line() {
  const int64_t elapsed_ms = (now_ns() - sched.start_ns) / 1'000'000;
  std::string line;
  char buf[256];
  std::snprintf(buf, sizeof buf,
                "SCHED %lldms: gomaxprocs=%d idleprocs=%d threads=%d spinningthreads=%d "
                "idlethreads=%d runqueue=%u [",
                // A trace line: relaxed reads, as stats() does.
                static_cast<long long>(elapsed_ms), sched.nprocs,
                sched.npidle.load(std::memory_order_relaxed),
                sched.nmachines.load(std::memory_order_relaxed) + 1,  // + sysmon, as Go counts it
                sched.nmspinning.load(std::memory_order_relaxed),
                sched.nmidle.load(std::memory_order_relaxed),
                sched.global_size.load(std::memory_order_relaxed));
  line = buf;
  for (int i = 0; i < sched.nprocs; ++i) {
    if (i > 0) line += ' ';
    line += std::to_string(runq_length(&sched.procs[i]));
  }
  line += ']';
  return line;
}

}  // namespace green::detail

namespace green {
using namespace detail;

std::string dump_green_threads(std::size_t limit) {
  struct Row {
    uint64_t id;
    GStatus status;
    WaitReason reason;
    int64_t since;
    const char* file;
    uint32_t line;
    const char* label;
    uint64_t label_value;
  };
  std::vector<Row> rows;
  for_each_stack_top(
      [](char* top, void* arg) {
        auto* out = static_cast<std::vector<Row>*>(arg);
        GreenThread* g = green_thread_at(top);
        const GStatus s = g->status.load(std::memory_order_acquire);
        if (s == GStatus::kIdle || s == GStatus::kDead) return;
        // The G may die and be respawned while we read: its fields are read atomically (a
        // dump is a snapshot; a row may mix two lives of one slot, never tear a value).
        out->push_back(
            Row{std::atomic_ref<uint64_t>(g->id).load(std::memory_order_relaxed), s,
                g->wait_reason.load(std::memory_order_relaxed),
                g->wait_since_ns.load(std::memory_order_relaxed),
                std::atomic_ref<const char*>(g->spawn_file).load(std::memory_order_relaxed),
                std::atomic_ref<uint32_t>(g->spawn_line).load(std::memory_order_relaxed),
                std::atomic_ref<const char*>(g->label).load(std::memory_order_relaxed),
                std::atomic_ref<uint64_t>(g->label_value).load(std::memory_order_relaxed)});
      },
      &rows);
  std::sort(rows.begin(), rows.end(), [](const Row& a, const Row& b) { return a.id < b.id; });
  const int64_t now = coarse_now_ns();
  const uint64_t self = this_green_thread::id();
  std::string out;
  char buf[512];
  std::size_t listed = 0;
  for (const Row& r : rows) {
    if (listed++ == limit) {
      std::snprintf(buf, sizeof buf, "\xe2\x80\xa6 %zu more green threads\n", rows.size() - limit);
      out += buf;
      break;
    }
    std::string state;
    if (r.status == GStatus::kWaiting) {
      const double secs = static_cast<double>(std::max<int64_t>(0, now - r.since)) / 1e9;
      char when[32];
      if (secs < 1.0) {
        std::snprintf(when, sizeof when, "%lldms", static_cast<long long>(secs * 1000));
      } else {
        std::snprintf(when, sizeof when, "%.1fs", secs);
      }
      state = std::string("waiting: ") + wait_reason_name(r.reason) + ", " + when;
    } else {
      state = status_name(r.status);
    }
    std::snprintf(buf, sizeof buf, "green thread %llu [%s]:%s\n\tspawned at %s:%u\n",
                  static_cast<unsigned long long>(r.id), state.c_str(),
                  r.id == self ? " (the caller)" : "", r.file != nullptr ? r.file : "?", r.line);
    out += buf;
    if (r.label != nullptr) {
      std::snprintf(buf, sizeof buf, "\tlabel: %s %llu\n", r.label,
                    static_cast<unsigned long long>(r.label_value));
      out += buf;
    }
    out += '\n';
  }
  return out;
}

}  // namespace green
