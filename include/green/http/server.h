// Server: the listener green thread, the connection registry, and graceful shutdown. The request
// path from accept to drain is described in docs/server.md.
//
//   Server server(options, router, access_log);
//   if (server.listen() != 0) ...;           // binds: the port is known from here on
//   green::go([&] { wait_for_signal(); server.shutdown(); });
//   server.serve();                           // accepts until shutdown, then drains
//
// serve() runs the accept loop in the calling green thread (it parks there until shutdown) and
// spawns one green thread per accepted connection; while it runs, a background green thread
// gives the memory of bursts back to the kernel. Request bodies that do not fit a connection's
// read buffer share one budget (ServerOptions::max_buffered_body_bytes). Connections over
// max_connections are answered 503 and closed at once. shutdown() (from any green thread) turns
// ready() false, accepts the connections already queued and closes the listener; serve() then
// drains: it wakes idle keep-alive connections (each answers a request that has already arrived,
// then closes without a reset: see connection.h), and lets connections that are handling a request
// finish it and answer with Connection: close; serve() returns once every connection is gone, or by
// shutdown_timeout: a little before it (a quarter of it, at most a second) the requests still
// in flight are cancelled, and halfway through that remainder the rest are closed, so that
// their green threads have seen it by the deadline.
//
// A connection whose handler is still running then (it sleeps, computes, or waits on
// something that is not its socket) cannot be stopped from outside: serve() returns how many
// there are, and the destructor waits for their green threads to end, so a Server is never
// destroyed under one. A process that must exit on time anyway does so without destroying
// the Server (greenhttp's main does).
//
// An exception that escapes a handler (and its middleware) never ends the process: it is
// logged once (spdlog, error level) and answered 500 with Connection: close, or, when the head
// has already gone out, the response is cut short and the connection closed (what
// middleware::recover() does inside a stack; green/http/middleware.h).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "green/http/access_log.h"
#include "green/http/limits.h"
#include "green/http/metrics.h"
#include "green/http/router.h"
#include "green/net.h"
#include "green/tls.h"

namespace green::http {

// HTTP/2 (server/http2.h): negotiation and the limits a client cannot pass.
struct Http2Options {
  // HTTP/2 on the HTTPS listener (Go's default). ALPN decides: a connection whose client
  // chose "h2" is served HTTP/2, so the TLS context must offer it
  // (TlsServerSettings::alpn = {"h2", "http/1.1"}, as greenhttp's main sets when this is on).
  bool enabled = true;
  bool cleartext = true;  // h2c on the plain listener: prior knowledge and Upgrade: h2c
  // SETTINGS_MAX_CONCURRENT_STREAMS, and the most handlers one connection runs at once
  // (nginx's http2_max_concurrent_streams is 128, Go's 250; the issue asks for 100).
  uint32_t max_concurrent_streams = 100;
  // SETTINGS_INITIAL_WINDOW_SIZE: request body bytes a stream may send before its handler
  // reads; the connection window is max(1 MiB, this).
  uint32_t stream_window = 256 * 1024;
  uint32_t header_table_size = 4096;  // SETTINGS_HEADER_TABLE_SIZE (HPACK), the RFC's default
  // Client RST_STREAMs per second, with a burst of twice that, before GOAWAY
  // (ENHANCE_YOUR_CALM): CVE-2023-44487. 0: no limit.
  uint32_t reset_rate = 100;
  // SETTINGS, PING, PRIORITY and empty DATA frames per second, burst twice that. 0: no limit.
  uint32_t control_rate = 100;
};

struct ServerOptions {
  std::string listen = "0.0.0.0:8080";
  Limits limits;
  std::chrono::nanoseconds read_header_timeout = std::chrono::seconds(10);
  // From a request's first byte until its body is in, whatever the pauses (Go's ReadTimeout);
  // then 408. 0: no limit.
  std::chrono::nanoseconds read_timeout = std::chrono::seconds(30);
  // Request-body bytes all connections together may buffer (server/body_budget.h); a body
  // that would grow past it gets 503. 0: no limit. 64 MiB: 64 bodies at the default --max-body
  // at once, far more than the handlers here see, while 10,000 slow uploads still cannot take
  // more than that plus their fixed ~30 KiB each.
  uint64_t max_buffered_body_bytes = 64 << 20;
  std::chrono::nanoseconds idle_timeout = std::chrono::seconds(60);
  std::chrono::nanoseconds write_timeout = std::chrono::seconds(30);
  std::chrono::nanoseconds shutdown_timeout = std::chrono::seconds(30);
  // A handler's deadline from when it starts (Go's http.TimeoutHandler; Go has none by
  // default): its request context is cancelled then (kDeadlineExceeded); if nothing of the
  // response was sent by then, the client gets 503 "Timeout" with Connection: close when the
  // handler returns, and what the handler wrote is discarded; if the response had started, it
  // is cut off (the connection closes without completing it, as Go's abort). 0: none, and
  // nothing of this costs anything. For a 503 on time whatever the handler does, wrap it in
  // middleware::timeout(d) (green/http/middleware.h), which runs it in its own green thread.
  std::chrono::nanoseconds handler_timeout{0};
  // Open connections before new ones get 503; 0: the open-files limit minus 64.
  int64_t max_connections = 0;
  // Descriptors the program keeps open besides connections (an open-file cache: the file
  // server's cache_entries), kept back from the default max_connections above.
  int64_t reserved_descriptors = 0;
  bool reuse_port = false;

