// RequestParser: the glue between llhttp and a connection. Bytes go in through an input
// buffer; complete requests (or one precise error status) come out, one at a time, in order.
//
//   parser.attach(&storage);                 // a pooled buffer, while data flows
//   std::span<char> room = parser.spare();   // read(2) into it, then
//   parser.commit(n);
//   for (;;) {
//     ParseEvent e = parser.next();
//     if (e == ParseEvent::kRequest) handle(parser.request());   // valid until next()
//     else if (e == ParseEvent::kExpectContinue) send_100_continue();
//     else break;                             // kNeedMore: read more; kError: answer, close
//   }
//
// The input buffer holds the current request's head for as long as the request is being
// parsed: llhttp reports the method, target and headers as spans, and we keep them as offsets
// into the buffer, so a request split over many reads still ends up as string_views without a
// copy. Offsets (not pointers) survive compaction, which moves the unparsed tail to the front
// when the buffer fills. Bodies are views into the buffer when they arrive in one piece, and
// are copied into storage.body otherwise (chunked, or larger than what the buffer held). Once
// storage.body would grow past the read buffer's size, each growth first reserves its new
// capacity from the server's BodyBudget (server/body_budget.h); a growth the budget refuses is a
// 503. A declared Content-Length is checked against what is left of the budget when the headers
// are complete (so a 503 comes before the body is sent, and before 100 Continue), but reserves
// nothing until its bytes arrive: a declared length costs the client nothing, arrived bytes do. The
// reservation is given back, and the grown buffer freed, when the request is done (the next request
// starts, or the parser is detached or destroyed).
//
// Streamed bodies (set_stream_threshold(); green/http/body.h has the rule): when a request's
// body streams, next() hands the request out as soon as its head is complete (kRequest with
// body_streaming()), after moving the head to the front of the buffer, and the body is then
// parsed on demand by pump_body(): it copies the body bytes into the caller's buffer (Go's
// Read), collects them into storage.body under the budget (read_all), or drops them (the
// discard after the handler). Until the body's end (body_done()) the next request is not
// parsed. Compaction keeps the head in place, so the handler's views stay valid, and drops the
// body bytes already handed out: a streamed body never takes more than the read buffer.
//
// Limits (include/green/http/limits.h) are checked as bytes arrive, so a too-long target or header
// section is refused before it is buffered whole, and a declared body over the limit is refused
// (413) before any of it is read; so is a chunk whose declared size exceeds what is left of the
// body budget. A chunk-size line (size, extensions, CRLF) is at most kMaxChunkLineBytes (400 past
// it), which bounds extensions and runs of leading zeros alike; all the chunk lines together may
// exceed what the data allows by at most kMaxChunkExcessBytes (Go's rule, 400 past it). Every
// line of the head and the trailers ends in CRLF: a bare LF there is a 400. Trailer fields obey
// the header rules (no obs-fold, no whitespace before the colon) and count against the header
// limits. After kError the parser stays in error; the connection must answer error_status()
// with Connection: close and stop reading.
//
// Not thread-safe: one connection's green thread owns it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include <llhttp.h>

#include "green/http/limits.h"
#include "green/http/request.h"
#include "server/body_budget.h"
#include "server/byte_buffer.h"

namespace green::http {

// A span inside the input buffer, as offsets: stays valid when the buffer is compacted.
struct Span {
  uint32_t offset = 0;
  uint32_t length = 0;
};

// The memory a parser needs only while a request is in flight: handed out by the buffer pool
// when a connection has data and taken back when it goes idle.
struct ParserStorage {
  explicit ParserStorage(const Limits& limits);
  std::vector<char> input;         // the read buffer (limits.input_buffer_bytes())
  std::vector<Span> header_names;  // max_headers each
  std::vector<Span> header_values;
  std::vector<Header> headers;  // the views handed to handlers
  ByteBuffer body;              // bodies that do not sit in the input buffer in one piece
  std::string decoded_path;     // the path when it had %-escapes
};

enum class ParseEvent {
  kNeedMore,        // the buffer holds no complete request: read more
  kRequest,         // request() is complete and valid until the next call
  kExpectContinue,  // a request's headers asked for 100-continue and its body is not here yet
  kError,           // error_status() says what to answer; nothing more is parsed
};

class RequestParser {
 public:
  // A chunk-size line longer than this (hex digits, extensions and CRLF) is a 400: Go's
  // net/http/internal chunked reader has the same 4 KiB line bound.
  static constexpr std::size_t kMaxChunkLineBytes = 4096;
  // Chunk framing (lines, extensions, CRLFs) beyond what the data allows, as Go counts it
  // (check_framing()): past this, "too much chunk framing for the data" (400).
  static constexpr uint64_t kMaxChunkExcessBytes = 16 * 1024;

