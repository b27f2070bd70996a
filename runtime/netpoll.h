// The netpoller: one edge-triggered epoll instance for the process, and the poll descriptors
// green threads park on when a socket would block (Go's netpoll_epoll.go + netpoll.go).
//
// Poll descriptors (PollDesc) are type-stable: allocated in chunks, never freed, recycled
// through a free list. Each carries a sequence number, bumped when its socket is closed, that is
// also packed into the epoll event's data next to the descriptor's index; an event that arrives
// late for a closed (and perhaps reused) descriptor carries the old sequence and is dropped.
//
// Edge-triggered readiness is remembered in rd_ready/wr_ready when nobody waits, so an event
// that arrives between a syscall's EAGAIN and the park is not lost: the parker sees the flag
// and retries the syscall instead of sleeping.
//
// Closing is reference-counted, like Go's fdMutex: close() marks the descriptor closing and
// wakes its parked operations at once, but the fd itself is closed (and the number can be
// reused) only when the last operation in progress on it has returned. So a read that is
// between syscalls when another green thread closes the socket can never read from a new
// socket that happens to get the same fd number.
//
// Scheduler side: find_runnable() polls without blocking when its P has nothing to run and no M
// is already blocked in epoll_wait; the idle M that waits for timers blocks in epoll_wait with
// the next timer as its timeout (so at most one M blocks there), and netpoll_break() (an eventfd)
// interrupts it when it must look again.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>

#include "green/detail/park.h"
#include "green/detail/spin_lock.h"

namespace green::detail {

struct GreenThread;

struct PollDesc {
  int fd = -1;
  uint32_t index = 0;            // in the descriptor table, fixed for life
  std::atomic<uint32_t> seq{0};  // bumped when the fd is finally closed
  // Bit 31: closing; bits 0..30: operations in progress (references).
  std::atomic<uint32_t> refs{0};
  // Sticky: the peer closed its side or the socket has an error (EPOLLRDHUP/HUP/ERR seen).
  // Unlike new data, these conditions do not raise a new edge after a read consumed the last
  // bytes before them, so a reader must not wait for one once this is set.
  std::atomic<bool> hup{false};
  SpinLock lock{LockRank::kPollDesc};
  Waiter* rg GREEN_GUARDED_BY(lock) =
      nullptr;  // the green thread parked waiting to read (or accept)
  Waiter* wg GREEN_GUARDED_BY(lock) = nullptr;  // ... to write (or connect)
  bool rd_ready GREEN_GUARDED_BY(lock) = false;
  bool wr_ready GREEN_GUARDED_BY(lock) = false;
  // Called once when the netpoller sees the peer hang up or the socket fail (what sets hup),
  // whoever is or is not parked: see poll_on_hangup().
  std::function<void()> on_hangup GREEN_GUARDED_BY(lock);
  PollDesc* free_next = nullptr;  // under the table's lock
};

inline constexpr uint32_t kPollClosing = 1u << 31;

// Registers fd (already non-blocking) with epoll. Returns null and sets *err (negative errno)
// on failure; the fd is then still the caller's to close.
PollDesc* poll_open(int fd, int* err);

// Takes a reference for an operation on pd opened with sequence `seq`. False when the
// descriptor is closing or was closed (the caller returns -ECANCELED).
bool poll_acquire(PollDesc* pd, uint32_t seq);
// Drops the reference; the last one after close() closes the fd and recycles pd.
void poll_release(PollDesc* pd);
// Marks pd closing and wakes its parked operations with -ECANCELED; the fd is closed when the
// last operation in progress returns (at once if none is).
void poll_close(PollDesc* pd, uint32_t seq);

// Wakes the green thread parked to read on pd as a readiness event would: it retries its
// read, which may find nothing (a spurious wakeup, which every reader handles). With no reader
// parked, the next read wait returns at once. Any thread. For a server that must get an idle
// reader to look at its own state (a graceful shutdown) without closing the socket under it.
// A plain OS thread waiting in poll(2) is not woken.
void poll_wake_reader(PollDesc* pd, uint32_t seq);

enum class PollMode : uint8_t { kRead, kWrite };

// As poll_wake_reader, for the green thread parked to write (or connect) on pd.
void poll_wake_writer(PollDesc* pd, uint32_t seq);

// Registers fn to be called once when the netpoller sees the peer hang up or the socket fail
// (EPOLLRDHUP or EPOLLERR, the events that set hup), without anybody reading the socket: a
// server's request context is cancelled this way while its handler runs (Go starts a
// background read for it; here the event the netpoller receives anyway is enough, and costs
// no syscall and no green thread). New data (a pipelined request) does not call it; it stays
// in the socket for the next read. If hup is already set, fn runs at once on this thread and
// false is returned; false also when pd is closed (fn dropped). Replaces an earlier fn. fn
// runs on whatever M polls (no lock held): it must be short and must not park. While
// registered it counts as a waiter, so that a busy scheduler still polls (netpoll_waiters).
bool poll_on_hangup(PollDesc* pd, uint32_t seq, std::function<void()> fn);
// Unregisters it. fn may be running on another thread as this returns: it must refer only to
// what outlives that (a context's cancel function does: it holds a weak reference).
void poll_clear_hangup(PollDesc* pd, uint32_t seq);

// Parks until pd is ready for `mode`, the deadline passes (-ETIMEDOUT) or pd is closed
// (-ECANCELED); returns 0 when the caller should retry its syscall. The caller holds a
// reference (poll_acquire). From a plain OS thread it waits with poll(2).
int poll_wait(PollDesc* pd, PollMode mode, int64_t deadline_ns);

// ---- scheduler side ----
bool netpoll_inited();
// Green threads parked on some descriptor right now, plus registered hang-up hooks: what the
// scheduler and sysmon must poll for.
int32_t netpoll_waiters();
// Waits up to timeout_ns (-1: forever, 0: just look) and returns the green threads made ready,
// chained through sched_link, with their count in *n. Plain-thread waiters are woken directly.
GreenThread* netpoll(int64_t timeout_ns, uint32_t* n);
// Makes a concurrent blocking netpoll() return (coalesced: one eventfd write until it runs).
void netpoll_break();
// run() is over: forget waiters of green threads that were discarded with it.
void netpoll_forget_waiters();

struct NetpollCounters {
  std::atomic<uint64_t> polls{0};
  std::atomic<uint64_t> wakeups{0};
  std::atomic<int64_t> open{0};
  std::atomic<int64_t> last_poll_ns{0};  // when an M last looked (sysmon polls if stale)
};
extern NetpollCounters netpoll_counters;

}  // namespace green::detail
