// sysmon: the runtime's monitor thread (Go's sysmon), and the observability built on it.
//
// It runs without a P, waking every 20 us and backing off to 10 ms while there is nothing to do:
//   * a P that has run one green thread for over 10 ms is flagged for preemption (honoured at
//     the G's next checkpoint or runtime call), its queued work is moved to the global queue for
//     idle Ps to take, and the hog is counted;
//   * a timer that is due on a P whose G does not yield, while no P is idle to run it, gets that
//     P flagged the same way (so a sleeper wakes on time next to a CPU-bound loop);
//   * the network is polled if no M did so for 10 ms (every P busy);
//   * threads of Ms that retired after an idle period are joined (reap_retired_machines);
//   * GREEN_SCHEDTRACE=<ms> prints Go's SCHED line every <ms>;
//   * SIGQUIT prints every green thread (Go's goroutine dump); the process keeps running;
//   * it publishes the clock (sched.sysmon_now_ns) a parking green thread records as the start
//     of its wait, so the dumps' wait times are at most one sysmon period (10 ms) high.
#pragma once

#include <cstdint>
#include <string>

namespace green::detail {

void sysmon_start();
void sysmon_stop();
// Makes sysmon look now (stop, dump request).
void sysmon_wake();

// The SCHED line, without the trailing newline.
std::string schedtrace_line();

}  // namespace green::detail
