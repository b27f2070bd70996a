// Client: an HTTP/1.1 client whose calls park the calling green thread, never its OS thread
// (Go's http.Client and http.Transport in one).
//
//   green::http::Client client;                       // one per process (or per upstream set)
//   auto resp = client.get(r.context(), "http://127.0.0.1:9000/users/7");
//   if (!resp.ok()) return w.send_status(502);        // resp.error() says why
//   std::optional<std::string> body = resp.read_all();  // or resp.read(buf) as a stream
//
// What a call does:
//   - DNS: numeric addresses are used as they are; names go to getaddrinfo(3) inside
//     green::blocking(), so a slow resolver parks the green thread and hands its P to another
//     OS thread. Every address returned (IPv6 and IPv4) is tried in order until one connects.
//   - Pool: connections are kept alive per scheme and "host:port" (as in the URL, before DNS) and
//     reused, most recently used first. A pooled connection is checked before reuse: one
//     non-blocking recv(MSG_PEEK) must find nothing (the server closed it: end of stream; or
//     sent something unasked: data), else it is closed and the next one tried. If a request on
//     a reused connection fails before any byte of its response arrived (the server closed it
//     just as we sent: the keep-alive race), an idempotent request (GET, HEAD, OPTIONS, TRACE,
//     PUT, DELETE, or any with an Idempotency-Key header, as Go) whose body can be sent again is
//     retried once on a new connection. Idle connections expire after idle_timeout and are
//     capped per host and in total (the least recently used go first).
//   - Deadlines and cancellation: the Context passed to each call (a request's r.context(), or
//     one of green::with_timeout) bounds the whole call, streaming the body included; cancelling
//     it ends a parked connect, write or read at once (kCanceled / kDeadlineExceeded) and the
//     connection is closed, never pooled. connect_timeout bounds each connect; write_timeout and
//     read_timeout bound each wait for the socket (nginx's proxy_send_timeout and
//     proxy_read_timeout: the time between two successive operations, not the whole transfer).
//   - Parsing: responses go through llhttp with the server's strictness: a malformed status line
//     or header, a bare LF, Content-Length together with Transfer-Encoding, a bad chunk or a
//     body shorter than declared is kProtocol (or kRead when the connection ended early), never
//     a silently truncated body. 1xx responses are skipped. A response without a length is read
//     until the server closes (and that connection is not reused).
//   - Limits: the response head (max_response_header_bytes, max_response_headers) and body
//     (max_response_body_bytes for streamed reads, read_all's limit for collected ones).
//   - Redirects are not followed unless max_redirects > 0 (then as Go: 301/302/303 turn into a
//     GET without body, 307/308 repeat the method and a body that can be sent again), between
//     http:// and https:// as well. Authorization, Cookie and Proxy-Authorization go only to
//     the same host:port, and never from https:// down to http://.
//   - HTTPS (green/tls.h): an https:// URL is the same call over TLS. The handshake follows the
//     TCP connect within the same connect_timeout and under the call's context (a stalled or
//     cancelled handshake ends as a stalled connect does); the server's certificate is verified
//     against ClientOptions::tls (default: the system's CA store) for the URL's host, which is
//     also the SNI; the session of the last connection to that host:port is offered for
//     resumption (the context's session cache). A certificate that does not verify, or any
//     other failed handshake, is kTls with OpenSSL's reason, and nothing of the request is
//     sent. Pooled connections are kept per scheme and host:port, and the check before reuse
//     holds for TLS too: any byte waiting on an idle TLS connection (a close_notify, a record
//     nobody asked for) means it is not reused.
//
// Threads: a Client may be shared by any number of green threads (the pool takes a short lock);
// thousands of calls at once are normal. A ClientResponse belongs to one green thread at a time.
// The Client must outlive its responses. Calls must come from green threads (inside green::run).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "green/http/request.h"  // Header, iequals
#include "green/tls.h"

namespace green {
class Context;  // green/context.h
}

