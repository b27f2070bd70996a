// Request: one parsed HTTP/1.1 request, as a handler sees it (Go's *http.Request).
//
// Everything in a Request is a view into the connection's pooled input buffer (or its body
// buffer): valid until the handler returns, never after. A handler that hands data to a
// background green thread must copy it first.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

#include "green/http/body.h"

namespace green {
class Context;  // green/context.h
}
namespace green::net {
class TcpStream;
class TlsSession;
}  // namespace green::net

namespace green::http {

// What serves a request: an HTTP/1.1 connection or an HTTP/2 stream (server-internal).
class RequestHost {
 public:
  virtual const green::Context& request_context() = 0;  // Request::context()
  virtual bool client_gone() = 0;                       // Request::client_gone()

 protected:
  ~RequestHost() = default;
};

enum class Method : uint8_t {
  kGet,
  kHead,
  kPost,
  kPut,
  kDelete,
  kOptions,
  kPatch,
  kTrace,
  kConnect,
  kOther,  // a registered method we do not route by name (PROPFIND, ...)
};
inline constexpr int kMethodCount = static_cast<int>(Method::kOther) + 1;

std::string_view method_name(Method m);
// Parses a method token; kOther for anything not in the enum.
Method method_from_name(std::string_view name);

struct Header {
  std::string_view name;
  std::string_view value;  // without surrounding whitespace
};

// ASCII case-insensitive equality, for header names and tokens.
bool iequals(std::string_view a, std::string_view b);

class Request {
 public:
  static constexpr int kMaxParams = 8;

  Method method() const { return method_; }
  std::string_view method_name() const { return method_name_; }
  // The request target exactly as sent ("/a%20b?x=1", "http://host/p", "*").
  std::string_view target() const { return target_; }
  // The target's path, percent-decoded; for absolute-form targets the path after the
  // authority ("/" when empty). Never contains NUL (such requests are rejected with 400).
  // An encoded slash stays encoded, as "%2F": it is data inside a segment, never a separator,
  // so "/a%2Fb" is one segment (routing and file lookup treat it as the name "a%2Fb").
  std::string_view path() const { return path_; }
  // The query string after '?', not decoded; empty when absent.
  std::string_view query() const { return query_; }
  // The first value of a query parameter, not decoded; nullopt when absent.
  std::optional<std::string_view> query_param(std::string_view name) const;
  // A query parameter parsed as a non-negative decimal integer; `fallback` when absent or not
  // a number, clamped to `max`.
  int64_t query_int(std::string_view name, int64_t fallback, int64_t max) const;

  int version_major() const { return version_major_; }
  int version_minor() const { return version_minor_; }

  std::span<const Header> headers() const { return headers_; }
  // The first header called `name` (case-insensitive), or empty.
  std::string_view header(std::string_view name) const;
  bool has_header(std::string_view name) const;

  // The body, Content-Length or chunked, decoded: read it as a stream or whole
  // (green/http/body.h says which bodies are already in memory and how reads fail).
  Body& body() { return body_; }

  // Whether the connection stays open after this request (HTTP/1.1 without Connection: close,
  // HTTP/1.0 with Connection: keep-alive).
  bool keep_alive() const { return keep_alive_; }

  // The client's address ("127.0.0.1", "::1").
  std::string_view remote_addr() const { return remote_addr_; }

  // Whether the client has gone away (closed or reset its connection) while the handler runs:
  // a long handler polls it every few milliseconds and stops early, as a Go handler watches
  // r.Context().Done(). While a handler runs nobody reads the connection, so this asks the
  // socket (net::TcpStream::peer_gone: one non-blocking syscall, never parks; a half-closed
  // client counts as gone, as in Go and nginx). Callable from the handler's green thread,
  // also inside green::blocking(). False for a Request not bound to a connection (tests).
  // context() does the same without polling.
  bool client_gone() const;

