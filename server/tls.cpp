// TLS on greenrt's sockets (green/tls.h), with OpenSSL 3 from Debian (libssl-dev): the library
// every peer here uses (nginx, and Go's crypto/tls is the only one with its own), maintained,
// FIPS-reviewed, and far beyond what a hand-written TLS stack could be trusted with.
//
// The BIO. OpenSSL does its socket I/O through a BIO; ours calls the TcpStream of the call in
// progress (TlsSession::Io, set on the BIO for the length of one SSL_* call, on the caller's
// stack): TcpStream::read() parks the green thread until data arrives, under the stream's
// read deadline, bound context and close(). So SSL_read() is straight-line code that may park
// in the middle, exactly as a plain read would; nothing here loops on WANT_READ except the
// handshake (below) and try_read(), which call the BIO in its non-parking mode (try_read).
// Writes always park until done: a record is never left half-written.
//
// OpenSSL's per-thread state under M:N scheduling. A green thread parked inside an SSL_* call
// may resume on another OS thread. OpenSSL keeps its error queue per OS thread, so an error
// pushed before the park is on one thread's queue and SSL_get_error() after it looks at
// another's. So every call here clears the queue first (ERR_clear_error); each BIO call notes
// the last error its SSL call has queued so far (Io::queued) before the socket operation that
// may park, and clears the queue after it, whichever thread it is on then (what is there can
// only be another green thread's leftover); failures are classified by what the BIO saw
// (Io::err, Io::eof), then by the queue, then by Io::queued. Nothing else OpenSSL keeps per thread
// (its DRBGs, its init state) is held across a BIO call, and it holds none of its locks across
// one (they guard the session cache and the context, never an SSL's I/O).
//
// The handshake's CPU. A handshake computes for ~0.1-1 ms (key exchange, signature) in one
// piece, between two waits for the peer. With max_handshakes set, the server's handshakes take
// a slot (max_handshakes of them) for each piece of computing and give it back before waiting
// for the peer (the handshake drives OpenSSL in non-parking mode for that reason), so a client
// that stalls holds no slot. By default there is no cap, as in nginx and Go: under a flood of
// full handshakes (issue 15's load test, ECDSA and RSA certificates) established keep-alive
// connections kept a p99 below nginx's and Go's without it, and a cap of twice the Ps cost
// them throughput (8.4K against 10.6K requests/s with ECDSA) without lowering their p99.
//
// Session tickets: our key ring, not OpenSSL's per-context key, so that keys rotate (lazily:
// the first ticket issued after the rotation period makes a new key) and outlive reload().
// A ticket under an older key is accepted and renewed (the callback's return value 2), as Go
// does with its previous keys.
#include "green/tls.h"

#include <arpa/inet.h>
#include <openssl/bio.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <pthread.h>
#include <sys/socket.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <ctime>
#include <deque>
#include <list>
#include <mutex>
#include <string>
#include <unordered_map>

#include "green/detail/park.h"
#include "green/green.h"
#include "green/sync.h"
#include "runtime/sanitizers.h"

#if GREEN_TSAN
// OpenSSL is not built with TSan, so TSan sees only what its interceptors (malloc, free, memcpy,
// memcmp) see of it, and none of its atomics: its reference counts, and the flags it publishes
// cached certificate extensions with. It reports what OpenSSL orders with those as races: a
// client connection copies its SSL_SESSION when a TLS 1.3 ticket arrives and drops its
// reference while another, replacing that session in the client cache, drops the last one and
// frees it ("data race ... in SSL_SESSION_free"); two handshakes verifying against the same CA
// certificate (ASN1_STRING_cmp against ASN1_STRING_set under OpenSSL's lock). So interceptors
// called from OpenSSL are not reported, in every program that links this file (the binary, the
// examples, the tests); greenhttp's own accesses (this file's, also when OpenSSL calls back into
// it) are still checked. Found by the TLS stream test's concurrent-handshake stress.
// NOLINTNEXTLINE(bugprone-reserved-identifier): TSan's hook, looked up by this name
extern "C" const char* __tsan_default_suppressions() {
  return "called_from_lib:libssl.so\ncalled_from_lib:libcrypto.so\n";
}
#endif

namespace green::net {

// What the BIO sees of the call in progress.
struct TlsSession::Io {
  TcpStream* stream = nullptr;
  bool park = true;  // read() parks; false: try_read() (-EAGAIN is a retry)
  bool eof = false;  // the socket read returned end of stream
  int err = 0;       // the socket operation's errno (positive), other than EAGAIN
  // The last error this call queued before a socket operation that may have moved it to
  // another OS thread (the alert after a failed verification): that thread's queue lacks it.
  unsigned long queued = 0;  // NOLINT(google-runtime-int)
  // Set by each socket read: whether it left the socket empty (a short read, EAGAIN, end of
  // stream), so that wait_readable() may park without probing first.
  bool* socket_drained = nullptr;
};

namespace {

int64_t to_ns(Deadline d) { return d.time_since_epoch().count(); }

// ---- The BIO over a TcpStream ----------------------------------------------------------------

int bio_create(BIO* b) {
  BIO_set_init(b, 1);
  BIO_set_data(b, nullptr);
  return 1;
}

// ERR_clear_error() walks all sixteen slots of the thread's queue; it runs a few times per
// request, almost always on an empty queue, which one look at its head answers.
void clear_errors() {
  if (ERR_peek_error() != 0) ERR_clear_error();
}

int bio_read(BIO* b, char* buf, std::size_t n, std::size_t* got) {
  BIO_clear_retry_flags(b);
  auto* io = static_cast<TlsSession::Io*>(BIO_get_data(b));
  if (io == nullptr) return 0;
  if (const unsigned long e = ERR_peek_last_error(); e != 0) io->queued = e;  // NOLINT
  const ssize_t r = io->park ? io->stream->read(buf, n) : io->stream->try_read(buf, n);
  clear_errors();  // others' leftovers, whichever thread this is now (ours: io->queued)
  if (io->socket_drained != nullptr) *io->socket_drained = r < static_cast<ssize_t>(n);
  if (r > 0) {
    *got = static_cast<std::size_t>(r);
    return 1;
  }
  if (r == 0) {
    io->eof = true;
  } else if (r == -EAGAIN || r == -EWOULDBLOCK) {
    BIO_set_retry_read(b);
  } else {
    io->err = static_cast<int>(-r);
  }
  return 0;
}

int bio_write(BIO* b, const char* buf, std::size_t n, std::size_t* written) {
  BIO_clear_retry_flags(b);
  auto* io = static_cast<TlsSession::Io*>(BIO_get_data(b));
  if (io == nullptr) return 0;
  if (const unsigned long e = ERR_peek_last_error(); e != 0) io->queued = e;  // NOLINT
  const ssize_t r = io->stream->write(buf, n);  // all of it, parking as needed
  clear_errors();  // others' leftovers, whichever thread this is now (ours: io->queued)
  if (r < 0) {
    io->err = static_cast<int>(-r);
    return 0;
  }
  *written = n;
  return 1;
}

long bio_ctrl(BIO* /*b*/, int cmd, long /*num*/, void* /*ptr*/) {  // NOLINT(google-runtime-int)
  // Writes go straight to the socket, so there is nothing to flush; every other control
  // (kTLS, pending counts, push/pop) is "not supported".
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

BIO_METHOD* bio_method() {
  static BIO_METHOD* const method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "green TcpStream");
    BIO_meth_set_create(m, bio_create);
    BIO_meth_set_read_ex(m, bio_read);
    BIO_meth_set_write_ex(m, bio_write);
    BIO_meth_set_ctrl(m, bio_ctrl);
    return m;
  }();
  return method;
}

// Points the session's BIO at `io` for one SSL_* call, and clears the thread's error queue.
class IoScope {
 public:
  IoScope(ssl_st* ssl, TlsSession::Io* io) : bio_(SSL_get_rbio(ssl)) {
    clear_errors();
    BIO_set_data(bio_, io);
  }
  ~IoScope() { BIO_set_data(bio_, nullptr); }
  IoScope(const IoScope&) = delete;
  IoScope& operator=(const IoScope&) = delete;

