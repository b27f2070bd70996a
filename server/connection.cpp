#include "server/connection.h"

#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <exception>

#include <spdlog/spdlog.h>

#include "green/green.h"
#include "green/http/server.h"
#include "green/http/status.h"
#include "server/buffer_pool.h"
#include "server/file_pieces.h"
#include "server/http_text.h"
#include "server/server_state.h"

namespace green::http {

namespace {
using Clock = std::chrono::steady_clock;

constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
// After an error response, how long (and how much) we keep reading what the client still
// sends before closing: closing with unread data makes the kernel send RST, which can destroy
// the response before the client reads it.
constexpr std::chrono::milliseconds kLingerTime{500};
constexpr std::size_t kLingerBytes = 1 << 20;
// serve_batches() writes a batch's responses at once when its input is drained, but flushes
// early once the output buffer holds more than this: a client that pipelines and never reads
// would otherwise make the server hold every answer to a ~28 KiB read (896 /metrics answers,
// 5 MB) per connection. With the early flush the write parks (under --write-timeout) once the
// socket is full, so a connection holds at most this + one response. 64 KiB: above what a
// batch of small pipelined responses needs (wrk's 16-request pipeline is a few KiB, so the hot
// path pays one compare, no extra write), and small enough that a buffer grown to it plus a
// typical response stays within the pool's 128 KiB keep size (buffer_pool.cpp), so it is reused
// rather than freed. Go's bufio.Writer flushes at 4 KiB and nginx's output buffers are 32 KiB
// by default; we keep more because, unlike them, we gather whole batches into one write, and a
// write per 64 KiB already costs little next to the bytes it copies.
constexpr std::size_t kFlushOutputBytes = 64 * 1024;

net::Deadline deadline_in(std::chrono::nanoseconds d, Clock::time_point now) {
  return d.count() == 0 ? net::kNoDeadline : now + d;
}
}  // namespace

Connection::Connection(Server& server, net::TcpStream stream, const net::Address& peer, bool tls)
    : server_(server),
      stream_(std::move(stream)),
      parser_(server.options().limits, &server.state_->body_budget),
      state_(tls ? kHandshake : kIdle) {
  // Bodies up to the read buffer are collected before the handler runs (they fit the pooled
  // buffers and cost no budget); larger, chunked and 100-continue bodies stream
  // (green/http/body.h).
  parser_.set_stream_threshold(server.options().limits.input_buffer_bytes());
  preface_possible_ = !tls && server.options().http2.cleartext;
  const std::string host = peer.host();
  remote_length_ = static_cast<uint8_t>(std::min(host.size(), sizeof remote_));
  std::memcpy(remote_, host.data(), remote_length_);
  server_.register_connection(this);
  idle_since_ = Clock::now();
}

Connection::~Connection() {
  release_buffers();
  server_.unregister_connection(this);
}

void Connection::stop(bool force) {
  // A connection still in its TLS handshake holds no request: the drain closes it (nginx
  // closes connections that have not sent a request yet on a graceful shutdown, too).
  if (force || state_.load(std::memory_order_seq_cst) == kHandshake) {
    // Relaxed: a hint that spares a wait; the close below is what ends the connection.
    state_.store(kClosing, std::memory_order_relaxed);
    stream_.close();
    return;
  }
  // Seq_cst, against wait_for_request(): either this load sees kIdle, or that green thread's
  // load of draining_ (after its store of kIdle) sees the drain.
  const int state = state_.load(std::memory_order_seq_cst);
  if (state == kIdle) stream_.wake_reader();
  // HTTP/2: GOAWAY, then the end once the open streams have finished (serve_http2 looks at
  // draining_ after its store of kHttp2, as wait_for_request does).
  if (state == kHttp2) h2_->drain();
}

ByteBuffer& Connection::output() { return buffers_->output; }

bool Connection::flush_output() { return flush_output_at(Clock::now()); }

bool Connection::past_handler_deadline(bool sending_more) {
  if (handler_deadline_ns_ == 0) return false;
  ByteBuffer& out = buffers_->output;
  const bool late = green::detail::now_ns() >= handler_deadline_ns_;
  if (late) {
    out.truncate(output_mark_);
  } else if (sending_more || out.size() > output_mark_) {
    sent_in_time_ = true;
  }
  output_mark_ = 0;  // the caller sends and empties the buffer
  return late;
}

bool Connection::flush_output_at(Clock::time_point now) {
  ByteBuffer& out = buffers_->output;
  const bool late = past_handler_deadline(false);
  if (!out.empty() && !write_failed_) {
    stream_.set_write_deadline(deadline_in(server_.options().write_timeout, now));
    const ssize_t n = io_write(out.data(), out.size());
    if (n < 0) write_failed_ = true;
  }
  out.clear();
  return !write_failed_ && !late;
}

bool Connection::write_direct(std::string_view head, std::string_view data, std::string_view tail) {
  ByteBuffer& out = buffers_->output;
  const bool late = past_handler_deadline(true);
  if (late) head = data = tail = {};
  iovec iov[4];
  int count = 0;
  for (const std::string_view part : {out.view(), head, data, tail}) {
    if (!part.empty()) iov[count++] = {const_cast<char*>(part.data()), part.size()};
  }
  if (count != 0 && !write_failed_) {
    stream_.set_write_deadline(deadline_in(server_.options().write_timeout, Clock::now()));
    if (io_writev(iov, count) < 0) write_failed_ = true;
  }
  out.clear();
  return !write_failed_ && !late;
}

int64_t Connection::send_file(int fd, uint64_t offset, uint64_t count) {
  ByteBuffer& out = buffers_->output;
  // The handler's deadline is checked once, here, as for any response it starts: once a file
  // is handed over, its transfer is the connection's, timed by the write timeout below. (Per
  // piece, a --handler-timeout cut HTTPS downloads short and not plain ones.)
  if (past_handler_deadline(true) || write_failed_) {
    out.clear();
    return -1;
  }
  // The write timeout is the longest the client may take nothing (nginx's send_timeout, between
  // two writes), not a bound on the whole file: a 200 MB download over a slow but moving link
  // is not cut off, a client that stops reading is.
  const auto stall = server_.options().write_timeout;
  stream_.set_write_deadline(deadline_in(stall, Clock::now()));
  if (!tls_) {
    const ssize_t n =
        stream_.send_file(out.view(), fd, offset, static_cast<std::size_t>(count), stall);
    out.clear();
    if (n < 0) write_failed_ = true;
    return n < 0 ? -1 : n;
  }
  // TLS: OpenSSL encrypts from memory, a 64 KiB piece at a time (the head goes with the first).
  std::string_view head = out.view();
  const int64_t done = for_each_file_piece(fd, offset, count, [&](std::string_view piece) {
    iovec iov[2];
    int parts = 0;
    if (!head.empty()) iov[parts++] = {const_cast<char*>(head.data()), head.size()};
    iov[parts++] = {const_cast<char*>(piece.data()), piece.size()};
    stream_.set_write_deadline(deadline_in(stall, Clock::now()));
    head = {};
    return io_writev(iov, parts) >= 0;
  });
  if (done < 0) write_failed_ = true;
  if (!head.empty() && !write_failed_) {  // nothing of the file: the head alone
    stream_.set_write_deadline(deadline_in(stall, Clock::now()));
    if (io_write(head.data(), head.size()) < 0) write_failed_ = true;
  }
  out.clear();
  return write_failed_ ? -1 : done;
}

void Connection::release_buffers() {
  if (buffers_ == nullptr) return;
  parser_.detach();
  server_.state_->pool.release(buffers_);
  buffers_ = nullptr;
}

bool Connection::tls_handshake() {
  const ServerOptions& o = server_.options();
  net::TlsHandshakeFailure why = net::TlsHandshakeFailure::kNone;
  const int rc = net::TlsSession::accept(
      stream_, *o.tls, deadline_in(o.tls_handshake_timeout, Clock::now()), &tls_, &why);
  if (rc != 0) {
    // Counted by the TLS context (/metrics); a line per failure only at debug level, as nginx
    // logs handshake failures at "info" and most are scanners and abandoned connections.
    spdlog::debug("TLS handshake with {} failed ({}): {}",
                  std::string_view(remote_, remote_length_), net::to_string(why),
                  tls_ ? tls_->last_error() : std::string());
    tls_.reset();
    return false;
  }
  stream_.set_read_deadline(net::kNoDeadline);
  stream_.set_write_deadline(net::kNoDeadline);
  idle_since_ = Clock::now();  // the idle timeout counts from the end of the handshake
  int expected = kHandshake;
  // seq_cst, as wait_for_request()'s: a drain that saw kHandshake closed the socket; one that
  // comes later sees kIdle and wakes the connection, which sees the drain.
  return state_.compare_exchange_strong(expected, kIdle, std::memory_order_seq_cst);
}

void Connection::serve_http2(std::string_view preread, const Request* upgraded,
                             std::string_view settings) {
  h2_ = std::make_unique<Http2Connection>(server_, stream_, tls_.get(),
                                          std::string_view(remote_, remote_length_));
  state_.store(kHttp2, std::memory_order_seq_cst);
  if (server_.draining_.load(std::memory_order_seq_cst)) h2_->drain();
  stream_.set_read_deadline(net::kNoDeadline);
  if (upgraded != nullptr) {
    h2_->serve_upgraded(settings, *upgraded, preread);
  } else {
    h2_->serve(preread);
  }
}

bool Connection::try_h2c_upgrade(Request& r) {
  // RFC 7540 3.2 (curl --http2 on http://, nghttp -u): HTTP/1.1, "Upgrade: h2c" among the
  // upgrade tokens, exactly one HTTP2-Settings, and no body (Go's x/net h2c and nginx refuse
  // upgrades with a body too; such a request is simply answered in HTTP/1.1).
  if (tls_ || !server_.options().http2.cleartext || r.version_minor() != 1) return false;
  bool h2c = false;
  for (const Header& f : r.headers()) {
    if (iequals(f.name, "upgrade") && has_token(f.value, "h2c")) h2c = true;
  }
  if (!h2c || parser_.body_streaming()) return false;
  const std::string_view length = r.header("content-length");
  if (r.has_header("transfer-encoding") || (!length.empty() && length != "0")) return false;
  int settings_fields = 0;
  std::string_view encoded;
  for (const Header& f : r.headers()) {
    if (iequals(f.name, "http2-settings")) {
      ++settings_fields;
      encoded = f.value;
    }
  }
  std::string settings;
  // At most 32 settings (nghttp2's bound on a SETTINGS frame); more is no upgrade at all.
  if (settings_fields != 1 || !decode_base64url(encoded, &settings) || settings.size() % 6 != 0 ||
      settings.size() / 6 > 32) {
    return false;
  }
  buffers_->output.append(
      "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n");
  if (!flush_output()) return true;
  request_start_ = Clock::now();
  serve_http2(parser_.unparsed(), &r, settings);
  return true;
}

void Connection::run() {
  if (state_.load(std::memory_order_relaxed) == kHandshake && !tls_handshake()) return;
  if (tls_ && tls_->alpn() == "h2") {
    serve_http2({});
  } else {
    while (wait_for_request()) {
      buffers_ = server_.state_->pool.acquire();
      parser_.attach(&buffers_->parser);
      const bool keep = serve_batches();
      release_buffers();
      if (h2_prior_knowledge_) {
        serve_http2(h2_preread_);
        std::string().swap(h2_preread_);
        break;
      }
      if (!keep) break;
    }
  }
  // Draining: whatever ended the connection, the client may have sent more since (a next
  // keep-alive request): close without a reset.
  if (server_.draining() && stream_.is_open()) {
    linger_close();
  } else if (tls_ && stream_.is_open() && !write_failed_) {
    // A TLS connection ends with close_notify (nginx's SSL_shutdown, Go's Conn.Close), so the
    // client can tell the end from a truncation; one short write, never a wait for the reply.
    stream_.set_write_deadline(Clock::now() + kLingerTime);
    tls_->close_notify(stream_);
  }
}

bool Connection::wait_for_request() {
  int expected = kActive;
  // seq_cst: the store half of the pair with stop() (Server::start_drain's draining_ store,
  // then stop()'s load of state_; here state_, then draining_).
  state_.compare_exchange_strong(expected, kIdle, std::memory_order_seq_cst);
  // Relaxed: a forced stop also closes the stream, which ends the wait below; this only
  // spares it.
  if (state_.load(std::memory_order_relaxed) == kClosing) return false;
  if (server_.draining_.load(std::memory_order_seq_cst)) {
    // Do not wait, and do not close yet either: a request may have arrived. Look
    // (serve_batches answers it with Connection: close, or finds nothing and ends). A seq_cst
    // load, paired with stop()'s: see there.
    expected = kIdle;
    // acq_rel: out of kIdle again; no pair needed (an active connection looks at draining()
    // when it answers, and at draining_ again when it next comes back here).
    return state_.compare_exchange_strong(expected, kActive, std::memory_order_acq_rel);
  }

  const Clock::time_point idle_since = idle_since_;
  const net::Deadline idle_end = deadline_in(server_.options().idle_timeout, idle_since);
  // Stage one: most keep-alive clients come back within milliseconds; trimming the stack for
  // them would cost a syscall per request. Stage two, for the ones that stay away: give the
  // stack pages back and wait out the idle timeout.
  stream_.set_read_deadline(std::min(idle_end, idle_since + kShrinkAfter));
  int rc = io_wait_readable();
  if (rc == -ETIMEDOUT && (idle_end == net::kNoDeadline || Clock::now() < idle_end)) {
    green::this_green_thread::shrink_stack();
    stream_.set_read_deadline(idle_end);
    rc = io_wait_readable();
  }
  if (rc != 0) {
    if (rc == -ETIMEDOUT) server_.metrics_.idle_timeouts.fetch_add(1, std::memory_order_relaxed);
    return false;  // idle timeout, forced close, or a socket error: close quietly
  }
  // Data, end of stream, or the drain's wake (serve_batches tells them apart). acq_rel: as
  // above.
  expected = kIdle;
  return state_.compare_exchange_strong(expected, kActive, std::memory_order_acq_rel);
}

ssize_t Connection::read_more(bool* fresh_wake) {
  std::span<char> room = parser_.spare();
  if (room.empty()) return -ENOBUFS;  // the parser is in its error state
  const ServerOptions& o = server_.options();
  for (;;) {
    if (!*fresh_wake && socket_drained_) {
      // The last read emptied the socket: wait for readiness. The deadline: the head must be
      // complete within read_header_timeout of its first byte; a body must keep moving (each
      // pause at most that long); and the whole request, head and body, must be in within
      // read_timeout of its first byte (Go's ReadTimeout), however steadily it trickles.
      const Clock::time_point now = Clock::now();
      const net::Deadline pause_end = parser_.headers_complete()
                                          ? deadline_in(o.read_header_timeout, now)
                                          : deadline_in(o.read_header_timeout, request_start_);
      const net::Deadline request_end = parser_.request_started()
                                            ? deadline_in(o.read_timeout, request_start_)
                                            : net::kNoDeadline;
      stream_.set_read_deadline(std::min(pause_end, request_end));
      const int w = io_wait_readable();
      if (w == -ETIMEDOUT && request_end < pause_end) return kReadTimedOut;
      if (w != 0) return w;
    }
    *fresh_wake = false;
    const ssize_t n = io_try_read(room.data(), room.size());
    if (n == -EAGAIN) {
      if (parser_.idle()) return -EAGAIN;  // a stale wakeup: go back to idle
      socket_drained_ = true;              // now wait for readiness
      continue;
    }
    // A short read emptied the socket: the next read_more() waits for readiness first instead
    // of spending a read(2) on EAGAIN. (An end of stream or reset that arrived with this data
    // is sticky in the netpoller, so that wait returns at once.)
    socket_drained_ = n > 0 && static_cast<std::size_t>(n) < room.size();
    return n;
  }
}

bool Connection::serve_batches() {
  bool fresh_wake = true;
  bool answered = false;  // a response was completed in this wake
  socket_drained_ = false;
  // Until a response completes, "finished" is when this wake began: the times taken from it
  // below (idle start, write deadline) then mean "now" to within a read(2).
  request_start_ = finished_at_ = Clock::now();
  for (;;) {
    const ssize_t n = read_more(&fresh_wake);
    if (n == -EAGAIN) {
      // Back to idle, or the drain's wake (close). Only a response restarts the idle timer:
      // bytes that were no request (a stale wakeup, the empty lines RFC 9112 2.2 lets us
      // skip) must not, or a client sending a CRLF now and then would hold its slot for ever.
      if (answered) idle_since_ = finished_at_;
      return !server_.draining();
    }
    if (n <= 0) {
      std::string_view reason;
      if (const int status = read_failure(n, &reason); status != 0) {
        finish_with_error(status, reason);
      }
      return false;  // end of stream, reset, shutdown: nothing to answer
    }
    // (Only the first read finds the parser idle: a batch that leaves it idle returns below.)
    parser_.commit(static_cast<std::size_t>(n));
    if (preface_possible_) {
      // h2c by prior knowledge (RFC 9113 3.3): the connection's first bytes are the preface.
      const std::string_view in = parser_.unparsed();
      const std::string_view preface = Http2Connection::kPreface;
      const std::size_t k = std::min(in.size(), preface.size());
      if (in.substr(0, k) != preface.substr(0, k)) {
        preface_possible_ = false;
      } else if (k < preface.size()) {
        continue;  // a prefix of it so far: read on
      } else {
        h2_prior_knowledge_ = true;
        h2_preread_.assign(in);
        return false;
      }
    }

    for (;;) {
      const ParseEvent e = parser_.next();
      if (e == ParseEvent::kNeedMore) break;
      if (e == ParseEvent::kError) {
        finish_with_error(parser_.error_status(), parser_.error_reason());
        return false;
      }
      if (e == ParseEvent::kExpectContinue) {
        // Only from a parser without a stream threshold: this connection sets one, so a body
        // behind 100-continue streams and BodyReader sends the 100 on the handler's first read.
        buffers_->output.append(kContinue);
        if (!flush_output()) return false;
        continue;
      }
      Request& r = parser_.request();
      if (r.has_header("upgrade") && try_h2c_upgrade(r)) return false;
      handle_request(r);
      answered = true;
      if (write_failed_) return false;
      if (close_after_) {
        flush_output_at(finished_at_);
        linger_close();
        return false;
      }
      // The next request's clock starts now, whether or not its first bytes are already
      // buffered: timing it from the previous request's first byte would let a long
      // pipelined session run into --read-timeout with every request on time.
      request_start_ = finished_at_;
      // A batch's answers pile up only to a bound (see kFlushOutputBytes).
      if (buffers_->output.size() > kFlushOutputBytes && !flush_output_at(finished_at_)) {
        return false;
      }
    }
    // The input is drained: one write for every response of the batch.
    if (!flush_output_at(finished_at_)) return false;
    if (parser_.idle()) {
      if (server_.draining()) return false;
      // The read filled the buffer: the socket may hold more, and with edge-triggered polling
      // no new edge would come for it. Read on (an EAGAIN then ends the wake) instead of
      // parking with requests unread.
      if (!socket_drained_) continue;
      if (answered) idle_since_ = finished_at_;
      return true;
    }
  }
}

int Connection::read_failure(ssize_t n, std::string_view* reason) {
  if (n == kReadTimedOut) {
    server_.metrics_.read_timeouts.fetch_add(1, std::memory_order_relaxed);
    *reason = "request not received within the read timeout";
    return 408;
  }
  if (n == -ETIMEDOUT && parser_.request_started()) {
    server_.metrics_.header_timeouts.fetch_add(1, std::memory_order_relaxed);
    *reason = parser_.headers_complete() ? "body not received in time"
                                         : "request headers not received in time";
    return 408;
  }
  if (n == -ENOBUFS) {
    *reason = parser_.error_reason();
    return parser_.error_status();
  }
  return 0;
}

const Context& Connection::request_context() {
  if (!context_) {
    const Context& base = server_.state_->base.first;
    auto [ctx, cancel] = handler_deadline_ns_ != 0
                             ? green::with_deadline_ns(base, handler_deadline_ns_)
                             : green::with_cancel(base);
    context_.emplace(std::move(ctx));
    cancel_context_ = std::move(cancel);
    // Watched from the start, also while a streamed body is still unread: the hook fires
    // only on the peer's FIN, a reset or an error (never on data), so the handler's body
    // reads are not disturbed, and a client that leaves mid-upload cancels the context at
    // once. (Go waits for the body's end because its watcher is a read, which would take the
    // body's bytes; a hang-up hook has no such reason to wait, and waiting let a client that
    // sent half a body and left keep /work running, or a chat subscriber in its room.)
    if (body_failed_) {
      cancel_context_();
    } else {
      watch_hangup();
    }
  }
  return *context_;
}

void Connection::watch_hangup() {
  // The netpoller calls the cancel function (which holds only a weak reference to the
  // context's state, so a late call after the request has ended is harmless).
  hangup_watched_ = true;
  stream_.on_hangup(cancel_context_);
}

void Connection::body_failed() {
  body_failed_ = true;
  if (context_) cancel_context_();
}

void Connection::end_request_context() {
  if (context_) {
    if (hangup_watched_) stream_.clear_hangup();
    hangup_watched_ = false;
    cancel_context_();  // as Go when ServeHTTP returns: releases a deadline's watcher too
    cancel_context_ = nullptr;
    context_.reset();
  }
  body_failed_ = false;
}

void Connection::handle_request(Request& r) {
  r.set_remote_addr({remote_, remote_length_});
  r.set_stream(&stream_);
  r.set_tls(tls_.get());
  r.bind_connection(this);
  // --handler-timeout: one branch when off.
  if (const int64_t ht = server_.options().handler_timeout.count(); ht != 0) {
    handler_deadline_ns_ = green::detail::now_ns() + ht;
    output_mark_ = buffers_->output.size();
    sent_in_time_ = false;
  }
  const bool keep_alive = r.keep_alive() && !server_.draining();
  int status = 0;
  uint64_t bytes = 0;
  bool keep = false;
  {
    ResponseWriter w(*this, buffers_->body, buffers_->headers, r.method(), r.version_minor(),
                     keep_alive);
    const bool streamed = parser_.body_streaming();
    if (streamed) {
      r.body().reset({}, &body_reader_);
      body_reader_.begin(&w);
    }
    const bool failed = server_.dispatch(r, w);
    // Draining: this response is the connection's last (it may have been idle-safe when the
    // request arrived; it is not now).
    if (server_.draining()) w.close_connection();
    const int body_error = streamed ? finish_streamed_body(w, failed) : 0;
    bool timed_out = false;
    if (handler_deadline_ns_ != 0) {
      timed_out = green::detail::now_ns() >= handler_deadline_ns_;
      handler_deadline_ns_ = 0;
    }
    // The client left (the netpoller saw its hang-up and cancelled the context) and the
    // handler wrote nothing: nothing is sent, and the log says 499, nginx's "client closed
    // request". (The peer_gone() syscall only runs for a cancelled context.)
    if (context_ && !failed && !timed_out && body_error == 0 && !w.head_sent() &&
        w.body_bytes() == 0 && context_->err() == ContextError::kCanceled && stream_.peer_gone()) {
      w.drop(499);
    }
    end_request_context();
    if (timed_out) {
      // Whatever this response put in the output buffer after the earlier pipelined ones is
      // discarded: a 503 if nothing reached the client in time, else a truncated response.
      // (A handler that threw past its deadline is answered the same: the deadline came
      // first.)
      buffers_->output.truncate(output_mark_);
      if (!sent_in_time_) {
        w.drop(503);
        append_error_response(buffers_->output, 503, "Timeout");
        server_.metrics_.handler_timeouts.fetch_add(1, std::memory_order_relaxed);
      } else {
        w.abort();
      }
      status = w.status();
      bytes = 0;
      keep = false;
    } else if (failed && !w.head_sent()) {
      // Nothing reached the output buffer yet: answer a clean 500 instead.
      ResponseWriter error(*this, buffers_->body, buffers_->headers, r.method(), r.version_minor(),
                           false);
      if (!r.request_id().empty()) error.set_header("X-Request-Id", r.request_id());
      error.send_status(500);
      error.finish();
      status = 500;
      bytes = error.body_bytes();
    } else if (body_error != 0 && !w.head_sent()) {
      // Reading the body failed and nothing of the response went out: the failure's status
      // replaces it, as when the server read every body before the handler (a client that
      // left gets nothing; 499 is for the log and the metrics).
      if (body_error != BodyReader::kClientGone)
        append_error(body_error, body_reader_.error_reason());
      status = body_error;
    } else {
      if (failed) {
        w.abort();  // mid-stream: the client must see a truncated response, not a complete one
      } else {
        w.finish();
      }
      status = w.status();
      bytes = w.body_bytes();
      keep = w.keep_alive() && !failed && body_error == 0;
    }
  }
  close_after_ = !keep;
  finished_at_ = Clock::now();
  server_.metrics_.record_request(status, finished_at_ - request_start_);
  log_request(&r, status, bytes);
}

int Connection::finish_streamed_body(ResponseWriter& w, bool failed) {
  if (failed) {
    body_reader_.abandon();  // the connection closes after the 500 anyway
    return 0;
  }
  switch (body_reader_.finish()) {
    case BodyReader::End::kReusable:
      return 0;
    case BodyReader::End::kClose:
      w.close_connection();  // says Connection: close when the head is still to go
      return 0;
    case BodyReader::End::kFailed:
      break;
  }
  return body_reader_.error_status();
}

void Connection::log_request(const Request* r, int status, uint64_t bytes) {
  AccessLog* log = server_.access_log();
  if (log == nullptr || !log->enabled()) return;
  AccessRecord rec;
  fill_access_record(rec, r, {remote_, remote_length_}, status, bytes);
  log->submit(rec);
}

void Connection::finish_with_error(int status, std::string_view reason) {
  server_.metrics_.record_request(status, Clock::now() - request_start_);
  log_request(nullptr, status, 0);
  append_error(status, reason);
  if (flush_output()) linger_close();
}

void Connection::append_error(int status, std::string_view reason) {
  append_error_response(buffers_->output, status, error_text(status, reason),
                        status == 503 ? kRetryAfterLine : "");
}

void Connection::linger_close() {
  if (tls_ && !write_failed_) {
    stream_.set_write_deadline(Clock::now() + kLingerTime);
    tls_->close_notify(stream_);
  }
  // What the client still sends is dropped unread, as TLS records or plain bytes alike.
  stream_.shutdown(SHUT_WR);
  const Clock::time_point until = Clock::now() + kLingerTime;
  stream_.set_read_deadline(until);
  char* buf = buffers_ != nullptr ? buffers_->parser.input.data() : nullptr;
  char small[512];
  const std::size_t size = buf != nullptr ? buffers_->parser.input.size() : sizeof small;
  if (buf == nullptr) buf = small;
  std::size_t discarded = 0;
  while (discarded < kLingerBytes) {
    ssize_t n = stream_.try_read(buf, size);
    if (n == -EAGAIN) {
      if (stream_.wait_readable() != 0) break;
      continue;
    }
    if (n <= 0) break;
    discarded += static_cast<std::size_t>(n);
  }
  stream_.close();
}

}  // namespace green::http
