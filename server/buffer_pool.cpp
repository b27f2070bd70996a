#include "server/buffer_pool.h"

#include <algorithm>

#include "green/green.h"

namespace green::http {

namespace {
// A set's output and scratch buffers keep what a typical batch needs; one that served a big
// response gives the memory back instead of pinning it in the pool.
constexpr std::size_t kKeepBytes = 64 * 1024;

// The heap memory a set holds (what deleting it gives back to malloc).
std::size_t footprint(const ConnectionBuffers& b) {
  const ParserStorage& p = b.parser;
  return sizeof b + p.input.capacity() + p.header_names.capacity() * sizeof(Span) +
         p.header_values.capacity() * sizeof(Span) + p.headers.capacity() * sizeof(Header) +
         p.body.capacity() + p.decoded_path.capacity() + b.output.capacity() + b.body.capacity() +
         b.headers.capacity();
}

// Frees `buffer`'s memory if it is over `max`; returns the bytes freed.
std::size_t shrink(ByteBuffer& buffer, std::size_t max) {
  const std::size_t before = buffer.capacity();
  buffer.shrink_if_over(max);
  return before - buffer.capacity();
}
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
    green::detail::SpinLockGuard guard(s.lock);
    if (!s.free.empty()) {
      ConnectionBuffers* b = s.free.back();
      s.free.pop_back();
      s.low_water = std::min(s.low_water, s.free.size());
      return b;
    }
    s.low_water = 0;
  }
  return new ConnectionBuffers(limits_);
}

void BufferPool::release(ConnectionBuffers* b) {
  b->output.clear();
  b->body.clear();
  b->parser.body.clear();
  std::size_t freed = shrink(b->output, kKeepBytes * 2) + shrink(b->body, kKeepBytes * 2) +
                      shrink(b->headers, kKeepBytes) + shrink(b->parser.body, kKeepBytes);
  if (b->parser.decoded_path.capacity() > kKeepBytes) {
    freed += b->parser.decoded_path.capacity();
    b->parser.decoded_path = std::string();
  }
  Shard& s = shard();
  bool kept = false;
  {
    green::detail::SpinLockGuard guard(s.lock);
    if (s.free.size() < max_per_shard_) {
      s.free.push_back(b);
      kept = true;
    }
  }
  if (!kept) {
    freed += footprint(*b);
    delete b;
  }
  // Most releases free nothing: skip the shared counter's cache line then.
  if (freed != 0) freed_bytes_.fetch_add(freed, std::memory_order_relaxed);
}

std::size_t BufferPool::trim() {
  std::vector<ConnectionBuffers*> cold;
  for (Shard& s : shards_) {
    std::vector<ConnectionBuffers*> emptied;  // an emptied shard's array, freed after the lock
    green::detail::SpinLockGuard guard(s.lock);
    // The front of `free` is the coldest; low_water sets were not taken since the last trim.
    const std::size_t n = std::min(s.low_water, s.free.size());
    cold.insert(cold.end(), s.free.begin(), s.free.begin() + static_cast<std::ptrdiff_t>(n));
    s.free.erase(s.free.begin(), s.free.begin() + static_cast<std::ptrdiff_t>(n));
    if (s.free.empty()) emptied.swap(s.free);
    s.low_water = s.free.size();
  }
  std::size_t freed = 0;
  for (ConnectionBuffers* b : cold) {
    freed += footprint(*b);
    delete b;
  }
  if (freed != 0) freed_bytes_.fetch_add(freed, std::memory_order_relaxed);
  return freed;
}

std::size_t BufferPool::idle_sets() const {
  std::size_t n = 0;
  for (const Shard& s : shards_) {
    green::detail::SpinLockGuard guard(s.lock);
    n += s.free.size();
  }
  return n;
}

}  // namespace green::http
