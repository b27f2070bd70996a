// Health, readiness, metrics, the green-thread dump, and the live front page.
//
// With --debug-listen (Go's habit of serving net/http/pprof on localhost:6060) the metrics, the
// dumps and the front page are registered on the debug listener's router only, and the public
// port answers 404 for them; /healthz and /readyz stay public (load balancers probe them).
// The green-thread dump lists at most ?limit=N green threads (default kDumpLimit) and ends with
// "… N more": a dump of every connection's green thread costs ~60 bytes each, and many
// clients asking for it at once must not be able to make the server format megabytes.
#include <cstdio>
#include <sstream>
#include <string>

#include "green/green.h"
#include "green/net.h"
#include "handlers/handlers.h"

namespace green::handlers {

namespace {
using http::Method;
using http::Request;
using http::ResponseWriter;

// Green threads listed by /debug/greenthreads: by default, and at most with ?limit=.
constexpr int64_t kDumpLimit = 1000;
constexpr int64_t kDumpLimitMax = 100'000;

void metric(std::ostringstream& o, const char* name, const char* type, const char* help) {
  o << "# HELP " << name << ' ' << help << "\n# TYPE " << name << ' ' << type << '\n';
}

// A metric with one unlabelled sample: its HELP and TYPE lines, then the sample.
template <typename T>
void scalar(std::ostringstream& o, const char* name, const char* type, const char* help, T value) {
  metric(o, name, type, help);
  o << name << ' ' << value << '\n';
}

// The file server (--static-dir): the open-file cache and the answers by kind.
void static_metrics(std::ostringstream& o, const http::FileServer& files) {
  const http::FileServer::Stats s = files.stats();
  scalar(o, "greenhttp_static_cache_hits_total", "counter",
         "File lookups answered by the open-file cache (no open).", s.cache_hits);
  scalar(o, "greenhttp_static_cache_misses_total", "counter",
         "File lookups that opened the path (new, evicted or due for a recheck).", s.cache_misses);
  scalar(o, "greenhttp_static_cache_entries", "gauge", "Paths in the open-file cache now.",
         s.cache_entries);
  scalar(o, "greenhttp_static_body_bytes_total", "counter",
         "Body bytes sent from files (sendfile on plain HTTP).", s.sendfile_bytes);
  metric(o, "greenhttp_static_responses_total", "counter", "File server answers, by kind.");
  const std::pair<const char*, uint64_t> kinds[] = {
      {"ok", s.ok},
      {"partial", s.partial},
      {"not_modified", s.not_modified},
      {"precondition_failed", s.precondition_failed},
      {"range_not_satisfiable", s.range_not_satisfiable},
      {"not_found", s.not_found},
      {"redirect", s.redirects},
      {"listing", s.listings},
  };
  for (const auto& [kind, n] : kinds) {
    o << "greenhttp_static_responses_total{kind=\"" << kind << "\"} " << n << '\n';
  }
  scalar(o, "greenhttp_static_gzip_total", "counter",
         "Precompressed FILE.gz bodies served in place of FILE.", s.gzip);
}

// HTTPS (--listen-tls): handshakes by outcome, and the connections open by version and cipher.
void http2_metrics(std::ostringstream& o, const http::ServerMetrics::Http2& h) {
  scalar(o, "greenhttp_http2_connections", "gauge", "HTTP/2 connections open now.",
         h.connections.load(std::memory_order_relaxed));
  scalar(o, "greenhttp_http2_connections_total", "counter", "HTTP/2 connections served.",
         h.connections_total.load(std::memory_order_relaxed));
  scalar(o, "greenhttp_http2_streams", "gauge", "HTTP/2 stream handlers running now.",
         h.streams.load(std::memory_order_relaxed));
  scalar(o, "greenhttp_http2_streams_total", "counter", "HTTP/2 request streams handled.",
         h.streams_total.load(std::memory_order_relaxed));
  metric(o, "greenhttp_http2_resets_total", "counter", "HTTP/2 streams reset, by cause.");
  static constexpr const char* kResets[] = {"client", "refused", "flow_control_timeout", "handler",
                                            "protocol"};
  for (int i = 0; i < http::ServerMetrics::kHttp2ResetCauses; ++i) {
    o << "greenhttp_http2_resets_total{cause=\"" << kResets[i] << "\"} "
      << h.resets[static_cast<std::size_t>(i)].load(std::memory_order_relaxed) << '\n';
  }
  metric(o, "greenhttp_http2_goaways_total", "counter",
         "HTTP/2 connections ended by GOAWAY, by cause.");
  static constexpr const char* kGoaways[] = {"rapid_reset", "control_flood", "protocol",
                                             "idle",        "drain",         "header_timeout"};
  for (int i = 0; i < http::ServerMetrics::kHttp2GoawayCauses; ++i) {
    o << "greenhttp_http2_goaways_total{cause=\"" << kGoaways[i] << "\"} "
      << h.goaways[static_cast<std::size_t>(i)].load(std::memory_order_relaxed) << '\n';
  }
  scalar(o, "greenhttp_http2_flow_control_stalls_total", "counter",
         "Times an HTTP/2 handler parked because the client's flow-control window was shut.",
         h.flow_control_stalls.load(std::memory_order_relaxed));
}

void tls_metrics(std::ostringstream& o, const net::TlsServerContext& tls) {
  const net::TlsServerStats t = tls.stats();
  metric(o, "greenhttp_tls_handshakes_total", "counter",
         "TLS handshakes completed: full, or resumed (session ticket or cache).");
  o << "greenhttp_tls_handshakes_total{result=\"full\"} " << t.handshakes_full << '\n';
  o << "greenhttp_tls_handshakes_total{result=\"resumed\"} " << t.handshakes_resumed << '\n';
  metric(o, "greenhttp_tls_handshake_failures_total", "counter",
         "TLS handshakes failed, by reason.");
  for (int k = 1; k < net::kTlsHandshakeFailureCount; ++k) {
    o << "greenhttp_tls_handshake_failures_total{reason=\""
      << net::to_string(static_cast<net::TlsHandshakeFailure>(k)) << "\"} "
      << t.handshake_failures[k] << '\n';
  }
  scalar(o, "greenhttp_tls_handshakes_waiting", "gauge",
         "TLS handshakes waiting for a CPU slot (--tls-max-handshakes) now.", t.handshakes_waiting);
  metric(o, "greenhttp_tls_connections", "gauge", "TLS connections open, by version and cipher.");
  for (const net::TlsServerStats::InUse& u : t.in_use) {
    o << "greenhttp_tls_connections{version=\"" << u.version << "\",cipher=\"" << u.cipher << "\"} "
      << u.connections << '\n';
  }
  metric(o, "greenhttp_tls_certificate_reloads_total", "counter",
         "Certificate reloads (SIGHUP): ok, or failed (the old pair kept).");
  o << "greenhttp_tls_certificate_reloads_total{result=\"ok\"} " << t.reloads << '\n';
  o << "greenhttp_tls_certificate_reloads_total{result=\"failed\"} " << t.reload_failures << '\n';
  scalar(o, "greenhttp_tls_certificate_expiry_timestamp_seconds", "gauge",
         "When the serving certificate expires (Unix time).", t.certificate_not_after);
}

std::string prometheus_text(const AppState& app) {
  std::ostringstream o;
  const http::Server* server = app.server;
  if (server != nullptr) {
    const http::ServerMetrics& m = server->metrics();
    const http::ServerMetrics::Snapshot s = m.snapshot();
    metric(o, "greenhttp_requests_total", "counter", "Requests answered, by status code.");
    for (std::size_t code = 100; code < s.by_status.size(); ++code) {
      if (s.by_status[code] != 0) {
        o << "greenhttp_requests_total{code=\"" << code << "\"} " << s.by_status[code] << '\n';
      }
    }
    metric(o, "greenhttp_request_duration_seconds", "histogram",
           "Time from a request's first byte to its response being queued.");
    uint64_t cumulative = 0;
    for (int b = 0; b < http::ServerMetrics::kBuckets; ++b) {
      cumulative += s.latency_buckets[static_cast<std::size_t>(b)];
      o << "greenhttp_request_duration_seconds_bucket{le=\"";
      if (b < static_cast<int>(http::ServerMetrics::kLatencyBounds.size())) {
        o << http::ServerMetrics::kLatencyBounds[static_cast<std::size_t>(b)];
      } else {
        o << "+Inf";
      }
      o << "\"} " << cumulative << '\n';
    }
    o << "greenhttp_request_duration_seconds_sum " << s.latency_seconds_sum << '\n';
    o << "greenhttp_request_duration_seconds_count " << cumulative << '\n';
    const http::ServerMemoryStats mem = server->memory_stats();
    // Counters for a scrape: relaxed reads, as Metrics::snapshot() makes them.
    scalar(o, "greenhttp_open_connections", "gauge", "Client connections open now.",
           m.open_connections.load(std::memory_order_relaxed));
    scalar(o, "greenhttp_connections_accepted_total", "counter", "Connections accepted.",
           m.accepted_connections.load(std::memory_order_relaxed));
    scalar(o, "greenhttp_connections_rejected_total", "counter",
           "Connections answered 503 because the connection cap was reached.",
           m.rejected_connections.load(std::memory_order_relaxed));
    scalar(o, "greenhttp_header_timeouts_total", "counter",
           "Requests cut off with 408: head not in, or a body pause, past --read-header-timeout.",
           m.header_timeouts.load(std::memory_order_relaxed));
    scalar(o, "greenhttp_idle_timeouts_total", "counter", "Keep-alive connections closed idle.",
           m.idle_timeouts.load(std::memory_order_relaxed));
    scalar(o, "greenhttp_handler_timeouts_total", "counter",
           "Requests answered 503 because the handler ran past --handler-timeout.",
           m.handler_timeouts.load(std::memory_order_relaxed));
    scalar(o, "greenhttp_pooled_buffer_sets", "gauge", "Connection buffer sets idle in the pool.",
           mem.pooled_buffer_sets);
    scalar(o, "greenhttp_read_timeouts_total", "counter",
           "Requests cut off with 408 because head and body took longer than --read-timeout.",
           m.read_timeouts.load(std::memory_order_relaxed));
    scalar(o, "greenhttp_buffered_body_bytes", "gauge",
           "Request-body buffer bytes reserved from --max-buffered-body now.",
           mem.buffered_body_bytes);
    scalar(o, "greenhttp_buffered_body_limit_bytes", "gauge", "--max-buffered-body (0: no limit).",
           mem.buffered_body_limit);
    scalar(o, "greenhttp_body_budget_rejections_total", "counter",
           "Requests answered 503 because --max-buffered-body was spent.",
           mem.body_budget_rejections);
    scalar(o, "greenhttp_malloc_trims_total", "counter",
           "Times freed memory was handed back to the kernel (malloc_trim) after a burst.",
           mem.malloc_trims);
    const http::AccessLog* log = server->access_log();
    scalar(o, "greenhttp_access_log_dropped_total", "counter",
           "Access log records dropped because the writer fell behind.",
           (log ? log->dropped() : 0));
    scalar(o, "greenhttp_access_log_written_total", "counter", "Access log records written.",
           (log ? log->written() : 0));
    if (const net::TlsServerContext* tls = server->options().tls.get()) tls_metrics(o, *tls);
    http2_metrics(o, m.http2);
  }
  if (app.files) static_metrics(o, *app.files);
  const green::RuntimeStats rs = green::stats();
  scalar(o, "greenrt_green_threads", "gauge", "Green threads alive (runtime.NumGoroutine).",
         rs.green_threads);
  scalar(o, "greenrt_green_threads_created_total", "counter", "Green threads ever spawned.",
         rs.green_threads_created);
  scalar(o, "greenrt_procs", "gauge", "Logical processors (Ps).", rs.procs);
  scalar(o, "greenrt_idle_procs", "gauge", "Ps with nothing to run, right now.", rs.idle_procs);
  scalar(o, "greenrt_idle_procs_avg", "gauge",
         "Ps with nothing to run, averaged over about the last second.", rs.idle_procs_avg);
  scalar(o, "greenrt_machines", "gauge", "OS threads (Ms) of the runtime now.", rs.machines);
  scalar(o, "greenrt_idle_machines", "gauge", "Ms parked with no work.", rs.idle_machines);
  scalar(o, "greenrt_blocking_machines", "gauge",
         "OS threads blocked in a call without their P now (green::blocking, or a "
         "green::may_block call whose P sysmon retook).",
         rs.blocking_machines);
  metric(o, "greenrt_runqueue_length", "gauge", "Runnable green threads queued, per P.");
  for (int p = 0; p < rs.procs && p < 256; ++p) {
    o << "greenrt_runqueue_length{p=\"" << p << "\"} " << rs.per_proc[p].runq_length << '\n';
  }
  scalar(o, "greenrt_global_runqueue_length", "gauge",
         "Runnable green threads in the global queue.", rs.global_runq_length);
  scalar(o, "greenrt_steals_total", "counter", "Green threads taken from other Ps' queues.",
         rs.steals);
  scalar(o, "greenrt_hogs_total", "counter",
         "Times sysmon found a green thread running over 10 ms.", rs.hogs);
  scalar(o, "greenrt_preemptions_total", "counter", "Checkpoints that yielded on request.",
         rs.preemptions);
  scalar(o, "greenrt_machine_wakeups_total", "counter",
         "Idle Ps handed to an OS thread (a parked one woken, or a new one).", rs.machine_wakeups);
  scalar(o, "greenrt_blocking_calls_total", "counter", "green::blocking calls.", rs.blocking_calls);
  scalar(o, "greenrt_netpoll_wakeups_total", "counter", "Green threads woken by the netpoller.",
         rs.netpoll_wakeups);
  return o.str();
}

std::string vars_json(const AppState& app) {
  const green::RuntimeStats rs = green::stats();
  std::ostringstream o;
  char avg[32];
  std::snprintf(avg, sizeof avg, "%.2f", rs.idle_procs_avg);
  o << "{\"procs\":" << rs.procs << ",\"idle_procs\":" << rs.idle_procs
    << ",\"idle_procs_avg\":" << avg << ",\"machines\":" << rs.machines
    << ",\"green_threads\":" << rs.green_threads << ",\"steals\":" << rs.steals
    << ",\"hogs\":" << rs.hogs << ",\"global_runq\":" << rs.global_runq_length << ",\"runq\":[";
  for (int p = 0; p < rs.procs && p < 256; ++p) {
    o << (p ? "," : "") << rs.per_proc[p].runq_length;
  }
  o << "],\"scheduled\":[";
  for (int p = 0; p < rs.procs && p < 256; ++p) {
    o << (p ? "," : "") << rs.per_proc[p].scheduled;
  }
  o << "]";
  if (app.server != nullptr) {
    const auto& m = app.server->metrics();
    o << ",\"requests\":" << m.snapshot().requests
      << ",\"open_connections\":" << m.open_connections.load(std::memory_order_relaxed)
      << ",\"http2_connections\":" << m.http2.connections.load(std::memory_order_relaxed)
      << ",\"http2_streams\":" << m.http2.streams.load(std::memory_order_relaxed)
      << ",\"ready\":" << (app.server->ready() ? "true" : "false");
  }
  const double uptime =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - app.started).count();
  o << ",\"uptime_seconds\":" << uptime << "}";
  return o.str();
}

// The front page: what greenhttp is, and the runtime's figures, refreshed every second from
// /debug/vars by a few lines of script (no external assets: it works offline).
// tests/http/browser_test.py renders it in headless Chromium under wrk and reads the figures by
// their element ids (procs ... rps, queues) and body's data-updated: keep those stable.
constexpr std::string_view kIndexHtml = R"HTML(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>greenhttp</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:15px/1.5 system-ui,sans-serif;max-width:52em;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:0}.sub{color:#666;margin-top:0}
table{border-collapse:collapse;margin:1em 0}td,th{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:right}
th{text-align:left}.bar{display:inline-block;height:.8em;background:#3a7;vertical-align:middle}
code{background:#f4f4f4;padding:0 .2em}
</style></head><body>
<h1>greenhttp</h1>
<p class="sub">An HTTP/1.1 and HTTP/2 server with one green thread per connection (and per HTTP/2 stream), on a Go-style M:N runtime in C++20.</p>
<p>Every connection is served by its own green thread (G), as in Go's <code>net/http</code>.
Green threads are scheduled by logical processors (P) onto OS threads (M): per-P run queues,
work stealing, a global queue, an edge-triggered epoll netpoller that parks a G when its socket
would block. Idle keep-alive connections hold no buffers and a trimmed stack. The access log is
written by a background green thread (<code>go logRequest(r)</code>) that drops and counts
records rather than let memory grow.</p>
<h2>Live figures</h2>
<table id="figures">
<tr><th>Ps (logical processors)</th><td id="procs">…</td></tr>
<tr><th>idle Ps (1 s average)</th><td id="idle_procs_avg">…</td></tr>
<tr><th>Ms (OS threads)</th><td id="machines">…</td></tr>
<tr><th>green threads</th><td id="green_threads">…</td></tr>
<tr><th>steals</th><td id="steals">…</td></tr>
<tr><th>open connections</th><td id="open_connections">…</td></tr>
<tr><th>HTTP/2 connections</th><td id="http2_connections">…</td></tr>
<tr><th>HTTP/2 streams in a handler</th><td id="http2_streams">…</td></tr>
<tr><th>requests served</th><td id="requests">…</td></tr>
<tr><th>requests/s</th><td id="rps">…</td></tr>
</table>
<h3>Run queue length per P</h3>
<table id="queues"></table>
<h3>HTTP/2 streams, each in its own green thread</h3>
<p>A stream's handler runs in a green thread of its own, labelled with its stream id (the first
100 of the dump).</p>
<table id="streams"><tr><td>none</td></tr></table>
<p>Raw data: <a href="/metrics">/metrics</a> (Prometheus), <a href="/debug/vars">/debug/vars</a>,
<a href="/debug/greenthreads">/debug/greenthreads</a> (every green thread, Go-dump style).</p>
<script>
let last = null;
async function refresh() {
  try {
    const v = await (await fetch('/debug/vars', {cache: 'no-store'})).json();
    for (const k of ['procs','idle_procs_avg','machines','green_threads','steals','open_connections','http2_connections','http2_streams','requests']) {
      const el = document.getElementById(k);
      if (el && k in v) el.textContent = k === 'idle_procs_avg' ? v[k].toFixed(2) : v[k];
    }
    if (last) {
      const dt = v.uptime_seconds - last.uptime_seconds;
      if (dt > 0) document.getElementById('rps').textContent = Math.round((v.requests - last.requests) / dt);
    }
    last = v;
    const q = document.getElementById('queues');
    q.innerHTML = v.runq.map((n, p) =>
      '<tr><th>P' + p + '</th><td>' + n + '</td><td>scheduled ' + v.scheduled[p] +
      '</td><td><span class="bar" style="width:' + Math.min(300, n * 3) + 'px"></span></td></tr>').join('');
    const dump = await (await fetch('/debug/greenthreads?limit=1000', {cache: 'no-store'})).text();
    const rows = [];
    for (const m of dump.matchAll(/green thread (\d+) \[([^\]]*)\]:[^\n]*\n[^\n]*\n\tlabel: h2 stream (\d+)/g)) {
      if (rows.length < 100) rows.push('<tr><th>G' + m[1] + '</th><td>stream ' + m[3] + '</td><td>' + m[2] + '</td></tr>');
    }
    document.getElementById('streams').innerHTML = rows.length ? rows.join('') : '<tr><td>none</td></tr>';
    document.body.dataset.updated = String(Date.now());
  } catch (e) { document.getElementById('rps').textContent = 'offline'; }
}
// One refresh at a time, a second after the last one ended: with setInterval, a slow answer made
// two overlap, and requests/s was then taken over the few milliseconds between their answers.
(async function poll() { await refresh(); setTimeout(poll, 1000); })();
</script>
</body></html>
)HTML";
}  // namespace

