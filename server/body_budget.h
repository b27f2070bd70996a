// BodyBudget: a cap on the request-body bytes a server buffers at once, whatever the number of
// connections. Small bodies (up to the read buffer's size) are not counted: they sit in the
// connection's pooled read buffer or grow its body buffer only as far as that. A body that
// outgrows them reserves budget before each growth of its buffer (the buffer's new capacity,
// not its size: capacity is the memory), and gives the reservation back when the request is
// done or its connection dies. Budget is taken as the bytes arrive, never for bytes only
// declared: reserving a whole Content-Length at the headers let 64 clients that sent just
// headers declaring 1 MiB (then a byte every few seconds) hold the default 64 MiB and get every
// other upload refused; now holding budget costs a client the bytes themselves. A declared
// length is only checked against what is left (fits()), for an early 503. When a growth does not
// fit, the request is answered 503 (Connection: close, Retry-After) instead of being buffered.
// Since bodies past the read buffer stream (green/http/body.h), only a handler that collects one
// (read_all()) takes budget; a handler that reads the stream takes none, whatever the body's size.
//
// Why a process-wide budget rather than only --max-body: --max-body bounds one request, so the
// memory bodies can take grows with the connection count (1,000 slow uploads of 1 MiB each held
// 1 GB). nginx caps each body's memory (client_body_buffer_size) and spills the rest to a
// temporary file; Go never buffers (the handler reads the stream). Without either, one shared
// cap is what keeps the total bounded.
//
// Thread safety: try_reserve() and release() from any thread, lock-free. Relaxed atomics: the
// counter guards an amount, it publishes no data.
#pragma once

#include <atomic>
#include <cstdint>

namespace green::http {

class BodyBudget {
 public:
  // `limit` bytes in all; 0: no limit (every reservation succeeds, and is still counted).
  explicit BodyBudget(uint64_t limit) : limit_(limit) {}
  BodyBudget(const BodyBudget&) = delete;
  BodyBudget& operator=(const BodyBudget&) = delete;

  // Takes `n` bytes of the budget; false (and a rejection counted) when they do not fit.
  bool try_reserve(uint64_t n) {
    uint64_t used = in_use_.load(std::memory_order_relaxed);
    do {
      if (limit_ != 0 && (n > limit_ || used > limit_ - n)) {
        rejections_.fetch_add(1, std::memory_order_relaxed);
        return false;
      }
    } while (!in_use_.compare_exchange_weak(used, used + n, std::memory_order_relaxed));
    return true;
  }
  // Whether `n` bytes would fit now, without taking them (another body may take them first);
  // false counts a rejection, as the caller answers 503.
  bool fits(uint64_t n) {
    if (limit_ == 0) return true;
    const uint64_t used = in_use_.load(std::memory_order_relaxed);
    if (n <= limit_ && used <= limit_ - n) return true;
    rejections_.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  // Gives back `n` bytes taken by try_reserve() (the caller frees that memory).
  void release(uint64_t n) {
    in_use_.fetch_sub(n, std::memory_order_relaxed);
    released_.fetch_add(n, std::memory_order_relaxed);
  }

  // Memory freed outside the budget that a trim may give back (HTTP/2 streams' buffers):
  // counted with released() for the MemoryReclaimer, never against the budget.
  void note_freed(uint64_t n) { released_.fetch_add(n, std::memory_order_relaxed); }

  uint64_t limit() const { return limit_; }
  uint64_t in_use() const { return in_use_.load(std::memory_order_relaxed); }
  uint64_t rejections() const { return rejections_.load(std::memory_order_relaxed); }
  // Bytes ever released: memory freed by bodies that were done (for the MemoryReclaimer).
  uint64_t released() const { return released_.load(std::memory_order_relaxed); }

 private:
  const uint64_t limit_;
  std::atomic<uint64_t> in_use_{0};
  std::atomic<uint64_t> rejections_{0};
  std::atomic<uint64_t> released_{0};
};

}  // namespace green::http