 private:
  BIO* bio_;
};

std::string openssl_reason(unsigned long code) {  // NOLINT(google-runtime-int)
  if (code == 0) return "TLS error";
  const char* reason = ERR_reason_error_string(code);
  if (reason != nullptr) return reason;
  char buf[256];
  ERR_error_string_n(code, buf, sizeof buf);
  return buf;
}

std::string errno_text(int err) {
  char buf[128];
  return strerror_r(err, buf, sizeof buf);
}

// Every reason on this thread's queue, oldest (the root cause) first, then clears it:
// "no start line; PEM lib" says more about a bad file than its last entry alone.
std::string take_error_text() {
  std::string text;
  for (;;) {
    const unsigned long code = ERR_get_error();  // NOLINT(google-runtime-int)
    if (code == 0) break;
    const std::string reason = openssl_reason(code);
    if (text.find(reason) != std::string::npos) continue;
    if (!text.empty()) text += "; ";
    text += reason;
  }
  return text.empty() ? "TLS error" : text;
}

// The last error on this thread's queue, then clears it.
unsigned long take_error() {                         // NOLINT(google-runtime-int)
  const unsigned long code = ERR_peek_last_error();  // NOLINT(google-runtime-int)
  ERR_clear_error();
  return code;
}

TlsHandshakeFailure classify(const TlsSession::Io& io, int ssl_error,
                             unsigned long code) {  // NOLINT(google-runtime-int)
  switch (io.err) {
    case 0:
      break;
    case ETIMEDOUT:
      return TlsHandshakeFailure::kTimeout;
    case ECANCELED:
      return TlsHandshakeFailure::kCanceled;
    case ECONNRESET:
    case EPIPE:
      return TlsHandshakeFailure::kReset;
    default:
      return TlsHandshakeFailure::kOther;
  }
  if (ssl_error == SSL_ERROR_SSL && code != 0 && ERR_GET_LIB(code) == ERR_LIB_SSL) {
    switch (ERR_GET_REASON(code)) {
      case SSL_R_UNSUPPORTED_PROTOCOL:
      case SSL_R_VERSION_TOO_LOW:
      case SSL_R_NO_PROTOCOLS_AVAILABLE:
      case SSL_R_TLSV1_ALERT_PROTOCOL_VERSION:
      case SSL_R_WRONG_SSL_VERSION:
      case SSL_R_WRONG_VERSION_NUMBER:
        return TlsHandshakeFailure::kVersion;
      case SSL_R_NO_SHARED_CIPHER:
      case SSL_R_NO_SHARED_GROUPS:
      case SSL_R_NO_SHARED_SIGNATURE_ALGORITHMS:
      case SSL_R_NO_SUITABLE_SIGNATURE_ALGORITHM:
      case SSL_R_NO_CIPHERS_AVAILABLE:
      case SSL_R_SSLV3_ALERT_HANDSHAKE_FAILURE:
        return TlsHandshakeFailure::kCipher;
      case SSL_R_NO_APPLICATION_PROTOCOL:
      case SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL:
        return TlsHandshakeFailure::kAlpn;
      case SSL_R_CERTIFICATE_VERIFY_FAILED:
        return TlsHandshakeFailure::kCertificate;
      default:
        return TlsHandshakeFailure::kProtocol;
    }
  }
  if (io.eof) return TlsHandshakeFailure::kEof;
  if (ssl_error == SSL_ERROR_SSL || ssl_error == SSL_ERROR_ZERO_RETURN) {
    return TlsHandshakeFailure::kProtocol;
  }
  return TlsHandshakeFailure::kOther;
}

// "h2", "http/1.1" -> ALPN's wire format (length-prefixed). Names over 255 bytes are dropped.
std::string alpn_wire(const std::vector<std::string>& protocols) {
  std::string out;
  for (const std::string& p : protocols) {
    if (p.empty() || p.size() > 255) continue;
    out.push_back(static_cast<char>(p.size()));
    out += p;
  }
  return out;
}

int proto_version(TlsVersion v) {
  return v == TlsVersion::kTls13 ? TLS1_3_VERSION : TLS1_2_VERSION;
}

bool is_ip_literal(std::string_view name) {
  std::string s(name);
  in6_addr a6{};
  in_addr a4{};
  return inet_pton(AF_INET, s.c_str(), &a4) == 1 || inet_pton(AF_INET6, s.c_str(), &a6) == 1;
}

// A 48-byte-key ticket key: 16 bytes of name, AES-256 and HMAC-SHA256 keys of 32.
struct TicketKey {
  std::array<unsigned char, 16> name{};
  std::array<unsigned char, 32> aes{};
  std::array<unsigned char, 32> hmac{};
  int64_t created_ns = 0;
};

int set_ticket_mac(EVP_MAC_CTX* hctx, TicketKey& key) {
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, key.hmac.data(), key.hmac.size()),
      OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_end(),
  };
  return EVP_MAC_CTX_set_params(hctx, params);
}

}  // namespace