  // The connection's TLS state when the request came over HTTPS (version, cipher, ALPN, SNI:
  // net::TlsSession), else nullptr. Its scheme for X-Forwarded-Proto and absolute URLs.
  const net::TlsSession* tls() const { return tls_; }
  std::string_view scheme() const { return tls_ != nullptr ? "https" : "http"; }

  // The request's context, Go's r.Context(): cancelled (done() closed) when
  //   - the client disconnects while the handler runs: the netpoller sees the hang-up (a
  //     half-closed client counts as gone, as for client_gone()), also while a streamed
  //     body is still being read;
  //   - the handler's deadline passes (--handler-timeout; err() is kDeadlineExceeded);
  //   - the server's drain deadline passes after a shutdown (--shutdown-timeout);
  //   - the handler returns.
  // Pass it to what the handler waits on (green::sleep_for(d, ctx), ch.recv(ctx),
  // select(done_case(ctx, ...)), TcpStream::read(buf, n, ctx)) so that the work stops when
  // nobody wants its result any more. A handler that ends because its client left may
  // just return: when the context was cancelled by the hang-up and no response was sent,
  // the server records 499 (nginx's "client closed request") and sends nothing.
  // Created on the first call, so a handler that never asks pays nothing for it (no
  // allocation, no syscall); later calls return the same one. Valid until the handler
  // returns (copy it to hand it to another green thread). Call it from the handler's green
  // thread. For a Request not bound to a connection (tests): Context::background().
  const green::Context& context() const;

  // The request's id (X-Request-Id, set by middleware::request_id()), or empty. The access
  // log records it.
  static constexpr std::size_t kMaxRequestIdLength = 64;
  std::string_view request_id() const { return {request_id_, request_id_length_}; }
  // Copies `id` (cut at kMaxRequestIdLength bytes) as the request's id.
  void set_request_id(std::string_view id);

  // A path parameter bound by the router (":id" segments; "*" is the rest of a prefix route),
  // or empty.
  std::string_view param(std::string_view name) const;

  // --- for the parser, the router and the connection ---
  struct Param {
    std::string_view name;
    std::string_view value;
  };
  void set_params(std::span<const Param> params);
  void set_remote_addr(std::string_view a) { remote_addr_ = a; }
  void set_stream(const net::TcpStream* s) { stream_ = s; }
  void set_tls(const net::TlsSession* t) { tls_ = t; }
  // The connection or stream serving this request (for context() and client_gone()); clears a
  // previous request's context.
  void bind_connection(RequestHost* c) {
    connection_ = c;
    context_ = nullptr;
  }
  // HTTP/2's pseudo-header fields give a request no version line: it is 2.0.
  void set_version(int major, int minor) {
    version_major_ = static_cast<uint8_t>(major);
    version_minor_ = static_cast<uint8_t>(minor);
  }
  // Replaces what context() returns (a middleware's derived context: middleware::timeout);
  // returns the previous one (null: not created yet), for the caller to restore.
  const green::Context* set_context(const green::Context* c) {
    const green::Context* old = context_;
    context_ = c;
    return old;
  }

 private:
  friend class RequestParser;
  Method method_ = Method::kGet;
  uint8_t version_major_ = 1;
  uint8_t version_minor_ = 1;
  bool keep_alive_ = true;
  uint8_t request_id_length_ = 0;
  int param_count_ = 0;
  std::string_view method_name_;
  std::string_view target_;
  std::string_view path_;
  std::string_view query_;
  std::span<const Header> headers_;
  Body body_;
  std::string_view remote_addr_;
  const net::TcpStream* stream_ = nullptr;           // the connection's socket, for client_gone()
  const net::TlsSession* tls_ = nullptr;             // its TLS state, on the HTTPS listener
  RequestHost* connection_ = nullptr;                // for context() and client_gone()
  mutable const green::Context* context_ = nullptr;  // created on the first context() call
  Param params_[kMaxParams];
  char request_id_[kMaxRequestIdLength];
};

}  // namespace green::http
