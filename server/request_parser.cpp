// The llhttp glue. llhttp does the byte-level work (tokens, framing, chunked decoding, the
// Content-Length/Transfer-Encoding rules); this file keeps the spans it reports, enforces our
// limits as bytes arrive, adds the checks llhttp leaves to the application (Host, whitespace
// before a colon, obs-fold, unsupported codings, Expect) and turns every failure into one
// precise status.
//
// Pausing: on_message_complete returns HPE_PAUSED, so one llhttp_execute() call ends at most
// one request and llhttp_get_error_pos() tells where the next one starts. Pipelined requests
// are handed out one by one from the same buffer. A chunked body also pauses at each change of
// phase (head → chunk-size line → chunk data → … → trailers), so next() knows which bytes
// each execute consumed and can bound chunk-size lines and check trailers, which llhttp's
// callbacks alone cannot (they report no positions there). Bodies that are not chunked, and
// requests without a body (the hot path), never pause but at their end.
//
// llhttp is built in strict mode (CMakeLists.txt): every CR must be followed by LF. Before a
// request line we skip empty lines ourselves, since llhttp's start state skips a lone CR too.
#include "server/request_parser.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstring>

#include "server/http_text.h"

namespace green::http {

namespace {

RequestParser* self(llhttp_t* p) { return static_cast<RequestParser*>(p->data); }

// Go's httpguts.ValidHostHeader: only bytes that can occur in RFC 3986's host and port, so no
// userinfo ('@'), path ('/', '?', '#'), whitespace or control bytes. An empty value is valid, as
// in Go: RFC 9112 3.2 has a client send an empty Host when the target URI has no authority
// (nginx refuses it; we follow Go).
// A table, not strchr: every request's Host goes through it.
constexpr std::array<bool, 256> kHostByte = [] {
  std::array<bool, 256> t{};
  for (int c = '0'; c <= '9'; ++c) t[c] = true;
  for (int c = 'a'; c <= 'z'; ++c) t[c] = true;
  for (int c = 'A'; c <= 'Z'; ++c) t[c] = true;
  for (const char c : std::string_view("!$%&'()*+,-.:;=[]_~"))
    t[static_cast<unsigned char>(c)] = true;
  return t;
}();

bool valid_host(std::string_view host) {
  for (const char c : host) {
    if (!kHostByte[static_cast<unsigned char>(c)]) return false;
  }
  return true;
}
// The one 503 the parser gives (the connection adds Retry-After to it).
constexpr const char* kOverBodyBudget = "request body buffers are full, retry later";

int hex_value(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

Method method_from_llhttp(uint8_t m) {
  switch (m) {
    case HTTP_GET:
      return Method::kGet;
    case HTTP_HEAD:
      return Method::kHead;
    case HTTP_POST:
      return Method::kPost;
    case HTTP_PUT:
      return Method::kPut;
    case HTTP_DELETE:
      return Method::kDelete;
    case HTTP_OPTIONS:
      return Method::kOptions;
    case HTTP_PATCH:
      return Method::kPatch;
    case HTTP_TRACE:
      return Method::kTrace;
    case HTTP_CONNECT:
      return Method::kConnect;
    default:
      return Method::kOther;
  }
}

}  // namespace

ParserStorage::ParserStorage(const Limits& limits)
    : input(limits.input_buffer_bytes()),
      header_names(limits.max_headers),
      header_values(limits.max_headers),
      headers(limits.max_headers) {}

// Defined through a function: llhttp_settings_t has many members and designated initializers
// would have to name them in declaration order.
const llhttp_settings_t RequestParser::kSettings = [] {
  llhttp_settings_t s;
  llhttp_settings_init(&s);
  s.on_message_begin = &RequestParser::on_message_begin;
  s.on_url = &RequestParser::on_url;
  s.on_header_field = &RequestParser::on_header_field;
  s.on_header_value = &RequestParser::on_header_value;
  s.on_header_field_complete = &RequestParser::on_header_field_complete;
  s.on_header_value_complete = &RequestParser::on_header_value_complete;
  s.on_headers_complete = &RequestParser::on_headers_complete;
  s.on_body = &RequestParser::on_body;
  s.on_chunk_header = &RequestParser::on_chunk_header;
  s.on_chunk_complete = &RequestParser::on_chunk_complete;
  s.on_message_complete = &RequestParser::on_message_complete;
  return s;
}();

RequestParser::RequestParser(const Limits& limits, BodyBudget* budget)
    : limits_(limits), budget_(budget), unbudgeted_body_bytes_(limits.input_buffer_bytes()) {
  llhttp_init(&llhttp_, HTTP_REQUEST, &kSettings);
  llhttp_.data = this;
}

RequestParser::~RequestParser() { release_body_budget(); }

void RequestParser::attach(ParserStorage* storage) {
  storage_ = storage;
  msg_start_ = head_end_ = parsed_ = end_ = 0;
  storage_->body.clear();
}

void RequestParser::detach() {
  release_body_budget();
  storage_ = nullptr;
  msg_start_ = head_end_ = parsed_ = end_ = 0;
}

std::span<char> RequestParser::spare() {
  if (error_status_ != 0 || storage_ == nullptr) return {};
  const std::size_t cap = storage_->input.size();
  if (!in_message_ && parsed_ == end_) {
    msg_start_ = head_end_ = parsed_ = end_ = 0;  // nothing to keep: start over, no copy
  } else if (streaming_ && delivered_ && parsed_ == end_) {
    parsed_ = end_ = head_end_;  // the body read so far was handed out: keep only the head
  } else if (cap - end_ < cap / 8) {
    compact();
  }
  if (end_ == cap) {
    // Cannot happen while the limits hold (the buffer is sized for the largest head), but a
    // full buffer must never turn into a busy loop.
    fail(header_count_ == 0 ? 414 : 431, "request head does not fit the buffer");
    return {};
  }
  return {storage_->input.data() + end_, cap - end_};
}

void RequestParser::commit(std::size_t n) { end_ += n; }

void RequestParser::compact() {
  char* buf = storage_->input.data();
  if (!in_message_ || !headers_done_) {
    // Keep the current request's bytes (and anything unparsed) and move them to the front.
    const std::size_t shift = msg_start_;
    if (shift == 0) return;
    std::memmove(buf, buf + shift, end_ - shift);
    url_.offset -= static_cast<uint32_t>(std::min<std::size_t>(url_.offset, shift));
    for (std::size_t i = 0; i < header_count_; ++i) {
      storage_->header_names[i].offset -= static_cast<uint32_t>(shift);
      storage_->header_values[i].offset -= static_cast<uint32_t>(shift);
    }
    expect_.offset -= static_cast<uint32_t>(std::min<std::size_t>(expect_.offset, shift));
    msg_start_ = 0;
    parsed_ -= shift;
    end_ -= shift;
    return;
  }
  // Reading a body: keep the head (the handler's views point there), drop the body bytes
  // already parsed (copied out first, unless the body streams: then they were handed out),
  // keep the unparsed tail.
  if (!streaming_) materialize_body();
  const std::size_t head_len = head_end_ - msg_start_;
  const std::size_t tail_len = end_ - parsed_;
  const std::size_t shift = msg_start_;
  if (shift != 0) {
    std::memmove(buf, buf + shift, head_len);
    for (std::size_t i = 0; i < header_count_; ++i) {
      storage_->header_names[i].offset -= static_cast<uint32_t>(shift);
      storage_->header_values[i].offset -= static_cast<uint32_t>(shift);
    }
    url_.offset -= static_cast<uint32_t>(shift);
    expect_.offset -= static_cast<uint32_t>(std::min<std::size_t>(expect_.offset, shift));
  }
  std::memmove(buf + head_len, buf + parsed_, tail_len);
  msg_start_ = 0;
  head_end_ = head_len;
  parsed_ = head_len;
  end_ = head_len + tail_len;
}

void RequestParser::materialize_body() {
  if (body_copied_) return;
  storage_->body.clear();
  // No budget needed: a span of the input buffer is at most unbudgeted_body_bytes_ long.
  storage_->body.append({storage_->input.data() + body_span_.offset, body_span_.length});
  body_copied_ = true;
}

bool RequestParser::reserve_body(uint64_t need) {
  if (budget_ == nullptr || need <= unbudgeted_body_bytes_) return true;
  // Reserve what the buffer will hold after growing to `need` (its capacity), before it grows.
  const uint64_t capacity = ByteBuffer::capacity_for(storage_->body.capacity(), need);
  if (capacity <= body_reserved_) return true;
  if (!budget_->try_reserve(capacity - body_reserved_)) return false;
  body_reserved_ = capacity;
  return true;
}

bool RequestParser::body_fits(uint64_t need) {
  if (budget_ == nullptr || need <= unbudgeted_body_bytes_) return true;
  const uint64_t capacity = ByteBuffer::capacity_for(storage_->body.capacity(), need);
  return capacity <= body_reserved_ || budget_->fits(capacity - body_reserved_);
}

bool RequestParser::append_body(std::string_view bytes) {
  if (!reserve_body(storage_->body.size() + bytes.size())) return false;
  storage_->body.append(bytes);
  return true;
}

void RequestParser::release_body_budget() {
  if (body_reserved_ == 0) return;
  // The memory goes with the reservation: a pooled buffer keeping it would be uncounted.
  if (storage_ != nullptr) storage_->body.shrink_if_over(unbudgeted_body_bytes_);
  budget_->release(body_reserved_);
  body_reserved_ = 0;
}

bool RequestParser::extend(Span& s, uint32_t offset, std::size_t n) {
  if (s.length == 0) {
    s = {offset, static_cast<uint32_t>(n)};
    return true;
  }
  if (offset != s.offset + s.length) return false;
  s.length += static_cast<uint32_t>(n);
  return true;
}

int RequestParser::fail(int status, const char* reason) {
  if (error_status_ == 0) {
    error_status_ = status;
    error_reason_ = reason;
  }
  llhttp_set_error_reason(&llhttp_, reason);
  return HPE_USER;
}

ParseEvent RequestParser::fail_event(int status, const char* reason) {
  fail(status, reason);
  return ParseEvent::kError;
}

void RequestParser::reset_message() {
  url_ = {};
  header_count_ = header_bytes_ = 0;
  in_field_ = value_started_ = in_message_ = headers_done_ = message_done_ = false;
  expect_continue_ = false;
  host_count_ = 0;
  phase_ = Phase::kHead;
  chunk_line_bytes_ = trailer_bytes_ = trailer_count_ = 0;
  chunk_size_ = chunk_excess_ = 0;
  expect_ = body_span_ = {};
  has_transfer_encoding_ = has_expect_ = body_copied_ = false;
  body_bytes_ = 0;
  keep_alive_ = true;
  streaming_ = false;
  has_declared_length_ = false;
  declared_length_ = 0;
  release_body_budget();
  if (storage_ != nullptr) storage_->body.clear();
  msg_start_ = head_end_ = parsed_;
}

ParseEvent RequestParser::next() {
  if (error_status_ != 0) return ParseEvent::kError;
  if (delivered_) {
    // A streamed body must be finished (read to its end) before the next request is parsed:
    // llhttp is still inside it. The connection closes instead; this guards the invariant.
    if (streaming_ && !message_done_) return fail_event(500, "streamed body left unfinished");
    delivered_ = false;
    reset_message();
  }
  if (storage_ == nullptr) return ParseEvent::kNeedMore;
  const char* base = storage_->input.data();
  if (!in_message_) {
    if (!skip_empty_lines()) return ParseEvent::kError;
    msg_start_ = head_end_ = parsed_;
    // A CR whose LF has not arrived yet: wait for it rather than let llhttp skip it.
    if (parsed_ != end_ && base[parsed_] == '\r') return ParseEvent::kNeedMore;
  }
  while (parsed_ != end_) {
    bool paused = false;
    if (!execute(end_ - parsed_, &paused)) return ParseEvent::kError;
    if (!paused) {
      // The target and header limits are counted in the callbacks; this catches what they do
      // not see (whitespace around values, long runs of empty continuation).
      const std::size_t max_head = limits_.max_target_bytes + limits_.max_header_bytes + 1024;
      if (in_message_ && !headers_done_ && parsed_ - msg_start_ > max_head) {
        return fail_event(header_count_ == 0 ? 414 : 431, "request head too large");
      }
      return ParseEvent::kNeedMore;
    }
    if (message_done_) {
      if (!finish_request()) return ParseEvent::kError;
      delivered_ = true;
      return ParseEvent::kRequest;
    }
    if (streaming_) {
      // Paused at the end of the head of a request whose body streams: hand the request out
      // now. Its head moves to the front of the buffer first, so that the body's reads
      // (compact()) never move the bytes the handler's views point to.
      if (msg_start_ != 0) compact();
      if (!finish_request()) return ParseEvent::kError;
      delivered_ = true;
      return ParseEvent::kRequest;
    }
    if (expect_continue_) {
      expect_continue_ = false;  // reported once, whatever pauses follow
      return ParseEvent::kExpectContinue;
    }
    // Paused at a change of phase inside a chunked body: go on with what follows.
  }
  return ParseEvent::kNeedMore;
}

bool RequestParser::execute(std::size_t limit, bool* paused) {
  const char* base = storage_->input.data();
  const std::size_t from = parsed_;
  const Phase phase = phase_;
  const llhttp_errno_t err = llhttp_execute(&llhttp_, base + parsed_, limit);
  *paused = false;
  if (err == HPE_OK) {
    parsed_ += limit;
  } else if (err == HPE_PAUSED) {
    parsed_ = static_cast<std::size_t>(llhttp_get_error_pos(&llhttp_) - base);
    llhttp_resume(&llhttp_);
    *paused = true;
  } else {
    if (err != HPE_USER) map_llhttp_error(err);
    return false;
  }
  return (phase != Phase::kChunkLine && phase != Phase::kTrailers) ||
         check_framing(phase, from, parsed_);
}

long RequestParser::pump_body(BodySink sink, std::span<char> out) {
  if (error_status_ != 0) return -1;
  if (storage_ == nullptr || !streaming_) return 0;
  sink_ = sink;
  copy_to_ = out.data();
  pumped_ = 0;
  // Copying: feed llhttp at most out.size() bytes at a time, so the body bytes one execute
  // hands to on_body (never more than the input it consumed) always fit `out`; stop at the
  // first body bytes. Collecting and discarding: use up the input.
  while (parsed_ != end_ && !message_done_ && (sink != BodySink::kCopy || pumped_ == 0)) {
    const std::size_t limit =
        sink == BodySink::kCopy ? std::min(end_ - parsed_, out.size()) : end_ - parsed_;
    bool paused = false;
    if (!execute(limit, &paused)) {
      sink_ = BodySink::kNone;
      return -1;
    }
  }
  sink_ = BodySink::kNone;
  return static_cast<long>(pumped_);
}

// RFC 9112 2.2: a server SHOULD ignore at least one empty line before a request-line. Any
// number of CRLF (or bare LF, as nginx allows) is skipped; a CR followed by anything but LF is
// a 400. A CR at the very end is left in place: its LF may come with the next read.
// Bare LF stays accepted here, unlike inside a request (head_ends_in_crlf()): between
// two requests it cannot move a boundary. The previous request's framing ended before it, and
// a front proxy either skips it too (nginx) or refuses the connection; neither reads the next
// request's bytes as part of another.
bool RequestParser::skip_empty_lines() {
  const char* buf = storage_->input.data();
  std::size_t i = parsed_;
  while (i != end_) {
    if (buf[i] == '\n') {
      ++i;
      continue;
    }
    if (buf[i] != '\r' || i + 1 == end_) break;
    if (buf[i + 1] != '\n') {
      parsed_ = msg_start_ = i;
      fail(400, "bare CR before the request line");
      return false;
    }
    i += 2;
  }
  parsed_ = i;
  return true;
}

// Every line of the head ends in CRLF. RFC 9112 2.2 lets a recipient take a bare LF as a line
// end, and Go and nginx do; we refuse it (400, like a bare CR), because a front proxy that
// frames the same bytes differently is a request-smuggling vector. Strict llhttp already
// refuses a bare LF after a header value, in the target and in chunk-size lines, but takes one
// after the request line and as the empty line that ends the head; we check every line end so
// as not to depend on which ones llhttp lets through.
// Lean, as it runs for every request: no scan of the head. A header line starts right after
// the previous line's LF, so the byte before that LF must be CR (on_headers_complete checks
// that while it walks the headers). The last header line (or the request line, when there are
// no headers) ends in the first LF after head_end_, behind only trailing whitespace or the
// version; the empty line follows it. on_headers_complete runs once that empty line's LF has
// been consumed, so it is in the buffer.
bool RequestParser::head_ends_in_crlf() const {
  const char* buf = storage_->input.data();
  std::size_t i = head_end_;
  while (i != end_ && buf[i] != '\n') ++i;
  return i + 2 < end_ && buf[i - 1] == '\r' && buf[i + 1] == '\r' && buf[i + 2] == '\n';
}

// The bytes [from, to) were consumed in `phase` (a chunked body's pauses keep one execute
// within one phase).
bool RequestParser::check_framing(Phase phase, std::size_t from, std::size_t to) {
  if (phase == Phase::kChunkLine) {
    chunk_line_bytes_ += to - from;
    if (chunk_line_bytes_ > kMaxChunkLineBytes) {
      fail(400, "chunk-size line too long (extensions or leading zeros)");
      return false;
    }
    if (phase_ == Phase::kChunkLine) return true;  // the line goes on in the next read
    // The line is complete. The 4 KiB line bound alone lets a client send 4 KiB of extensions
    // per byte of data, without end. Go's rule (net/http/internal/chunked.go, since
    // CVE-2023-39326): each chunk adds its line's length and the 2 bytes of CRLF after its
    // data to an excess counter and takes away 16 + 2 × its size, the counter never going
    // below 0; past 16 KiB the body is refused. One byte a chunk with short extensions
    // ("1;a=b\r\nx\r\n": 7 + 2 - 18 < 0) never accrues any; 4 KiB of extensions a byte does
    // after 5 chunks.
    chunk_excess_ += chunk_line_bytes_ + 2;
    const uint64_t allowance =
        chunk_size_ > (UINT64_MAX - 16) / 2 ? UINT64_MAX : 16 + 2 * chunk_size_;
    chunk_excess_ = chunk_excess_ > allowance ? chunk_excess_ - allowance : 0;
    if (chunk_excess_ > kMaxChunkExcessBytes) {
      fail(400, "too much chunk framing for the data");
      return false;
    }
    return true;
  }
  if (phase != Phase::kTrailers) return true;
  // Trailer fields follow the header rules: llhttp hands an obs-fold continuation over as more
  // value, so look for a line that starts with whitespace. The section may span reads (and
  // compactions), hence the byte carried over in trailer_prev_.
  trailer_bytes_ += to - from;
  if (trailer_bytes_ > limits_.max_header_bytes) {
    fail(431, "trailer section too large");
    return false;
  }
  const char* buf = storage_->input.data();
  char prev = trailer_prev_;
  for (std::size_t i = from; i < to; ++i) {
    if (prev == '\n' && (buf[i] == ' ' || buf[i] == '\t')) {
      fail(400, "obsolete line folding in a trailer");
      return false;
    }
    // Every trailer line, and the empty line ending them, ends in CRLF: see
    // head_ends_in_crlf() for why a bare LF is refused (llhttp takes "0\r\n\n").
    if (buf[i] == '\n' && prev != '\r') {
      fail(400, "bare LF in the trailer section");
      return false;
    }
    prev = buf[i];
  }
  trailer_prev_ = prev;
  return true;
}

std::string_view RequestParser::request_line() const {
  std::string_view rest(storage_->input.data() + msg_start_, end_ - msg_start_);
  while (!rest.empty() && (rest.front() == '\r' || rest.front() == '\n')) rest.remove_prefix(1);
  return rest.substr(0, rest.find_first_of("\r\n"));
}

void RequestParser::map_llhttp_error(llhttp_errno_t err) {
  const char* reason = llhttp_get_error_reason(&llhttp_);
  if (reason == nullptr) reason = llhttp_errno_name(err);
  switch (err) {
    case HPE_INVALID_METHOD: {
      // A method token we do not know (even one still arriving) is a method we do not
      // implement (501); anything that is not a token is garbage (400).
      const std::string_view line = request_line();
      const std::size_t sp = line.find(' ');
      const std::string_view token = line.substr(0, sp);
      const bool is_token = !token.empty() && std::all_of(token.begin(), token.end(), [](char c) {
        return is_tchar(static_cast<unsigned char>(c));
      });
      fail(is_token ? 501 : 400, is_token ? "method not implemented" : "invalid method");
      break;
    }
    case HPE_INVALID_VERSION: {
      // "HTTP/d.d" that is not 1.x is a version we do not support (505); a request line
      // without a well-formed version is malformed (400).
      const std::string_view line = request_line();
      const std::string_view version = line.substr(line.rfind(' ') + 1);
      const bool well_formed = version.size() == 8 && version.substr(0, 5) == "HTTP/" &&
                               std::isdigit(static_cast<unsigned char>(version[5])) &&
                               version[6] == '.' &&
                               std::isdigit(static_cast<unsigned char>(version[7]));
      // A supported version that still failed was followed by something other than CRLF.
      const bool supported =
          well_formed && version[5] == '1' && (version[7] == '0' || version[7] == '1');
      const bool unsupported = well_formed && !supported;
      fail(unsupported ? 505 : 400,
           unsupported ? "unsupported HTTP version" : "malformed request line");
      break;
    }
    case HPE_PAUSED_H2_UPGRADE:
      fail(505, "HTTP/2 connection preface on an HTTP/1.1 port");
      break;
    case HPE_PAUSED_UPGRADE:
      fail(501, "protocol upgrade not supported");
      break;
    default:
      fail(400, reason);
      break;
  }
}

int RequestParser::on_message_begin(llhttp_t* p) {
  RequestParser* r = self(p);
  r->in_message_ = true;
  return 0;
}

int RequestParser::on_url(llhttp_t* p, const char* at, std::size_t n) {
  RequestParser* r = self(p);
  if (!extend(r->url_, r->offset_of(at), n)) return r->fail(400, "malformed request target");
  if (r->url_.length > r->limits_.max_target_bytes) return r->fail(414, "request target too long");
  return 0;
}

int RequestParser::on_header_field(llhttp_t* p, const char* at, std::size_t n) {
  RequestParser* r = self(p);
  r->header_bytes_ += n;
  if (r->header_bytes_ > r->limits_.max_header_bytes) {
    return r->fail(431, "header section too large");
  }
  if (r->headers_done_) [[unlikely]] {
    return r->on_trailer_field(at, n);
  }
  if (!r->in_field_) {
    if (r->header_count_ == r->limits_.max_headers) return r->fail(431, "too many header fields");
    r->storage_->header_names[r->header_count_] = {r->offset_of(at), static_cast<uint32_t>(n)};
    r->storage_->header_values[r->header_count_] = {};
    ++r->header_count_;
    r->in_field_ = true;
    r->value_started_ = false;
    return 0;
  }
  if (!extend(r->storage_->header_names[r->header_count_ - 1], r->offset_of(at), n)) {
    return r->fail(400, "malformed header field");
  }
  return 0;
}

// A trailer field: checked as a header field is and counted against the same limits, but not
// kept (no handler sees trailers). Its name may span reads, so each piece is checked.
int RequestParser::on_trailer_field(const char* at, std::size_t n) {
  if (!in_field_) {
    if (header_count_ + trailer_count_ >= limits_.max_headers) {
      return fail(431, "too many header and trailer fields");
    }
    ++trailer_count_;
    in_field_ = true;
  }
  if (std::memchr(at, ' ', n) != nullptr || std::memchr(at, '\t', n) != nullptr) {
    return fail(400, "whitespace in a trailer field name");
  }
  return 0;
}

int RequestParser::on_header_value(llhttp_t* p, const char* at, std::size_t n) {
  RequestParser* r = self(p);
  r->header_bytes_ += n;
  if (r->header_bytes_ > r->limits_.max_header_bytes) {
    return r->fail(431, "header section too large");
  }
  r->in_field_ = false;
  // An empty value ("X:", "Accept: ") comes as one empty span, placed after the line's end:
  // the value stays empty, and an obs-fold after it is still caught below (its first piece then
  // finds no colon before it).
  if (r->headers_done_ || n == 0) return 0;
  Span& v = r->storage_->header_values[r->header_count_ - 1];
  const uint32_t offset = r->offset_of(at);
  if (!r->value_started_) {
    // A value starts on its field's line: only whitespace may sit between it and the colon.
    // Anything else (a line end) means llhttp is handing us an obs-fold continuation line,
    // which RFC 9112 lets a server reject; we must, as folding is a smuggling vector.
    const char* buf = r->storage_->input.data();
    std::size_t i = offset;
    while (i > r->msg_start_ && (buf[i - 1] == ' ' || buf[i - 1] == '\t')) --i;
    if (i == r->msg_start_ || buf[i - 1] != ':') {
      return r->fail(400, "obsolete line folding in a header");
    }
    v = {offset, static_cast<uint32_t>(n)};
    r->value_started_ = true;
    return 0;
  }
  if (offset != v.offset + v.length) return r->fail(400, "obsolete line folding in a header");
  v.length += static_cast<uint32_t>(n);
  return 0;
}

int RequestParser::on_header_field_complete(llhttp_t* p) {
  RequestParser* r = self(p);
  if (r->headers_done_) return 0;
  const Span name = r->storage_->header_names[r->header_count_ - 1];
  std::string_view s(r->storage_->input.data() + name.offset, name.length);
  // A plain loop: find_first_of's generic search costs more than these few bytes.
  if (s.empty() || std::any_of(s.begin(), s.end(), [](char c) { return c == ' ' || c == '\t'; })) {
    return r->fail(400, "whitespace in a header name");
  }
  return 0;
}

int RequestParser::on_header_value_complete(llhttp_t* p) {
  RequestParser* r = self(p);
  r->in_field_ = false;
  if (r->headers_done_) return 0;
  const std::size_t i = r->header_count_ - 1;
  const char* buf = r->storage_->input.data();
  const Span name_span = r->storage_->header_names[i];
  const std::string_view name(buf + name_span.offset, name_span.length);
  const Span value_span = r->storage_->header_values[i];
  const std::string_view value = trim({buf + value_span.offset, value_span.length});
  if (iequals(name, "host")) {
    // RFC 9112 3.2: an invalid Host is a 400 (a missing or repeated one: on_headers_complete).
    if (!valid_host(value)) return r->fail(400, "invalid Host header");
    ++r->host_count_;
  } else if (iequals(name, "transfer-encoding")) {
    // RFC 9112 6.3: when chunked is not the final coding the body's length is unknowable
    // (400); chunked after a coding we do not implement (gzip, ...) is a 501.
    const std::size_t comma = value.rfind(',');
    const std::string_view last =
        trim(comma == std::string_view::npos ? value : value.substr(comma + 1));
    if (!iequals(last, "chunked")) return r->fail(400, "chunked is not the final transfer coding");
    if (!iequals(value, "chunked")) return r->fail(501, "unsupported transfer coding");
    if (r->has_transfer_encoding_) return r->fail(400, "chunked applied twice");
    r->has_transfer_encoding_ = true;
  } else if (iequals(name, "expect")) {
    r->has_expect_ = true;
    r->expect_ = value_span;
  }
  return 0;
}

int RequestParser::on_headers_complete(llhttp_t* p) {
  RequestParser* r = self(p);
  r->headers_done_ = true;
  std::size_t head_end = r->url_.offset + r->url_.length;
  const char* buf = r->storage_->input.data();
  // Local pointers and count: a char store could alias them, so the compiler would reload.
  const Span* names = r->storage_->header_names.data();
  const Span* values = r->storage_->header_values.data();
  const std::size_t count = r->header_count_;
  bool crlf = true;  // see head_ends_in_crlf()
  for (std::size_t i = 0; i < count; ++i) {
    const Span v = values[i];
    const Span n = names[i];
    head_end = std::max<std::size_t>({head_end, v.offset + v.length, n.offset + n.length});
    crlf &= buf[n.offset - 2] == '\r';  // buf[n.offset - 1] is the LF ending the line before
  }
  r->head_end_ = std::max(head_end, r->msg_start_);
  if (!crlf || !r->head_ends_in_crlf()) return r->fail(400, "bare LF in the request head");

  if (p->http_major != 1) return r->fail(505, "unsupported HTTP version");
  if (p->method == HTTP_CONNECT) return r->fail(501, "CONNECT not supported");
  // RFC 9112 6.1: Transfer-Encoding in an HTTP/1.0 message is faulty framing (1.0 has no
  // chunked coding, and an intermediary may frame it by Content-Length or by close).
  if ((p->flags & F_TRANSFER_ENCODING) != 0 && p->http_minor == 0) {
    return r->fail(400, "Transfer-Encoding in an HTTP/1.0 request");
  }
  // RFC 9112 3.2: no Host in HTTP/1.1, or more than one: 400.
  if (r->host_count_ > 1) return r->fail(400, "duplicate Host header");
  if (p->http_minor >= 1 && r->host_count_ == 0) return r->fail(400, "missing Host header");
  // Known now (llhttp sets `upgrade` before this callback), and needed now: a streamed body's
  // request goes to its handler before the message completes.
  r->keep_alive_ = llhttp_should_keep_alive(p) != 0 && p->upgrade == 0;
  const bool has_length = (p->flags & F_CONTENT_LENGTH) != 0;
  if (has_length && p->content_length > r->limits_.max_body_bytes) {
    return r->fail(413, "declared body too large");
  }
  r->has_declared_length_ = has_length;
  r->declared_length_ = has_length ? p->content_length : 0;
  const bool chunked = (p->flags & F_CHUNKED) != 0;
  const bool has_body = chunked || (has_length && p->content_length > 0);
  if (r->has_expect_) {
    const char* buf = r->storage_->input.data();
    const std::string_view expect = trim({buf + r->expect_.offset, r->expect_.length});
    if (!iequals(expect, "100-continue")) return r->fail(417, "unsupported expectation");
    if (has_body && p->http_minor >= 1) r->expect_continue_ = true;
  }
  // Streamed (handed to the handler now, its body read as the handler asks): every chunked
  // body (its size is unknown until its end), every body the client holds back for a 100
  // Continue (the handler's first read sends it), and every declared length over the threshold.
  r->streaming_ = r->stream_threshold_ != 0 && has_body &&
                  (chunked || r->expect_continue_ || p->content_length > r->stream_threshold_);
  // A declared body that would not fit what is left of the budget is refused now, before any
  // of it is sent (or 100-continue). It reserves nothing yet: budget is taken as bytes arrive
  // (on_body), so clients that only declare large bodies cannot hold it (body_budget.h). A
  // streamed body takes budget only if the handler collects it (read_all() checks then).
  if (has_length && !r->streaming_ && !r->body_fits(p->content_length)) {
    return r->fail(503, kOverBodyBudget);
  }
  if (chunked) {
    r->phase_ = Phase::kChunkLine;  // pause: next() counts the chunk-size line from here
    return HPE_PAUSED;
  }
  if (has_length && p->content_length > 0) r->phase_ = Phase::kBody;
  return r->expect_continue_ || r->streaming_ ? HPE_PAUSED : 0;
}

int RequestParser::on_body(llhttp_t* p, const char* at, std::size_t n) {
  RequestParser* r = self(p);
  r->body_bytes_ += n;
  if (r->body_bytes_ > r->limits_.max_body_bytes) return r->fail(413, "body too large");
  if (r->streaming_) {
    switch (r->sink_) {
      case BodySink::kCopy:  // pump_body() fed at most the room left in copy_to_
        std::memcpy(r->copy_to_ + r->pumped_, at, n);
        break;
      case BodySink::kCollect:
        if (!r->append_body({at, n})) return r->fail(503, kOverBodyBudget);
        break;
      case BodySink::kDiscard:
        break;
      case BodySink::kNone:
        return r->fail(500, "body bytes parsed outside a body read");
    }
    r->pumped_ += n;
    return 0;
  }
  if (r->body_copied_) {
    if (!r->append_body({at, n})) return r->fail(503, kOverBodyBudget);
    return 0;
  }
  if (!extend(r->body_span_, r->offset_of(at), n)) {
    // Not contiguous (chunk framing in between): from now on the body is copied.
    r->materialize_body();
    if (!r->append_body({at, n})) return r->fail(503, kOverBodyBudget);
  }
  return 0;
}

// A chunk-size line is complete (p->content_length is the chunk's size). A chunk that cannot
// fit what is left of the body limit is refused now, before its bytes are waited for.
int RequestParser::on_chunk_header(llhttp_t* p) {
  RequestParser* r = self(p);
  if (p->content_length > r->limits_.max_body_bytes - r->body_bytes_) {
    return r->fail(413, "chunk larger than the body limit");
  }
  r->chunk_size_ = p->content_length;
  if (p->content_length == 0) {
    r->phase_ = Phase::kTrailers;
    r->trailer_prev_ = '\n';  // the last chunk's line just ended
  } else {
    r->phase_ = Phase::kChunkData;
  }
  return HPE_PAUSED;
}

int RequestParser::on_chunk_complete(llhttp_t* p) {
  RequestParser* r = self(p);
  if (r->phase_ == Phase::kTrailers) return 0;  // the last chunk: the message ends next
  r->phase_ = Phase::kChunkLine;
  r->chunk_line_bytes_ = 0;
  return HPE_PAUSED;
}

int RequestParser::on_message_complete(llhttp_t* p) {
  RequestParser* r = self(p);
  r->message_done_ = true;
  r->keep_alive_ = llhttp_should_keep_alive(p) != 0 && p->upgrade == 0;
  return HPE_PAUSED;
}

bool RequestParser::finish_request() {
  const char* buf = storage_->input.data();
  Request& q = request_;
  q.method_ = method_from_llhttp(llhttp_.method);
  q.method_name_ = llhttp_method_name(static_cast<llhttp_method_t>(llhttp_.method));
  q.version_major_ = llhttp_.http_major;
  q.version_minor_ = llhttp_.http_minor;
  q.keep_alive_ = keep_alive_;
  q.target_ = {buf + url_.offset, url_.length};
  for (std::size_t i = 0; i < header_count_; ++i) {
    const Span n = storage_->header_names[i];
    const Span v = storage_->header_values[i];
    storage_->headers[i] = {{buf + n.offset, n.length}, trim({buf + v.offset, v.length})};
  }
  q.headers_ = {storage_->headers.data(), header_count_};
  if (streaming_) {
    q.body_.reset({});  // the connection attaches its reader
  } else {
    q.body_.reset(body_copied_ ? storage_->body.view()
                               : std::string_view{buf + body_span_.offset, body_span_.length});
  }
  q.param_count_ = 0;
  q.request_id_length_ = 0;
  return decode_target();
}

int RequestParser::split_target(Request& q, std::string& out, std::string_view* reason) {
  std::string_view t = q.target_;
  if (t == "*") {
    // RFC 9112 3.2.4: the asterisk form is for a server-wide OPTIONS only.
    if (q.method_ != Method::kOptions) {
      *reason = "asterisk-form target with a method other than OPTIONS";
      return 400;
    }
    q.path_ = t;
    q.query_ = {};
    return 0;
  }
  // Absolute form (RFC 9112 3.2.2): the server must accept it; routing uses the path.
  auto starts_with_ci = [&](std::string_view prefix) {
    return t.size() >= prefix.size() && iequals(t.substr(0, prefix.size()), prefix);
  };
  if (starts_with_ci("http://") || starts_with_ci("https://")) {
    const std::size_t authority = t.find("//") + 2;
    const std::size_t path = t.find_first_of("/?", authority);
    // The authority must be a host[:port], held to Host's rules: RFC 9110 4.2.4 makes userinfo
    // in an http(s) URI invalid ("u@a" is a phishing and smuggling vector), and an http URI
    // with an empty host is invalid (RFC 9110 4.2.1).
    const std::string_view host = t.substr(authority, path - authority);
    if (host.empty() || !valid_host(host)) {
      *reason = "invalid authority in the request target";
      return 400;
    }
    t = path == std::string_view::npos ? std::string_view{} : t.substr(path);
  } else if (t.empty() || t.front() != '/') {
    *reason = "request target is not origin-form or absolute-form";
    return 400;
  }
  const std::size_t qmark = t.find('?');
  std::string_view raw_path = t.substr(0, qmark);
  q.query_ = qmark == std::string_view::npos ? std::string_view{} : t.substr(qmark + 1);
  if (raw_path.empty()) raw_path = "/";
  if (raw_path.find('%') == std::string_view::npos) {
    q.path_ = raw_path;
    return 0;
  }
  out.clear();
  for (std::size_t i = 0; i < raw_path.size(); ++i) {
    char c = raw_path[i];
    if (c == '%') {
      const bool complete = i + 2 < raw_path.size();
      const int hi = complete ? hex_value(raw_path[i + 1]) : -1;
      const int lo = complete ? hex_value(raw_path[i + 2]) : -1;
      if (hi < 0 || lo < 0) {
        *reason = "malformed percent-encoding in the path";
        return 400;
      }
      c = static_cast<char>(hi * 16 + lo);
      if (c == '\0') {
        *reason = "NUL in the path";
        return 400;
      }
      i += 2;
      if (c == '/') {
        // An encoded slash is data inside a segment, not a separator: it stays "%2F", so the
        // router never matches /debug%2Fgreenthreads to /debug/greenthreads and a file handler
        // never sees it as a directory step (Go's ServeMux, since 1.22, matches on the escaped
        // path segment by segment for the same reason).
        out.append("%2F");
        continue;
      }
    }
    out.push_back(c);
  }
  q.path_ = out;
  return 0;
}

bool RequestParser::decode_target() {
  std::string_view reason;
  if (const int status = split_target(request_, storage_->decoded_path, &reason); status != 0) {
    fail(status, reason.data());  // a literal
    return false;
  }
  return true;
}

int RequestParser::init_request(Request& q, std::string_view method, std::string_view target,
                                std::span<const Header> headers, std::string& decoded_path,
                                std::string_view* reason) {
  q.method_ = method_from_name(method);
  q.method_name_ = method;
  q.version_major_ = 2;
  q.version_minor_ = 0;
  q.keep_alive_ = true;
  q.target_ = target;
  q.headers_ = headers;
  q.body_.reset({});
  q.param_count_ = 0;
  q.request_id_length_ = 0;
  return split_target(q, decoded_path, reason);
}

}  // namespace green::http
