// TLS on greenrt's sockets (OpenSSL 3): the handshake and every record are straight-line code
// in the calling green thread. OpenSSL reads and writes through a BIO of ours that calls the
// TcpStream's own read() and write(), so "OpenSSL wants to read" is exactly "park this green
// thread on the netpoller until the socket is readable", under the stream's deadlines, its
// bound context and close() from another green thread, as for plain TCP.
//
//   auto server_tls = net::TlsServerContext::create(settings, &error);   // once
//   net::TlsStream s;
//   int rc = net::TlsStream::accept(std::move(tcp), *server_tls, &s, deadline_after(10s));
//   s.read(buf, n); s.write(data, n); s.close_notify(); s.close();
//
//   auto client_tls = net::TlsClientContext::create({}, &error);  // the system's CA store
//   rc = net::TlsStream::connect(std::move(tcp), *client_tls, "example.com", &s, deadline);
//
// A TlsStream has TcpStream's contract (negative errno, 0 at end of stream, deadlines, close()
// from any green thread waking parked operations) with one difference: OpenSSL's state is not
// safe for two green threads at once, so one green thread reads and writes it at a time
// (close() excepted). The server's connections and the HTTP client already work that way.
//
// TlsSession is the same thing without owning the socket: the state of one TLS connection over
// a TcpStream kept elsewhere, passed to each call. The HTTP server and client keep their
// TcpStream (for deadlines, hang-up watching and shutdown) and add a TlsSession beside it;
// TlsStream is the two together, for programs.
//
// Memory: every SSL has SSL_MODE_RELEASE_BUFFERS, so a connection that waits for its next
// request holds no record buffers (OpenSSL frees its 16 KiB read and write buffers when they
// are empty, as nginx asks it to), only the SSL object and its session.
//
// Errors: the functions here return negative errno values as TcpStream does; a TLS failure
// (a bad record, a failed handshake, a certificate that does not verify) is -EPROTO, and
// last_error() says what it was, for logs and metrics.
#pragma once

#include <sys/types.h>
#include <sys/uio.h>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "green/net.h"

// OpenSSL's types, so that no public header includes OpenSSL's.
struct ssl_st;
struct ssl_ctx_st;

namespace green::net {

enum class TlsVersion : uint8_t { kTls12, kTls13 };
std::string_view to_string(TlsVersion v);  // "TLSv1.2", "TLSv1.3"

// Why a handshake failed: the label of the failure in /metrics.
enum class TlsHandshakeFailure : uint8_t {
  kNone,
  kTimeout,      // the handshake deadline passed (a client that stalls mid-handshake)
  kEof,          // the peer closed the connection before the handshake ended
  kReset,        // ECONNRESET / EPIPE
  kPlainHttp,    // an HTTP request on the TLS port (answered 400: see TlsStream::accept)
  kNotTls,       // neither TLS nor HTTP: garbage instead of a ClientHello
  kVersion,      // no protocol version in common
  kCipher,       // no cipher suite in common
  kAlpn,         // no application protocol in common (a client that insists on h2 alone)
  kCertificate,  // client side: the peer's certificate did not verify
  kProtocol,     // any other TLS protocol error (a bad record, an alert from the peer)
  kCanceled,     // the socket was closed or the bound context cancelled under the handshake
  kOther,
};
inline constexpr int kTlsHandshakeFailureCount = 13;
std::string_view to_string(TlsHandshakeFailure f);  // "timeout", "eof", "plain_http", ...

// Counters of a TlsServerContext, for /metrics (relaxed atomics inside; a snapshot here).
struct TlsServerStats {
  uint64_t handshakes_full = 0;
  uint64_t handshakes_resumed = 0;
  uint64_t handshake_failures[kTlsHandshakeFailureCount] = {};  // by TlsHandshakeFailure
  uint64_t handshakes_waiting = 0;  // now: parked for a handshake slot (see max_handshakes)
  uint64_t reloads = 0;             // successful reload() calls
  uint64_t reload_failures = 0;
  int64_t certificate_not_after = 0;  // the current certificate's expiry (Unix seconds)
  // Open TLS connections by protocol version and cipher suite (counted from the end of the
  // handshake to the session's destruction).
  struct InUse {
    std::string version;
    std::string cipher;
    uint64_t connections = 0;
  };
  std::vector<InUse> in_use;
};

struct TlsServerSettings {
  std::string cert_file;  // PEM: the certificate, then its chain
  std::string key_file;   // PEM: its private key (unencrypted)
  TlsVersion min_version = TlsVersion::kTls12;
  // OpenSSL cipher strings; empty: OpenSSL's defaults (the issue's "cipher policy from
  // OpenSSL's defaults", and nginx's since 1.19.4 as well).
  std::string ciphers;       // TLS 1.2 (SSL_CTX_set_cipher_list)
  std::string ciphersuites;  // TLS 1.3 (SSL_CTX_set_ciphersuites)
  // ALPN, in the server's order of preference. A client that offers ALPN and none of these is
  // refused (RFC 7301's no_application_protocol); one that offers no ALPN is served.
  std::vector<std::string> alpn = {"http/1.1"};
  // Resumption. Tickets (stateless: RFC 5077 for TLS 1.2, and TLS 1.3's PSKs) are encrypted
  // with a key that is replaced every ticket_key_rotation; the keys of the previous
  // ticket_keys_kept - 1 rotations still decrypt (Go rotates daily and accepts a week's keys;
  // nginx leaves this to files the operator rotates). The keys are random, in memory only, and
  // outlive reload(), so resumption survives a certificate change. The session cache (session
  // IDs, for TLS 1.2 clients without tickets) holds session_cache_size sessions per
  // certificate generation (nginx's ssl_session_cache; 0 turns it off).
  bool session_tickets = true;
  std::chrono::seconds ticket_key_rotation = std::chrono::hours(24);
  int ticket_keys_kept = 7;
  std::size_t session_cache_size = 20480;
  std::chrono::seconds session_lifetime = std::chrono::hours(24);
  // Handshakes doing cryptography at once (see TlsSession::accept); 0: no cap (the default, as
  // in nginx and Go: see server/tls.cpp for what the cap did in the load test).
  int max_handshakes = 0;
};

// The server's certificate, key and policies: one SSL_CTX, replaced whole by reload() while
// connections use the old one. Thread-safe.
class TlsServerContext {
 public:
  // Loads the certificate and key and checks that they match. nullptr and *error (one line,
  // naming the file) on failure.
  static std::shared_ptr<TlsServerContext> create(const TlsServerSettings& settings,
                                                  std::string* error);
  ~TlsServerContext();
  TlsServerContext(const TlsServerContext&) = delete;
  TlsServerContext& operator=(const TlsServerContext&) = delete;

