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
// bytes so far go out at once and the rest follows in chunks. A streamed write that would take
// the output buffer past 64 KiB is sent from the caller's memory (ResponseSink::write_direct)
// rather than copied, so echoing a 50 MB body holds no second or third 50 MB in the server.
// Every response carries Server and Date; HEAD responses carry the headers a GET would, without
// the body; 1xx, 204 and 304 carry neither body nor length.
//
// A middleware may install a BodyFilter (gzip: green/http/middleware.h) that sees the head
// just before it goes out and transforms every body byte after it; a response without one pays
// a pointer test when its head goes out and one per streamed write, nothing per buffered
// write.
//
// The writer is valid only during the handler call, on the handler's green thread.
#pragma once

#include <cstdint>
#include <ctime>
#include <memory>
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
  // Sends output(), then head, data and tail, now, parking as needed; the three are written
  // from the caller's memory, never copied into output(): a large streamed write costs the
  // server no buffer of its size. Returns as flush_output(). The default appends them to
  // output() and flushes (a sink that buffers anyway).
  virtual bool write_direct(std::string_view head, std::string_view data, std::string_view tail);
  // Sends output(), then `count` bytes of the open file `fd` from `offset`, now, parking as
  // needed. Returns the file bytes sent (fewer when the file ended early: it shrank), or -1
  // when the connection failed. The default reads the file into a 64 KiB buffer, a piece at
  // a time, and sends each with write_direct; a connection uses sendfile(2) on plain HTTP
  // (and its own 64 KiB reads on TLS), and its write timeout only bounds stalls.
  virtual int64_t send_file(int fd, uint64_t offset, uint64_t count);

  // A sink that frames messages itself (an HTTP/2 stream) answers true: the writer then hands
  // it the head as fields through begin_message() instead of HTTP/1.1 text, never chunks or
  // says Connection, and output() carries body bytes only; the end of the body is the end of
  // the handler (the sink ends the stream).
  virtual bool framed() const { return false; }
  // The head of a framed response: `header_lines` are the handler's "Name: value\r\n" lines;
  // `content_length` is -1 when not known up front.
  virtual void begin_message(int status, std::string_view content_type,
                             std::string_view header_lines, int64_t content_length);
  // middleware::timeout's serialised HTTP/1.x response (status line, headers, body), as a
  // framed response: the sink takes it apart.
  virtual void complete_message(std::string_view serialised);
};

class ResponseWriter;

// A transformation of a response's body (a Content-Encoding), installed on the writer by a
// middleware before the head goes out, and owned by the writer from then on: it is destroyed
// with the response, so its memory (a compressor) lives exactly as long as the response.
// Called on the handler's green thread; it must not park.
class BodyFilter {
 public:
  enum class Flush : uint8_t {
    kNone,  // buffer as the encoding likes
    kSync,  // w.flush(): everything so far must be decodable by the client now
    kEnd,   // the body is complete: emit the encoding's trailer
  };
  virtual ~BodyFilter() = default;
  // The head is about to go out (the first flush or streamed write, or finish()). `length` is
  // the whole body's length when known (buffered to the end, or declared with
  // set_content_length), else -1. The filter may still change the head through `w`
  // (set_header, remove_header) and returns whether it transforms the body. When it does, a
  // declared Content-Length is dropped: the writer sends the encoded length of a buffered
  // body, and chunks (HTTP/1.0: until close) otherwise.
  virtual bool begin(ResponseWriter& w, int64_t length) = 0;
  // Encodes `in` and returns the bytes to send now (may be empty), a view valid until the
  // next call.
  virtual std::string_view transform(std::string_view in, Flush flush) = 0;
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

  // The body from an open file: `length` bytes of `fd` from `offset`, declared as the
  // Content-Length. Before the head is sent and before any write(); fd must stay open until it
  // returns. Bodies up to kFileCopyMax are read into the response, so that pipelined answers
  // still leave together in one write; larger ones go from the file to the socket with
  // sendfile(2) on plain HTTP, or through a 64 KiB buffer on TLS or when a body filter is
  // installed. Never holds more than that of the file in memory. Returns false when the
  // connection failed or the file ended early (the connection then closes after this
  // response). For HEAD, only the length is declared.
  bool send_file(int fd, uint64_t offset, uint64_t length);
  static constexpr uint64_t kFileCopyMax = 16 * 1024;

  // The whole response at once.
  void send(int status, std::string_view content_type, std::string_view body);
  // A short text/plain response: "404 Not Found\n".
  void send_status(int status);

  int status() const { return status_; }
  Method method() const { return method_; }
  bool head_sent() const { return mode_ != Mode::kBuffering; }
  // The content type set so far (empty when none).
  std::string_view content_type() const { return {content_type_, content_type_length_}; }
  // The value of the first header set with set_header() called `name` (case-insensitive), or
  // empty.
  std::string_view header(std::string_view name) const;
  // Removes every header set with set_header() called `name`. Before the head is sent.
  void remove_header(std::string_view name);

  // Installs `filter` (replacing any other) for this response. Before the head is sent;
  // ignored after.
  void set_body_filter(std::unique_ptr<BodyFilter> filter);
  BodyFilter* body_filter() const { return filter_.get(); }

  // Starts the response over, for an error answer in place of a failed one (recover()): the
  // status, content type, headers, declared length and buffered body are discarded (an
  // installed body filter stays). Only before the head is sent: returns false (and changes
  // nothing) after.
  bool reset();
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
  void complete_from(std::string_view serialised, int status, uint64_t body_bytes, bool keep_alive);
  // The connection must close after this response (asked for, HTTP/1.0 streaming, or framing
  // broken by a wrong declared length).
  bool keep_alive() const { return keep_alive_ && !broken_; }
  // The response is not what it declared (a wrong length) or was abandoned mid-stream: on
  // HTTP/2 its stream is reset rather than ended.
  bool broken() const { return broken_; }

 private:
  enum class Mode : uint8_t { kBuffering, kFixedLength, kChunked, kUntilClose, kDone };
  void emit_head(uint64_t content_length, bool has_length, bool chunked);
  void start_streaming();
  void append_body(std::string_view data);
  void append_encoded(std::string_view data);
  // Asks the filter (if any) whether it encodes this body; `length` as for BodyFilter::begin.
  void begin_filter(int64_t length);

  ResponseSink& sink_;
  ByteBuffer& out_;
  ByteBuffer& body_;
  ByteBuffer& headers_;
  Mode mode_ = Mode::kBuffering;
  Method method_;
  uint8_t version_minor_;
  bool keep_alive_;
  bool framed_;  // sink_.framed(): HTTP/2
  bool broken_ = false;
  bool has_declared_length_ = false;
  bool filtering_ = false;  // filter_ encodes the body (decided when the head goes out)
  int status_ = 200;
  uint64_t declared_length_ = 0;
  uint64_t body_bytes_ = 0;
  uint8_t content_type_length_ = 0;
  char content_type_[95];
  std::unique_ptr<BodyFilter> filter_;
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
