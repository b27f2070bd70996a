// ServerMetrics: request counts by status, a latency histogram and connection counts, for
// /metrics. Counters are sharded by P (cache-line aligned), so recording a request is a few
// uncontended relaxed increments; snapshot() sums the shards.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>

namespace green::http {

class ServerMetrics {
 public:
  // Upper bounds of the latency buckets, in seconds (Prometheus "le"); the last is +Inf.
  static constexpr std::array<double, 14> kLatencyBounds = {
      0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5};
  static constexpr int kBuckets = static_cast<int>(kLatencyBounds.size()) + 1;

  void record_request(int status, std::chrono::nanoseconds latency);

  struct Snapshot {
    std::array<uint64_t, 600> by_status{};             // index: status code
    std::array<uint64_t, kBuckets> latency_buckets{};  // not cumulative
    uint64_t requests = 0;
    double latency_seconds_sum = 0;
  };
  Snapshot snapshot() const;

  std::atomic<int64_t> open_connections{0};
  std::atomic<uint64_t> accepted_connections{0};
  std::atomic<uint64_t> rejected_connections{0};  // over the cap: 503 and close
  std::atomic<uint64_t> header_timeouts{0};       // 408s: the head, or a pause in a body
  std::atomic<uint64_t> read_timeouts{0};         // 408s: the whole request (read_timeout)
  std::atomic<uint64_t> idle_timeouts{0};
  std::atomic<uint64_t> handler_timeouts{0};  // 503s: --handler-timeout, nothing sent

 private:
  static constexpr int kShards = 16;
  struct alignas(64) Shard {
    std::array<std::atomic<uint64_t>, 600> by_status{};
    std::array<std::atomic<uint64_t>, kBuckets> buckets{};
    std::atomic<uint64_t> latency_ns_sum{0};
  };
  std::array<Shard, kShards> shards_;
};

}  // namespace green::http