  // Reads the certificate and key files again (SIGHUP): new connections get the new pair,
  // open ones keep the one they have. A pair that does not load or match is reported in
  // *error and the current one kept. Any thread.
  bool reload(std::string* error);
  // Makes a new ticket key now, as the rotation timer does (the oldest one beyond
  // ticket_keys_kept is dropped). Any thread.
  void rotate_ticket_keys();

  TlsServerStats stats() const;
  const TlsServerSettings& settings() const { return settings_; }

  struct Impl;  // server/tls.cpp

 private:
  TlsServerContext() = default;
  TlsServerSettings settings_;
  std::shared_ptr<Impl> impl_;  // shared with every session (its counters)
  friend class TlsSession;
};

struct TlsClientSettings {
  // PEM file of the certificate authorities to trust; empty: the system's store
  // (/etc/ssl/certs, Debian's ca-certificates). verify = false trusts anything (for tests
  // against self-signed servers; never for the internet).
  std::string ca_file;
  bool verify = true;
  TlsVersion min_version = TlsVersion::kTls12;
  std::vector<std::string> alpn = {"http/1.1"};
  // Sessions kept for resumption, one per server name and port (Go's ClientSessionCache);
  // 0: none.
  std::size_t session_cache_size = 256;
};

// A client's trust store and policies, shared by every connection it makes, with its session
// cache. Thread-safe.
class TlsClientContext {
 public:
  static std::shared_ptr<TlsClientContext> create(const TlsClientSettings& settings,
                                                  std::string* error);
  ~TlsClientContext();
  TlsClientContext(const TlsClientContext&) = delete;
  TlsClientContext& operator=(const TlsClientContext&) = delete;

  const TlsClientSettings& settings() const { return settings_; }

  struct Impl;  // server/tls.cpp

 private:
  TlsClientContext() = default;
  TlsClientSettings settings_;
  std::shared_ptr<Impl> impl_;  // shared with every session (its session cache)
  friend class TlsSession;
};

// One TLS connection's state over a TcpStream owned by the caller (see the top of the file).
// Every call takes that stream: the same one each time.
class TlsSession {
 public:
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  // The server's handshake on an accepted stream, under `deadline` (the stream's read and
  // write deadlines are set to it for the handshake and left so; set them afterwards).
  // Returns 0 and fills *out, or a negative errno with *why (when given) saying why; after a
  // failed handshake *out holds the dead session for its last_error() only (or is null).
  //
  // Before OpenSSL sees a byte the first one is peeked: a client speaking plain HTTP to the
  // TLS port is answered "400 Bad Request" saying so (nginx's "The plain HTTP request was sent
  // to HTTPS port") and the call fails with kPlainHttp; a first byte that is not a TLS
  // handshake record fails with kNotTls at once, without OpenSSL.
  //
  // Handshake CPU: with max_handshakes set, the cryptography of at most that many handshakes
  // runs at once; the rest park (FIFO) for a slot. A handshake holds its slot only while it
  // computes, never while it waits for the client, so clients that stall take no slot.
  static int accept(TcpStream& stream, const TlsServerContext& ctx, Deadline deadline,
                    std::unique_ptr<TlsSession>* out, TlsHandshakeFailure* why = nullptr);
  // The client's handshake: SNI and certificate verification against `server_name` (a DNS
  // name or an IP address literal), the cached session for server_name:port offered for
  // resumption. The stream's bound context (TcpStream::bind_context), if any, ends it.
  static int connect(TcpStream& stream, const TlsClientContext& ctx, std::string_view server_name,
                     uint16_t port, Deadline deadline, std::unique_ptr<TlsSession>* out,
                     TlsHandshakeFailure* why = nullptr);

