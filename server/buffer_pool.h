// BufferPool: the memory a connection needs only while requests are flowing (the read buffer,
// parser tables, output and scratch buffers), lent out when a connection has data and taken
// back when it goes idle. 10,000 idle keep-alive connections hold none of it; 100 busy ones
// share ~100 sets.
//
// Sets are kept in per-P shards (the P is the caller's processor id), so the acquire/release
// that brackets every keep-alive request touches a lock nobody else is likely to hold. Each
// shard keeps at most max_idle / shards sets; beyond that, released sets are freed.
//
// The pool gives memory back after a burst: release() frees any buffer of a set that grew past
// its usual size, and trim() (called once a second by the MemoryReclaimer) frees the idle sets
// nobody took since the previous trim(): each shard remembers the smallest its free list got
// in between (its low-water mark), and that many sets, the coldest, were not needed. Go's
// sync.Pool drops its idle objects over two GC cycles the same way. A steady load keeps the
// sets it uses; a burst's leftovers are gone two seconds after it ends.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "green/detail/spin_lock.h"
#include "green/http/limits.h"
#include "server/byte_buffer.h"
#include "server/request_parser.h"

namespace green::http {

struct ConnectionBuffers {
  explicit ConnectionBuffers(const Limits& limits) : parser(limits) {}
  ParserStorage parser;
  ByteBuffer output;   // responses of the current batch
  ByteBuffer body;     // a response body being buffered
  ByteBuffer headers;  // a response's handler-set header lines
};

class BufferPool {
 public:
  BufferPool(const Limits& limits, std::size_t max_idle);
  ~BufferPool();
  BufferPool(const BufferPool&) = delete;
  BufferPool& operator=(const BufferPool&) = delete;

  // Never null (allocates when the shard is empty). Any green or plain thread.
  ConnectionBuffers* acquire();
  // Takes a set back, trimming buffers that grew past their usual size.
  void release(ConnectionBuffers* b);

  std::size_t idle_sets() const;

  // Frees the idle sets not taken since the last trim(). Returns the bytes freed. Any thread;
  // frees outside the shard locks.
  std::size_t trim();
  // Bytes this pool has freed, in release() and trim(), since it was made (for the reclaimer).
  uint64_t freed_bytes() const { return freed_bytes_.load(std::memory_order_relaxed); }

 private:
  static constexpr int kShards = 16;
  // A spin lock, not a std::mutex: green threads take it, and a contended std::mutex would
  // block their OS thread and its P. Each critical section moves a few pointers (a vector's
  // growth at most); sets are freed outside it.
  struct alignas(64) Shard {
    mutable green::detail::SpinLock lock{green::detail::LockRank::kBufferPool};
    // The back is the most recently released.
    std::vector<ConnectionBuffers*> free GREEN_GUARDED_BY(lock);
    // The fewest sets `free` held since the last trim().
    std::size_t low_water GREEN_GUARDED_BY(lock) = 0;
  };
  Shard& shard();

  Limits limits_;
  std::size_t max_per_shard_;
  Shard shards_[kShards];
  std::atomic<uint64_t> freed_bytes_{0};
};

}  // namespace green::http