std::string_view to_string(TlsVersion v) { return v == TlsVersion::kTls13 ? "TLSv1.3" : "TLSv1.2"; }

std::string_view to_string(TlsHandshakeFailure f) {
  switch (f) {
    case TlsHandshakeFailure::kNone:
      return "none";
    case TlsHandshakeFailure::kTimeout:
      return "timeout";
    case TlsHandshakeFailure::kEof:
      return "eof";
    case TlsHandshakeFailure::kReset:
      return "reset";
    case TlsHandshakeFailure::kPlainHttp:
      return "plain_http";
    case TlsHandshakeFailure::kNotTls:
      return "not_tls";
    case TlsHandshakeFailure::kVersion:
      return "version";
    case TlsHandshakeFailure::kCipher:
      return "cipher";
    case TlsHandshakeFailure::kAlpn:
      return "alpn";
    case TlsHandshakeFailure::kCertificate:
      return "certificate";
    case TlsHandshakeFailure::kProtocol:
      return "protocol";
    case TlsHandshakeFailure::kCanceled:
      return "canceled";
    case TlsHandshakeFailure::kOther:
      return "other";
  }
  return "other";
}

// ---- The server's context --------------------------------------------------------------------

struct TlsServerContext::Impl {
  TlsServerSettings settings;
  std::string alpn;  // wire format

  // The current certificate generation: an SSL_CTX each SSL_new() takes a reference to.
  mutable std::mutex current_lock;
  SSL_CTX* current = nullptr;  // guarded by current_lock

  std::mutex keys_lock;
  std::deque<TicketKey> keys;  // newest first; guarded by keys_lock

  // Handshake slots (see the top of the file).
  green::Mutex slots_lock;
  green::ConditionVariable slot_freed;
  int slots_free = 0;  // guarded by slots_lock
  std::atomic<uint64_t> waiting{0};

  std::atomic<uint64_t> full{0};
  std::atomic<uint64_t> resumed{0};
  std::array<std::atomic<uint64_t>, kTlsHandshakeFailureCount> failures{};
  std::atomic<uint64_t> reloads{0};
  std::atomic<uint64_t> reload_failures{0};
  std::atomic<int64_t> not_after{0};

  struct InUse {
    std::string version;
    std::string cipher;
    std::atomic<uint64_t> count{0};
  };
  std::mutex in_use_lock;
  std::list<InUse> in_use;  // guarded by in_use_lock; nodes never move or go away

  ~Impl() {
    if (current != nullptr) SSL_CTX_free(current);
  }

  SSL_CTX* build(std::string* error, int64_t* expiry) const;

  SSL_CTX* acquire_ctx() const {
    std::lock_guard<std::mutex> g(current_lock);
    SSL_CTX_up_ref(current);
    return current;
  }

  // A slot, or false past `deadline_ns` or once `stream` is closed (the server's drain closes
  // connections still in their handshake; a waiter looks every kSlotRecheck, which matters only
  // while handshakes queue, that is, under a flood).
  bool acquire_slot(int64_t deadline_ns, const TcpStream& stream) {
    static constexpr int64_t kSlotRecheck = 100'000'000;  // 100 ms
    std::unique_lock<green::Mutex> lock(slots_lock);
    if (slots_free > 0) {
      --slots_free;
      return true;
    }
    waiting.fetch_add(1, std::memory_order_relaxed);
    bool ok = true;
    while (slots_free == 0) {
      const int64_t until = std::min(deadline_ns, green::detail::now_ns() + kSlotRecheck);
      if (!slot_freed.wait_until_ns(lock, until) && slots_free == 0 &&
          (until == deadline_ns || !stream.is_open())) {
        ok = false;
        break;
      }
    }
    waiting.fetch_sub(1, std::memory_order_relaxed);
    if (ok) --slots_free;
    return ok;
  }
  void release_slot() {
    {
      std::lock_guard<green::Mutex> g(slots_lock);
      ++slots_free;
    }
    slot_freed.notify_one();
  }

  // The newest key for a new ticket, making one first when none is younger than the rotation.
  TicketKey encryption_key() {
    const int64_t now = green::detail::now_ns();
    std::lock_guard<std::mutex> g(keys_lock);
    const int64_t period =
        std::chrono::duration_cast<std::chrono::nanoseconds>(settings.ticket_key_rotation).count();
    if (keys.empty() || now - keys.front().created_ns >= period) add_key_locked(now);
    return keys.front();
  }
  // The key named `name`, and whether it is the newest; false when it is unknown or expired.
  bool decryption_key(const unsigned char* name, TicketKey* out, bool* newest) {
    std::lock_guard<std::mutex> g(keys_lock);
    for (std::size_t i = 0; i < keys.size(); ++i) {
      if (std::memcmp(keys[i].name.data(), name, keys[i].name.size()) == 0) {
        *out = keys[i];
        *newest = i == 0;
        return true;
      }
    }
    return false;
  }
  void add_key_locked(int64_t now) {
    TicketKey k;
    if (RAND_bytes(k.name.data(), static_cast<int>(k.name.size())) != 1 ||
        RAND_bytes(k.aes.data(), static_cast<int>(k.aes.size())) != 1 ||
        RAND_bytes(k.hmac.data(), static_cast<int>(k.hmac.size())) != 1) {
      return;  // the DRBG failed: keep the keys there are
    }
    k.created_ns = now;
    keys.push_front(k);
    while (keys.size() > static_cast<std::size_t>(std::max(1, settings.ticket_keys_kept))) {
      keys.pop_back();
    }
  }

  std::atomic<uint64_t>* in_use_counter(std::string_view version, std::string_view cipher) {
    std::lock_guard<std::mutex> g(in_use_lock);
    for (InUse& u : in_use) {
      if (u.version == version && u.cipher == cipher) return &u.count;
    }
    InUse& u = in_use.emplace_back();
    u.version = version;
    u.cipher = cipher;
    return &u.count;
  }