void register_observability(http::Router& router, AppState& app) {
  AppState* c = &app;
  if (!app.separate_debug) register_debug(router, app);
  router.handle(Method::kGet, "/healthz", [](Request&, ResponseWriter& w) {
    w.send(200, "text/plain; charset=utf-8", "ok\n");
  });
  router.handle(Method::kGet, "/readyz", [c](Request&, ResponseWriter& w) {
    if (c->server != nullptr && c->server->ready()) {
      w.send(200, "text/plain; charset=utf-8", "ready\n");
    } else {
      w.send(503, "text/plain; charset=utf-8", "not ready: shutting down\n");
    }
  });
}

void register_debug(http::Router& router, AppState& app) {
  AppState* c = &app;
  router.handle(Method::kGet, "/metrics", [c](Request&, ResponseWriter& w) {
    w.send(200, "text/plain; version=0.0.4; charset=utf-8", prometheus_text(*c));
  });
  router.handle(Method::kGet, "/debug/greenthreads", [](Request& r, ResponseWriter& w) {
    const auto limit = static_cast<std::size_t>(r.query_int("limit", kDumpLimit, kDumpLimitMax));
    w.send(200, "text/plain; charset=utf-8", green::dump_green_threads(limit));
  });
  router.handle(Method::kGet, "/debug/vars", [c](Request&, ResponseWriter& w) {
    w.set_header("Cache-Control", "no-store");
    w.send(200, "application/json", vars_json(*c));
  });
  router.handle(Method::kGet, "/", [](Request&, ResponseWriter& w) {
    w.send(200, "text/html; charset=utf-8", kIndexHtml);
  });
}

void register_all(http::Router& router, AppState& app) {
  if (app.static_prefix == "/") {
    // File-server mode (--static-prefix /): every path of the public port is a file, as with
    // `nginx` serving a root; the built-in endpoints would shadow the site's own paths, so only
    // --debug-listen's port has /metrics, /healthz, /readyz and the rest.
    register_static(router, app);
    return;
  }
  register_benchmarks(router);
  register_streaming(router);
  register_runtime_demos(router, app.limits);
  register_static(router, app);
  register_observability(router, app);
}

}  // namespace green::handlers