  // HTTPS (green/tls.h): a second listener, at listen_tls, whose connections complete a TLS
  // handshake (within tls_handshake_timeout of their accept) and are then served exactly as
  // the plain listener's, by the same router, limits and drain. With listen empty it is the
  // only listener. `tls` is required with listen_tls; reload() on it (SIGHUP) changes the
  // certificate for new connections.
  std::string listen_tls;
  std::shared_ptr<net::TlsServerContext> tls;
  std::chrono::nanoseconds tls_handshake_timeout = std::chrono::seconds(10);
  Http2Options http2;
};

class Connection;
struct ServerState;  // server/server_state.h: buffer pool, body budget, memory reclaimer

// What the server's memory machinery holds now, for /metrics.
struct ServerMemoryStats {
  std::size_t pooled_buffer_sets = 0;   // connection buffer sets idle in the pool
  uint64_t buffered_body_bytes = 0;     // reserved from the body budget now
  uint64_t buffered_body_limit = 0;     // max_buffered_body_bytes (0: no limit)
  uint64_t body_budget_rejections = 0;  // requests answered 503 for want of budget
  uint64_t malloc_trims = 0;            // times freed memory went back to the kernel
};

class Server {
 public:
  // `router` and `access_log` (may be null: no logging) must outlive the server.
  Server(ServerOptions options, const Router& router, AccessLog* access_log);
  // Waits for every connection green thread to end (see above). From a green thread.
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Binds and listens. Returns 0, -EINVAL for an address that does not parse, or the
  // negative errno of bind/listen.
  int listen();
  net::Address local_address() const { return listener_.local_address(); }
  // The HTTPS listener's address (listen_tls), or an empty Address without one.
  net::Address tls_local_address() const;

  // Accepts until shutdown(), then drains (see above). Call from a green thread, once.
  // Returns the number of connection green threads still running (0 after a clean drain).
  std::size_t serve();
  // Starts the graceful shutdown. Any green thread; idempotent.
  void shutdown();

  // Serves one stream that is already connected (socket activation, a program embedding the
  // server, a test harness on a socketpair) exactly as serve() serves an accepted one: it
  // counts toward max_connections (over the cap it is answered 503 and closed), shutdown()
  // closes it when idle and serve()'s drain waits for it. Runs the connection in the calling
  // green thread and returns when it has ended, its socket closed. During a shutdown the
  // stream is closed at once. `peer` is the address the access log and handlers see. Needs no
  // listen() or serve(); from a green thread.
  void serve_connection(net::TcpStream stream, const net::Address& peer);

  bool ready() const { return ready_.load(std::memory_order_relaxed); }
  bool draining() const { return draining_.load(std::memory_order_relaxed); }

