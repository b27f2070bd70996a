#include "green/http/metrics.h"

#include "green/green.h"

namespace green::http {

void ServerMetrics::record_request(int status, std::chrono::nanoseconds latency) {
  const int p = green::this_green_thread::processor_id();
  Shard& s = shards_[static_cast<std::size_t>(p < 0 ? 0 : p % kShards)];
  if (status < 0 || status >= 600) status = 0;
  s.by_status[static_cast<std::size_t>(status)].fetch_add(1, std::memory_order_relaxed);
  const double seconds = static_cast<double>(latency.count()) * 1e-9;
  std::size_t b = 0;
  while (b < kLatencyBounds.size() && seconds > kLatencyBounds[b]) ++b;
  s.buckets[b].fetch_add(1, std::memory_order_relaxed);
  s.latency_ns_sum.fetch_add(static_cast<uint64_t>(latency.count()), std::memory_order_relaxed);
}

ServerMetrics::Snapshot ServerMetrics::snapshot() const {
  Snapshot out;
  uint64_t ns = 0;
  for (const Shard& s : shards_) {
    for (std::size_t i = 0; i < s.by_status.size(); ++i) {
      const uint64_t n = s.by_status[i].load(std::memory_order_relaxed);
      out.by_status[i] += n;
      out.requests += n;
    }
    for (std::size_t i = 0; i < s.buckets.size(); ++i) {
      out.latency_buckets[i] += s.buckets[i].load(std::memory_order_relaxed);
    }
    ns += s.latency_ns_sum.load(std::memory_order_relaxed);
  }
  out.latency_seconds_sum = static_cast<double>(ns) * 1e-9;
  return out;
}

}  // namespace green::http
