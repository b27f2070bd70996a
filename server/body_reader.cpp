#include "server/body_reader.h"

#include <sys/socket.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "green/http/body.h"
#include "green/http/response.h"
#include "server/byte_buffer.h"
#include "server/connection.h"

namespace green::http {

namespace {
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
}

// --- Body: in memory, or through the connection's reader ---

long Body::read(std::span<char> buf) {
  if (reader_ != nullptr) return reader_->read(buf);
  if (whole_) return 0;
  const std::size_t n = std::min(buf.size(), bytes_.size() - offset_);
  if (n != 0) std::memcpy(buf.data(), bytes_.data() + offset_, n);
  offset_ += n;
  return static_cast<long>(n);
}

std::optional<std::string_view> Body::read_all() {
  if (reader_ != nullptr) return reader_->read_all();
  if (!whole_) {
    bytes_ = bytes_.substr(offset_);
    offset_ = 0;
    whole_ = true;
  }
  return bytes_;
}

int Body::error_status() const { return reader_ != nullptr ? reader_->error_status() : 0; }

// --- BodyReader ---

void BodyReader::begin(ResponseWriter* writer) {
  writer_ = writer;
  started_ = continue_sent_ = collected_ = false;
  error_status_ = 0;
  error_reason_ = {};
}

void BodyReader::fail(int status, std::string_view reason) {
  if (error_status_ != 0) return;
  error_status_ = status;
  error_reason_ = reason;
}

void BodyReader::fail_from_parser() {
  fail(connection_.parser_.error_status(), connection_.parser_.error_reason());
}

void BodyReader::client_gone() {
  fail(kClientGone, "client closed the connection");
  connection_.body_failed();  // cancels the request context, as Go's handleReadError
}

bool BodyReader::start() {
  if (started_) return true;
  started_ = true;
  // Go sends the 100 on the handler's first read of the body, not when the head arrives: a
  // handler that refuses the request (auth, size, method) then answers without the client ever
  // sending its body. Not once the final response's head is out: a 1xx after it is invalid.
  if (connection_.parser_.expects_continue() && writer_ != nullptr && !writer_->head_sent()) {
    // Behind any earlier pipelined responses still in the output buffer, in order.
    connection_.output().append(kContinue);
    if (!connection_.flush_output()) {
      client_gone();
      return false;
    }
    continue_sent_ = true;
  }
  return true;
}

void BodyReader::interrupt() {
  // The parked read sees end of stream (shutdown(2) wakes the poller). Only the syscall: this
  // runs on the wrapper's thread, while the handler's thread owns the reader's state.
  (void)connection_.stream_.shutdown(SHUT_RD);
}

bool BodyReader::fill() {
  bool fresh_wake = false;
  const ssize_t n = connection_.read_more(&fresh_wake);
  if (n > 0) {
    connection_.parser_.commit(static_cast<std::size_t>(n));
    return true;
  }
  std::string_view reason;
  if (const int status = connection_.read_failure(n, &reason); status != 0) {
    fail(status, reason);
    connection_.body_failed();  // a timed-out connection is as gone as a closed one
  } else {
    client_gone();  // end of stream or reset mid-body; or the drain deadline closed the socket
  }
  return false;
}

long BodyReader::read(std::span<char> buf) {
  if (error_status_ != 0) return -1;
  if (collected_ || buf.empty()) return 0;
  if (!start()) return -1;
  RequestParser& parser = connection_.parser_;
  for (;;) {
    const long n = parser.pump_body(RequestParser::BodySink::kCopy, buf);
    if (n < 0) {
      fail_from_parser();
      return -1;
    }
    if (n > 0) return n;
    if (parser.body_done()) return 0;
    if (!fill()) return -1;
  }
}

std::optional<std::string_view> BodyReader::read_all() {
  RequestParser& parser = connection_.parser_;
  if (collected_) return parser.collected_body();
  if (error_status_ != 0) return std::nullopt;
  // A declared rest that cannot fit the budget is refused before the client sends it (and
  // before 100 Continue), as the parser refuses small declared bodies at their head.
  if (parser.has_declared_length() &&
      !parser.body_fits(parser.declared_length() - parser.body_received())) {
    fail(503, "request body buffers are full, retry later");
    return std::nullopt;
  }
  if (!start()) return std::nullopt;
  for (;;) {
    if (parser.pump_body(RequestParser::BodySink::kCollect) < 0) {
      fail_from_parser();
      return std::nullopt;
    }
    if (parser.body_done()) break;
    if (!fill()) return std::nullopt;
  }
  collected_ = true;
  return parser.collected_body();
}

BodyReader::End BodyReader::finish() {
  writer_ = nullptr;
  RequestParser& parser = connection_.parser_;
  if (error_status_ != 0) return End::kFailed;
  if (parser.body_done()) return End::kReusable;
  // The client holds its body back until a 100 that never came: there is nothing to drop, and
  // it may still send the body after its own timeout. Go closes too (closeAfterReply when the
  // expectContinueReader did not reach EOF).
  if (parser.expects_continue() && !continue_sent_) return End::kClose;
  // Go's rule: a known rest over the bound is not even tried.
  if (parser.has_declared_length() &&
      parser.declared_length() - parser.body_received() > kDiscardBytes) {
    return End::kClose;
  }
  const uint64_t limit = parser.body_received() + kDiscardBytes;
  for (;;) {
    if (parser.pump_body(RequestParser::BodySink::kDiscard) < 0) {
      fail_from_parser();
      return End::kFailed;
    }
    if (parser.body_done()) return End::kReusable;
    if (parser.body_received() > limit) return End::kClose;
    if (!fill()) return End::kFailed;
  }
}

}  // namespace green::http