namespace green::http {

struct ClientOptions {
  // Each connection attempt (all the addresses of one name together). Go's net.Dialer has 30 s,
  // nginx's proxy_connect_timeout 60 s; a local service that takes 10 s to accept is down.
  std::chrono::nanoseconds connect_timeout = std::chrono::seconds(10);
  // Longest wait for the socket to take more of the request / give more of the response
  // (nginx's proxy_send_timeout and proxy_read_timeout, 60 s there). 0: none.
  std::chrono::nanoseconds write_timeout = std::chrono::seconds(30);
  std::chrono::nanoseconds read_timeout = std::chrono::seconds(30);
  // A whole call, from send() until the body is read (Go's Client.Timeout). 0: none; the
  // context's deadline applies in any case.
  std::chrono::nanoseconds timeout{0};
  // An idle pooled connection older than this is closed (Go's IdleConnTimeout, 90 s).
  std::chrono::nanoseconds idle_timeout = std::chrono::seconds(90);
  // Idle connections kept per host and in all (Go: MaxIdleConnsPerHost 2, MaxIdleConns 100).
  // A caller that runs N calls to one host at once keeps N connections busy; with a cap below N
  // every response past the cap closes its connection and the next call dials again (a proxy at
  // c=100 with a cap of 64 left 4,557 sockets in TIME_WAIT in 3 s). 256 covers the usual
  // concurrency; raise it with the concurrency you serve.
  int max_idle_per_host = 256;
  int max_idle_total = 1024;
  // Connections (busy or idle) per host; a call past it waits for one to come back, under its
  // context and connect_timeout (Go's MaxConnsPerHost). 0: no limit.
  int max_conns_per_host = 0;
  // The response's status line and headers; past it kHeadersTooLarge (Go: 1 MiB; nginx's
  // proxy_buffer_size is a page: "upstream sent too big header").
  std::size_t max_response_header_bytes = 64 * 1024;
  std::size_t max_response_headers = 100;
  // Body bytes read() may return before kBodyTooLarge. 0: no limit (a proxy streams anything).
  uint64_t max_response_body_bytes = 0;
  // Redirects followed by send(); 0 returns the 3xx as it is.
  int max_redirects = 0;
  // Sent when the request has no User-Agent; empty: none.
  std::string user_agent = "greenhttp";
  // TLS for https:// URLs: the trust store, policies and session cache, shared by every
  // connection (one context may serve several Clients). Null: the Client makes one on its first
  // https:// call from tls_ca_file and tls_insecure_skip_verify (empty and false: the system's
  // CA store, verification on); a failure to make it is kTls for that call.
  std::shared_ptr<net::TlsClientContext> tls;
  std::string tls_ca_file;
  // Trust any certificate (Go's InsecureSkipVerify): for tests against self-signed servers,
  // never for the internet.
  bool tls_insecure_skip_verify = false;
};

// Why a call failed. kTimeout and kDeadlineExceeded are what a proxy answers 504 for; the rest
// 502 (nginx's mapping).
enum class ClientError : uint8_t {
  kNone,
  kBadRequest,        // the URL or a header of the request is not valid (nothing was sent)
  kDns,               // the host name did not resolve
  kConnect,           // no address accepted the connection (refused, unreachable)
  kTls,               // the TLS handshake failed: a certificate that does not verify (for the
                      // URL's host), no version or cipher in common, the server closed or sent
                      // garbage mid-handshake (error_message() has the reason)
  kTimeout,           // connect_timeout, write_timeout, read_timeout or timeout passed
  kCanceled,          // the context was cancelled
  kDeadlineExceeded,  // the context's deadline passed
  kWrite,             // sending the request failed (reset, broken pipe)
  kRead,              // the connection failed or ended before the response was complete
  kProtocol,          // the response is malformed (status line, headers, framing)
  kHeadersTooLarge,   // the response head passed max_response_header_bytes / _headers
  kBodyTooLarge,      // the body passed max_response_body_bytes or read_all's limit
  kRequestBody,       // the request's body source failed or gave a length other than declared
  kTooManyRedirects,
};
inline constexpr int kClientErrorCount = static_cast<int>(ClientError::kTooManyRedirects) + 1;
const char* client_error_name(ClientError e);  // "timeout", "connect", ...
inline bool is_timeout(ClientError e) {
  return e == ClientError::kTimeout || e == ClientError::kDeadlineExceeded;
}

// One request. Views: the caller keeps what they point to alive until send() returns (the
// body source until the request has been sent).
struct ClientRequest {
  std::string_view method = "GET";
  // "http[s]://host[:port][/path][?query]"; host is a name, an IPv4 address or "[IPv6]".
  std::string_view url;
  // Extra header lines. Host comes from the URL unless one is given here; Content-Length and
  // Transfer-Encoding are the client's (from body / body_source), and are refused here.
  std::span<const Header> headers;
  // A body in memory (sent with Content-Length; can be sent again for a retry or a redirect).
  std::string_view body;
  // Or a streamed body: called until it returns 0 (end) or a negative value (failure:
  // kRequestBody). It is sent with Content-Length when content_length >= 0 (giving more or
  // fewer bytes is kRequestBody), else chunked. Once it has been called, the request is not
  // retried.
  std::function<long(std::span<char>)> body_source;
  int64_t content_length = -1;
};

struct Url;  // below

namespace detail {
struct ClientConn;
struct ClientShared;
}  // namespace detail

// A response: status and headers at once, the body as a stream (or collected with read_all).
// Move-only. The connection goes back to the pool as soon as the body has been read to its end
// (as Go's Transport does at EOF), and is closed at once when reading it fails; destroying or
// closing a response whose body was not read to the end closes the connection (unless the rest
// of the body is already in the read buffer). The status and headers stay valid either way.
class ClientResponse {
 public:
  ClientResponse();  // defined where ClientConn is complete (the unique_ptr's deleter)
  ~ClientResponse();
  ClientResponse(ClientResponse&& other) noexcept;
  ClientResponse& operator=(ClientResponse&& other) noexcept;
  ClientResponse(const ClientResponse&) = delete;
  ClientResponse& operator=(const ClientResponse&) = delete;

