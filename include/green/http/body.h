// Body: a request's body as a handler reads it (Go's r.Body).
//
//   char buf[16 * 1024];
//   for (long n; (n = r.body().read(buf)) > 0;) consume({buf, size_t(n)});   // streamed
//   std::optional<std::string_view> all = r.body().read_all();               // or collected
//
// Which bodies are already in memory when the handler starts: one whose declared
// Content-Length is at most the connection's read buffer (Limits::input_buffer_bytes(), 28 KiB
// at the default limits) is collected before the handler runs, as it always was (the fast path:
// such a body costs no extra memory, no budget and no extra park). Every other body — a larger
// declared length, any chunked body, any request that sent `Expect: 100-continue` — is read
// from the socket only as the handler asks for it: the server holds at most its read buffer of
// it, whatever its size. read_all() collects it on demand.
//
// Errors. A read that fails returns a negative value, and so does every later read; the
// failure is final for the request and the connection closes after its response. When the
// handler returns without having sent its response head, the server answers the failure's
// status in place of the handler's response, as it did when it read bodies itself:
//   413  the body passed --max-body (a declared length over it is refused before the handler)
//   408  the body paused longer than --read-header-timeout, or the whole request took longer
//        than --read-timeout
//   400  bad chunked framing (and the other framing errors the parser detects)
//   503  read_all() only: collecting would pass the server's body budget (--max-buffered-body)
//   499  the client closed or reset its connection (nothing is answered; nginx's number)
//
// Expect: 100-continue: "HTTP/1.1 100 Continue" is sent when the handler first reads (read() or
// read_all()), as Go does, never before, and never once the response head has been sent. A
// handler that answers without reading gets no 100, and the connection closes after its
// response (the client may still be holding the body back: Go does the same).
//
// A body the handler left unread (in part or whole) is read and dropped after the handler
// returns, up to 256 KiB (Go's maxPostHandlerReadBytes), so that the connection can serve the
// next request; past that the response says Connection: close and the connection closes.
//
// Threads and lifetime: call only from the handler's green thread, during the handler. Both
// calls park the green thread (not the OS thread) while they wait for the client. The Body and
// every view read_all() returns are valid until the handler returns.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

namespace green::http {

// Where a streamed body comes from: the HTTP/1.1 connection's reader (server/body_reader.h) or
// an HTTP/2 stream (server/http2.cpp). Server-internal; the handler sees only Body.
class BodySource {
 public:
  virtual long read(std::span<char> buf) = 0;
  virtual std::optional<std::string_view> read_all() = 0;
  virtual int error_status() const = 0;
  // For middleware::timeout, which runs the handler on a green thread of its own: sends an
  // interim 100 Continue now (when the client waits for one) from the wrapper's thread; false
  // when the client is gone. The wrapper answered at its deadline: reads parked on the client
  // end now (and every later one fails).
  virtual bool send_continue_now() { return true; }
  virtual void interrupt() {}

 protected:
  ~BodySource() = default;
};

class Body {
 public:
  Body() = default;
  Body(const Body&) = delete;
  Body& operator=(const Body&) = delete;

  // Copies up to buf.size() bytes of the body into buf, parking until at least one byte is
  // there. Returns the number copied, 0 at the end of the body (also for a request without one,
  // and for an empty buf), or -1 on error (see error_status()).
  long read(std::span<char> buf);

  // The rest of the body (what read() has not returned yet), collected in memory, parking until
  // it is all in. nullopt on error (see error_status()). A second call returns the same view;
  // read() after read_all() returns 0. For a body past the read buffer the memory counts
  // against the server's body budget (503 when it is spent) and --max-body still applies.
  std::optional<std::string_view> read_all();

  // The status the server answers for the failure of the last read (see above), or 0.
  int error_status() const;

  // --- for the parser and the connection ---
  // A body that is wholly in memory (`bytes`), or one read through `reader` when not null.
  void reset(std::string_view bytes, BodySource* reader = nullptr) {
    bytes_ = bytes;
    offset_ = 0;
    whole_ = false;
    reader_ = reader;
  }
  // The streaming source, or null (middleware::timeout drives it from the wrapper's thread).
  BodySource* reader() const { return reader_; }

 private:
  std::string_view bytes_;  // an in-memory body (reader_ null)
  std::size_t offset_ = 0;  // of bytes_ already returned by read()
  bool whole_ = false;      // read_all() returned bytes_ (read() is at the end)
  BodySource* reader_ = nullptr;
};

}  // namespace green::http
