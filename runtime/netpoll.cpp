// The netpoller: epoll, poll descriptors and parking on them. See netpoll.h.
#include "runtime/netpoll.h"

#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <utility>

#include "runtime/fatal.h"
#include "runtime/green_thread.h"
#include "runtime/scheduler.h"

namespace green::detail {

NetpollCounters netpoll_counters;

namespace {

// Descriptor table: chunks of kChunk descriptors, allocated on demand and never freed, so a
// PollDesc pointer (and an index from a stale epoll event) always points at a PollDesc.
constexpr uint32_t kChunkBits = 10;
constexpr uint32_t kChunk = 1u << kChunkBits;
constexpr uint32_t kMaxChunks = 4096;  // 4M descriptors

constexpr uint64_t kBreakData = ~uint64_t{0};  // epoll_data of the eventfd
// A socket's epoll_data is (seq << 32) | index: every index must fit the low word and none may
// be all ones there, or an event of the last descriptor would read as the eventfd's.
static_assert(uint64_t{kChunk} * kMaxChunks - 1 < uint64_t{0xFFFFFFFF});
static_assert(kChunk * kMaxChunks == 4u << 20, "the comment above promises 4M descriptors");

struct Table {
  SpinLock lock{LockRank::kPollTable};
  PollDesc* chunks[kMaxChunks] = {};  // written under lock, read racily after publication
  std::atomic<uint32_t> nchunks{0};
  PollDesc* free GREEN_GUARDED_BY(lock) = nullptr;
};
Table table;

int epfd = -1;
int break_fd = -1;
std::atomic<bool> inited{false};
std::once_flag init_once;
std::atomic<uint32_t> break_pending{0};
std::atomic<int32_t> waiters{0};
std::atomic<bool> have_pwait2{true};  // epoll_pwait2: Linux 5.11

int ms_ceil(int64_t ns) {
  return static_cast<int>(std::min<int64_t>((ns + 999'999) / 1'000'000, 1'000'000));
}

void init() {
  epfd = epoll_create1(EPOLL_CLOEXEC);
  break_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  // NOLINTNEXTLINE(concurrency-mt-unsafe): thread-safe in glibc (.clang-tidy)
  if (epfd < 0 || break_fd < 0) GREEN_FATAL("epoll_create1/eventfd: %s", std::strerror(errno));
  epoll_event ev{};
  ev.events = EPOLLIN;  // level-triggered: a pending break is seen by every poll until drained
  ev.data.u64 = kBreakData;
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, break_fd, &ev) != 0) {
    // NOLINTNEXTLINE(concurrency-mt-unsafe): thread-safe in glibc (.clang-tidy)
    GREEN_FATAL("epoll_ctl(eventfd): %s", std::strerror(errno));
  }
  // seq_cst, paired with stopm's role CAS then netpoll_inited(): an M that became the waiter
  // before the first socket sleeps on its futex, not in epoll_wait; wake it to switch over.
  inited.store(true, std::memory_order_seq_cst);
  wake_timer_waiter(INT64_MIN);
}

PollDesc* desc_at(uint32_t index) {
  const uint32_t c = index >> kChunkBits;
  if (c >= table.nchunks.load(std::memory_order_acquire)) return nullptr;
  return &table.chunks[c][index & (kChunk - 1)];
}

PollDesc* alloc_desc() {
  SpinLockGuard guard(table.lock);
  if (table.free == nullptr) {
    const uint32_t c = table.nchunks.load(std::memory_order_relaxed);
    if (c == kMaxChunks) return nullptr;
    auto* chunk = new PollDesc[kChunk];
    for (uint32_t i = 0; i < kChunk; ++i) {
      chunk[i].index = (c << kChunkBits) | i;
      chunk[i].free_next = i + 1 < kChunk ? &chunk[i + 1] : nullptr;
    }
    table.chunks[c] = chunk;
    table.nchunks.store(c + 1, std::memory_order_release);
    table.free = chunk;
  }
  PollDesc* pd = table.free;
  table.free = pd->free_next;
  pd->free_next = nullptr;
  return pd;
}

void free_desc(PollDesc* pd) {
  SpinLockGuard guard(table.lock);
  pd->free_next = table.free;
  table.free = pd;
}

// The last reference is gone after close: close the fd and recycle the descriptor.
void destroy(PollDesc* pd) {
  const int fd = pd->fd;
  {
    SpinLockGuard guard(pd->lock);
    pd->fd = -1;
    pd->rd_ready = pd->wr_ready = false;
    if (pd->on_hangup) {
      pd->on_hangup = nullptr;
      waiters.fetch_sub(1, std::memory_order_relaxed);
    }
    // Events still queued in epoll for this fd now carry a stale sequence.
    pd->seq.fetch_add(1, std::memory_order_release);
  }
  ::close(fd);  // also removes it from the epoll set
  netpoll_counters.open.fetch_sub(1, std::memory_order_relaxed);
  pd->refs.store(0, std::memory_order_release);
  free_desc(pd);
}

constexpr uint32_t kReadyTag = 1;
constexpr uint32_t kClosedTag = 2;

// Takes the waiter parked for one direction, if we win its claim. Caller holds pd->lock.
Waiter* take_waiter(Waiter** slot, uint32_t tag) {
  Waiter* w = *slot;
  if (w == nullptr) return nullptr;
  *slot = nullptr;
  if (!w->try_claim(tag)) return nullptr;  // its deadline fired first: it unlinks itself
  return w;
}

}  // namespace

// seq_cst: the load side of init()'s pair with stopm (see init()).
bool netpoll_inited() { return inited.load(std::memory_order_seq_cst); }
int32_t netpoll_waiters() { return waiters.load(std::memory_order_relaxed); }

PollDesc* poll_open(int fd, int* err) {
  std::call_once(init_once, init);
  PollDesc* pd = alloc_desc();
  if (pd == nullptr) {
    *err = -EMFILE;
    return nullptr;
  }
  uint32_t seq;
  {
    SpinLockGuard guard(pd->lock);
    pd->fd = fd;
    pd->rg = pd->wg = nullptr;
    pd->rd_ready = pd->wr_ready = false;
    pd->hup.store(false, std::memory_order_relaxed);
    seq = pd->seq.load(std::memory_order_relaxed);
  }
  // refs is 0 here (destroy() reset it); a stale poll_acquire() may briefly hold 1, and fails
  // on the sequence check, so it is not reset again.
  epoll_event ev{};
  ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
  ev.data.u64 = (uint64_t{seq} << 32) | pd->index;
  if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
    *err = -errno;
    pd->fd = -1;
    free_desc(pd);
    return nullptr;
  }
  netpoll_counters.open.fetch_add(1, std::memory_order_relaxed);
  return pd;
}

bool poll_acquire(PollDesc* pd, uint32_t seq) {
  uint32_t r = pd->refs.load(std::memory_order_relaxed);
  do {
    if ((r & kPollClosing) != 0) return false;
  } while (!pd->refs.compare_exchange_weak(r, r + 1, std::memory_order_acquire));
  if (pd->seq.load(std::memory_order_acquire) != seq) {
    // Closed and recycled since the caller opened it: not ours any more.
    poll_release(pd);
    return false;
  }
  return true;
}

void poll_release(PollDesc* pd) {
  if (pd->refs.fetch_sub(1, std::memory_order_acq_rel) - 1 == kPollClosing) destroy(pd);
}

void poll_close(PollDesc* pd, uint32_t seq) {
  // Hold a reference while waking, so that the descriptor cannot be destroyed under us.
  if (!poll_acquire(pd, seq)) return;  // already closed
  const uint32_t before = pd->refs.fetch_or(kPollClosing, std::memory_order_acq_rel);
  if ((before & kPollClosing) != 0) {  // a concurrent close won
    poll_release(pd);
    return;
  }
  Waiter* r;
  Waiter* w;
  std::function<void()> hook;  // dropped, not called: closing is not the peer hanging up
  {
    SpinLockGuard guard(pd->lock);
    r = take_waiter(&pd->rg, kClosedTag);
    w = take_waiter(&pd->wg, kClosedTag);
    if (pd->on_hangup) {
      hook = std::move(pd->on_hangup);
      pd->on_hangup = nullptr;
      waiters.fetch_sub(1, std::memory_order_relaxed);
    }
  }
  if (r != nullptr) unpark(*r);
  if (w != nullptr) unpark(*w);
  poll_release(pd);
}

namespace {
void poll_wake(PollDesc* pd, uint32_t seq, PollMode mode) {
  if (!poll_acquire(pd, seq)) return;  // closed: its parked operations were woken by the close
  Waiter* r;
  {
    SpinLockGuard guard(pd->lock);
    const bool reading = mode == PollMode::kRead;
    r = take_waiter(reading ? &pd->rg : &pd->wg, kReadyTag);
    // Nobody parked (or its deadline won the claim): remember the edge, as netpoll() does, so
    // an operation about to park sees it instead of sleeping through the wake.
    if (r == nullptr) (reading ? pd->rd_ready : pd->wr_ready) = true;
  }
  if (r != nullptr) unpark(*r);
  poll_release(pd);
}
}  // namespace

void poll_wake_reader(PollDesc* pd, uint32_t seq) { poll_wake(pd, seq, PollMode::kRead); }
void poll_wake_writer(PollDesc* pd, uint32_t seq) { poll_wake(pd, seq, PollMode::kWrite); }

bool poll_on_hangup(PollDesc* pd, uint32_t seq, std::function<void()> fn) {
  if (!poll_acquire(pd, seq)) return false;
  bool now = false;
  bool registered = false;
  std::function<void()> old;  // destroyed outside the lock
  {
    SpinLockGuard guard(pd->lock);
    if ((pd->refs.load(std::memory_order_acquire) & kPollClosing) != 0) {
      // Closing: dropped (poll_close has already cleared hooks, and will not look again).
    } else if (pd->hup.load(std::memory_order_relaxed)) {
      now = true;
    } else {
      if (!pd->on_hangup) waiters.fetch_add(1, std::memory_order_relaxed);
      old = std::exchange(pd->on_hangup, std::move(fn));
      registered = true;
    }
  }
  poll_release(pd);
  if (now) fn();  // NOLINT(bugprone-use-after-move): fn is moved from only when !now
  return registered;
}

void poll_clear_hangup(PollDesc* pd, uint32_t seq) {
  if (!poll_acquire(pd, seq)) return;  // closed: destroy() or poll_close() dropped it
  std::function<void()> old;
  {
    SpinLockGuard guard(pd->lock);
    if (pd->on_hangup) {
      old = std::move(pd->on_hangup);
      pd->on_hangup = nullptr;
      waiters.fetch_sub(1, std::memory_order_relaxed);
    }
  }
  poll_release(pd);
}

int poll_wait(PollDesc* pd, PollMode mode, int64_t deadline_ns) {
  const bool reading = mode == PollMode::kRead;
  if (current_green_thread() == nullptr) {
    // A plain OS thread: poll(2) this fd. (Closing from another thread does not wake it.)
    pollfd p{pd->fd, static_cast<short>(reading ? POLLIN : POLLOUT), 0};
    int timeout_ms = -1;
    if (deadline_ns != kNoDeadlineNs) {
      const int64_t left = deadline_ns - now_ns();
      if (left <= 0) return -ETIMEDOUT;
      timeout_ms = static_cast<int>(std::min<int64_t>((left + 999'999) / 1'000'000, INT32_MAX));
    }
    const int rc = ::poll(&p, 1, timeout_ms);
    if (rc == 0) return -ETIMEDOUT;
    return 0;
  }
  Waiter w;
  pd->lock.lock();
  bool& ready = reading ? pd->rd_ready : pd->wr_ready;
  Waiter*& slot = reading ? pd->rg : pd->wg;
  if ((pd->refs.load(std::memory_order_acquire) & kPollClosing) != 0) {
    pd->lock.unlock();
    return -ECANCELED;
  }
  if (ready) {
    ready = false;
    pd->lock.unlock();
    return 0;
  }
  if (reading && pd->hup.load(std::memory_order_relaxed)) {
    // End of stream or an error is a state, not an edge: the event that reported it may have
    // been consumed by an earlier wait that then read only the data before it. Nothing more
    // will arrive, so a reader must not park: its next read returns 0 or the error.
    pd->lock.unlock();
    return 0;
  }
  if (deadline_ns != kNoDeadlineNs && deadline_ns <= now_ns()) {
    pd->lock.unlock();
    return -ETIMEDOUT;
  }
  if (slot != nullptr) {
    pd->lock.unlock();
    GREEN_FATAL("two green threads wait to %s on fd %d at once", reading ? "read" : "write",
                pd->fd);
  }
  slot = &w;
  waiters.fetch_add(1, std::memory_order_relaxed);
  park_and_unlock(w, reading ? WaitReason::kNetpollRead : WaitReason::kNetpollWrite, pd->lock,
                  deadline_ns);
  waiters.fetch_sub(1, std::memory_order_relaxed);
  switch (w.claimed_by()) {
    case kReadyTag:
      return 0;
    case kClosedTag:
      return -ECANCELED;
    default: {  // kTimeoutTag: unlink ourselves
      SpinLockGuard guard(pd->lock);
      if (slot == &w) slot = nullptr;
      return -ETIMEDOUT;
    }
  }
}

GreenThread* netpoll(int64_t timeout_ns, uint32_t* n) {
  *n = 0;
  if (!netpoll_inited()) return nullptr;
  constexpr int kMaxEvents = 128;
  epoll_event events[kMaxEvents];
  int count;
  if (timeout_ns <= 0 || !have_pwait2.load(std::memory_order_relaxed)) {
    int timeout_ms = timeout_ns < 0 ? -1 : timeout_ns == 0 ? 0 : ms_ceil(timeout_ns);
    count = epoll_wait(epfd, events, kMaxEvents, timeout_ms);
  } else {
    // Nanosecond timeout: a timer 1 ms away must not wake up to a millisecond late.
    struct timespec ts {};
    ts.tv_sec = timeout_ns / 1'000'000'000;
    ts.tv_nsec = timeout_ns % 1'000'000'000;
    count = epoll_pwait2(epfd, events, kMaxEvents, &ts, nullptr);
    if (count < 0 && errno == ENOSYS) {
      have_pwait2.store(false, std::memory_order_relaxed);
      count = epoll_wait(epfd, events, kMaxEvents, ms_ceil(timeout_ns));
    }
  }
  netpoll_counters.last_poll_ns.store(now_ns(), std::memory_order_relaxed);
  if (count <= 0) return nullptr;
  netpoll_counters.polls.fetch_add(1, std::memory_order_relaxed);
  GreenThread* head = nullptr;
  GreenThread* tail = nullptr;
  auto push = [&](Waiter* w) {
    GreenThread* g = w->green_thread();
    if (g == nullptr) {  // cannot happen (plain threads use poll(2)); be safe
      unpark(*w);
      return;
    }
    set_status(g, GStatus::kWaiting, GStatus::kRunnable);
    g->sched_link = nullptr;
    if (tail != nullptr) {
      tail->sched_link = g;
    } else {
      head = g;
    }
    tail = g;
    ++*n;
  };
  for (int i = 0; i < count; ++i) {
    const uint64_t data = events[i].data.u64;
    if (data == kBreakData) {
      uint64_t value;
      while (::read(break_fd, &value, sizeof value) > 0) {
      }
      // seq_cst, as Go's netpollWakeSig: paired with netpoll_break's CAS (see there).
      break_pending.store(0, std::memory_order_seq_cst);
      continue;
    }
    PollDesc* pd = desc_at(static_cast<uint32_t>(data));
    if (pd == nullptr) continue;
    const uint32_t seq = static_cast<uint32_t>(data >> 32);
    const uint32_t ev = events[i].events;
    const bool readable = (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    const bool writable = (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0;
    Waiter* r = nullptr;
    Waiter* w = nullptr;
    std::function<void()> hook;  // empty (two stores) unless a hang-up hook fires
    {
      SpinLockGuard guard(pd->lock);
      if (pd->seq.load(std::memory_order_relaxed) != seq || pd->fd < 0) continue;  // stale
      // EPOLLHUP alone is also what a socket that is not connected yet reports: only the peer's
      // FIN (EPOLLRDHUP, also set with a reset) or an error ends reading for good.
      if ((ev & (EPOLLRDHUP | EPOLLERR)) != 0) {
        pd->hup.store(true, std::memory_order_release);
        if (pd->on_hangup) {
          hook = std::move(pd->on_hangup);
          pd->on_hangup = nullptr;
          waiters.fetch_sub(1, std::memory_order_relaxed);
        }
      }
      if (readable) {
        r = take_waiter(&pd->rg, kReadyTag);
        if (r == nullptr) pd->rd_ready = true;
      }
      if (writable) {
        w = take_waiter(&pd->wg, kReadyTag);
        if (w == nullptr) pd->wr_ready = true;
      }
    }
    // The hook runs here, on the polling M with no lock held: it cancels a context, which
    // closes a channel and readies its waiters (ready() works with or without a P).
    if (hook) hook();
    if (r != nullptr) push(r);
    if (w != nullptr) push(w);
  }
  if (*n != 0) netpoll_counters.wakeups.fetch_add(*n, std::memory_order_relaxed);
  return head;
}

void netpoll_break() {
  if (!netpoll_inited()) return;
  uint32_t expected = 0;
  // seq_cst, with the poller's seq_cst clear (Go's netpollWakeSig): a waker stores m->wake
  // (seq_cst) and then finds a break pending; the poller clears the flag and then reads
  // m->wake (stopm). Either this CAS comes after the clear and writes a new break, or the
  // poller's read comes after the waker's store: a skipped break loses no wake-up.
  if (!break_pending.compare_exchange_strong(expected, 1, std::memory_order_seq_cst)) return;
  const uint64_t one = 1;
  ssize_t rc;
  do {
    rc = ::write(break_fd, &one, sizeof one);
  } while (rc < 0 && errno == EINTR);
}

void netpoll_forget_waiters() {
  const uint32_t chunks = table.nchunks.load(std::memory_order_acquire);
  for (uint32_t c = 0; c < chunks; ++c) {
    for (uint32_t i = 0; i < kChunk; ++i) {
      PollDesc* pd = &table.chunks[c][i];
      std::function<void()> hook;  // destroyed after the lock: it may own a context
      {
        SpinLockGuard guard(pd->lock);
        pd->rg = pd->wg = nullptr;
        hook = std::move(pd->on_hangup);
        pd->on_hangup = nullptr;
      }
    }
  }
  waiters.store(0, std::memory_order_relaxed);
}

}  // namespace green::detail