  // Whether a response arrived (its head; the body may still fail: read() says).
  bool ok() const { return error_ == ClientError::kNone && status_ != 0; }
  ClientError error() const { return error_; }
  // A one-line reason for error(): "connect 127.0.0.1:9: Connection refused".
  const std::string& error_message() const { return message_; }

  int status() const { return status_; }
  std::string_view reason() const;
  int version_minor() const { return version_minor_; }
  std::span<const Header> headers() const;
  // The first header called `name` (case-insensitive), or empty.
  std::string_view header(std::string_view name) const;
  // Declared Content-Length, or -1 (chunked, until close, or none for a body-less response).
  int64_t content_length() const { return content_length_; }
  bool chunked() const { return chunked_; }
  // Whether the response can have a body (not HEAD, 1xx, 204 or 304).
  bool has_body() const { return has_body_; }

  // Copies up to buf.size() body bytes into buf, parking until at least one byte is there.
  // Returns the count, 0 at the end of the body, or -1 on error (error() then says which; every
  // later read returns -1 too).
  long read(std::span<char> buf);
  // Whether the next read() would return without parking (bytes already buffered, or the end).
  bool read_ready() const;
  // The rest of the body, collected; nullopt on error, or past `limit` (kBodyTooLarge).
  std::optional<std::string> read_all(std::size_t limit = 8 << 20);
  // Body bytes read() returned so far.
  uint64_t body_bytes() const { return body_bytes_; }

  // Drops the response now: its connection is pooled if the body is complete, else closed.
  void close();

 private:
  friend class Client;
  void fail(ClientError e, std::string message);
  // Takes the status line's reason and the headers from the connection (which keeps none).
  void take_head(detail::ClientConn& c);
  void rebase_headers(const char* old_base);
  // Gives the connection back to the pool, or closes it (`failed`, or not reusable).
  void release(bool failed);
  // read(), and whether to give the connection back when the body ends.
  long read_body(std::span<char> buf, bool release_at_end);

