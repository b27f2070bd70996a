-- Appended by loadtest/compare.py to every scenario script: prints one machine-readable line
-- with what wrk's text output rounds or leaves out (p99.9, error kinds, exact counts).
-- Latencies in microseconds. "status" counts non-2xx/3xx responses. A script that defines
-- loadtest_extra() (status.lua) adds its own fields: it returns ',"key":value...'.
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'LOADTEST {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,' ..
    '"write":%d,"status":%d,"timeout":%d,"p50_us":%.0f,"p90_us":%.0f,"p99_us":%.0f,' ..
    '"p999_us":%.0f,"max_us":%.0f,"mean_us":%.1f%s}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean,
    loadtest_extra and loadtest_extra() or ""))
end