  // TcpStream's read(), try_read(), write(), writev() and wait_readable() through TLS.
  // read() returns 0 at end of stream: a close_notify, or (as browsers and Go's crypto/tls
  // with HTTP/1.1 accept) a TCP close without one. try_read() returns -EAGAIN when no whole
  // record is there yet. wait_readable() returns at once when decrypted bytes are buffered.
  // writev() puts what fits into one TLS record per 16 KiB (small pieces are copied together
  // first, as nginx's ssl_buffer does), so a response's head and body go out as one record.
  ssize_t read(TcpStream& s, void* buf, std::size_t n);
  ssize_t try_read(TcpStream& s, void* buf, std::size_t n);
  ssize_t write(TcpStream& s, const void* buf, std::size_t n);
  ssize_t writev(TcpStream& s, const iovec* iov, int iovcnt);
  int wait_readable(TcpStream& s);
  // Decrypted bytes buffered, or record bytes read ahead: a read will not need the socket.
  bool has_buffered() const;
  // Sends close_notify (one write, under the stream's write deadline; never waits for the
  // peer's). Returns 0 or a negative errno. The socket is left to the caller.
  int close_notify(TcpStream& s);

  TlsVersion version() const;
  std::string_view cipher() const;       // "TLS_AES_128_GCM_SHA256"
  std::string_view alpn() const;         // the protocol chosen, or empty
  std::string_view server_name() const;  // the SNI the client sent (server side), or empty
  bool resumed() const;
  // What the last failed call saw: OpenSSL's reason ("wrong version number", "certificate
  // verify failed: unable to get local issuer certificate"), or the errno's text.
  const std::string& last_error() const { return last_error_; }

  // For the server's connection state page (/debug).
  ssl_st* native_handle() const { return ssl_; }

  struct Io;  // server/tls.cpp: the BIO's view of the current call

 private:
  TlsSession() = default;
  ssize_t io_failure(int ssl_error, const Io& io);
  ssize_t do_read(TcpStream& s, void* buf, std::size_t n, bool park);
  int handshake(TcpStream& s, Deadline deadline, TlsHandshakeFailure* why, void* slots);
  ssl_st* ssl_ = nullptr;
  std::shared_ptr<const void> owner_;  // keeps the SSL_CTX's generation (or client ctx) alive
  void* in_use_slot_ = nullptr;        // the TlsServerStats::in_use counter this one holds
  std::string last_error_;
  std::string peer_key_;  // client side: "server_name:port", the session cache's key
  bool peer_closed_ = false;
  bool socket_drained_ = false;  // the last socket read left it empty (wait_readable parks)
};

// A TcpStream and its TlsSession together: TcpStream's API over TLS.
class TlsStream {
 public:
  TlsStream() = default;
  TlsStream(TlsStream&&) noexcept = default;
  TlsStream& operator=(TlsStream&&) noexcept = default;

  // Takes `tcp` and does the server handshake. After a failure *out still holds the socket
  // (closed by its destructor or close()) and the dead session, for last_error().
  static int accept(TcpStream tcp, const TlsServerContext& ctx, Deadline deadline, TlsStream* out,
                    TlsHandshakeFailure* why = nullptr);
  // Connects to `to` and does the client handshake with `server_name`; the socket is closed
  // after a failed handshake.
  static int connect(const Address& to, const TlsClientContext& ctx, std::string_view server_name,
                     TlsStream* out, Deadline deadline = kNoDeadline,
                     TlsHandshakeFailure* why = nullptr);

  ssize_t read(void* buf, std::size_t n) { return session_->read(tcp_, buf, n); }
  ssize_t try_read(void* buf, std::size_t n) { return session_->try_read(tcp_, buf, n); }
  ssize_t write(const void* buf, std::size_t n) { return session_->write(tcp_, buf, n); }
  ssize_t writev(const iovec* iov, int iovcnt) { return session_->writev(tcp_, iov, iovcnt); }
  int wait_readable() { return session_->wait_readable(tcp_); }
  // close_notify, then the socket's close. Only the owning green thread.
  void close();

  void set_read_deadline(Deadline d) { tcp_.set_read_deadline(d); }
  void set_write_deadline(Deadline d) { tcp_.set_write_deadline(d); }
  bool is_open() const { return tcp_.is_open(); }

  TcpStream& tcp() { return tcp_; }
  TlsSession& session() { return *session_; }

 private:
  TcpStream tcp_;
  std::unique_ptr<TlsSession> session_;
};

}  // namespace green::net