  void count_failure(TlsHandshakeFailure f) {
    failures[static_cast<std::size_t>(f)].fetch_add(1, std::memory_order_relaxed);
  }
};

namespace {

int ticket_callback(SSL* ssl, unsigned char* key_name, unsigned char* iv, EVP_CIPHER_CTX* cctx,
                    EVP_MAC_CTX* hctx, int encrypt) {
  auto* impl = static_cast<TlsServerContext::Impl*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  if (impl == nullptr) return -1;
  if (encrypt != 0) {
    TicketKey key = impl->encryption_key();
    if (key.created_ns == 0) return -1;
    std::memcpy(key_name, key.name.data(), key.name.size());
    if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) != 1) return -1;
    if (EVP_EncryptInit_ex(cctx, EVP_aes_256_cbc(), nullptr, key.aes.data(), iv) != 1) return -1;
    return set_ticket_mac(hctx, key) == 1 ? 1 : -1;
  }
  TicketKey key;
  bool newest = false;
  if (!impl->decryption_key(key_name, &key, &newest)) return 0;  // unknown: a full handshake
  if (set_ticket_mac(hctx, key) != 1) return -1;
  if (EVP_DecryptInit_ex(cctx, EVP_aes_256_cbc(), nullptr, key.aes.data(), iv) != 1) return -1;
  // 2: valid, but issue a new ticket under the current key. TLS 1.3 always gets one: its
  // tickets are meant for one use (RFC 8446 section C.4), and OpenSSL sends none after a
  // resumption unless asked, so a client that keeps only its latest session (wrk; a browser
  // after its tickets are used) would fall back to a full handshake every other time. Go's
  // server sends a ticket after every TLS 1.3 handshake as well.
  if (!newest || SSL_version(ssl) == TLS1_3_VERSION) return 2;
  return 1;
}

int alpn_select(SSL* /*ssl*/, const unsigned char** out, unsigned char* out_length,
                const unsigned char* offered, unsigned int offered_length, void* arg) {
  const auto* impl = static_cast<const TlsServerContext::Impl*>(arg);
  unsigned char* chosen = nullptr;
  if (SSL_select_next_proto(&chosen, out_length,
                            reinterpret_cast<const unsigned char*>(impl->alpn.data()),
                            static_cast<unsigned int>(impl->alpn.size()), offered,
                            offered_length) != OPENSSL_NPN_NEGOTIATED) {
    // Go and nginx refuse a client whose protocols are all unknown (RFC 7301 section 3.2).
    return SSL_TLSEXT_ERR_ALERT_FATAL;
  }
  *out = chosen;
  return SSL_TLSEXT_ERR_OK;
}

int64_t certificate_expiry(SSL_CTX* ctx) {
  X509* cert = SSL_CTX_get0_certificate(ctx);
  if (cert == nullptr) return 0;
  std::tm tm{};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1) return 0;
  return static_cast<int64_t>(timegm(&tm));
}

}  // namespace

SSL_CTX* TlsServerContext::Impl::build(std::string* error, int64_t* expiry) const {
  ERR_clear_error();
  SSL_CTX* ctx = SSL_CTX_new(TLS_server_method());
  auto fail = [&](const std::string& what) -> SSL_CTX* {
    *error = what + ": " + take_error_text();
    if (ctx != nullptr) SSL_CTX_free(ctx);
    return nullptr;
  };
  if (ctx == nullptr) return fail("cannot create a TLS context");
  SSL_CTX_set_min_proto_version(ctx, proto_version(settings.min_version));
  // No renegotiation (a DoS lever, gone from TLS 1.3; nginx refuses it too); a TCP close
  // without close_notify reads as end of stream (HTTP/1.1 delimits its own messages).
  SSL_CTX_set_options(
      ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_read_ahead(ctx, 1);  // one read() per burst of records, not two per record
  if (!settings.ciphers.empty() && SSL_CTX_set_cipher_list(ctx, settings.ciphers.c_str()) != 1) {
    return fail("bad TLS 1.2 cipher list \"" + settings.ciphers + "\"");
  }
  if (!settings.ciphersuites.empty() &&
      SSL_CTX_set_ciphersuites(ctx, settings.ciphersuites.c_str()) != 1) {
    return fail("bad TLS 1.3 cipher suites \"" + settings.ciphersuites + "\"");
  }
  if (SSL_CTX_use_certificate_chain_file(ctx, settings.cert_file.c_str()) != 1) {
    return fail("cannot load the certificate \"" + settings.cert_file + "\"");
  }
  if (SSL_CTX_use_PrivateKey_file(ctx, settings.key_file.c_str(), SSL_FILETYPE_PEM) != 1) {
    if (ERR_GET_REASON(ERR_peek_last_error()) == X509_R_KEY_VALUES_MISMATCH) {
      return fail("the private key \"" + settings.key_file +
                  "\" does not match the certificate \"" + settings.cert_file + "\"");
    }
    return fail("cannot load the private key \"" + settings.key_file + "\"");
  }
  if (SSL_CTX_check_private_key(ctx) != 1) {
    return fail("the private key \"" + settings.key_file + "\" does not match the certificate \"" +
                settings.cert_file + "\"");
  }
  if (!alpn.empty()) {
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, const_cast<Impl*>(this));
  }
  static constexpr unsigned char kSessionContext[] = "greenhttp";
  SSL_CTX_set_session_id_context(ctx, kSessionContext, sizeof kSessionContext - 1);
  SSL_CTX_set_timeout(ctx, static_cast<long>(settings.session_lifetime.count()));  // NOLINT
  if (settings.session_cache_size > 0) {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, static_cast<long>(settings.session_cache_size));  // NOLINT
  } else {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  }
  SSL_CTX_set_app_data(ctx, const_cast<Impl*>(this));
  if (settings.session_tickets) {
    SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, ticket_callback);
  } else {
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
  }
  *expiry = certificate_expiry(ctx);
  return ctx;
}