  const ServerOptions& options() const { return options_; }
  const ServerMetrics& metrics() const { return metrics_; }
  AccessLog* access_log() const { return access_log_; }
  int64_t max_connections() const { return max_connections_; }
  ServerMemoryStats memory_stats() const;

 private:
  friend class Connection;
  friend class Http2Connection;
  // Routes `r` and runs its handler on `w` (the OPTIONS * answer, 405 with Allow, 404): true
  // when the handler threw (logged; the caller answers 500 or cuts the response).
  bool dispatch(Request& r, ResponseWriter& w) const;
  void reject(net::TcpStream& stream, bool tls);
  // Counts a new connection in, or rejects it (503) over the cap; true when admitted.
  bool count_in(net::TcpStream& stream, bool tls);
  // Starts an admitted connection's green thread, or rejects it over the cap. `tls`: from
  // the HTTPS listener.
  void admit(net::TcpStream stream, const net::Address& peer, bool tls);
  // Runs an admitted connection (already counted in open_connections) to its end.
  void run_connection(net::TcpStream stream, const net::Address& peer, bool tls);
  // Accepts on `listener` until it is closed (shutdown).
  void accept_loop(net::TcpListener& listener, bool tls);
  // Accepts what is queued on `listener` without waiting (shutdown).
  void accept_queued(net::TcpListener& listener, bool tls);
  // The registry of live connections (ServerState::registry), for the drain.
  void register_connection(Connection* c);
  void unregister_connection(Connection* c);
  // Sets draining() and wakes idle connections. Idempotent.
  void start_drain();
  // Connection::stop on each: wakes idle ones to close themselves gracefully, or (`force`,
  // past the drain deadline) closes every socket.
  void stop_connections(bool force);
  // Waits until no connection green thread is left or `until` passes; true if none is left.
  bool wait_for_connections(std::chrono::steady_clock::time_point until);

  ServerOptions options_;
  const Router& router_;
  AccessLog* access_log_;
  std::unique_ptr<ServerState> state_;  // pool, body budget, reclaimer (runs while serve() does)
  ServerMetrics metrics_;
  net::TcpListener listener_;
  net::TcpListener tls_listener_;  // options_.listen_tls
  int64_t max_connections_ = 0;
  // /dev/null, held open to be given up when accept() fails with EMFILE (serve()).
  int spare_fd_ = -1;
  std::atomic<bool> ready_{false};
  std::atomic<bool> serving_{false};        // serve() was called
  std::atomic<bool> shutting_down_{false};  // shutdown() was called
  std::atomic<bool> draining_{false};       // serve() saw the listener closed and drains
};

// Go's http.ListenAndServe with the usual signal.NotifyContext + Shutdown around it, for
// programs that want one server and nothing else (see examples/hello): builds a Server on
// `options` (or on `address` with the default options), listens, prints one line
// "listening on HOST:PORT" to stderr (with port 0, the port the kernel chose), and serves until
// SIGINT or SIGTERM; then shuts down gracefully (the drain of Server::shutdown) and returns 0
// once every connection has ended. When it cannot listen it
// prints "cannot listen on ADDRESS: reason" and returns the negative errno of listen()
// (-EINVAL for an address that does not parse) without serving.
//
// Signals: for the time it serves, SIGINT and SIGTERM get a handler that only writes a byte
// to a pipe (async-signal-safe, so it may run on any OS thread, even one in the middle of
// scheduling); a plain thread reading that pipe starts the shutdown. The handler is installed
// with SA_RESETHAND: a second Ctrl-C during a long drain ends the process at once, as the
// default action does. The previous handlers are restored before it returns. One call at a
// time per process (signals are process-wide); a program that handles signals itself uses
// Server directly, as server/main.cpp does. SIGPIPE is set to be ignored (a peer that went away
// is an EPIPE for its connection, not the end of the process) and stays so.
//
// Call from a green thread (inside green::run); parks it until the server has drained. A
// handler still running past options.shutdown_timeout keeps it waiting (~Server).
int listen_and_serve(std::string_view address, const Router& router);
int listen_and_serve(ServerOptions options, const Router& router, AccessLog* access_log = nullptr);

}  // namespace green::http