  // `budget` (may be null: bodies are not counted) must outlive the parser.
  explicit RequestParser(const Limits& limits, BodyBudget* budget = nullptr);
  ~RequestParser();
  RequestParser(const RequestParser&) = delete;
  RequestParser& operator=(const RequestParser&) = delete;

  // Gives the parser its buffers. Must be detached before the storage is reused elsewhere.
  void attach(ParserStorage* storage);
  // Takes the buffers back; only when idle() (nothing buffered, no request in progress).
  void detach();
  bool attached() const { return storage_ != nullptr; }

  // Room at the end of the input buffer, after compacting when the buffer is nearly full.
  // Empty only in the error state.
  std::span<char> spare();
  // Marks n bytes of spare() as filled by a read.
  void commit(std::size_t n);

  ParseEvent next();

  // An HTTP/2 request (server/http2.cpp): fills `q` from its :method and :path and its
  // fields, as next() fills one from a request line (version 2.0; the path decoded by the
  // same rules, into `decoded_path` when it has %-escapes). 0, or the status to answer (400)
  // with `*reason`. The views must outlive the request.
  static int init_request(Request& q, std::string_view method, std::string_view target,
                          std::span<const Header> headers, std::string& decoded_path,
                          std::string_view* reason);

  // Bodies with a declared length over `bytes`, every chunked body and every body behind an
  // Expect: 100-continue stream (see above). 0 (the default): every body is collected before
  // its request is handed out.
  void set_stream_threshold(std::size_t bytes) { stream_threshold_ = bytes; }
  // The current request's body streams (valid after kRequest until the next next()).
  bool body_streaming() const { return streaming_; }
  // The current request's body has been parsed to its end (trailers included).
  bool body_done() const { return message_done_; }
  // The current request asked for 100-continue and has a body (HTTP/1.1).
  bool expects_continue() const { return expect_continue_; }
  // Body bytes received so far, and the declared Content-Length, if any.
  uint64_t body_received() const { return body_bytes_; }
  bool has_declared_length() const { return has_declared_length_; }
  uint64_t declared_length() const { return declared_length_; }
  // Where pump_body() puts the body bytes it parses.
  enum class BodySink : uint8_t { kNone, kCopy, kCollect, kDiscard };
  // Parses the buffered input of a streamed body. kCopy: copies up to out.size() body bytes
  // into `out` and returns their count at the first bytes it finds. kCollect (into
  // collected_body(), under the budget: 503 when refused) and kDiscard: parse all the input
  // and return the body bytes it held. 0: the input is used up (read more) or body_done().
  // -1: error_status() says why (400 framing, 413 over max_body, 503 over the budget).
  long pump_body(BodySink sink, std::span<char> out = {});
  std::string_view collected_body() const { return storage_->body.view(); }
  // Whether `need` bytes of collected body would fit what is left of the budget (false counts
  // a rejection: the caller answers 503).
  bool body_fits(uint64_t need);

  const Request& request() const { return request_; }
  Request& request() { return request_; }
  // The request's raw request line parts for the access log ("GET /x HTTP/1.1").
  int error_status() const { return error_status_; }
  std::string_view error_reason() const { return error_reason_; }

  // Nothing buffered and no request begun: the buffers may go back to the pool.
  bool idle() const { return !in_message_ && parsed_ == end_; }
  // Some bytes of a request have arrived (a timeout now is a 408, not a quiet close).
  bool request_started() const { return in_message_ || parsed_ != end_; }
  // The current request's headers are complete (its body is being read).
  bool headers_complete() const { return headers_done_; }
  // Bytes received but not yet parsed (pipelined requests behind the current one).
  std::size_t buffered() const { return end_ - parsed_; }
  // The bytes read but not parsed yet (an HTTP/2 preface, what follows an upgraded request).
  std::string_view unparsed() const {
    return storage_ == nullptr ? std::string_view{}
                               : std::string_view{storage_->input.data() + parsed_, end_ - parsed_};
  }
  // Bytes of the body budget the current request holds.
  uint64_t body_reserved() const { return body_reserved_; }

