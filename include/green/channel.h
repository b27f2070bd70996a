// Channel<T>: Go's channels for green threads (and plain threads).
//
//   Channel<int> ch(0);       // unbuffered: send completes when a receiver has taken the value
//   Channel<int> jobs(64);    // buffered FIFO of capacity 64
//   bool sent = ch.send(42);  // false: the channel is closed (Go panics; we return an error)
//   std::optional<int> v = ch.recv();  // nullopt: closed and drained (Go's `v, ok := <-ch`)
//   ch.close();               // false if already closed
//
// Blocking: send() parks while no receiver is waiting and the buffer is full; recv() parks
// while nothing is buffered and no sender waits. A green thread parks (its OS thread runs other
// green threads); a plain OS thread sleeps on a futex. Values go straight from a sender to a
// parked receiver (no copy through the buffer) and receivers are served in FIFO order.
// close() wakes every parked receiver (they get nullopt once the buffer is drained) and every
// parked sender (their send returns false).
//
// Thread safety: every member may be called concurrently from any green or plain thread.
// Ownership: the caller owns the Channel and must keep it alive until every operation on it
// has returned (share it by reference with green threads you join, or through shared_ptr).
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>
#include <vector>

#include "green/detail/intrusive_fifo.h"
#include "green/detail/park.h"
#include "green/green.h"

namespace green {

class Context;  // green/context.h

enum class ChanStatus { kOk, kWouldBlock, kClosed };

namespace detail {

// A green or plain thread waiting in a channel's queue, on the waiter's stack. One Waiter may
// stand in several queues at once (select): the waker that wins waiter->try_claim(index) owns
// the wakeup and sets `ok`.
struct ChanNode {
  Waiter* waiter = nullptr;
  uint32_t index = 0;    // select case index (0 for plain send/recv)
  void* slot = nullptr;  // receiver: std::optional<T>* to fill; sender: T* to take from
  bool ok = false;       // set by the winner: value transferred (false: closed)
  bool queued = false;   // under the channel lock
  ChanNode* next = nullptr;
  ChanNode* prev = nullptr;
};

inline bool claim(ChanNode* n) { return n->waiter->try_claim(n->index); }
using ChanQueue = IntrusiveFifo<ChanNode>;

// The type-independent part of a channel: lock, wait queues, closed flag.
struct ChannelCore {
  SpinLock lock{LockRank::kChannel};
  ChanQueue receivers GREEN_GUARDED_BY(lock);
  ChanQueue senders GREEN_GUARDED_BY(lock);
  bool closed GREEN_GUARDED_BY(lock) = false;
  // Marks closed and claims every waiter; returns them chained through `next` (ok = false).
  // Caller holds the lock; wake the returned chain with wake_all() after unlocking.
  ChanNode* close_locked() GREEN_REQUIRES(lock);
  static void wake_all(ChanNode* chain);
  // Parks the caller in `queue` (lock held on entry, released on park).
  static void park_in(ChanQueue& queue, SpinLock& lock, ChanNode& node, WaitReason reason)
      GREEN_RELEASE(lock);
};

}  // namespace detail

template <typename T>
class Channel {
 public:
  explicit Channel(std::size_t capacity = 0) : ring_(capacity) {}
  Channel(const Channel&) = delete;
  Channel& operator=(const Channel&) = delete;

  // Sends v, parking as needed. Returns false (v dropped) if the channel is or becomes closed.
  [[nodiscard]] bool send(T v) GREEN_NO_THREAD_SAFETY_ANALYSIS {
    checkpoint();  // a preemption point, as every blocking runtime call
    core_.lock.lock();
    if (try_send_locked(v)) return true;  // unlocked by try_send_locked on success
    if (core_.closed) {
      core_.lock.unlock();
      return false;
    }
    detail::Waiter w(detail::Claimers::kLockHolders);  // no deadline, one queue
    detail::ChanNode node;
    node.waiter = &w;
    node.slot = &v;
    detail::ChannelCore::park_in(core_.senders, core_.lock, node, detail::WaitReason::kChanSend);
    return node.ok;
  }

  // As send() and recv(), but giving up when ctx is cancelled (defined in green/context.h,
  // which the caller includes to have a Context at all).
  [[nodiscard]] bool send(T v, const Context& ctx);
  std::optional<T> recv(const Context& ctx);

