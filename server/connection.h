// Connection: one client connection, served by its own green thread (server-internal).
//
//   idle ──data──▶ reading ▸ parse ▸ route ▸ handler ▸ append response ▸ … ▸ one write ──▶ idle
//
// While idle (between keep-alive requests) a connection holds no buffers: it parks in
// wait_readable() on the socket, and after kShrinkAfter of idleness it also returns its stack
// pages to the kernel. When data arrives it borrows a buffer set from the pool, reads, handles
// every complete request in the buffer in order, appending each response to one output buffer,
// and sends the batch with a single write once the input is drained (pipelined requests cost
// one write per batch, not one per request). The set goes back to the pool as soon as nothing
// is buffered.
//
// Reading a request has three clocks: its head must be in within read_header_timeout of its
// first byte, no pause in its body may last longer than that, and the whole request must be in
// within read_timeout of its first byte (Go's ReadTimeout: a body trickled byte by byte cannot
// hold its connection and its buffers for good). Each expiry is a 408 and the connection's end.
//
// Bodies: a body up to the read buffer is collected before the handler runs; a larger one, a
// chunked one or one behind Expect: 100-continue is handed to the handler unread and read
// through body_reader_ as the handler asks (server/body_reader.h), under the same clocks.
// Until it ends, the connection parses nothing after it; what the handler leaves unread is
// dropped up to a bound, or the connection closes after the response.
//
// A request that cannot be parsed is answered with its precise status and Connection: close;
// nothing after it is processed. Closing after an error shuts down the write side first and
// drains what the client is still sending for a moment, so the client reads the response
// instead of a reset.
//
// Draining (Server::shutdown): a connection is never closed from outside while it may hold a
// request. The drain wakes an idle one; it reads what has arrived, answers any complete
// request with Connection: close, and closes with the same lingering close (nginx's
// lingering_close), so a request that crossed the shutdown gets its response or a clean end
// of stream, never a reset. Only at the end of the drain (shortly before shutdown_timeout: see
// Server::serve) is a socket closed under its owner.
//
// Per-request context (Request::context(), Go's r.Context()): created only when a handler
// asks, as a child of the server's base context (cancelled late in the drain), with the
// --handler-timeout deadline if one is set. While the handler runs, the netpoller watches
// the socket for the client's hang-up and cancels it (TcpStream::on_hangup: no read, no
// green thread, no syscall; a pipelined next request stays unread). It is cancelled when the
// handler returns. A handler that asks for nothing pays nothing: no allocation, no syscall.
//
// --handler-timeout (Go's TimeoutHandler, without its goroutine and buffer: the handler runs
// here, in the connection's green thread): writes that reach the socket after the deadline
// are discarded; when the handler returns past it, a response of which nothing was sent in
// time is replaced by 503 "Timeout" (Connection: close), and one that had started is cut
// off (the connection closes without completing it, Go's ErrAbortHandler). A handler that
// ignores its context is answered when it returns; middleware::timeout answers on time.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>

#include "green/context.h"
#include "green/http/response.h"
#include "green/net.h"
#include "green/tls.h"
#include "server/body_reader.h"
#include "server/http2.h"
#include "server/request_parser.h"

namespace green::http {

class Server;
struct ConnectionBuffers;

class Connection final : public ResponseSink, public RequestHost {
 public:
  // After this long without a request, an idle connection trims its stack.
  static constexpr std::chrono::milliseconds kShrinkAfter{500};

  // `tls`: the stream came from the HTTPS listener; run() does the TLS handshake first.
  Connection(Server& server, net::TcpStream stream, const net::Address& peer, bool tls = false);
  ~Connection() override;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  // Serves requests until the client leaves, an error, a timeout or shutdown.
  void run();

  // For Server's drain (under the registry lock; never parks). Not `force`: if the connection waits
  // for a request, wakes its green thread, which answers what has already arrived (with Connection:
  // close) and then closes gracefully itself. Its socket is never closed under it: closing with
  // unread bytes sends RST, and the client loses a request it had sent. `force` (past the drain
  // deadline): closes the socket, whatever the connection is doing.
  void stop(bool force);

  // Request::context(): the request's context, created on the first call (see above).
  const Context& request_context() override;
  bool client_gone() override { return stream_.peer_gone(); }

  // For the streaming request body reader (Request::body()): a read of the body failed (end
  // of stream, reset, timeout): cancels the request's context now or when it is created, as
  // Go's handleReadError does.
  void body_failed();

  // ResponseSink
  ByteBuffer& output() override;
  bool flush_output() override;  // a handler streaming: the write deadline starts now
  bool write_direct(std::string_view head, std::string_view data,
                    std::string_view tail) override;  // as flush_output, one writev
  int64_t send_file(int fd, uint64_t offset, uint64_t count) override;  // sendfile unless TLS

 private:
  friend class Server;
  friend class BodyReader;  // reads a streamed body through read_more() and the parser
  // kHandshake: TLS handshake in progress (no request can have arrived: a drain closes it).
  // kHttp2: the connection speaks HTTP/2 (h2_ serves it; a drain asks it to GOAWAY).
  enum State : int { kIdle, kActive, kClosing, kHandshake, kHttp2 };