std::shared_ptr<TlsServerContext> TlsServerContext::create(const TlsServerSettings& settings,
                                                           std::string* error) {
  std::shared_ptr<TlsServerContext> ctx(new TlsServerContext);
  ctx->settings_ = settings;
  ctx->impl_ = std::make_shared<Impl>();
  Impl& impl = *ctx->impl_;
  impl.settings = settings;
  impl.alpn = alpn_wire(settings.alpn);
  if (!settings.alpn.empty() && impl.alpn.empty()) {
    *error = "no usable ALPN protocol name";
    return nullptr;
  }
  int64_t expiry = 0;
  impl.current = impl.build(error, &expiry);
  if (impl.current == nullptr) return nullptr;
  impl.not_after.store(expiry, std::memory_order_relaxed);
  impl.slots_free = settings.max_handshakes;
  return ctx;
}

TlsServerContext::~TlsServerContext() = default;

bool TlsServerContext::reload(std::string* error) {
  int64_t expiry = 0;
  SSL_CTX* fresh = impl_->build(error, &expiry);
  if (fresh == nullptr) {
    impl_->reload_failures.fetch_add(1, std::memory_order_relaxed);
    return false;
  }
  SSL_CTX* old = nullptr;
  {
    std::lock_guard<std::mutex> g(impl_->current_lock);
    old = impl_->current;
    impl_->current = fresh;
  }
  SSL_CTX_free(old);  // open connections hold their own references
  impl_->not_after.store(expiry, std::memory_order_relaxed);
  impl_->reloads.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void TlsServerContext::rotate_ticket_keys() {
  std::lock_guard<std::mutex> g(impl_->keys_lock);
  impl_->add_key_locked(green::detail::now_ns());
}

TlsServerStats TlsServerContext::stats() const {
  TlsServerStats s;
  const Impl& i = *impl_;
  s.handshakes_full = i.full.load(std::memory_order_relaxed);
  s.handshakes_resumed = i.resumed.load(std::memory_order_relaxed);
  for (int k = 0; k < kTlsHandshakeFailureCount; ++k) {
    s.handshake_failures[k] =
        i.failures[static_cast<std::size_t>(k)].load(std::memory_order_relaxed);
  }
  s.handshakes_waiting = i.waiting.load(std::memory_order_relaxed);
  s.reloads = i.reloads.load(std::memory_order_relaxed);
  s.reload_failures = i.reload_failures.load(std::memory_order_relaxed);
  s.certificate_not_after = i.not_after.load(std::memory_order_relaxed);
  std::lock_guard<std::mutex> g(impl_->in_use_lock);
  for (const Impl::InUse& u : impl_->in_use) {
    s.in_use.push_back({u.version, u.cipher, u.count.load(std::memory_order_relaxed)});
  }
  return s;
}

// ---- The client's context --------------------------------------------------------------------

struct TlsClientContext::Impl {
  TlsClientSettings settings;
  SSL_CTX* ctx = nullptr;
  std::mutex sessions_lock;
  // "name:port" -> its latest session (one reference each), oldest first in `order`.
  std::unordered_map<std::string, SSL_SESSION*> sessions;  // guarded by sessions_lock
  std::deque<std::string> order;                           // guarded by sessions_lock

  ~Impl() {
    for (auto& [key, session] : sessions) SSL_SESSION_free(session);
    if (ctx != nullptr) SSL_CTX_free(ctx);
  }

  void store(const std::string& key, SSL_SESSION* session) {  // takes the reference
    std::lock_guard<std::mutex> g(sessions_lock);
    auto [it, inserted] = sessions.try_emplace(key, session);
    if (!inserted) {
      SSL_SESSION_free(it->second);
      it->second = session;
      return;
    }
    order.push_back(key);
    while (sessions.size() > settings.session_cache_size && !order.empty()) {
      auto old = sessions.find(order.front());
      if (old != sessions.end()) {
        SSL_SESSION_free(old->second);
        sessions.erase(old);
      }
      order.pop_front();
    }
  }
  // The session to offer to `key` (a new reference), or nullptr. It stays in the cache until
  // the server's next ticket replaces it (store()): a TLS 1.3 ticket is best used once (RFC
  // 8446 C.4), but connections opened at once to one server would otherwise all make full
  // handshakes; servers (ours, OpenSSL's, Go's) accept a stateless ticket again.
  SSL_SESSION* take(const std::string& key) {
    std::lock_guard<std::mutex> g(sessions_lock);
    auto it = sessions.find(key);
    if (it == sessions.end()) return nullptr;
    SSL_SESSION* s = it->second;
    SSL_SESSION_up_ref(s);
    return s;
  }
};

namespace {

int session_index() {
  static const int index = SSL_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr);
  return index;
}

int new_client_session(SSL* ssl, SSL_SESSION* session) {
  auto* impl = static_cast<TlsClientContext::Impl*>(SSL_CTX_get_app_data(SSL_get_SSL_CTX(ssl)));
  auto* key = static_cast<const std::string*>(SSL_get_ex_data(ssl, session_index()));
  if (impl == nullptr || key == nullptr || key->empty() || impl->settings.session_cache_size == 0) {
    return 0;  // not kept: OpenSSL frees it
  }
  impl->store(*key, session);
  return 1;
}

}  // namespace

std::shared_ptr<TlsClientContext> TlsClientContext::create(const TlsClientSettings& settings,
                                                           std::string* error) {
  std::shared_ptr<TlsClientContext> c(new TlsClientContext);
  c->settings_ = settings;
  c->impl_ = std::make_shared<Impl>();
  Impl& impl = *c->impl_;
  impl.settings = settings;
  ERR_clear_error();
  impl.ctx = SSL_CTX_new(TLS_client_method());
  if (impl.ctx == nullptr) {
    *error = "cannot create a TLS context: " + openssl_reason(take_error());
    return nullptr;
  }
  SSL_CTX* ctx = impl.ctx;
  SSL_CTX_set_min_proto_version(ctx, proto_version(settings.min_version));
  SSL_CTX_set_options(
      ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_IGNORE_UNEXPECTED_EOF | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
  SSL_CTX_set_read_ahead(ctx, 1);
  if (settings.verify) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    const int ok = settings.ca_file.empty()
                       ? SSL_CTX_set_default_verify_paths(ctx)
                       : SSL_CTX_load_verify_locations(ctx, settings.ca_file.c_str(), nullptr);
    if (ok != 1) {
      *error = "cannot load the CA certificates" +
               (settings.ca_file.empty() ? std::string() : " \"" + settings.ca_file + "\"") + ": " +
               openssl_reason(take_error());
      return nullptr;
    }
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  }
  const std::string alpn = alpn_wire(settings.alpn);
  if (!alpn.empty() &&
      SSL_CTX_set_alpn_protos(ctx, reinterpret_cast<const unsigned char*>(alpn.data()),
                              static_cast<unsigned int>(alpn.size())) != 0) {
    *error = "cannot set ALPN";
    return nullptr;
  }
  SSL_CTX_set_app_data(ctx, &impl);
  if (settings.session_cache_size > 0) {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
    SSL_CTX_sess_set_new_cb(ctx, new_client_session);
  }
  return c;
}