 private:
  static int on_message_begin(llhttp_t* p);
  static int on_url(llhttp_t* p, const char* at, std::size_t n);
  static int on_header_field(llhttp_t* p, const char* at, std::size_t n);
  static int on_header_value(llhttp_t* p, const char* at, std::size_t n);
  int on_trailer_field(const char* at, std::size_t n);
  bool head_ends_in_crlf() const;
  static int on_header_field_complete(llhttp_t* p);
  static int on_header_value_complete(llhttp_t* p);
  static int on_headers_complete(llhttp_t* p);
  static int on_body(llhttp_t* p, const char* at, std::size_t n);
  static int on_chunk_header(llhttp_t* p);
  static int on_chunk_complete(llhttp_t* p);
  static int on_message_complete(llhttp_t* p);
  static const llhttp_settings_t kSettings;

  int fail(int status, const char* reason);  // records the error; returns HPE_USER
  ParseEvent fail_event(int status, const char* reason);
  void map_llhttp_error(llhttp_errno_t err);
  std::string_view request_line() const;  // the current request's first line, as far as read
  void reset_message();
  bool skip_empty_lines();  // before a request line; false after fail()
  // Where the current message's bytes are, for the checks llhttp's callbacks cannot make (they
  // report no positions between spans). Each change of phase inside a chunked body pauses
  // llhttp, so one llhttp_execute() call consumes bytes of one phase only.
  enum class Phase : uint8_t { kHead, kBody, kChunkLine, kChunkData, kTrailers };
  bool check_framing(Phase phase, std::size_t from, std::size_t to);  // after each execute
  // Runs llhttp over at most `limit` unparsed bytes; *paused when it stopped at a pause.
  // False after an error (recorded).
  bool execute(std::size_t limit, bool* paused);
  bool finish_request();  // builds request_ from the spans; false after fail()
  bool decode_target();
  // Splits request_'s target into path and query, decoding the path into `decoded` when it has
  // %-escapes: 0, or 400 with `*reason`.
  static int split_target(Request& q, std::string& decoded, std::string_view* reason);
  void compact();
  void materialize_body();
  bool reserve_body(uint64_t need);          // room for a `need`-byte body; false: over the budget
  bool append_body(std::string_view bytes);  // false: over the body budget
  void release_body_budget();
  uint32_t offset_of(const char* at) const {
    return static_cast<uint32_t>(at - storage_->input.data());
  }
  static bool extend(Span& s, uint32_t offset, std::size_t n);

  Limits limits_;
  BodyBudget* budget_;
  std::size_t unbudgeted_body_bytes_;  // a body up to this size is not counted
  uint64_t body_reserved_ = 0;         // taken from budget_: storage_->body's capacity
  llhttp_t llhttp_;
  ParserStorage* storage_ = nullptr;
  Request request_;

  // The input buffer: [0, msg_start_) is free after compaction, [msg_start_, parsed_) belongs
  // to the current request, [parsed_, end_) is not yet parsed.
  std::size_t msg_start_ = 0;
  std::size_t head_end_ = 0;  // end of the current request's head, once headers_done_
  std::size_t parsed_ = 0;
  std::size_t end_ = 0;

  // The current message.
  Phase phase_ = Phase::kHead;
  std::size_t chunk_line_bytes_ = 0;  // of the current chunk-size line
  uint64_t chunk_size_ = 0;           // of the chunk whose size line just ended
  uint64_t chunk_excess_ = 0;         // framing beyond the data's allowance, Go's way
  std::size_t trailer_bytes_ = 0;     // of the trailer section, line ends included
  std::size_t trailer_count_ = 0;
  char trailer_prev_ = '\0';  // the trailer section's last byte so far (obs-fold spans reads)
  Span url_;
  std::size_t header_count_ = 0;
  std::size_t header_bytes_ = 0;
  bool in_field_ = false;  // the last header callback was a field name
  bool value_started_ = false;
  bool in_message_ = false;
  bool headers_done_ = false;
  bool message_done_ = false;
  bool expect_continue_ = false;
  int host_count_ = 0;
  bool has_transfer_encoding_ = false;
  Span expect_;
  bool has_expect_ = false;
  Span body_span_;            // the body while it is one contiguous piece of the input buffer
  bool body_copied_ = false;  // the body lives in storage_->body
  uint64_t body_bytes_ = 0;
  bool keep_alive_ = true;
  bool has_declared_length_ = false;
  uint64_t declared_length_ = 0;
  bool streaming_ = false;  // the body is read by pump_body(), after the request is out
  BodySink sink_ = BodySink::kNone;
  char* copy_to_ = nullptr;  // kCopy: the caller's buffer
  std::size_t pumped_ = 0;   // body bytes the current pump_body() call parsed
  std::size_t stream_threshold_ = 0;
  bool delivered_ = false;  // request_ was handed out; the next call starts a new message

  int error_status_ = 0;
  std::string_view error_reason_;
};

}  // namespace green::http