  // The connection, while the body is being read; null once it went back (or was closed).
  std::unique_ptr<detail::ClientConn> conn_;
  std::shared_ptr<detail::ClientShared> shared_;
  std::string head_;             // reason, header names and values (taken from the connection)
  std::vector<Header> headers_;  // views into head_
  uint32_t reason_offset_ = 0;
  uint32_t reason_length_ = 0;
  ClientError error_ = ClientError::kNone;
  std::string message_;
  int status_ = 0;
  int version_minor_ = 1;
  int64_t content_length_ = -1;
  bool chunked_ = false;
  bool has_body_ = false;
  uint64_t body_bytes_ = 0;
};

// Counters for /metrics. Relaxed atomics summed on read: cheap, not a consistent snapshot.
struct ClientStats {
  uint64_t requests = 0;      // send() calls (a retry or a redirect is not another)
  uint64_t responses = 0;     // response heads received
  uint64_t retries = 0;       // requests sent again after a keep-alive race
  uint64_t pool_hits = 0;     // requests sent on a reused connection
  uint64_t pool_misses = 0;   // requests that dialled a new connection
  uint64_t stale_closed = 0;  // pooled connections found closed (or talking) before reuse
  uint64_t errors[kClientErrorCount] = {};  // by ClientError (errors[0] unused)
  int64_t open_connections = 0;             // connected now, busy or idle
  int64_t idle_connections = 0;             // in the pool now
  // TLS handshakes of new https:// connections: full, resumed (a cached session accepted), and
  // failed (every kind: kTls, and the handshakes that timed out or were cancelled).
  uint64_t tls_handshakes_full = 0;
  uint64_t tls_handshakes_resumed = 0;
  uint64_t tls_handshake_failures = 0;
  // The failures by net::TlsHandshakeFailure ("certificate", "timeout", "eof", ...).
  uint64_t tls_handshake_failures_by[net::kTlsHandshakeFailureCount] = {};
};

class Client {
 public:
  explicit Client(ClientOptions options = {});
  // Closes the idle connections. Responses must be gone first.
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends `req` and returns the response once its head has arrived (or the error). The body is
  // read from the response afterwards, under the same context.
  ClientResponse send(const Context& ctx, const ClientRequest& req);
  ClientResponse get(const Context& ctx, std::string_view url);

  ClientStats stats() const;
  // Appends the counters in Prometheus text format, each name starting with `prefix`
  // ("greenhttp_client_requests_total" for prefix "greenhttp_client").
  void write_metrics(std::string& out, std::string_view prefix = "greenhttp_client") const;
  // Closes every idle connection now.
  void close_idle();
  const ClientOptions& options() const;

 private:
  ClientResponse send_once(const Context& ctx, const ClientRequest& req, bool* retryable,
                           bool fresh_only);
  // The TLS handshake of a new https:// connection on `stream`, by `deadline_ns`: kNone and
  // *out, or the error and *why.
  ClientError handshake(const Context& ctx, const Url& url, const std::string& key,
                        net::TcpStream& stream, int64_t deadline_ns,
                        std::unique_ptr<net::TlsSession>* out, std::string* why);
  std::shared_ptr<detail::ClientShared> shared_;
};

// The parts of an http:// or https:// URL. Exposed for the reverse proxy and tests.
struct Url {
  bool https = false;     // the scheme: https:// (TLS) or http://
  std::string host;       // without brackets ("::1")
  uint16_t port = 80;     // default 80, or 443 for https
  std::string authority;  // "host:port" as written (the Host header)
  std::string target;     // path and query, "/" when empty
  std::string_view scheme() const { return https ? "https" : "http"; }
};
// Parses "http[s]://host[:port][/path][?query]" (the scheme in any case); nullopt for anything
// else (another scheme, userinfo, bad port, empty host, spaces or control bytes). A fragment is
// dropped.
std::optional<Url> parse_url(std::string_view url);

}  // namespace green::http
