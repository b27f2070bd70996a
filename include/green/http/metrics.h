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

  // HTTP/2 (server/http2.h).
  enum class Http2Reset : uint8_t {
    kClient,              // the client reset a stream (RST_STREAM)
    kRefused,             // past the concurrent streams: REFUSED_STREAM
    kFlowControlTimeout,  // the client's window stayed shut for --write-timeout: CANCEL
    kHandler,             // the handler failed mid-response, or its deadline cut it
    kProtocol,            // a malformed request or frame (nghttp2's checks)
  };
  static constexpr int kHttp2ResetCauses = 5;
  enum class Http2Goaway : uint8_t {
    kRapidReset,     // --http2-reset-rate: ENHANCE_YOUR_CALM
    kControlFlood,   // --http2-control-rate: ENHANCE_YOUR_CALM
    kProtocol,       // a connection error (nghttp2)
    kIdle,           // --idle-timeout without an open stream
    kDrain,          // shutdown
    kHeaderTimeout,  // a header block open past --read-header-timeout
  };
  static constexpr int kHttp2GoawayCauses = 6;
  struct Http2 {
    std::atomic<int64_t> connections{0};  // open now
    std::atomic<uint64_t> connections_total{0};
    std::atomic<int64_t> streams{0};  // handlers running now
    std::atomic<uint64_t> streams_total{0};
    std::array<std::atomic<uint64_t>, kHttp2ResetCauses> resets{};
    std::array<std::atomic<uint64_t>, kHttp2GoawayCauses> goaways{};
    std::atomic<uint64_t> flow_control_stalls{0};  // a handler parked on a shut window
    void reset(Http2Reset cause) {
      resets[static_cast<int>(cause)].fetch_add(1, std::memory_order_relaxed);
    }
    void goaway(Http2Goaway cause) {
      goaways[static_cast<int>(cause)].fetch_add(1, std::memory_order_relaxed);
    }
  };
  Http2 http2;

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