TlsClientContext::~TlsClientContext() = default;

// ---- Sessions --------------------------------------------------------------------------------

namespace {

// The first byte of what the client sends, without consuming it: 0 and *c, or a negative errno
// (-ENODATA: end of stream before any byte).
int peek_first_byte(TcpStream& s, unsigned char* c) {
  for (;;) {
    const int fd = s.fd();
    if (fd < 0) return -ECANCELED;
    const ssize_t r = ::recv(fd, c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r == 1) return 0;
    if (r == 0) return -ENODATA;
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -errno;
    const int w = s.wait_readable();
    if (w < 0) return w;
  }
}

// nginx answers an HTTP request on an HTTPS port with its 400 page ("The plain HTTP request was
// sent to HTTPS port"); so do we, in plain text, then close without a reset: the request's bytes
// are read and dropped (for at most a second and 64 KiB) after the write side is shut.
void answer_plain_http(TcpStream& s, Deadline deadline) {
  static constexpr std::string_view kBody = "The plain HTTP request was sent to HTTPS port\n";
  std::string response =
      "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
      "Connection: close\r\nContent-Length: " +
      std::to_string(kBody.size()) + "\r\n\r\n";
  response += kBody;
  if (s.write(response.data(), response.size()) < 0) return;
  s.shutdown(SHUT_WR);
  s.set_read_deadline(std::min(deadline, deadline_after(std::chrono::seconds(1))));
  char buf[4096];
  for (std::size_t dropped = 0; dropped < 64 * 1024;) {
    const ssize_t n = s.read(buf, sizeof buf);
    if (n <= 0) break;
    dropped += static_cast<std::size_t>(n);
  }
}

}  // namespace

TlsSession::~TlsSession() {
  if (in_use_slot_ != nullptr) {
    static_cast<std::atomic<uint64_t>*>(in_use_slot_)->fetch_sub(1, std::memory_order_relaxed);
  }
  if (ssl_ != nullptr) {
    // Freed without a close_notify sent (the peer left first, a write failed, or the owner
    // just dropped it), OpenSSL takes the connection for a truncated one and marks its session
    // not resumable: for a client that is the session of the last ticket, the one in the cache,
    // and every later connection would make a full handshake. A connection that failed with a
    // fatal alert has had its session removed already; any other may be resumed (nginx sets
    // its shutdown state the same way before SSL_free).
    if (SSL_is_init_finished(ssl_) != 0) {
      SSL_set_shutdown(ssl_, SSL_get_shutdown(ssl_) | SSL_SENT_SHUTDOWN);
    }
    SSL_free(ssl_);
  }
}

int TlsSession::handshake(TcpStream& s, Deadline deadline, TlsHandshakeFailure* why,
                          void* slots_owner) {
  auto* slots = static_cast<TlsServerContext::Impl*>(slots_owner);
  Io io;
  io.stream = &s;
  io.socket_drained = &socket_drained_;
  io.park = false;  // WANT_READ comes back here: the slot is given up before waiting
  bool holding = false;
  int result = 0;
  for (;;) {
    if (slots != nullptr && !holding) {
      if (!slots->acquire_slot(to_ns(deadline), s)) {
        const bool closed = !s.is_open();
        *why = closed ? TlsHandshakeFailure::kCanceled : TlsHandshakeFailure::kTimeout;
        last_error_ = closed ? "closed while waiting for a handshake slot"
                             : "timed out waiting for a handshake slot";
        result = closed ? -ECANCELED : -ETIMEDOUT;
        break;
      }
      holding = true;
    }
    int r = 0;
    {
      IoScope scope(ssl_, &io);
      r = SSL_do_handshake(ssl_);
    }
    if (r == 1) break;
    const int e = SSL_get_error(ssl_, r);
    if (e == SSL_ERROR_WANT_READ && io.err == 0 && !io.eof) {
      if (holding) {
        slots->release_slot();
        holding = false;
      }
      const int w = s.wait_readable();
      if (w == 0) continue;
      io.err = -w;
    }
    unsigned long code = take_error();  // NOLINT(google-runtime-int)
    int err = e;
    if (code == 0 && io.queued != 0) {  // queued on the thread the call left
      code = io.queued;
      if (err == SSL_ERROR_SYSCALL && io.err == 0 && !io.eof) err = SSL_ERROR_SSL;
    }
    *why = classify(io, err, code);
    if (io.err != 0) {
      last_error_ = errno_text(io.err);
      result = -io.err;
    } else if (io.eof) {
      last_error_ = "the peer closed the connection during the handshake";
      result = -ECONNRESET;
    } else {
      last_error_ = openssl_reason(code);
      const long verify = SSL_get_verify_result(ssl_);  // NOLINT(google-runtime-int)
      if (*why == TlsHandshakeFailure::kCertificate && verify != X509_V_OK) {
        last_error_ += ": ";
        last_error_ += X509_verify_cert_error_string(verify);
      }
      result = -EPROTO;
    }
    break;
  }
  if (holding) slots->release_slot();
  return result;
}

