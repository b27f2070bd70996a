// BufferPool: the memory a connection needs only while requests are flowing (the read buffer,
// parser tables, output and scratch buffers), lent out when a connection has data and taken
// back when it goes idle. 10,000 idle keep-alive connections hold none of it; 100 busy ones
// share ~100 sets.
//
// Sets are kept in per-P shards (the P is the caller's processor id), so the acquire/release
// that brackets every keep-alive request touches a lock nobody else is likely to hold. Each
// shard keeps at most max_idle / shards sets; beyond that, released sets are freed.
#pragma once

#include <cstddef>
#include <memory>
#include <mutex>
#include <vector>

#include "server/byte_buffer.h"
#include "server/limits.h"
#include "server/request_parser.h"

namespace green::http {

struct ConnectionBuffers {
  explicit ConnectionBuffers(const Limits& limits) : parser(limits) {}
  ParserStorage parser;
  ByteBuffer output;    // responses of the current batch
  ByteBuffer body;      // a response body being buffered
  ByteBuffer headers;   // a response's handler-set header lines
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

 private:
  static constexpr int kShards = 16;
  struct alignas(64) Shard {
    mutable std::mutex lock;
    std::vector<ConnectionBuffers*> free;
  };
  Shard& shard();

  Limits limits_;
  std::size_t max_per_shard_;
  Shard shards_[kShards];
};

}  // namespace green::http