  bool wait_for_request();  // false: close (timeout, error, forced close)
  bool tls_handshake();     // false: failed (counted in the TLS metrics), close
  // The socket's data path: through the TLS session on the HTTPS listener, else the socket.
  ssize_t io_try_read(void* buf, std::size_t n) {
    return tls_ ? tls_->try_read(stream_, buf, n) : stream_.try_read(buf, n);
  }
  int io_wait_readable() { return tls_ ? tls_->wait_readable(stream_) : stream_.wait_readable(); }
  ssize_t io_write(const void* buf, std::size_t n) {
    return tls_ ? tls_->write(stream_, buf, n) : stream_.write(buf, n);
  }
  ssize_t io_writev(iovec* iov, int count) {
    return tls_ ? tls_->writev(stream_, iov, count) : stream_.writev(iov, count);
  }
  bool serve_batches();  // true: went idle cleanly; false: close
  ssize_t read_more(bool* fresh_wake);
  // read_more() returned `n` <= 0 with a request begun: the status to answer (counted in the
  // metrics when a timeout), or 0 when there is nobody to answer (end of stream, reset).
  int read_failure(ssize_t n, std::string_view* reason);
  // read_more(): the whole-request deadline (read_timeout) passed, as opposed to a pause
  // (-ETIMEDOUT). Not an errno value.
  static constexpr ssize_t kReadTimedOut = -100000;
  void append_error(int status, std::string_view reason);  // an error response, to output()
  // After the handler of a request whose body streams: drops what it left unread (or decides
  // to close); returns the status of a failed body read, or 0.
  int finish_streamed_body(ResponseWriter& w, bool failed);
  void handle_request(Request& r);
  // HTTP/2 on this connection: after ALPN h2, the h2c preface (`preread`: the bytes read), or
  // an accepted "Upgrade: h2c" (`upgraded`: the request to answer on stream 1).
  void serve_http2(std::string_view preread, const Request* upgraded = nullptr,
                   std::string_view settings = {});
  // The request asks to upgrade to h2c and may (RFC 9113 3.2 of RFC 7540, which 9113
  // deprecates but curl still uses): true after the 101 and the HTTP/2 connection that
  // followed it.
  bool try_h2c_upgrade(Request& r);
  void finish_with_error(int status, std::string_view reason);
  void linger_close();
  void log_request(const Request* r, int status, uint64_t bytes);
  void release_buffers();
  bool flush_output_at(std::chrono::steady_clock::time_point now);
  // --handler-timeout, before a send of the output buffer (and `sending_more` bytes beside
  // it): past the deadline, drops this response's bytes (earlier pipelined responses before
  // output_mark_ still go out) and returns true, and the caller then reports failure, so a
  // streaming handler's flush()/EventStream::send() return false and its loop ends (Go's
  // TimeoutHandler makes such writes return ErrHandlerTimeout). In time, notes that bytes of
  // this response reached the socket. False at once when no deadline is set.
  bool past_handler_deadline(bool sending_more);
  void watch_hangup();
  // After the handler: ends the request's context (if created) and resets the body hooks.
  void end_request_context();

  Server& server_;
  net::TcpStream stream_;
  std::unique_ptr<net::TlsSession> tls_;  // after the handshake, on the HTTPS listener
  RequestParser parser_;
  BodyReader body_reader_{*this};  // the current request's body, when it streams
  ConnectionBuffers* buffers_ = nullptr;
  std::atomic<int> state_{kIdle};
  bool write_failed_ = false;
  bool close_after_ = false;     // the last response said Connection: close
  bool socket_drained_ = false;  // the last read returned less than asked
  // Clock reads cost ~35 ns here (vDSO, TSC): a keep-alive request reads it twice, when its
  // bytes arrive and when its response is done, and the rest reuse those.
  std::chrono::steady_clock::time_point request_start_;
  std::chrono::steady_clock::time_point finished_at_;  // the last response was complete
  std::chrono::steady_clock::time_point idle_since_;   // set before each wait_for_request()
  // The request's context and its cancel function, while a handler that asked for it runs.
  std::optional<Context> context_;
  CancelFn cancel_context_;
  bool hangup_watched_ = false;
  bool body_failed_ = false;
  // --handler-timeout, while the handler runs: its deadline (now_ns clock; 0: none), where
  // this response's bytes start in the output buffer (before: earlier pipelined responses),
  // and whether any of them reached the socket before the deadline.
  int64_t handler_deadline_ns_ = 0;
  std::size_t output_mark_ = 0;
  bool sent_in_time_ = false;
  // The first bytes may be the h2c preface (plain listener, h2c on): looked at once.
  bool preface_possible_ = false;
  bool h2_prior_knowledge_ = false;  // they were: run() serves HTTP/2 with them
  std::string h2_preread_;
  std::unique_ptr<Http2Connection> h2_;  // set before state_ becomes kHttp2
  char remote_[46] = {};
  uint8_t remote_length_ = 0;

  // The server's registry (a doubly linked list under ServerState::registry_lock).
  Connection* prev_ = nullptr;
  Connection* next_ = nullptr;
};

}  // namespace green::http