int TlsSession::accept(TcpStream& s, const TlsServerContext& ctx, Deadline deadline,
                       std::unique_ptr<TlsSession>* out, TlsHandshakeFailure* why) {
  TlsHandshakeFailure ignored = TlsHandshakeFailure::kNone;
  if (why == nullptr) why = &ignored;
  *why = TlsHandshakeFailure::kNone;
  TlsServerContext::Impl& impl = *ctx.impl_;
  s.set_read_deadline(deadline);
  s.set_write_deadline(deadline);

  unsigned char first = 0;
  int rc = peek_first_byte(s, &first);
  if (rc != 0) {
    *why = rc == -ETIMEDOUT    ? TlsHandshakeFailure::kTimeout
           : rc == -ENODATA    ? TlsHandshakeFailure::kEof
           : rc == -ECANCELED  ? TlsHandshakeFailure::kCanceled
           : rc == -ECONNRESET ? TlsHandshakeFailure::kReset
                               : TlsHandshakeFailure::kOther;
    impl.count_failure(*why);
    return rc == -ENODATA ? -ECONNRESET : rc;
  }
  if (first != 0x16) {  // not a TLS handshake record
    if (first >= 'A' && first <= 'Z') {
      *why = TlsHandshakeFailure::kPlainHttp;
      answer_plain_http(s, deadline);
    } else {
      *why = TlsHandshakeFailure::kNotTls;
    }
    impl.count_failure(*why);
    return -EPROTO;
  }

  std::unique_ptr<TlsSession> session(new TlsSession);
  session->owner_ = ctx.impl_;
  SSL_CTX* generation = impl.acquire_ctx();
  session->ssl_ = SSL_new(generation);
  SSL_CTX_free(generation);  // the SSL holds its own reference
  if (session->ssl_ == nullptr) {
    *why = TlsHandshakeFailure::kOther;
    impl.count_failure(*why);
    return -ENOMEM;
  }
  BIO* bio = BIO_new(bio_method());
  SSL_set_bio(session->ssl_, bio, bio);
  SSL_set_accept_state(session->ssl_);
  rc = session->handshake(s, deadline, why, impl.settings.max_handshakes > 0 ? &impl : nullptr);
  if (rc != 0) {
    impl.count_failure(*why);
    *out = std::move(session);  // for its last_error()
    return rc;
  }
  (SSL_session_reused(session->ssl_) != 0 ? impl.resumed : impl.full)
      .fetch_add(1, std::memory_order_relaxed);
  std::atomic<uint64_t>* counter =
      impl.in_use_counter(to_string(session->version()), session->cipher());
  counter->fetch_add(1, std::memory_order_relaxed);
  session->in_use_slot_ = counter;
  *out = std::move(session);
  return 0;
}

int TlsSession::connect(TcpStream& s, const TlsClientContext& ctx, std::string_view server_name,
                        uint16_t port, Deadline deadline, std::unique_ptr<TlsSession>* out,
                        TlsHandshakeFailure* why) {
  TlsHandshakeFailure ignored = TlsHandshakeFailure::kNone;
  if (why == nullptr) why = &ignored;
  *why = TlsHandshakeFailure::kNone;
  TlsClientContext::Impl& impl = *ctx.impl_;
  s.set_read_deadline(deadline);
  s.set_write_deadline(deadline);
  std::unique_ptr<TlsSession> session(new TlsSession);
  session->owner_ = ctx.impl_;
  ERR_clear_error();
  session->ssl_ = SSL_new(impl.ctx);
  if (session->ssl_ == nullptr) {
    *why = TlsHandshakeFailure::kOther;
    return -ENOMEM;
  }
  SSL* ssl = session->ssl_;
  BIO* bio = BIO_new(bio_method());
  SSL_set_bio(ssl, bio, bio);
  std::string name(server_name);
  if (name.size() > 2 && name.front() == '[' && name.back() == ']') {
    name = name.substr(1, name.size() - 2);
  }
  const bool ip = is_ip_literal(name);
  // SNI carries host names only (RFC 6066 section 3).
  if (!ip && !name.empty()) SSL_set_tlsext_host_name(ssl, name.c_str());
  if (impl.settings.verify && !name.empty()) {
    const int ok = ip ? X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name.c_str())
                      : SSL_set1_host(ssl, name.c_str());
    if (ok != 1) {
      *why = TlsHandshakeFailure::kOther;
      session->last_error_ = "cannot verify against \"" + name + "\"";
      return -EINVAL;
    }
  }
  session->peer_key_ = name + ":" + std::to_string(port);
  SSL_set_ex_data(ssl, session_index(), &session->peer_key_);
  if (impl.settings.session_cache_size > 0) {
    if (SSL_SESSION* cached = impl.take(session->peer_key_)) {
      SSL_set_session(ssl, cached);
      SSL_SESSION_free(cached);
    }
  }
  SSL_set_connect_state(ssl);
  const int rc = session->handshake(s, deadline, why, nullptr);
  if (rc != 0) {
    *out = std::move(session);  // for its last_error()
    return rc;
  }
  *out = std::move(session);
  return 0;
}

ssize_t TlsSession::io_failure(int ssl_error, const Io& io) {
  unsigned long code = take_error();  // NOLINT(google-runtime-int)
  if (code == 0 && io.queued != 0) {  // queued on the thread the call left (see Io::queued)
    code = io.queued;
    if (ssl_error == SSL_ERROR_SYSCALL && io.err == 0 && !io.eof) ssl_error = SSL_ERROR_SSL;
  }
  if (io.err != 0) {
    last_error_ = errno_text(io.err);
    return -io.err;
  }
  if (ssl_error == SSL_ERROR_ZERO_RETURN || io.eof) {
    peer_closed_ = true;
    return 0;
  }
  if (ssl_error == SSL_ERROR_WANT_READ || ssl_error == SSL_ERROR_WANT_WRITE) return -EAGAIN;
  last_error_ = openssl_reason(code);
  return -EPROTO;
}

ssize_t TlsSession::do_read(TcpStream& s, void* buf, std::size_t n, bool park) {
  if (n == 0) return 0;
  if (peer_closed_) return 0;
  Io io;
  io.stream = &s;
  io.socket_drained = &socket_drained_;
  io.park = park;
  std::size_t got = 0;
  int r = 0;
  {
    IoScope scope(ssl_, &io);
    r = SSL_read_ex(ssl_, buf, n, &got);
  }
  if (r == 1) return static_cast<ssize_t>(got);
  return io_failure(SSL_get_error(ssl_, r), io);
}

ssize_t TlsSession::read(TcpStream& s, void* buf, std::size_t n) {
  return do_read(s, buf, n, true);
}

ssize_t TlsSession::try_read(TcpStream& s, void* buf, std::size_t n) {
  return do_read(s, buf, n, false);
}

