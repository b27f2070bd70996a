// BodyReader: the streaming source behind a request's Body (green/http/body.h), one per
// connection (server-internal).
//
// A streamed body is read on the handler's green thread, on demand: read() parses what the
// read buffer holds (RequestParser::pump_body) and, when it is used up, reads the socket once
// more through the connection's read_more(), under the same deadlines as the connection's own
// reads (a pause longer than --read-header-timeout, or the whole request past --read-timeout:
// 408). The first read sends "100 Continue" when the client asked for it (Go's
// expectContinueReader). After the handler, finish() drops what it left unread, up to
// kDiscardBytes, so that the connection can go on to the next request (Go's
// maxPostHandlerReadBytes rule in net/http's chunkWriter.writeHeader).
//
// An error is sticky: every later read fails with the same status, and the connection closes
// after the response. The connection answers error_status() in place of the handler's
// response when nothing of it was sent (Connection::handle_request).
//
// Not thread-safe: the connection's green thread (running the handler) owns it.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "green/http/body.h"

namespace green::http {

class Connection;
class ResponseWriter;

class BodyReader final : public BodySource {
 public:
  // Unread body the server reads and drops after the handler to keep the connection (Go's
  // maxPostHandlerReadBytes); past it, the connection closes instead.
  static constexpr uint64_t kDiscardBytes = 256 * 1024;
  // The status recorded when the client left mid-body (nothing is answered; nginx's 499).
  static constexpr int kClientGone = 499;

  explicit BodyReader(Connection& connection) : connection_(connection) {}
  BodyReader(const BodyReader&) = delete;
  BodyReader& operator=(const BodyReader&) = delete;

  // A request whose body streams is handed to its handler, which answers through `writer`.
  void begin(ResponseWriter* writer);

  long read(std::span<char> buf) override;              // Body::read
  std::optional<std::string_view> read_all() override;  // Body::read_all
  int error_status() const override { return error_status_; }
  std::string_view error_reason() const { return error_reason_; }

  // After the handler returned: whether the connection can serve another request.
  enum class End {
    kReusable,  // the body was read to its end (by the handler or by the discard)
    kClose,     // too much left to discard, or a 100 Continue never sent: close after
    kFailed,    // a read failed: error_status() (answer it if nothing was sent), then close
  };
  End finish();
  // The handler threw: nothing more is read (the connection closes anyway).
  void abandon() { writer_ = nullptr; }

  // For middleware::timeout, which runs the handler on a green thread of its own while it may
  // write the 503 itself: sends the 100 Continue (when the client waits for one) now, from the
  // wrapper's thread, so that the handler's reads never write to the connection's output.
  // False when the client is gone (the handler's reads then fail).
  bool send_continue_now() override { return start(); }
  // The wrapper answered at its deadline: a read of the body parked on the socket (and every
  // later one) ends now, as the client's departure, instead of holding the connection until
  // the read timeout. Shuts the socket's read side; the connection closes after the answer.
  void interrupt() override;

 private:
  bool start();  // before the first read: 100 Continue; false: error recorded
  bool fill();   // reads more of the socket into the parser; false: error recorded
  void fail(int status, std::string_view reason);
  void fail_from_parser();
  void client_gone();

  Connection& connection_;
  ResponseWriter* writer_ = nullptr;  // the current request's, until finish()
  bool started_ = false;              // the handler has read (or the discard has begun)
  bool continue_sent_ = false;
  bool collected_ = false;  // read_all() has the whole body in the parser's body buffer
  int error_status_ = 0;
  std::string_view error_reason_;
};

}  // namespace green::http