  // Receives a value, parking as needed; nullopt once the channel is closed and drained.
  std::optional<T> recv() GREEN_NO_THREAD_SAFETY_ANALYSIS {
    checkpoint();
    std::optional<T> out;
    core_.lock.lock();
    if (try_recv_locked(out)) return out;
    detail::Waiter w(detail::Claimers::kLockHolders);  // no deadline, one queue
    detail::ChanNode node;
    node.waiter = &w;
    node.slot = &out;
    detail::ChannelCore::park_in(core_.receivers, core_.lock, node,
                                 detail::WaitReason::kChanReceive);
    return out;
  }

  // Never parks. kWouldBlock: nobody to take it and the buffer is full.
  ChanStatus try_send(T v) GREEN_NO_THREAD_SAFETY_ANALYSIS {
    core_.lock.lock();
    if (try_send_locked(v)) return ChanStatus::kOk;
    const bool closed = core_.closed;
    core_.lock.unlock();
    return closed ? ChanStatus::kClosed : ChanStatus::kWouldBlock;
  }

  // Never parks. On kOk `out` holds the value.
  ChanStatus try_recv(T& out) GREEN_NO_THREAD_SAFETY_ANALYSIS {
    std::optional<T> got;
    core_.lock.lock();
    if (try_recv_locked(got)) {
      if (!got) return ChanStatus::kClosed;
      out = std::move(*got);
      return ChanStatus::kOk;
    }
    core_.lock.unlock();
    return ChanStatus::kWouldBlock;
  }

  // Closes the channel. Returns false if it was already closed (Go panics).
  bool close() {
    core_.lock.lock();
    if (core_.closed) {
      core_.lock.unlock();
      return false;
    }
    detail::ChanNode* woken = core_.close_locked();
    core_.lock.unlock();
    detail::ChannelCore::wake_all(woken);
    return true;
  }

  std::size_t capacity() const { return ring_.size(); }
  // Values buffered now (racy by nature, like len(ch)).
  std::size_t size() {
    core_.lock.lock();
    std::size_t n = count_;
    core_.lock.unlock();
    return n;
  }

  // ---- for select (lock held on entry; released only when returning true) ----
  // The thread-safety analysis cannot express a lock released only on success, so these two
  // and the four operations above built on them are exempt from it (the run-time rank check
  // still sees every lock and unlock).
  detail::ChannelCore& core() { return core_; }
  bool try_send_locked(T& v) GREEN_NO_THREAD_SAFETY_ANALYSIS {
    if (core_.closed) return false;
    if (detail::ChanNode* r = core_.receivers.pop_claimed()) {
      *static_cast<std::optional<T>*>(r->slot) = std::move(v);
      r->ok = true;
      core_.lock.unlock();
      detail::unpark(*r->waiter);
      return true;
    }
    if (count_ < ring_.size()) {
      ring_[(head_ + count_) % ring_.size()] = std::move(v);
      ++count_;
      core_.lock.unlock();
      return true;
    }
    return false;
  }
  // true: done (out holds a value, or nullopt because closed and drained).
  bool try_recv_locked(std::optional<T>& out) GREEN_NO_THREAD_SAFETY_ANALYSIS {
    if (count_ > 0) {
      out = std::move(ring_[head_]);
      ring_[head_].reset();
      head_ = (head_ + 1) % ring_.size();
      --count_;
      // A parked sender's value takes the freed slot (keeps FIFO order).
      if (detail::ChanNode* s = core_.senders.pop_claimed()) {
        ring_[(head_ + count_) % ring_.size()] = std::move(*static_cast<T*>(s->slot));
        ++count_;
        s->ok = true;
        core_.lock.unlock();
        detail::unpark(*s->waiter);
        return true;
      }
      core_.lock.unlock();
      return true;
    }
    if (detail::ChanNode* s = core_.senders.pop_claimed()) {
      out = std::move(*static_cast<T*>(s->slot));
      s->ok = true;
      core_.lock.unlock();
      detail::unpark(*s->waiter);
      return true;
    }
    if (core_.closed) {
      out.reset();
      core_.lock.unlock();
      return true;
    }
    return false;
  }

 private:
  detail::ChannelCore core_;
  std::vector<std::optional<T>> ring_;  // buffer; empty for unbuffered channels
  std::size_t head_ = 0;
  std::size_t count_ = 0;
};

}  // namespace green