ssize_t TlsSession::write(TcpStream& s, const void* buf, std::size_t n) {
  if (n == 0) return 0;
  Io io;
  io.stream = &s;
  io.socket_drained = &socket_drained_;
  std::size_t written = 0;
  int r = 0;
  {
    IoScope scope(ssl_, &io);
    r = SSL_write_ex(ssl_, buf, n, &written);
  }
  if (r == 1) return static_cast<ssize_t>(n);
  const ssize_t e = io_failure(SSL_get_error(ssl_, r), io);
  return e < 0 ? e : -EPIPE;  // "closed" is not a result a write can have
}

ssize_t TlsSession::writev(TcpStream& s, const iovec* iov, int iovcnt) {
  std::size_t total = 0;
  int used = 0;
  for (int i = 0; i < iovcnt; ++i) {
    total += iov[i].iov_len;
    if (iov[i].iov_len > 0) ++used;
  }
  if (used <= 1) {
    for (int i = 0; i < iovcnt; ++i) {
      if (iov[i].iov_len > 0) return write(s, iov[i].iov_base, iov[i].iov_len);
    }
    return 0;
  }
  // Pieces under a record's worth are copied together (one record, one write: a response's
  // head and small body); a piece of a record or more goes to SSL_write as it is.
  static constexpr std::size_t kRecord = 16 * 1024;
  std::unique_ptr<char[]> stage;
  std::size_t staged = 0;
  auto flush = [&]() -> ssize_t {
    if (staged == 0) return 0;
    const ssize_t w = write(s, stage.get(), staged);
    staged = 0;
    return w < 0 ? w : 0;
  };
  for (int i = 0; i < iovcnt; ++i) {
    const char* p = static_cast<const char*>(iov[i].iov_base);
    std::size_t len = iov[i].iov_len;
    if (len >= kRecord) {
      if (const ssize_t w = flush(); w < 0) return w;
      if (const ssize_t w = write(s, p, len); w < 0) return w;
      continue;
    }
    while (len > 0) {
      if (!stage) stage.reset(new char[std::min(total, kRecord)]);
      const std::size_t room = std::min(total, kRecord) - staged;
      const std::size_t take = std::min(room, len);
      std::memcpy(stage.get() + staged, p, take);
      staged += take;
      p += take;
      len -= take;
      if (staged == std::min(total, kRecord)) {
        if (const ssize_t w = flush(); w < 0) return w;
      }
    }
  }
  if (const ssize_t w = flush(); w < 0) return w;
  return static_cast<ssize_t>(total);
}

bool TlsSession::has_buffered() const { return SSL_has_pending(ssl_) != 0; }

int TlsSession::wait_readable(TcpStream& s) {
  if (SSL_pending(ssl_) > 0 || peer_closed_) return 0;
  // The last socket read left the socket empty and nothing is read ahead: park at once (the
  // keep-alive path: no read(2) that would only say EAGAIN). Else probe first (below).
  if (socket_drained_ && SSL_has_pending(ssl_) == 0) return s.wait_readable();
  // Probe before parking: a non-parking peek decrypts a whole record already read ahead, or
  // reads the socket until it says EAGAIN. Only then may the stream park: the netpoller's
  // epoll is edge-triggered, so readiness it reported before (and that a short try_read, which
  // returns one record at most, left unconsumed) is not reported again.
  Io io;
  io.stream = &s;
  io.socket_drained = &socket_drained_;
  io.park = false;
  char c = 0;
  std::size_t got = 0;
  int r = 0;
  {
    IoScope scope(ssl_, &io);
    r = SSL_peek_ex(ssl_, &c, 1, &got);
  }
  if (r == 1) return 0;
  const int e = SSL_get_error(ssl_, r);
  ERR_clear_error();
  if (e != SSL_ERROR_WANT_READ || io.err != 0 || io.eof) return 0;  // the read will say
  return s.wait_readable();
}

int TlsSession::close_notify(TcpStream& s) {
  if (ssl_ == nullptr || SSL_is_init_finished(ssl_) == 0) return 0;
  Io io;
  io.stream = &s;
  io.socket_drained = &socket_drained_;
  io.park = false;  // never wait for the peer's close_notify
  int r = 0;
  {
    IoScope scope(ssl_, &io);
    r = SSL_shutdown(ssl_);
  }
  ERR_clear_error();
  if (r < 0 && io.err != 0) return -io.err;
  return 0;
}

TlsVersion TlsSession::version() const {
  return SSL_version(ssl_) == TLS1_3_VERSION ? TlsVersion::kTls13 : TlsVersion::kTls12;
}

std::string_view TlsSession::cipher() const {
  const SSL_CIPHER* c = SSL_get_current_cipher(ssl_);
  return c != nullptr ? SSL_CIPHER_get_name(c) : "";
}

std::string_view TlsSession::alpn() const {
  const unsigned char* p = nullptr;
  unsigned int len = 0;
  SSL_get0_alpn_selected(ssl_, &p, &len);
  return p != nullptr ? std::string_view(reinterpret_cast<const char*>(p), len) : "";
}

std::string_view TlsSession::server_name() const {
  const char* name = SSL_get_servername(ssl_, TLSEXT_NAMETYPE_host_name);
  return name != nullptr ? name : "";
}

bool TlsSession::resumed() const { return SSL_session_reused(ssl_) != 0; }

// ---- TlsStream -------------------------------------------------------------------------------

int TlsStream::accept(TcpStream tcp, const TlsServerContext& ctx, Deadline deadline, TlsStream* out,
                      TlsHandshakeFailure* why) {
  out->tcp_ = std::move(tcp);
  out->session_.reset();
  return TlsSession::accept(out->tcp_, ctx, deadline, &out->session_, why);
}

int TlsStream::connect(const Address& to, const TlsClientContext& ctx, std::string_view server_name,
                       TlsStream* out, Deadline deadline, TlsHandshakeFailure* why) {
  out->session_.reset();
  const int rc = TcpStream::connect(to, &out->tcp_, deadline);
  if (rc != 0) {
    if (why != nullptr) {
      *why = rc == -ETIMEDOUT ? TlsHandshakeFailure::kTimeout : TlsHandshakeFailure::kOther;
    }
    return rc;
  }
  const int hs =
      TlsSession::connect(out->tcp_, ctx, server_name, to.port(), deadline, &out->session_, why);
  if (hs != 0) out->tcp_.close();
  return hs;
}

void TlsStream::close() {
  if (session_ && tcp_.is_open()) session_->close_notify(tcp_);
  tcp_.close();
}

}  // namespace green::net
