// The client's response parser over one connection. See client_conn.h.
#include "server/client_conn.h"

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "green/context.h"
#include "green/detail/park.h"
#include "green/green.h"
#include "server/http_text.h"

namespace green::http::detail {

namespace {

ClientConn* self(llhttp_t* p) { return static_cast<ClientConn*>(p->data); }

net::Deadline deadline_in(std::chrono::nanoseconds timeout, int64_t call_deadline_ns) {
  int64_t d = green::detail::kNoDeadlineNs;
  if (timeout.count() > 0) d = green::detail::now_ns() + timeout.count();
  d = std::min(d, call_deadline_ns);
  return net::Deadline(std::chrono::nanoseconds(d));
}

}  // namespace

std::string errno_text(int e) {
  char buf[128];
  return strerror_r(e, buf, sizeof buf);  // GNU: returns the message (maybe not in buf)
}

const llhttp_settings_t ClientConn::kSettings = [] {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_message_begin = &ClientConn::on_message_begin;
  s.on_status = &ClientConn::on_status;
  s.on_header_field = &ClientConn::on_header_field;
  s.on_header_value = &ClientConn::on_header_value;
  s.on_header_field_complete = &ClientConn::on_header_field_complete;
  s.on_headers_complete = &ClientConn::on_headers_complete;
  s.on_body = &ClientConn::on_body;
  s.on_message_complete = &ClientConn::on_message_complete;
  return s;
}();

ClientConn::ClientConn(net::TcpStream s, std::string pool_key, const ClientOptions& opts)
    : stream(std::move(s)),
      key(std::move(pool_key)),
      options(opts),
      call_deadline_ns(green::detail::kNoDeadlineNs),
      in(new char[kReadBuffer]) {
  llhttp_init(&parser, HTTP_RESPONSE, &kSettings);
  parser.data = this;
}

// Go's Transport closes a TLS connection with a close_notify too, whatever the reason. Here it is
// also what keeps resumption working: OpenSSL marks the session of a client connection freed
// without one (its SSL_SENT_SHUTDOWN unset) as not resumable (ssl_clear_bad_session), and for
// TLS 1.3 that is the session of the last ticket, the very one the context's cache offers next,
// so every connection closed without it would cost the next one a full handshake. The write
// never waits: the deadline is now, so a socket with no room left (a peer that stopped reading)
// gets nothing, but the session is marked all the same (OpenSSL sets the flag before it sends).
ClientConn::~ClientConn() {
  if (tls != nullptr && stream.is_open()) {
    stream.set_write_deadline(net::Deadline(std::chrono::nanoseconds(green::detail::now_ns())));
    (void)tls->close_notify(stream);
  }
}

void ClientConn::begin_response(bool is_head) {
  llhttp_init(&parser, HTTP_RESPONSE, &kSettings);
  parser.data = this;
  head_request = is_head;
  head.clear();
  spans.clear();
  headers.clear();
  reason_offset = reason_length = 0;
  head_bytes = 0;
  in_value = false;
  head_done = message_done = keep_alive = unsolicited = too_large = paused_at_head = false;
  body_spans.clear();
  span_index = 0;
  body_bytes = 0;
  trailer_bytes = 0;
  got_bytes = false;
  error = ClientError::kNone;
  message.clear();
  // Bytes left from an earlier response were unsolicited: such a connection is never reused.
  ppos = pend = 0;
}

void ClientConn::fail(ClientError e, std::string why) {
  if (error != ClientError::kNone) return;
  error = e;
  message = std::move(why);
}

void ClientConn::arm_read_deadline() {
  stream.set_read_deadline(deadline_in(options.read_timeout, call_deadline_ns));
}

void ClientConn::arm_write_deadline() {
  stream.set_write_deadline(deadline_in(options.write_timeout, call_deadline_ns));
}

ClientError ClientConn::socket_error(long rc, bool reading, std::string* why) const {
  // The context decides first: its cancellation wakes the parked operation with -ECANCELED,
  // and its deadline may coincide with a socket timeout.
  if (ctx) {
    switch (ctx->err()) {
      case ContextError::kCanceled:
        *why = "context canceled";
        return ClientError::kCanceled;
      case ContextError::kDeadlineExceeded:
        *why = "context deadline exceeded";
        return ClientError::kDeadlineExceeded;
      case ContextError::kNone:
        break;
    }
  }
  if (rc == -ETIMEDOUT) {
    *why = reading ? "timed out reading the response from " + key
                   : "timed out writing the request to " + key;
    return ClientError::kTimeout;
  }
  if (rc == 0) {
    *why = (head_done ? "connection closed before the end of the body from "
                      : "connection closed before a response from ") +
           key;
    return ClientError::kRead;
  }
  *why = std::string(reading ? "read from " : "write to ") + key + ": ";
  // A TLS record that fails (bad MAC, an alert) is -EPROTO: OpenSSL's reason says more.
  if (tls && rc == -EPROTO && !tls->last_error().empty()) {
    why->append(tls->last_error());
  } else {
    why->append(errno_text(static_cast<int>(-rc)));
  }
  return reading ? ClientError::kRead : ClientError::kWrite;
}

bool ClientConn::execute() {
  // After the pause at the end of the head, llhttp may complete the message without another
  // byte (no body, or Content-Length: 0): it runs its non-consuming states on an empty input.
  if (ppos >= pend && !paused_at_head) return true;
  paused_at_head = false;
  const char* base = in.get();
  const llhttp_errno_t err = llhttp_execute(&parser, base + ppos, pend - ppos);
  std::size_t consumed = pend - ppos;
  if (err == HPE_PAUSED) {
    consumed = static_cast<std::size_t>(llhttp_get_error_pos(&parser) - (base + ppos));
    llhttp_resume(&parser);
  } else if (err != HPE_OK) {
    if (too_large) {
      if (!head_done) {
        fail(ClientError::kHeadersTooLarge, "response head from " + key + " over the limit");
      } else {
        fail(ClientError::kBodyTooLarge, "response body from " + key + " over the limit");
      }
    } else if (err == HPE_PAUSED_UPGRADE) {
      fail(ClientError::kProtocol, "unexpected 101 Switching Protocols from " + key);
    } else {
      const char* reason = llhttp_get_error_reason(&parser);
      fail(ClientError::kProtocol, "malformed response from " + key + ": " +
                                       (reason != nullptr ? reason : llhttp_errno_name(err)));
    }
    return false;
  }
  if (!head_done) head_bytes += consumed;
  ppos += consumed;
  if (!head_done && head_bytes > options.max_response_header_bytes) {
    fail(ClientError::kHeadersTooLarge, "response head from " + key + " over the limit");
    return false;
  }
  if (message_done && ppos < pend) unsolicited = true;
  return true;
}

bool ClientConn::fill() {
  ppos = pend = 0;
  body_spans.clear();
  span_index = 0;
  arm_read_deadline();
  const ssize_t r = read(in.get(), kReadBuffer);
  if (r > 0) {
    pend = static_cast<std::size_t>(r);
    got_bytes = true;
    return true;
  }
  if (r == 0) {
    // End of stream: the end of a body delimited by the close (llhttp_finish completes it:
    // HPE_PAUSED from our on_message_complete), or a response cut short (kRead: llhttp calls
    // a body shorter than its length an invalid EOF state; it is the connection that ended).
    const llhttp_errno_t err = llhttp_finish(&parser);
    if ((err == HPE_OK || err == HPE_PAUSED) && message_done) return true;
    std::string why;
    const ClientError e = socket_error(0, true, &why);  // before `why` is read: order matters
    fail(e, why);
    return false;
  }
  std::string why;
  const ClientError e = socket_error(r, true, &why);
  fail(e, why);
  return false;
}

ClientError ClientConn::read_head() {
  while (!head_done) {
    if (error != ClientError::kNone) return error;
    if (ppos < pend) {
      if (!execute()) return error;
      continue;
    }
    if (!fill()) return error;
    if (message_done && !head_done) {
      fail(ClientError::kRead, "connection closed before a response from " + key);
      return error;
    }
  }
  return error;
}

void ClientConn::parse_buffered() {
  while (error == ClientError::kNone && !message_done && span_index >= body_spans.size() &&
         (ppos < pend || paused_at_head)) {
    body_spans.clear();
    span_index = 0;
    if (!execute()) return;
  }
}

long ClientConn::read_body(char* buf, std::size_t n) {
  if (error != ClientError::kNone) return -1;
  if (n == 0) return 0;
  for (;;) {
    if (span_index < body_spans.size()) {
      std::size_t copied = 0;
      while (copied < n && span_index < body_spans.size()) {
        std::string_view& s = body_spans[span_index];
        const std::size_t k = std::min(n - copied, s.size());
        std::memcpy(buf + copied, s.data(), k);
        copied += k;
        s.remove_prefix(k);
        if (s.empty()) ++span_index;
      }
      // Parse ahead what is already here, so that read_ready() tells the truth.
      parse_buffered();
      return static_cast<long>(copied);
    }
    if (message_done) return 0;
    if (ppos < pend || paused_at_head) {
      body_spans.clear();
      span_index = 0;
      if (!execute()) return -1;
      continue;
    }
    if (!fill()) return -1;
  }
}

bool ClientConn::reusable() const {
  return error == ClientError::kNone && message_done && keep_alive && !unsolicited &&
         !close_after && ppos >= pend && stream.is_open();
}

// ---- llhttp callbacks ----

int ClientConn::on_message_begin(llhttp_t* p) {
  ClientConn* c = self(p);
  // A 1xx response before this one left its head: start over.
  c->head.clear();
  c->spans.clear();
  c->reason_offset = c->reason_length = 0;
  c->in_value = false;
  return 0;
}

int ClientConn::on_status(llhttp_t* p, const char* at, std::size_t n) {
  ClientConn* c = self(p);
  if (c->reason_length == 0) c->reason_offset = static_cast<uint32_t>(c->head.size());
  c->head.append(at, n);
  c->reason_length += static_cast<uint32_t>(n);
  if (c->head.size() > c->options.max_response_header_bytes) {
    c->too_large = true;
    return HPE_USER;
  }
  return 0;
}

// Trailers come through the same callbacks once the head is done. They are not kept: nothing
// asks for them, and appending them to `head` would move the strings headers() points into.
int ClientConn::skip_trailer(std::size_t n) {
  trailer_bytes += n;
  if (trailer_bytes > options.max_response_header_bytes) {
    fail(ClientError::kHeadersTooLarge, "response trailers from " + key + " over the limit");
    return HPE_USER;
  }
  return 0;
}

int ClientConn::on_header_field(llhttp_t* p, const char* at, std::size_t n) {
  ClientConn* c = self(p);
  if (c->head_done) return c->skip_trailer(n);
  if (c->spans.empty() || c->in_value) {
    if (c->spans.size() >= c->options.max_response_headers) {
      c->too_large = true;
      return HPE_USER;
    }
    const auto off = static_cast<uint32_t>(c->head.size());
    c->spans.push_back({off, 0, off, 0});
    c->in_value = false;
  }
  c->head.append(at, n);
  c->spans.back().name_length += static_cast<uint32_t>(n);
  if (c->head.size() > c->options.max_response_header_bytes) {
    c->too_large = true;
    return HPE_USER;
  }
  return 0;
}

int ClientConn::on_header_value(llhttp_t* p, const char* at, std::size_t n) {
  ClientConn* c = self(p);
  if (c->head_done) return c->skip_trailer(n);
  if (c->spans.empty()) return HPE_USER;  // llhttp never reports a value before a name
  HeaderSpan& h = c->spans.back();
  if (!c->in_value) {
    h.value_offset = static_cast<uint32_t>(c->head.size());
    c->in_value = true;
  }
  c->head.append(at, n);
  h.value_length += static_cast<uint32_t>(n);
  if (c->head.size() > c->options.max_response_header_bytes) {
    c->too_large = true;
    return HPE_USER;
  }
  return 0;
}

// llhttp 8 takes a line with no name at all (": value"); the server refuses one in a request
// (request_parser.cpp), and RFC 9110 5.1 wants a token.
int ClientConn::on_header_field_complete(llhttp_t* p) {
  ClientConn* c = self(p);
  if (c->head_done || c->spans.empty() || c->spans.back().name_length != 0) return 0;
  c->fail(ClientError::kProtocol, "empty header name in the response from " + c->key);
  return -1;
}

int ClientConn::on_headers_complete(llhttp_t* p) {
  ClientConn* c = self(p);
  const int status = p->status_code;
  if (status < 100 || status > 599) {
    // llhttp 8 takes one to three digits, or none at all ("HTTP/1.1 \r\n" is status 0):
    // RFC 9112 4 wants three digits, RFC 9110 15 a class from 1 to 5 (Go checks the same).
    c->fail(ClientError::kProtocol,
            "malformed status " + std::to_string(status) + " in the response from " + c->key);
    return -1;
  }
  if (status >= 100 && status < 200 && status != 101) {
    // An interim response (100 Continue, 103 Early Hints, ...): no body (RFC 9110 15.2), and
    // the real response follows. Go skips them the same way.
    return 1;
  }
  if (status == 101) {
    // We never ask for an upgrade. Refused here, before the head is handed out: llhttp would
    // report the upgrade (HPE_PAUSED_UPGRADE) only after our pause at the end of the head, and
    // the caller would have taken the 101 for a response with a body.
    c->fail(ClientError::kProtocol, "unexpected 101 Switching Protocols from " + c->key);
    return -1;
  }
  c->headers.clear();
  c->headers.reserve(c->spans.size());
  for (const HeaderSpan& h : c->spans) {
    c->headers.push_back({std::string_view(c->head).substr(h.name_offset, h.name_length),
                          trim(std::string_view(c->head).substr(h.value_offset, h.value_length))});
  }
  c->head_done = true;
  c->paused_at_head = true;
  if (c->head_request || status == 204 || status == 304) {
    // HEAD: headers of a GET, no body (RFC 9110 9.3.2); 204 and 304 have none either, whatever
    // Content-Length or Transfer-Encoding says (RFC 9110 15.3.5, 15.4.5: a 304's length is the
    // representation's; Go's bodyAllowedForStatus): llhttp alone would read a body for them.
    // Pause at the end of the message so a byte after it is seen as unsolicited.
    c->paused_at_head = false;
    return 1;
  }
  return HPE_PAUSED;
}

int ClientConn::on_body(llhttp_t* p, const char* at, std::size_t n) {
  ClientConn* c = self(p);
  c->body_bytes += n;
  const uint64_t limit = c->options.max_response_body_bytes;
  if (limit != 0 && c->body_bytes > limit) {
    c->too_large = true;
    return HPE_USER;
  }
  c->body_spans.emplace_back(at, n);
  return 0;
}

int ClientConn::on_message_complete(llhttp_t* p) {
  ClientConn* c = self(p);
  const int status = p->status_code;
  if (status >= 100 && status < 200 && status != 101) return 0;  // interim: keep going
  c->message_done = true;
  // "close" wins over "keep-alive" whatever the version (RFC 9112 9.3, Go's shouldClose);
  // llhttp_should_keep_alive lets an HTTP/1.0 response that says both be reused.
  c->keep_alive = llhttp_should_keep_alive(p) != 0 && (p->flags & F_CONNECTION_CLOSE) == 0;
  return HPE_PAUSED;
}

}  // namespace green::http::detail
