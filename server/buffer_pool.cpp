#include "server/buffer_pool.h"

#include "runtime/green.h"

namespace green::http {

namespace {
// A set's output and scratch buffers keep what a typical batch needs; one that served a big
// response gives the memory back instead of pinning it in the pool.
constexpr std::size_t kKeepBytes = 64 * 1024;
}  // namespace

BufferPool::BufferPool(const Limits& limits, std::size_t max_idle)
    : limits_(limits), max_per_shard_(max_idle / kShards + 1) {}

BufferPool::~BufferPool() {
  for (Shard& s : shards_) {
    for (ConnectionBuffers* b : s.free) delete b;
  }
}

BufferPool::Shard& BufferPool::shard() {
  const int p = green::this_green_thread::processor_id();
  return shards_[p < 0 ? 0 : p % kShards];
}

ConnectionBuffers* BufferPool::acquire() {
  Shard& s = shard();
  {
    std::lock_guard<std::mutex> guard(s.lock);
    if (!s.free.empty()) {
      ConnectionBuffers* b = s.free.back();
      s.free.pop_back();
      return b;
    }
  }
  return new ConnectionBuffers(limits_);
}

void BufferPool::release(ConnectionBuffers* b) {
  b->output.clear();
  b->output.shrink_if_over(kKeepBytes * 2);
  b->body.clear();
  b->body.shrink_if_over(kKeepBytes * 2);
  b->headers.shrink_if_over(kKeepBytes);
  b->parser.body.clear();
  b->parser.body.shrink_if_over(kKeepBytes);
  if (b->parser.decoded_path.capacity() > kKeepBytes) b->parser.decoded_path = std::string();
  Shard& s = shard();
  {
    std::lock_guard<std::mutex> guard(s.lock);
    if (s.free.size() < max_per_shard_) {
      s.free.push_back(b);
      return;
    }
  }
  delete b;
}

std::size_t BufferPool::idle_sets() const {
  std::size_t n = 0;
  for (const Shard& s : shards_) {
    std::lock_guard<std::mutex> guard(s.lock);
    n += s.free.size();
  }
  return n;
}

}  // namespace green::http
