// Http2Connection: one HTTP/2 connection (RFC 9113), served the way Go's net/http serves one,
// on green threads (server-internal).
//
//   connection green thread:  read ▸ nghttp2 (frames, HPACK, stream states) ▸ spawn per stream
//   stream green threads:     handler ▸ ResponseWriter ▸ this stream's queue ▸ flush
//   whoever flushes first:    the writer: every stream's frames gathered into one write
//
// nghttp2 (Debian's libnghttp2) does the framing, HPACK and the stream state machine, and its
// HTTP messaging checks (RFC 9113 8.2: pseudo-headers, connection-specific fields, content
// length against DATA). This file owns the socket and the green threads: the connection's
// green thread reads and feeds nghttp2; each request stream runs its handler in a green thread
// of its own, with the same Request, ResponseWriter, middleware and per-request context as
// HTTP/1.1. Writing is a role, not a thread: the first green thread that has frames to send
// (a stream finishing, the reader after a batch) takes it, yields once so that the other
// streams of the batch can queue their answers, and sends everything nghttp2 has in 64 KiB
// writes until nothing is left; the others only queue (Go's serve goroutine coalesces the
// same way; nginx's output chain too). So h2load's ten requests per batch cost one write.
//
// Flow control is waiting: a handler whose stream has more than kQueueBytes queued parks until
// the client's window lets the writer take it (a handler never buffers without bound). A
// request body is delivered to the handler as it reads, and the stream's window opens only
// as it reads (nghttp2's automatic WINDOW_UPDATE is off), so an unread upload holds at most a
// window of memory per stream and the connection window over all of them.
//
// Limits (ServerOptions::http2; each a flag with a default, tests/http/http2_test.py attacks
// each):
//   - SETTINGS_MAX_CONCURRENT_STREAMS (100), enforced by nghttp2 (REFUSED_STREAM before the
//     client acknowledged it, a connection error after); and a new stream while the open
//     streams plus the handlers of reset streams reach it is refused with
//     RST_STREAM(REFUSED_STREAM), as Go does (a client that resets streams whose handlers still
//     run cannot make the server run more of them).
//   - Header list: the HTTP/1.1 limits (--max-header-bytes, --max-headers, --max-target-bytes)
//     answer 431 and 414, and a stream's header blocks (head and trailers) past twice the list
//     size end the connection (HPACK bombs).
//   - Rapid reset (CVE-2023-44487): RST_STREAMs from the client take a token from a bucket of
//     2R refilled at R a second (--http2-reset-rate); an empty bucket is GOAWAY
//     (ENHANCE_YOUR_CALM) and the end of the connection. SETTINGS, PING, PRIORITY and empty
//     DATA frames have a bucket of their own (--http2-control-rate).
//   - CONTINUATION floods (CVE-2024-27316 class): nghttp2 ends a header block of more than 8
//     CONTINUATION frames (Debian's 1.52.0-1+deb12u2 carries that fix), the header list
//     bound above holds the bytes, and a header block still open after --read-header-timeout
//     ends the connection.
//   - A stream whose window stays shut for --write-timeout is reset (CANCEL); a connection
//     whose socket takes nothing for --write-timeout is closed; --idle-timeout without an open
//     stream is GOAWAY(NO_ERROR); --handler-timeout, --read-timeout and --max-body as in
//     HTTP/1.1.
//
// Drain (Server::shutdown): GOAWAY(NO_ERROR) with the last stream id nghttp2 processed; open
// streams finish; the connection closes when the last one has (nginx and Go do the same).
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "green/net.h"
#include "green/tls.h"

namespace green::http {

class Server;
class Request;

class Http2Connection {
 public:
  // `tls` may be null (h2c). `remote`: the client's address for handlers and the log.
  Http2Connection(Server& server, net::TcpStream& stream, net::TlsSession* tls,
                  std::string_view remote);
  ~Http2Connection();
  Http2Connection(const Http2Connection&) = delete;
  Http2Connection& operator=(const Http2Connection&) = delete;

  // Serves the connection until the client leaves, an error, a GOAWAY or the drain, then
  // returns once every stream's green thread has ended; the caller closes the socket.
  // `preread`: bytes already read from the socket (the client preface, and what followed it).
  void serve(std::string_view preread);
  // The same after an HTTP/1.1 "Upgrade: h2c" (the 101 already sent): `settings` is the
  // decoded HTTP2-Settings payload and `request` (bodiless) is answered on stream 1.
  void serve_upgraded(std::string_view settings, const Request& request, std::string_view preread);

  // Server's drain (under the registry lock; never parks): sends GOAWAY and ends the
  // connection once its open streams have finished.
  void drain();

  // The RFC 9113 3.4 client connection preface.
  static constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

// Base64url (RFC 4648 5, padding optional) as HTTP2-Settings carries it: false when invalid.
bool decode_base64url(std::string_view in, std::string* out);

}  // namespace green::http
