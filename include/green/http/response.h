// ResponseWriter: how a handler answers (Go's http.ResponseWriter).
//
//   w.set_content_type("text/plain");
//   w.write("Hello, World!");          // buffered: sent with Content-Length when the handler
//                                      // returns
//   w.flush();                         // or streamed: the head goes out now, chunked when no
//                                      // length was declared (HTTP/1.0: until close)
//
// A response is serialised into its connection's output buffer, behind the responses to
// earlier pipelined requests; the connection sends the whole batch with one write when it has
// handled every request it has read. Bodies over 64 KiB, and flush(), stream instead: the
// bytes so far go out at once and the rest follows in chunks. Every response carries Server
// and Date; HEAD responses carry the headers a GET would, without the body; 1xx, 204 and 304
// carry neither body nor length.
//
// The writer is valid only during the handler call, on the handler's green thread.
#pragma once

#include <cstdint>
#include <ctime>
#include <string>
#include <string_view>

#include "green/http/request.h"

namespace green::http {

class ByteBuffer;  // server/byte_buffer.h

// Where a response's bytes go: the connection.
class ResponseSink {
 public:
  virtual ~ResponseSink() = default;
  virtual ByteBuffer& output() = 0;
  // Sends everything in output() now, parking as needed. False when the connection failed;
  // the handler may go on writing, the bytes are discarded.
  virtual bool flush_output() = 0;
};

class ResponseWriter {
 public:
  // Bodies past this many bytes stream (chunked) instead of waiting for a Content-Length.
  static constexpr std::size_t kStreamThreshold = 64 * 1024;

  // `body` and `headers` are scratch buffers owned by the connection (cleared here).
  ResponseWriter(ResponseSink& sink, ByteBuffer& body, ByteBuffer& headers, Method method,
                 int version_minor, bool keep_alive);
  ResponseWriter(const ResponseWriter&) = delete;
  ResponseWriter& operator=(const ResponseWriter&) = delete;

  // Before the head is sent (the first flush or streamed write); ignored after.
  void set_status(int status);
  void set_content_type(std::string_view type);
  // Adds a header line. Server, Date, Content-Length, Transfer-Encoding and Connection are the
  // server's: use set_content_length() and close_connection() instead.
  void set_header(std::string_view name, std::string_view value);
  // Declares the body length up front: the body then streams without chunking. Writing more
  // or fewer bytes breaks the framing; the connection is closed after such a response.
  void set_content_length(uint64_t length);
  // Answers with Connection: close and closes the connection after this response.
  void close_connection() { keep_alive_ = false; }

  void write(std::string_view data);
  // Sends the head and the body so far now (streaming). Returns false when the connection
  // failed.
  bool flush();

  // The whole response at once.
  void send(int status, std::string_view content_type, std::string_view body);
  // A short text/plain response: "404 Not Found\n".
  void send_status(int status);

  int status() const { return status_; }
  bool head_sent() const { return mode_ != Mode::kBuffering; }
  // Body bytes the handler wrote (for HEAD: would have written).
  uint64_t body_bytes() const { return body_bytes_; }

  // --- for the connection ---
  // Completes the response: the buffered body with its Content-Length, or the last chunk.
  void finish();
  // Abandons the response (the handler failed mid-stream): no last chunk, and the connection
  // closes, so the client sees a truncated response rather than a complete wrong one.
  void abort() {
    mode_ = Mode::kDone;
    broken_ = true;
  }
  // The client has gone (Request::client_gone()): nothing of this response is sent, the
  // connection closes, and `status` is what the access log and metrics record (nginx's 499,
  // "client closed request", which nginx never sends either). Before the head is sent.
  void drop(int status) {
    status_ = status;
    mode_ = Mode::kDone;
    keep_alive_ = false;
  }
  // For a middleware that ran the handler against a writer of its own (middleware::timeout):
  // appends that writer's serialised response (head and body) to the output as this
  // response, and completes this writer with its status and size. Before the head is sent.
  void complete_from(std::string_view serialised, int status, uint64_t body_bytes,
                     bool keep_alive);
  // The connection must close after this response (asked for, HTTP/1.0 streaming, or framing
  // broken by a wrong declared length).
  bool keep_alive() const { return keep_alive_ && !broken_; }

 private:
  enum class Mode : uint8_t { kBuffering, kFixedLength, kChunked, kUntilClose, kDone };
  void emit_head(uint64_t content_length, bool has_length, bool chunked);
  void start_streaming();
  void append_body(std::string_view data);

  ResponseSink& sink_;
  ByteBuffer& out_;
  ByteBuffer& body_;
  ByteBuffer& headers_;
  Mode mode_ = Mode::kBuffering;
  Method method_;
  uint8_t version_minor_;
  bool keep_alive_;
  bool broken_ = false;
  bool has_declared_length_ = false;
  int status_ = 200;
  uint64_t declared_length_ = 0;
  uint64_t body_bytes_ = 0;
  uint8_t content_type_length_ = 0;
  char content_type_[95];
};

// A complete response for a request we could not parse or will not serve: status, Server,
// Date, Content-Type text/plain, Content-Length, Connection: close, and `text` + "\n" as body.
// `extra_headers`: complete header lines (each ending in CRLF) to add, such as Retry-After.
void append_error_response(ByteBuffer& out, int status, std::string_view text,
                           std::string_view extra_headers = {});

// The extra header line of every 503 the server sends for a resource limit (the body budget,
// the connection cap): the limit frees up within about a second, so the client may retry then.
inline constexpr std::string_view kRetryAfterLine = "Retry-After: 1\r\n";

// "Sun, 06 Nov 1994 08:49:37 GMT" (RFC 9110 IMF-fixdate) for `t`, as Date and Last-Modified
// carry it.
std::string format_http_date(std::time_t t);

}  // namespace green::http
