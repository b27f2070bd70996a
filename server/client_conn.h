// The client's connection and the response parser on it (green/http/client.h has the contract).
//
// One ClientConn is one TCP connection to one upstream (with its TLS session for https://), with
// the state of the response being read on it. It moves between the pool (ClientShared, idle, most
// recently used last) and one ClientResponse at a time, so nothing in it is shared: only the pool's
// lists are under a lock.
//
// Parsing: the response goes through llhttp (HTTP_RESPONSE, built with LLHTTP_STRICT_MODE as the
// server's request parser is) over a fixed read buffer. The head's strings (reason, header names
// and values) are copied as llhttp reports them, so the head may span any number of reads and the
// buffer is never held for it; its size is counted against max_response_header_bytes. Body bytes
// are not copied: llhttp reports them as spans of the read buffer (several per buffer when
// chunked), kept in body_spans until read() has handed them out; only then is the buffer refilled
// from the socket. llhttp pauses at the end of the head and at the end of the message, so the
// bytes after either stay unparsed in the buffer: after the head they are body, after the message
// they are bytes the upstream sent unasked, and the connection is then not reused.
//
// TLS: the TcpStream stays the connection's (deadlines, the bound context, fd() for the pool's
// peek) and `tls`, when set, is the session over it; every read and write goes through read(),
// write() and writev() below, which pick one or the other, so the parser and the request writer
// do not know which they talk to.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <llhttp.h>

#include "green/context.h"
#include "green/http/client.h"
#include "green/net.h"
#include "green/tls.h"

namespace green::http::detail {

struct ClientShared;

// strerror(3) is not thread-safe (clang-tidy's concurrency-mt-unsafe); this is GNU strerror_r.
std::string errno_text(int e);

struct ClientConn {
  static constexpr std::size_t kReadBuffer = 16 * 1024;

  ClientConn(net::TcpStream s, std::string pool_key, const ClientOptions& options);
  // Closes the socket; a TLS connection says close_notify first (see client_conn.cpp).
  ~ClientConn();
  ClientConn(const ClientConn&) = delete;
  ClientConn& operator=(const ClientConn&) = delete;

  // Starts a response: the next bytes are its head. `head_request`: the request was HEAD (the
  // response has no body whatever its headers say).
  void begin_response(bool head_request);
  // Reads until the head is complete (1xx responses skipped). kNone or the failure.
  ClientError read_head();
  // As ClientResponse::read.
  long read_body(char* buf, std::size_t n);
  // Parses what is already in the read buffer, without reading the socket (so without parking).
  void parse_buffered();
  // The body is complete and the connection can carry another request.
  bool reusable() const;

  // Sets the socket's read (or write) deadline for the next wait: now + the option's timeout,
  // or the call's deadline when earlier.
  void arm_read_deadline();
  void arm_write_deadline();
  // The connection's I/O: through TLS for https://, else the socket's.
  ssize_t read(void* buf, std::size_t n) {
    return tls ? tls->read(stream, buf, n) : stream.read(buf, n);
  }
  ssize_t write(const void* buf, std::size_t n) {
    return tls ? tls->write(stream, buf, n) : stream.write(buf, n);
  }
  ssize_t writev(iovec* iov, int iovcnt) {
    return tls ? tls->writev(stream, iov, iovcnt) : stream.writev(iov, iovcnt);
  }

  // Maps a failed socket operation (negative errno, or 0 for end of stream) to the error kinds.
  ClientError socket_error(long rc, bool reading, std::string* message) const;
  void fail(ClientError e, std::string message);

  net::TcpStream stream;
  std::unique_ptr<net::TlsSession> tls;  // https://: the session over `stream`
  std::string key;                       // the pool's key: "host:port", "https://host:port" for TLS
  const ClientOptions& options;
  int64_t idle_since_ns = 0;       // when it went back to the pool
  int64_t call_deadline_ns = 0;    // the call's own deadline (ClientOptions::timeout), or none
  std::optional<Context> ctx;      // the call's context (also bound to the stream)
  ClientConn* lru_prev = nullptr;  // the pool's list of idle connections (ClientShared)
  ClientConn* lru_next = nullptr;
  bool reused = false;       // carried a request before this one
  bool close_after = false;  // the request asked for Connection: close
  bool got_bytes = false;    // a byte of this request's response arrived

  // --- the response being parsed ---
  llhttp_t parser;
  std::unique_ptr<char[]> in;
  std::size_t ppos = 0;  // next byte of `in` for llhttp
  std::size_t pend = 0;  // end of the bytes read into `in`
  std::string head;      // reason and header names and values, back to back
  struct HeaderSpan {
    uint32_t name_offset, name_length, value_offset, value_length;
  };
  std::vector<HeaderSpan> spans;
  std::vector<Header> headers;  // views into `head`, built when the head is complete
  uint32_t reason_offset = 0, reason_length = 0;
  std::size_t head_bytes = 0;  // raw bytes of this response's head parsed so far
  bool in_value = false;       // the last header callback was a value
  bool head_request = false;
  bool head_done = false;
  bool message_done = false;
  bool keep_alive = false;
  bool unsolicited = false;     // bytes after the message
  bool too_large = false;       // a limit callback failed the parse
  bool paused_at_head = false;  // llhttp paused at the end of the head and has not run since
  std::vector<std::string_view> body_spans;  // parsed, not yet handed out
  std::size_t span_index = 0;
  uint64_t body_bytes = 0;
  std::size_t trailer_bytes = 0;  // of a chunked body's trailer section, which is not kept
  ClientError error = ClientError::kNone;
  std::string message;

 private:
  // Runs llhttp over the unparsed bytes; false when it failed (error set).
  bool execute();
  // Reads more bytes into the buffer (only once it is all parsed and handed out); 0 or the
  // failure (error set).
  bool fill();
  static const llhttp_settings_t kSettings;
  static int on_message_begin(llhttp_t* p);
  static int on_status(llhttp_t* p, const char* at, std::size_t n);
  static int on_header_field(llhttp_t* p, const char* at, std::size_t n);
  static int on_header_value(llhttp_t* p, const char* at, std::size_t n);
  static int on_header_field_complete(llhttp_t* p);
  // A piece of a trailer field: counted against max_response_header_bytes, not kept.
  int skip_trailer(std::size_t n);
  static int on_headers_complete(llhttp_t* p);
  static int on_body(llhttp_t* p, const char* at, std::size_t n);
  static int on_message_complete(llhttp_t* p);
};

}  // namespace green::http::detail
