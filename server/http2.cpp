#include "server/http2.h"

#include <nghttp2/nghttp2.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <spdlog/spdlog.h>

#include "green/context.h"
#include "green/green.h"
#include "green/http/server.h"
#include "green/http/status.h"
#include "green/sync.h"
#include "server/byte_buffer.h"
#include "server/date_cache.h"
#include "server/http_text.h"
#include "server/request_parser.h"
#include "server/server_state.h"

namespace green::http {

namespace {
using Clock = std::chrono::steady_clock;
using Reset = ServerMetrics::Http2Reset;
using Goaway = ServerMetrics::Http2Goaway;

// Response bytes a stream may have queued for the writer before its handler parks: the
// handler never runs more than this ahead of what the client's windows let out.
constexpr std::size_t kQueueBytes = 32 * 1024;
// One write gathers up to this much of every stream's frames.
constexpr std::size_t kWriteBatch = 64 * 1024;
// What one read takes from the socket (a TLS record's worth).
constexpr std::size_t kReadBytes = 16 * 1024;
// After this long without a frame, the reader gives its stack pages back (as Connection).
constexpr std::chrono::milliseconds kShrinkAfter{500};
constexpr uint32_t kMinConnectionWindow = 1 << 20;

int64_t now_ns() { return green::detail::now_ns(); }

// A token bucket: `rate` tokens a second, at most 2 * rate held (Go's and nghttp2's reset
// limiters are buckets too). rate 0: no limit.
class TokenBucket {
 public:
  explicit TokenBucket(uint32_t rate) : rate_(rate), tokens_(2.0 * rate), last_ns_(now_ns()) {}
  bool take() {
    if (rate_ == 0) return true;
    const int64_t now = now_ns();
    tokens_ = std::min(2.0 * rate_, tokens_ + static_cast<double>(now - last_ns_) * 1e-9 * rate_);
    last_ns_ = now;
    if (tokens_ < 1.0) return false;
    tokens_ -= 1.0;
    return true;
  }

 private:
  uint32_t rate_;
  double tokens_;
  int64_t last_ns_;
};

bool is_connection_specific(std::string_view name) {
  return iequals(name, "connection") || iequals(name, "keep-alive") ||
         iequals(name, "proxy-connection") || iequals(name, "transfer-encoding") ||
         iequals(name, "upgrade") || iequals(name, "http2-settings") || iequals(name, "te");
}

nghttp2_nv make_nv(std::string_view name, std::string_view value) {
  // nghttp2 copies every name and value at submission (nghttp2_submit_response).
  return {reinterpret_cast<uint8_t*>(const_cast<char*>(name.data())),
          reinterpret_cast<uint8_t*>(const_cast<char*>(value.data())), name.size(), value.size(),
          NGHTTP2_NV_FLAG_NONE};
}
}  // namespace

struct Stream;

struct Http2Connection::Impl {
  Impl(Server& s, net::TcpStream& st, net::TlsSession* t, std::string_view r)
      : server(s),
        options(s.options()),
        stream(st),
        tls(t),
        remote(r),
        metrics(s.metrics_),
        state(*s.state_),
        resets(s.options().http2.reset_rate),
        control(s.options().http2.control_rate) {}
  ~Impl();

  bool start(std::string_view settings, const Request* upgraded);
  void serve(std::string_view preread);
  // Reads what the socket has and feeds it to nghttp2: false when the connection must end.
  // Not inlined: its 16 KiB buffer must lie below serve()'s frame, where shrink_stack() gives
  // it back while the connection idles.
  [[gnu::noinline]] bool read_batch();
  bool feed(std::string_view bytes);  // under nothing; takes mu
  // Takes the writer role if nobody has it and sends everything nghttp2 has queued; else
  // leaves it to the holder. `yield_first`: a stream handing in its answer lets the streams of
  // the same batch queue theirs first.
  void flush(bool yield_first);
  bool write_all(std::string_view bytes);
  void goaway(Goaway cause, uint32_t error_code);
  void end_streams();
  // Runs the context cancellations queued under mu (Stream::cancel), after releasing it.
  void run_cancels(std::unique_lock<green::Mutex>& lock);
  std::vector<CancelFn> cancels;  // under mu
  bool finished();
  void start_handler(Stream* s);
  void run_handler(Stream* s);
  void release(Stream* s);

  // nghttp2 callbacks (all run under mu, inside mem_recv or mem_send).
  static int on_begin_frame(nghttp2_session*, const nghttp2_frame_hd* hd, void* user);
  static int on_begin_headers(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int on_header(nghttp2_session*, const nghttp2_frame* frame, const uint8_t* name,
                       size_t namelen, const uint8_t* value, size_t valuelen, uint8_t flags,
                       void* user);
  static int on_frame_recv(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static int on_data_chunk(nghttp2_session*, uint8_t flags, int32_t id, const uint8_t* data,
                           size_t len, void* user);
  static int on_stream_close(nghttp2_session*, int32_t id, uint32_t error_code, void* user);
  static int on_frame_send(nghttp2_session*, const nghttp2_frame* frame, void* user);
  static ssize_t read_body(nghttp2_session*, int32_t id, uint8_t* buf, size_t length,
                           uint32_t* flags, nghttp2_data_source* source, void* user);
  static int send_data(nghttp2_session*, nghttp2_frame* frame, const uint8_t* framehd,
                       size_t length, nghttp2_data_source* source, void* user);

  Server& server;
  const ServerOptions& options;
  net::TcpStream& stream;
  net::TlsSession* tls;
  std::string_view remote;
  ServerMetrics& metrics;
  ServerState& state;

  // Guards nghttp2 (never called without it: its callbacks below run under it, inside
  // mem_recv and mem_send) and everything the reader, the writer and the stream threads share:
  // the fields from here to `control`, and each Stream's body, queue and state fields. The
  // standard lock types take it (the condition variables need unique_lock), so the clang
  // lock analysis does not see these; TSan checks them (make test-tsan).
  green::Mutex mu;
  nghttp2_session* session = nullptr;
  std::vector<Stream*> streams;  // every Stream alive
  int handlers = 0;              // stream green threads running
  int open_streams = 0;          // Streams nghttp2 has open
  // Handlers still running for streams that were reset under them. With the open streams
  // they are what a client makes the server run at once: a rapid reset closes streams but not
  // their handlers, so a new stream past max_concurrent_streams of the two is refused.
  int orphans = 0;
  green::ConditionVariable handlers_done;
  bool writing = false;  // a green thread holds the writer role
  bool dead = false;     // the connection is ending: streams fail
  bool goaway_sent = false;
  std::optional<Goaway> goaway_cause;  // of the GOAWAY we submitted, until it is sent
  bool fatal = false;                  // a connection error: close after the GOAWAY
  std::atomic<bool> draining{false};
  int64_t header_block_since = 0;  // a header block is open (now_ns)
  int64_t idle_since = 0;          // the last stream ended (when finished())
  TokenBucket resets;
  TokenBucket control;
  ByteBuffer out;      // the writer role's
  green::Mutex io_mu;  // TLS only: OpenSSL's SSL is one thread's at a time

  // Idle memory. nghttp2 allocates a 16 KiB outbound frame buffer per session up front, which
  // a connection at rest does not need: the session's allocations of kBigAlloc or more made
  // at its creation (that buffer alone) are tracked, and a connection with no stream, no open
  // header block and nothing to send gives their whole pages back to the kernel
  // (MADV_DONTNEED: they read as zeros when nghttp2 next writes frames there, which it does
  // from their start). With the write buffer freed too, an idle HTTP/2 connection costs about
  // what its HPACK tables and session need. (A hostile-client run found that zeroing every
  // large allocation, the HPACK table and stream table included, crashed the server.)
  static constexpr std::size_t kBigAlloc = 16 * 1024;
  std::vector<std::pair<void*, std::size_t>> big_allocs;  // under mu (nghttp2 calls)
  bool tracking = false;                                  // in nghttp2_session_server_new3
  void release_idle_memory();
  static void* mem_malloc(size_t size, void* user);
  static void mem_free(void* ptr, void* user);
  static void* mem_calloc(size_t n, size_t size, void* user);
  static void* mem_realloc(void* ptr, size_t size, void* user);
  void track(void* p, std::size_t size);
  std::size_t untrack(void* p);  // the size it was tracked with, 0 if it was not
};

// One request stream: its request, its body as it arrives, its response queue, and its
// handler's green thread.
struct Stream final : ResponseSink, RequestHost, BodySource {
  Stream(Http2Connection::Impl& c, int32_t stream_id) : conn(c), id(stream_id) {}

  // ResponseSink: the handler's side, on its green thread.
  ByteBuffer& output() override { return pending; }
  bool flush_output() override { return push(false); }
  bool write_direct(std::string_view head, std::string_view data, std::string_view tail) override;
  int64_t send_file(int fd, uint64_t offset, uint64_t count) override;
  bool framed() const override { return true; }
  void begin_message(int status, std::string_view content_type, std::string_view header_lines,
                     int64_t content_length) override;
  void complete_message(std::string_view serialised) override;

  // RequestHost
  const Context& request_context() override;
  bool client_gone() override;

  // BodySource
  long read(std::span<char> buf) override;
  std::optional<std::string_view> read_all() override;
  int error_status() const override {
    std::lock_guard<green::Mutex> lock(conn.mu);
    return body_error;
  }

  // Hands `pending` to the writer (parking while kQueueBytes are already queued), submitting
  // the head with the first bytes; `end`: the response is complete. False once the stream or
  // the connection has failed (the bytes are dropped).
  bool push(bool end, std::string_view direct_bytes = {});
  bool gone() const { return reset || conn.dead; }
  // Parks while the queue is full (or, `direct_only`, until the writer has taken `direct`),
  // for at most --write-timeout without progress; then resets the stream. False: gone.
  bool wait_for_room(std::unique_lock<green::Mutex>& lock, bool direct_only);
  void submit_head(bool with_body);
  void fail_body(int status);
  void cancel();  // the client reset it, or the connection ends
  // Gives `n` bytes of request body back to the flow-control windows: the stream's and the
  // connection's while the stream is open, the connection's once it has closed.
  void consume(std::size_t n) {
    if (n == 0) return;
    if (in_session) {
      nghttp2_session_consume(conn.session, id, n);
    } else {
      nghttp2_session_consume_connection(conn.session, n);
    }
  }

  Http2Connection::Impl& conn;
  const int32_t id;

  // The request head, as HEADERS arrived (under conn.mu, then the handler's).
  std::string fields;           // names and values back to back
  std::vector<uint32_t> spans;  // offset, name length, value length per field
  std::vector<Header> headers;
  std::string method, target, authority, decoded_path;
  std::size_t header_bytes = 0;
  int head_status = 0;  // 431, 414 or 400: answered without the handler
  std::string_view head_reason;
  Request request;
  int64_t started_ns = 0;

  // The request body (under conn.mu).
  ByteBuffer body_in;
  std::size_t body_in_read = 0;
  uint64_t body_received = 0;
  bool body_end = false;
  int body_error = 0;
  std::string_view body_reason;
  green::ConditionVariable body_cv;
  std::string collected;          // read_all()
  bool expects_continue = false;  // the handler's first read sends a 100 (handler's)
  uint64_t budget_held = 0;

  // The response. `pending` is the handler's; `queued` is the writer's (under conn.mu).
  ByteBuffer pending;
  ByteBuffer queued;
  std::size_t queued_sent = 0;
  // A large write's bytes, sent from the handler's memory while it waits (write_direct).
  std::string_view direct;
  // A file body (send_file), read by the writer straight into its batch: no copy of it is
  // held anywhere else. file_short: the file ended before its declared length.
  int file_fd = -1;
  uint64_t file_offset = 0;
  uint64_t file_left = 0;
  uint64_t file_read = 0;
  bool file_short = false;
  bool end_queued = false;
  bool submitted = false;
  int status = 0;
  std::string head_fields;  // lowercased names and values
  std::vector<std::pair<uint32_t, uint32_t>> head_spans;
  green::ConditionVariable room_cv;
  ByteBuffer scratch_body, scratch_headers;  // the ResponseWriter's
  int64_t deadline_ns = 0;                   // --handler-timeout
  bool late = false;                         // writes past it were dropped

  // Lifetime: nghttp2's stream and the handler's green thread each hold it.
  bool in_session = true;
  bool running = false;
  bool reset = false;              // closed before the response completed (RST_STREAM either way)
  bool orphan = false;             // reset while its handler runs: counted in Impl::orphans
  std::optional<Reset> rst_cause;  // of the RST_STREAM we submitted (counted as it is sent)

  std::optional<Context> context;
  CancelFn cancel_context;
};

// --- Stream: the handler's side ---

void Stream::begin_message(int st, std::string_view content_type, std::string_view header_lines,
                           int64_t content_length) {
  status = st;
  head_fields.clear();
  head_spans.clear();
  auto add = [&](std::string_view name, std::string_view value, bool lower) {
    const auto at = static_cast<uint32_t>(head_fields.size());
    for (const char c : name) {
      head_fields.push_back(lower && c >= 'A' && c <= 'Z' ? static_cast<char>(c + 32) : c);
    }
    head_fields.append(value);
    head_spans.emplace_back(at, static_cast<uint32_t>(name.size()));
  };
  char code[4] = {static_cast<char>('0' + st / 100), static_cast<char>('0' + st / 10 % 10),
                  static_cast<char>('0' + st % 10), 0};
  add(":status", {code, 3}, false);
  add("server", "greenhttp", false);
  add("date", current_http_date(), false);
  if (!content_type.empty()) add("content-type", content_type, false);
  if (content_length >= 0) {
    const std::string n = std::to_string(content_length);
    add("content-length", n, false);
  }
  std::string_view rest = header_lines;
  while (!rest.empty()) {
    const std::size_t eol = rest.find("\r\n");
    const std::string_view line = rest.substr(0, eol);
    rest.remove_prefix(eol == std::string_view::npos ? rest.size() : eol + 2);
    const std::size_t colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    const std::string_view name = line.substr(0, colon);
    if (is_connection_specific(name)) continue;  // RFC 9113 8.2.2: never on HTTP/2
    add(name, line.substr(std::min(line.size(), colon + 2)), true);
  }
}

void Stream::complete_message(std::string_view serialised) {
  // middleware::timeout's answer, serialised as HTTP/1.x (its inner writer was not framed):
  // "HTTP/1.1 503 ...\r\n" headers "\r\n" body. Written by our own ResponseWriter.
  const std::size_t head_end = serialised.find("\r\n\r\n");
  if (serialised.size() < 12 || head_end == std::string_view::npos) return;
  const int st = (serialised[9] - '0') * 100 + (serialised[10] - '0') * 10 + (serialised[11] - '0');
  std::string_view lines = serialised.substr(0, head_end + 2);
  lines.remove_prefix(lines.find("\r\n") + 2);
  std::string kept;
  std::string_view content_type;
  while (!lines.empty()) {
    const std::size_t eol = lines.find("\r\n");
    const std::string_view line = lines.substr(0, eol + 2);
    lines.remove_prefix(eol + 2);
    const std::string_view name = line.substr(0, line.find(':'));
    if (iequals(name, "content-type")) {
      content_type = line.substr(name.size() + 2, line.size() - name.size() - 4);
    } else if (!iequals(name, "content-length") && !iequals(name, "server") &&
               !iequals(name, "date")) {
      kept.append(line);
    }
  }
  const std::string_view body = serialised.substr(head_end + 4);
  const std::string type(content_type);
  begin_message(st, type, kept, static_cast<int64_t>(body.size()));
  pending.append(body);
}

bool Stream::write_direct(std::string_view head, std::string_view data, std::string_view tail) {
  // Framed: head and tail are empty (no chunking). A large write is sent from the handler's
  // memory while it waits, so a 50 MB write holds no copy of itself in the server (and a file
  // piece is copied once, into the write buffer, as nginx copies it into its SSL buffer).
  pending.append(head);
  pending.append(tail);
  if (data.size() < kQueueBytes / 4) {
    pending.append(data);
    return push(false);
  }
  return push(false, data);
}

void Stream::submit_head(bool with_body) {
  std::vector<nghttp2_nv> nv;
  nv.reserve(head_spans.size());
  for (std::size_t i = 0; i < head_spans.size(); ++i) {
    const auto [at, name_length] = head_spans[i];
    const std::size_t end =
        i + 1 < head_spans.size() ? head_spans[i + 1].first : head_fields.size();
    const std::string_view all(head_fields.data() + at, end - at);
    nv.push_back(make_nv(all.substr(0, name_length), all.substr(name_length)));
  }
  nghttp2_data_provider provider{};
  provider.source.ptr = this;
  provider.read_callback = &Http2Connection::Impl::read_body;
  if (nghttp2_submit_response(conn.session, id, nv.data(), nv.size(),
                              with_body ? &provider : nullptr) != 0) {
    reset = true;  // the stream closed under us (a reset crossing the answer)
  }
  submitted = true;
}

bool Stream::push(bool end, std::string_view direct_bytes) {
  if (deadline_ns != 0 && !late && now_ns() >= deadline_ns) late = true;
  if (late) pending.clear();  // past --handler-timeout: nothing more reaches the client
  std::unique_lock<green::Mutex> lock(conn.mu);
  if (gone() || late) {
    pending.clear();
    return false;
  }
  if (pending.empty() && direct_bytes.empty() && !end && submitted) return true;
  // Flow control is waiting: while the client's windows hold the queue full, park.
  if (!wait_for_room(lock, false)) {
    pending.clear();
    return false;
  }
  if (gone()) {
    pending.clear();
    return false;
  }
  if (queued_sent == queued.size()) {
    queued.clear();
    queued_sent = 0;
    std::swap(queued, pending);  // no copy when the writer has taken everything
  } else {
    queued.append(pending.view());
    pending.clear();
  }
  if (end) end_queued = true;
  direct = direct_bytes;
  if (!submitted) {
    submit_head(!(end && queued.empty()));
  } else {
    nghttp2_session_resume_data(conn.session, id);
  }
  lock.unlock();
  conn.flush(true);
  if (direct_bytes.empty()) return true;
  // The writer takes the handler's bytes as the windows allow: wait until it has them all.
  lock.lock();
  return wait_for_room(lock, true);
}

bool Stream::wait_for_room(std::unique_lock<green::Mutex>& lock, bool direct_only) {
  bool stalled = false;
  auto full = [&] {
    return !direct.empty() || file_left != 0 ||
           (!direct_only && queued.size() - queued_sent >= kQueueBytes);
  };
  while (full() && !gone()) {
    if (!stalled) {
      stalled = true;
      conn.metrics.http2.flow_control_stalls.fetch_add(1, std::memory_order_relaxed);
    }
    const int64_t stall = conn.options.write_timeout.count();
    if (!room_cv.wait_until_ns(lock, stall == 0 ? INT64_MAX : now_ns() + stall) && full() &&
        !gone()) {
      // Nothing moved for --write-timeout: the client's window for this stream stays shut
      // (nginx's send_timeout applies the same to a stalled HTTP/2 stream).
      rst_cause = Reset::kFlowControlTimeout;
      nghttp2_submit_rst_stream(conn.session, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
      reset = true;
      direct = {};
      file_left = 0;
      lock.unlock();
      conn.flush(false);
      lock.lock();
      return false;
    }
  }
  direct = {};
  file_left = 0;
  return !gone();
}

int64_t Stream::send_file(int fd, uint64_t offset, uint64_t count) {
  // The head (and anything written before) goes first; then the writer reads the file into
  // its batch as the windows allow, while this handler waits.
  if (!push(false)) return -1;
  std::unique_lock<green::Mutex> lock(conn.mu);
  if (gone() || late) return -1;
  file_fd = fd;
  file_offset = offset;
  file_left = count;
  file_read = 0;
  file_short = false;
  nghttp2_session_resume_data(conn.session, id);
  lock.unlock();
  conn.flush(true);
  lock.lock();
  const bool ok = wait_for_room(lock, true);
  file_fd = -1;
  if (!ok) return -1;
  return static_cast<int64_t>(file_read);
}

const Context& Stream::request_context() {
  std::unique_lock<green::Mutex> lock(conn.mu);
  if (!context) {
    const Context& base = conn.state.base.first;
    auto [ctx, cancel] =
        deadline_ns != 0 ? green::with_deadline_ns(base, deadline_ns) : green::with_cancel(base);
    context.emplace(std::move(ctx));
    cancel_context = std::move(cancel);
    if (gone()) cancel_context();
  }
  return *context;
}

bool Stream::client_gone() {
  std::unique_lock<green::Mutex> lock(conn.mu);
  return gone();
}

void Stream::cancel() {
  room_cv.notify_all();
  body_cv.notify_all();
  // Called under the connection's lock: the context is cancelled after it is released (a
  // cancellation runs the context's callbacks, which may ask this connection something).
  if (cancel_context) conn.cancels.push_back(cancel_context);
}

void Stream::fail_body(int st) {
  if (body_error == 0) body_error = st;
  body_cv.notify_all();
}

long Stream::read(std::span<char> buf) {
  if (buf.empty()) return 0;
  std::unique_lock<green::Mutex> lock(conn.mu);
  const ServerOptions& o = conn.options;
  if (expects_continue) {
    // Expect: 100-continue: the interim 100 (a HEADERS without END_STREAM) on the handler's
    // first read, never once its answer has begun, as on HTTP/1.1 (Go does the same on h2).
    expects_continue = false;
    if (!submitted && !gone()) {
      nghttp2_nv status = make_nv(":status", "100");
      nghttp2_submit_headers(conn.session, NGHTTP2_FLAG_NONE, id, nullptr, &status, 1, nullptr);
      lock.unlock();
      conn.flush(false);
      lock.lock();
    }
  }
  for (;;) {
    if (body_error != 0) return -1;
    if (body_in.size() > body_in_read) break;
    if (body_end) return 0;
    if (gone()) {
      fail_body(499);
      body_reason = "client closed the stream";
      return -1;
    }
    // A pause longer than --read-header-timeout, or the whole request past --read-timeout:
    // 408, as on HTTP/1.1.
    const int64_t pause = o.read_header_timeout.count();
    const int64_t whole = o.read_timeout.count();
    int64_t until = pause == 0 ? INT64_MAX : now_ns() + pause;
    if (whole != 0) until = std::min(until, started_ns + whole);
    if (!body_cv.wait_until_ns(lock, until) && body_in.size() == body_in_read && !body_end &&
        body_error == 0 && !gone()) {
      conn.metrics.header_timeouts.fetch_add(1, std::memory_order_relaxed);
      fail_body(408);
      body_reason = "body not received in time";
      // The client may still send: stop it (RFC 9113 8.1: a complete answer, then reset).
      return -1;
    }
  }
  const std::size_t n = std::min(buf.size(), body_in.size() - body_in_read);
  std::memcpy(buf.data(), body_in.data() + body_in_read, n);
  body_in_read += n;
  if (body_in_read == body_in.size()) {
    body_in.clear();
    body_in_read = 0;
  }
  // The window opens as the handler reads (automatic WINDOW_UPDATE is off).
  bool update = false;
  if (!conn.dead) {
    consume(n);
    update = nghttp2_session_want_write(conn.session) != 0;
  }
  lock.unlock();
  if (update) conn.flush(false);
  return static_cast<long>(n);
}

std::optional<std::string_view> Stream::read_all() {
  const uint64_t max_body = conn.options.limits.max_body_bytes;
  BodyBudget& budget = conn.state.body_budget;
  char buf[16 * 1024];
  for (;;) {
    const long n = read(buf);
    if (n < 0) return std::nullopt;
    if (n == 0) break;
    const auto k = static_cast<std::size_t>(n);
    if (collected.size() + k > collected.capacity()) {
      const std::size_t grow = std::max<std::size_t>(collected.capacity(), 16 * 1024);
      if (!budget.try_reserve(grow)) {
        std::unique_lock<green::Mutex> lock(conn.mu);
        fail_body(503);
        body_reason = "the server's body budget is spent";
        return std::nullopt;
      }
      budget_held += grow;
      collected.reserve(collected.capacity() + grow);
    }
    collected.append(buf, k);
    if (max_body != 0 && collected.size() > max_body) break;  // on_data_chunk fails it
  }
  return std::string_view(collected);
}

// --- the connection ---

Http2Connection::Impl::~Impl() {
  for (Stream* s : streams) {
    if (s->budget_held != 0) state.body_budget.release(s->budget_held);
    delete s;
  }
  if (session != nullptr) nghttp2_session_del(session);
}

void Http2Connection::Impl::release(Stream* s) {
  if (s->in_session || s->running) return;
  if (s->budget_held != 0) state.body_budget.release(s->budget_held);
  // What a trim may hand back after a burst of streams (MemoryReclaimer).
  state.body_budget.note_freed(sizeof(Stream) + s->fields.capacity() + s->pending.capacity() +
                               s->queued.capacity() + s->scratch_body.capacity() +
                               s->scratch_headers.capacity() + s->head_fields.capacity());
  streams.erase(std::find(streams.begin(), streams.end(), s));
  delete s;
}

bool Http2Connection::Impl::start(std::string_view settings, const Request* upgraded) {
  nghttp2_session_callbacks* cb = nullptr;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
  nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
  nghttp2_session_callbacks_set_send_data_callback(cb, send_data);
  nghttp2_option* opt = nullptr;
  nghttp2_option_new(&opt);
  nghttp2_option_set_no_auto_window_update(opt, 1);
  // Our own bucket (ENHANCE_YOUR_CALM, counted) is the limit; nghttp2's stays a backstop.
  nghttp2_option_set_stream_reset_rate_limit(opt, 10000, 1000);
  const Http2Options& h = options.http2;
  std::lock_guard<green::Mutex> lock(mu);
  nghttp2_mem mem{this, &Impl::mem_malloc, &Impl::mem_free, &Impl::mem_calloc, &Impl::mem_realloc};
  // Only what the session allocates at its creation is tracked: of that, the one allocation
  // of 16 KiB or more is the outbound frame buffer (its HPACK tables start at 4 KiB). Its
  // pages are dead whenever nothing is queued; any later allocation may be live state (the
  // HPACK table grown by a client, the stream table), never to be touched.
  tracking = true;
  const int rv = nghttp2_session_server_new3(&session, cb, this, opt, &mem);
  tracking = false;
  nghttp2_session_callbacks_del(cb);
  nghttp2_option_del(opt);
  if (rv != 0) return false;
  const Limits& l = options.limits;
  const nghttp2_settings_entry entries[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, h.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, h.stream_window},
      {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, h.header_table_size},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE,
       static_cast<uint32_t>(l.max_header_bytes + l.max_target_bytes)},
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
  };
  if (upgraded != nullptr &&
      nghttp2_session_upgrade2(session, reinterpret_cast<const uint8_t*>(settings.data()),
                               settings.size(), upgraded->method() == Method::kHead ? 1 : 0,
                               nullptr) != 0) {
    // Settings nghttp2 refuses (a value out of range) after the 101 has gone: our SETTINGS
    // and GOAWAY(PROTOCOL_ERROR), not a silent close.
    nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, entries, std::size(entries));
    goaway(Goaway::kProtocol, NGHTTP2_PROTOCOL_ERROR);
    return true;
  }
  nghttp2_submit_settings(session, NGHTTP2_FLAG_NONE, entries, std::size(entries));
  nghttp2_session_set_local_window_size(
      session, NGHTTP2_FLAG_NONE, 0,
      static_cast<int32_t>(std::max(kMinConnectionWindow, h.stream_window)));
  if (upgraded != nullptr) {
    // Stream 1 is the upgraded request, half-closed (remote): its head is the HTTP/1.1 one.
    auto* s = new Stream(*this, 1);
    streams.push_back(s);
    ++open_streams;
    nghttp2_session_set_stream_user_data(session, 1, s);
    s->method = upgraded->method_name();
    s->target = upgraded->target();
    for (const Header& f : upgraded->headers()) {
      if (is_connection_specific(f.name)) continue;
      const auto at = static_cast<uint32_t>(s->fields.size());
      s->fields.append(f.name);
      s->fields.append(f.value);
      s->spans.insert(s->spans.end(), {at, static_cast<uint32_t>(f.name.size()),
                                       static_cast<uint32_t>(f.value.size())});
    }
    s->body_end = true;
    start_handler(s);
  }
  return true;
}

void Http2Connection::Impl::track(void* p, std::size_t size) {
  if (tracking && p != nullptr && size >= kBigAlloc) big_allocs.emplace_back(p, size);
}

std::size_t Http2Connection::Impl::untrack(void* p) {
  for (auto& a : big_allocs) {
    if (a.first == p) {
      const std::size_t size = a.second;
      a = big_allocs.back();
      big_allocs.pop_back();
      return size;
    }
  }
  return 0;
}

void* Http2Connection::Impl::mem_malloc(size_t size, void* user) {
  void* p = std::malloc(size);
  static_cast<Impl*>(user)->track(p, size);
  return p;
}

void Http2Connection::Impl::mem_free(void* ptr, void* user) {
  if (ptr == nullptr) return;
  static_cast<Impl*>(user)->untrack(ptr);
  std::free(ptr);
}

void* Http2Connection::Impl::mem_calloc(size_t n, size_t size, void* user) {
  void* p = std::calloc(n, size);
  static_cast<Impl*>(user)->track(p, n * size);
  return p;
}

void* Http2Connection::Impl::mem_realloc(void* ptr, size_t size, void* user) {
  auto* c = static_cast<Impl*>(user);
  // Untracked before the call: once realloc may have freed the old block, its pointer is not
  // used again (an invalid pointer value; GCC's -Wuse-after-free at -O1).
  const std::size_t was = ptr != nullptr ? c->untrack(ptr) : 0;
  void* p = std::realloc(ptr, size);
  if (p == nullptr && size != 0) {
    if (was != 0) c->big_allocs.emplace_back(ptr, was);  // it failed: the old block stands
    return nullptr;
  }
  c->track(p, size);
  return p;
}

void Http2Connection::Impl::release_idle_memory() {
  std::lock_guard<green::Mutex> lock(mu);
  // Only a connection at rest: no stream, no header block half decoded, nothing to send.
  if (writing || !finished() || header_block_since != 0 ||
      nghttp2_session_want_write(session) != 0) {
    return;
  }
  out = ByteBuffer();  // the writer role is free: nobody uses it
  const auto page = static_cast<uintptr_t>(sysconf(_SC_PAGESIZE));
  for (const auto& [p, size] : big_allocs) {
    // The whole pages inside the allocation (pointer arithmetic on it, not an integer cast).
    auto* const start = static_cast<char*>(p);
    const uintptr_t address = reinterpret_cast<uintptr_t>(start);
    const uintptr_t head = (page - address % page) % page;
    if (size <= head) continue;
    const std::size_t whole = (size - head) / page * page;
    if (whole != 0) (void)madvise(start + head, whole, MADV_DONTNEED);
  }
}

void Http2Connection::Impl::goaway(Goaway cause, uint32_t error_code) {
  if (goaway_sent && cause != Goaway::kDrain) fatal = true;
  if (goaway_sent) return;
  goaway_sent = true;
  goaway_cause = cause;  // counted when it is sent (on_frame_send)
  if (error_code != NGHTTP2_NO_ERROR) fatal = true;
  nghttp2_submit_goaway(session, NGHTTP2_FLAG_NONE,
                        nghttp2_session_get_last_proc_stream_id(session), error_code, nullptr, 0);
}

int Http2Connection::Impl::on_begin_frame(nghttp2_session* /*session*/, const nghttp2_frame_hd* hd,
                                          void* user) {
  auto* c = static_cast<Impl*>(user);
  // A header block is open from a HEADERS without END_HEADERS to the CONTINUATION that ends it;
  // --read-header-timeout bounds it (the CONTINUATION flood that trickles).
  if (hd->type == NGHTTP2_HEADERS || hd->type == NGHTTP2_CONTINUATION) {
    if ((hd->flags & NGHTTP2_FLAG_END_HEADERS) == 0) {
      if (c->header_block_since == 0) c->header_block_since = now_ns();
    } else {
      c->header_block_since = 0;
    }
  }
  const bool flood_kind =
      hd->type == NGHTTP2_SETTINGS || hd->type == NGHTTP2_PING || hd->type == NGHTTP2_PRIORITY ||
      (hd->type == NGHTTP2_DATA && hd->length == 0 && (hd->flags & NGHTTP2_FLAG_END_STREAM) == 0);
  if (flood_kind && (hd->flags & NGHTTP2_FLAG_ACK) == 0 && !c->control.take()) {
    c->goaway(Goaway::kControlFlood, NGHTTP2_ENHANCE_YOUR_CALM);
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  return 0;
}

int Http2Connection::Impl::on_begin_headers(nghttp2_session* session, const nghttp2_frame* frame,
                                            void* user) {
  auto* c = static_cast<Impl*>(user);
  if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
  auto* s = new Stream(*c, frame->hd.stream_id);
  c->streams.push_back(s);
  ++c->open_streams;
  nghttp2_session_set_stream_user_data(session, frame->hd.stream_id, s);
  return 0;
}

int Http2Connection::Impl::on_header(nghttp2_session* session, const nghttp2_frame* frame,
                                     const uint8_t* name, size_t namelen, const uint8_t* value,
                                     size_t valuelen, uint8_t /*flags*/, void* user) {
  auto* c = static_cast<Impl*>(user);
  auto* s =
      static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
  if (s == nullptr) return 0;
  const std::string_view n(reinterpret_cast<const char*>(name), namelen);
  const std::string_view v(reinterpret_cast<const char*>(value), valuelen);
  const Limits& l = c->options.limits;
  s->header_bytes += namelen + valuelen + 32;  // RFC 9113 6.5.2's accounting
  // Past twice the advertised list size (head and trailers together) the block is an attack,
  // not a mistake: the connection ends. HPACK makes a small block decode large (one byte per
  // reference to a 4 KB table entry); this bounds what one stream makes us decode.
  if (s->header_bytes > 2 * (l.max_header_bytes + l.max_target_bytes) + 4096) {
    c->goaway(Goaway::kProtocol, NGHTTP2_ENHANCE_YOUR_CALM);
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  }
  if (frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;  // trailers: counted, dropped
  if (s->head_status != 0) return 0;                         // already refused: only counted
  if (n == ":method") {
    s->method = v;
  } else if (n == ":path") {
    if (v.size() > l.max_target_bytes) {
      s->head_status = 414;
      s->head_reason = "request target too long";
      return 0;
    }
    s->target = v;
  } else if (n == ":authority") {
    s->authority = v;
  } else if (n.empty() || n.front() != ':') {
    if (s->spans.size() / 3 >= l.max_headers) {
      s->head_status = 431;
      s->head_reason = "too many header fields";
      return 0;
    }
    if (s->header_bytes > l.max_header_bytes + l.max_target_bytes) {
      s->head_status = 431;
      s->head_reason = "header fields too large";
      return 0;
    }
    const auto at = static_cast<uint32_t>(s->fields.size());
    s->fields.append(n);
    s->fields.append(v);
    s->spans.insert(s->spans.end(),
                    {at, static_cast<uint32_t>(namelen), static_cast<uint32_t>(valuelen)});
  }
  return 0;
}

int Http2Connection::Impl::on_frame_recv(nghttp2_session* session, const nghttp2_frame* frame,
                                         void* user) {
  auto* c = static_cast<Impl*>(user);
  switch (frame->hd.type) {
    case NGHTTP2_HEADERS: {
      auto* s =
          static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
      if (s == nullptr || frame->headers.cat != NGHTTP2_HCAT_REQUEST) {
        if (s != nullptr && (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
          s->body_end = true;  // trailers end the body
          s->body_cv.notify_all();
        }
        return 0;
      }
      if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) s->body_end = true;
      if (c->open_streams + c->orphans >
          static_cast<int>(c->options.http2.max_concurrent_streams)) {
        // Open streams (this one included) and handlers of reset streams past the limit: a
        // client that resets streams to open more (the rapid reset's other half) gets
        // REFUSED_STREAM, as Go's server does. A client that keeps to the limit never does
        // (a handler still logging a completed answer is no orphan).
        s->rst_cause = Reset::kRefused;
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_REFUSED_STREAM);
        return 0;
      }
      c->start_handler(s);
      return 0;
    }
    case NGHTTP2_DATA: {
      if ((frame->hd.flags & NGHTTP2_FLAG_END_STREAM) == 0) return 0;
      auto* s =
          static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
      if (s != nullptr) {
        s->body_end = true;
        s->body_cv.notify_all();
      }
      return 0;
    }
    case NGHTTP2_RST_STREAM:
      c->metrics.http2.reset(Reset::kClient);
      if (!c->resets.take()) {
        c->goaway(Goaway::kRapidReset, NGHTTP2_ENHANCE_YOUR_CALM);
        return NGHTTP2_ERR_CALLBACK_FAILURE;
      }
      return 0;
    default:
      return 0;
  }
}

int Http2Connection::Impl::on_data_chunk(nghttp2_session* session, uint8_t /*flags*/, int32_t id,
                                         const uint8_t* data, size_t len, void* user) {
  auto* c = static_cast<Impl*>(user);
  auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, id));
  const uint64_t max_body = c->options.limits.max_body_bytes;
  if (s == nullptr || s->body_error != 0 || !s->running) {
    // Nobody will read it (the answer is out, or the body failed): the windows open at once.
    nghttp2_session_consume(session, id, len);
    return 0;
  }
  s->body_received += len;
  if (max_body != 0 && s->body_received > max_body) {
    s->fail_body(413);
    s->body_reason = "body larger than the server accepts";
    nghttp2_session_consume(session, id, len);
    return 0;
  }
  s->body_in.append({reinterpret_cast<const char*>(data), len});
  s->body_cv.notify_all();
  return 0;
}

int Http2Connection::Impl::on_stream_close(nghttp2_session* session, int32_t id,
                                           uint32_t error_code, void* user) {
  auto* c = static_cast<Impl*>(user);
  auto* s = static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, id));
  if (s == nullptr) return 0;
  s->in_session = false;
  --c->open_streams;
  if (error_code != NGHTTP2_NO_ERROR || !s->end_queued || s->queued_sent != s->queued.size()) {
    // Closed before the answer was all out: the client reset it, or the connection failed.
    s->reset = true;
    s->cancel();
    if (s->running && !s->orphan) {
      s->orphan = true;
      ++c->orphans;
    }
  }
  c->release(s);
  if (c->finished()) {
    c->idle_since = now_ns();
    if (c->draining.load(std::memory_order_relaxed)) c->stream.wake_reader();
  }
  return 0;
}

int Http2Connection::Impl::on_frame_send(nghttp2_session* session, const nghttp2_frame* frame,
                                         void* user) {
  auto* c = static_cast<Impl*>(user);
  // Resets and GOAWAYs are counted as they leave, by the cause whoever submitted them noted;
  // nghttp2's own (its RFC 9113 checks) are protocol errors, or refusals.
  if (frame->hd.type == NGHTTP2_GOAWAY) {
    c->metrics.http2.goaway(c->goaway_cause.value_or(Goaway::kProtocol));
    c->goaway_cause.reset();
    c->goaway_sent = true;
    if (frame->goaway.error_code != NGHTTP2_NO_ERROR) c->fatal = true;
    return 0;
  }
  if (frame->hd.type == NGHTTP2_RST_STREAM && frame->rst_stream.error_code != NGHTTP2_NO_ERROR) {
    auto* s =
        static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
    const uint32_t code = frame->rst_stream.error_code;
    c->metrics.http2.reset(
        s != nullptr && s->rst_cause
            ? *s->rst_cause
            : (code == NGHTTP2_REFUSED_STREAM ? Reset::kRefused : Reset::kProtocol));
    return 0;
  }
  // The answer is complete while the client still sends its body: RFC 9113 8.1 lets the
  // server stop it with RST_STREAM(NO_ERROR) (Go and nginx do).
  if ((frame->hd.type == NGHTTP2_DATA || frame->hd.type == NGHTTP2_HEADERS) &&
      (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0) {
    auto* s =
        static_cast<Stream*>(nghttp2_session_get_stream_user_data(session, frame->hd.stream_id));
    if (s != nullptr && !s->body_end) {
      nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
    }
  }
  return 0;
}

ssize_t Http2Connection::Impl::read_body(nghttp2_session* /*session*/, int32_t /*id*/,
                                         uint8_t* /*buf*/, size_t length, uint32_t* flags,
                                         nghttp2_data_source* source, void* /*user*/) {
  // No copy here: send_data() copies the frame's bytes straight into the write buffer.
  auto* s = static_cast<Stream*>(source->ptr);
  const uint64_t available = s->queued.size() - s->queued_sent + s->direct.size() + s->file_left;
  const auto n = static_cast<std::size_t>(std::min<uint64_t>(length, available));
  if (n == available && s->end_queued) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
  } else if (n == 0) {
    return NGHTTP2_ERR_DEFERRED;
  }
  *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
  return static_cast<ssize_t>(n);
}

int Http2Connection::Impl::send_data(nghttp2_session* /*session*/, nghttp2_frame* frame,
                                     const uint8_t* framehd, size_t length,
                                     nghttp2_data_source* source, void* user) {
  auto* c = static_cast<Impl*>(user);
  auto* s = static_cast<Stream*>(source->ptr);
  ByteBuffer& out = c->out;
  // nghttp2's mem_send goes on to the next DATA frame after this one without returning, as
  // long as the windows allow: with a client's 1 GiB windows, one call took every stream's
  // whole file into the batch (157 MiB for h2load's 100 downloads). Past a batch it waits:
  // mem_send returns, the batch is written, and the next call sends this frame.
  if (out.size() >= kWriteBatch) return NGHTTP2_ERR_WOULDBLOCK;
  out.append({reinterpret_cast<const char*>(framehd), 9});
  if (frame->data.padlen > 0) out.push_back(static_cast<char>(frame->data.padlen - 1));
  const std::size_t from_queue = std::min(length, s->queued.size() - s->queued_sent);
  out.append({s->queued.data() + s->queued_sent, from_queue});
  s->queued_sent += from_queue;
  if (s->queued_sent == s->queued.size()) {
    s->queued.clear();
    s->queued_sent = 0;
  }
  const std::size_t from_direct = std::min(length - from_queue, s->direct.size());
  out.append(s->direct.substr(0, from_direct));
  s->direct.remove_prefix(from_direct);
  const std::size_t from_file = length - from_queue - from_direct;
  if (from_file != 0) {
    // From the page cache straight into the batch (the one copy; TLS then encrypts it).
    char* at = out.extend(from_file);
    std::size_t got = 0;
    while (got < from_file && !s->file_short) {
      const ssize_t n = green::may_block_patiently([&] {
        return ::pread(s->file_fd, at + got, from_file - got,
                       static_cast<off_t>(s->file_offset + got));
      });
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        s->file_short = true;  // it shrank: the frame is padded out, the stream reset
        break;
      }
      got += static_cast<std::size_t>(n);
    }
    if (got < from_file) std::memset(at + got, 0, from_file - got);
    s->file_read += got;
    s->file_offset += from_file;
    s->file_left = s->file_short ? 0 : s->file_left - from_file;
  }
  if (frame->data.padlen > 1) {
    std::memset(out.extend(frame->data.padlen - 1), 0, frame->data.padlen - 1);
  }
  // Progress: a handler waiting on its direct bytes restarts its stall clock.
  if (from_direct != 0 || from_file != 0 || s->queued.size() - s->queued_sent < kQueueBytes) {
    s->room_cv.notify_all();
  }
  return 0;
}

bool Http2Connection::Impl::finished() { return handlers == 0 && open_streams == 0; }

void Http2Connection::Impl::start_handler(Stream* s) {
  s->running = true;
  ++handlers;
  metrics.http2.streams.fetch_add(1, std::memory_order_relaxed);
  metrics.http2.streams_total.fetch_add(1, std::memory_order_relaxed);
  green::go([this, s] { run_handler(s); });
}

void Http2Connection::Impl::run_handler(Stream* s) {
  green::this_green_thread::set_label("h2 stream", static_cast<uint64_t>(s->id));
  s->started_ns = now_ns();
  const Clock::time_point start = Clock::now();
  // The head: fields into Header views (the arena no longer grows), then the Request.
  s->headers.reserve(s->spans.size() / 3 + 1);
  for (std::size_t i = 0; i < s->spans.size(); i += 3) {
    const std::string_view f(s->fields.data() + s->spans[i], s->spans[i + 1] + s->spans[i + 2]);
    s->headers.push_back({f.substr(0, s->spans[i + 1]), f.substr(s->spans[i + 1])});
  }
  // :authority is the request's Host (RFC 9113 8.3.1): handlers look for Host. A Host that
  // differs from it makes the request malformed (the RFC's SHOULD; 400, as nginx answers a
  // Host it cannot reconcile).
  Request& r = s->request;
  std::string_view reason = s->head_reason;
  int head_status = s->head_status;
  const auto host = std::find_if(s->headers.begin(), s->headers.end(),
                                 [](const Header& f) { return iequals(f.name, "host"); });
  if (!s->authority.empty()) {
    if (host == s->headers.end()) {
      s->headers.push_back({"host", s->authority});
    } else if (!iequals(host->value, s->authority) && head_status == 0) {
      head_status = 400;
      reason = "Host differs from :authority";
    }
  }
  if (head_status == 0) {
    head_status =
        RequestParser::init_request(r, s->method, s->target, s->headers, s->decoded_path, &reason);
  }
  if (const uint64_t max_body = options.limits.max_body_bytes; head_status == 0 && max_body != 0) {
    // A declared length over --max-body is refused before the handler, as on HTTP/1.1 (nghttp2
    // has checked that it is a number, and will check it against the DATA).
    const std::string_view length = r.header("content-length");
    uint64_t n = 0;
    for (const char c : length) n = n > UINT64_MAX / 10 - 1 ? UINT64_MAX : n * 10 + (c - '0');
    if (n > max_body) {
      head_status = 413;
      reason = "declared body too large";
    }
  }
  r.set_remote_addr(remote);
  r.set_tls(tls);
  r.bind_connection(s);
  {
    std::lock_guard<green::Mutex> lock(mu);
    r.body().reset({}, s->body_end && s->body_in.empty() ? nullptr : s);
    s->expects_continue = !s->body_end && iequals(r.header("expect"), "100-continue");
  }
  if (const int64_t ht = options.handler_timeout.count(); ht != 0)
    s->deadline_ns = s->started_ns + ht;
  int status = 0;
  uint64_t bytes = 0;
  bool failed = false;
  {
    ResponseWriter w(*s, s->scratch_body, s->scratch_headers, r.method(), 1, true);
    if (head_status != 0) {
      w.send(head_status, "text/plain; charset=utf-8", error_text(head_status, reason) + "\n");
    } else {
      failed = server.dispatch(r, w);
    }
    int body_error = 0;
    std::string_view body_reason;
    {
      std::lock_guard<green::Mutex> lock(mu);
      body_error = s->body_error;
      body_reason = s->body_reason;
    }
    const bool timed_out = s->deadline_ns != 0 && now_ns() >= s->deadline_ns;
    // Decided once: an answer in time is not cut by the deadline passing while it is queued.
    if (!timed_out) s->deadline_ns = 0;
    if (s->context && !failed && !timed_out && !w.head_sent() && w.body_bytes() == 0 &&
        s->client_gone()) {
      w.drop(499);  // the client reset the stream and nothing was written: nginx's 499
    }
    if (s->cancel_context) {
      s->cancel_context();
    }
    bool rst = false;
    if (timed_out && !s->submitted) {
      w.drop(503);
      metrics.handler_timeouts.fetch_add(1, std::memory_order_relaxed);
      s->late = false;
      s->deadline_ns = 0;
      s->pending.clear();
      ResponseWriter timeout(*s, s->scratch_body, s->scratch_headers, r.method(), 1, true);
      timeout.send(503, "text/plain; charset=utf-8", "Timeout\n");
      timeout.finish();
      status = 503;
    } else if (timed_out || (failed && w.head_sent()) || w.broken() || w.status() == 499) {
      w.abort();
      rst = true;
      status = w.status();
    } else if (failed) {
      w.reset();
      w.send_status(500);
      w.finish();
      status = 500;
    } else if (body_error != 0 && !w.head_sent() && body_error != 499) {
      w.drop(body_error);
      ResponseWriter error(*s, s->scratch_body, s->scratch_headers, r.method(), 1, true);
      error.send(body_error, "text/plain; charset=utf-8",
                 error_text(body_error, body_reason) + "\n");
      error.finish();
      status = body_error;
    } else {
      w.finish();
      status = body_error == 499 ? 499 : w.status();
      bytes = w.body_bytes();
      rst = w.broken();
    }
    // A last push that fails on a stream still open (cannot happen once the deadline is
    // settled above; kept as the rule) resets it: a stream is never left without an end.
    if (!rst && !s->push(true)) rst = true;
    if (rst) {
      std::unique_lock<green::Mutex> lock(mu);
      if (!s->gone()) {
        s->rst_cause = Reset::kHandler;
        nghttp2_submit_rst_stream(session, NGHTTP2_FLAG_NONE, s->id,
                                  w.status() == 499 ? NGHTTP2_CANCEL : NGHTTP2_INTERNAL_ERROR);
      }
      s->pending.clear();
      lock.unlock();
      flush(false);
    }
  }
  metrics.record_request(status, Clock::now() - start);
  if (AccessLog* log = server.access_log(); log != nullptr && log->enabled()) {
    AccessRecord rec;
    fill_access_record(rec, &r, remote, status, bytes);
    log->submit(rec);
  }
  metrics.http2.streams.fetch_sub(1, std::memory_order_relaxed);
  std::unique_lock<green::Mutex> lock(mu);
  s->running = false;
  if (!dead) {
    // The body the handler left unread opens the windows now (what arrives later is consumed
    // as it arrives), also when it had ended or the stream is closed: nghttp2 returns a
    // closed stream's bytes to nobody, and a connection of 404s to small POSTs would run its
    // window down to nothing.
    s->consume(s->body_in.size() - s->body_in_read);
  }
  s->body_in = ByteBuffer();
  s->body_in_read = 0;
  if (s->orphan) --orphans;
  if (s->context) s->context.reset();
  s->cancel_context = nullptr;
  release(s);
  --handlers;
  if (handlers == 0) handlers_done.notify_all();
  const bool idle = finished();
  if (idle) idle_since = now_ns();
  const bool wake = (draining.load(std::memory_order_relaxed) || dead) && idle;
  lock.unlock();
  if (wake) stream.wake_reader();
}

void Http2Connection::Impl::flush(bool yield_first) {
  std::unique_lock<green::Mutex> lock(mu);
  if (writing || dead) return;
  if (nghttp2_session_want_write(session) == 0) return;
  writing = true;
  if (yield_first) {
    // Let the other streams of this batch hand in their answers: one write for all of them.
    lock.unlock();
    green::yield();
    lock.lock();
  }
  for (;;) {
    out.clear();
    while (out.size() < kWriteBatch) {
      const uint8_t* data = nullptr;
      const ssize_t n = nghttp2_session_mem_send(session, &data);
      if (n < 0) {
        fatal = true;
        break;
      }
      if (n == 0) break;
      out.append({reinterpret_cast<const char*>(data), static_cast<std::size_t>(n)});
    }
    if (out.empty()) break;
    lock.unlock();
    const bool ok = write_all(out.view());
    lock.lock();
    if (!ok) {
      dead = true;
      end_streams();
      break;
    }
  }
  writing = false;
  run_cancels(lock);
  const bool wake = fatal || dead || (goaway_sent && nghttp2_session_want_read(session) == 0);
  lock.unlock();
  if (wake) stream.wake_reader();
}

bool Http2Connection::Impl::write_all(std::string_view bytes) {
  // The write timeout bounds a stall: a client that takes nothing for that long is gone.
  const auto stall = options.write_timeout;
  if (tls == nullptr) {
    stream.set_write_deadline(stall.count() == 0 ? net::kNoDeadline : Clock::now() + stall);
    return stream.write(bytes.data(), bytes.size()) >= 0;
  }
  std::lock_guard<green::Mutex> lock(io_mu);
  stream.set_write_deadline(stall.count() == 0 ? net::kNoDeadline : Clock::now() + stall);
  return tls->write(stream, bytes.data(), bytes.size()) >= 0;
}

void Http2Connection::Impl::run_cancels(std::unique_lock<green::Mutex>& lock) {
  if (cancels.empty()) return;
  std::vector<CancelFn> run;
  run.swap(cancels);
  lock.unlock();
  for (const CancelFn& f : run) f();
  lock.lock();
}

void Http2Connection::Impl::end_streams() {
  for (Stream* s : streams) {
    s->reset = true;
    s->cancel();
  }
}

bool Http2Connection::Impl::feed(std::string_view bytes) {
  std::unique_lock<green::Mutex> lock(mu);
  const ssize_t rv = nghttp2_session_mem_recv(
      session, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  run_cancels(lock);
  if (rv < 0) {
    // A connection error nghttp2 could not answer itself (a callback's failure: our GOAWAYs
    // are queued; NGHTTP2_ERR_FLOODED: the client does not read our control answers).
    if (!goaway_sent) {
      goaway_cause = Goaway::kProtocol;
      nghttp2_session_terminate_session(session, NGHTTP2_PROTOCOL_ERROR);
      goaway_sent = true;
    }
    fatal = true;
    return false;
  }
  return true;
}

bool Http2Connection::Impl::read_batch() {
  char buf[kReadBytes];
  for (;;) {
    ssize_t n;
    if (tls != nullptr) {
      std::lock_guard<green::Mutex> lock(io_mu);
      n = tls->try_read(stream, buf, sizeof buf);
    } else {
      n = stream.try_read(buf, sizeof buf);
    }
    if (n == -EAGAIN) return true;
    if (n <= 0) return false;  // end of stream, reset
    if (!feed({buf, static_cast<std::size_t>(n)})) return false;
    if (static_cast<std::size_t>(n) < sizeof buf && tls == nullptr) return true;
  }
}

void Http2Connection::Impl::serve(std::string_view preread) {
  metrics.http2.connections.fetch_add(1, std::memory_order_relaxed);
  metrics.http2.connections_total.fetch_add(1, std::memory_order_relaxed);
  bool ok = preread.empty() || feed(preread);
  int64_t last_active = now_ns();
  flush(false);
  {
    std::lock_guard<green::Mutex> lock(mu);
    idle_since = now_ns();
  }
  bool shrunk = false;
  while (ok) {
    if (!read_batch()) break;
    flush(false);
    int64_t deadline = INT64_MAX;
    bool idle_deadline = false;
    Goaway why = Goaway::kIdle;
    {
      std::unique_lock<green::Mutex> lock(mu);
      if (fatal || dead) break;
      if (draining.load(std::memory_order_relaxed) && !goaway_sent) {
        goaway(Goaway::kDrain, NGHTTP2_NO_ERROR);
        lock.unlock();
        flush(false);
        lock.lock();
      }
      if (goaway_sent && finished()) break;
      if (nghttp2_session_want_read(session) == 0 && nghttp2_session_want_write(session) == 0)
        break;
      const int64_t now = now_ns();
      last_active = finished() ? idle_since : now;
      if (const int64_t idle = options.idle_timeout.count(); idle != 0) {
        // Busy: look again after that long (a stream may end meanwhile without a frame).
        deadline = finished() ? idle_since + idle : now + idle;
        idle_deadline = finished();
      }
      if (header_block_since != 0 && options.read_header_timeout.count() != 0) {
        const int64_t h = header_block_since + options.read_header_timeout.count();
        if (h < deadline) {
          deadline = h;
          idle_deadline = true;
          why = Goaway::kHeaderTimeout;
        }
      }
      if (now >= deadline && idle_deadline) {
        goaway(why, why == Goaway::kIdle ? NGHTTP2_NO_ERROR : NGHTTP2_PROTOCOL_ERROR);
        lock.unlock();
        flush(false);
        break;
      }
    }
    // Park until the client sends. Idle a while: give the stack pages back first.
    const int64_t now = now_ns();
    const int64_t shrink_at = last_active + std::chrono::nanoseconds(kShrinkAfter).count();
    const bool shrink_first = !shrunk && shrink_at < deadline;
    const int64_t until = shrink_first ? std::max(shrink_at, now) : deadline;
    stream.set_read_deadline(until == INT64_MAX
                                 ? net::kNoDeadline
                                 : Clock::now() + std::chrono::nanoseconds(until - now));
    const int rc = stream.wait_readable();
    if (rc == -ETIMEDOUT) {
      if (shrink_first) {
        green::this_green_thread::shrink_stack();
        release_idle_memory();
        shrunk = true;
      }
      continue;  // the loop decides: idle, header timeout, or wait on
    }
    shrunk = false;
    if (rc != 0) break;  // closed under us (forced drain), or a socket error
  }
  // The end: every stream still running fails its reads and writes and sees its context
  // cancelled; wait for their green threads (they hold pointers into this connection).
  std::unique_lock<green::Mutex> lock(mu);
  const bool goodbye = goaway_sent;
  dead = true;
  end_streams();
  run_cancels(lock);
  while (handlers != 0) handlers_done.wait(lock);
  if (goodbye && nghttp2_session_want_write(session) != 0) {
    // The GOAWAY (and what precedes it) goes out before the close: one last write.
    dead = false;
    lock.unlock();
    flush(false);
    lock.lock();
    dead = true;
  }
  metrics.http2.connections.fetch_sub(1, std::memory_order_relaxed);
}

// --- Http2Connection ---

Http2Connection::Http2Connection(Server& server, net::TcpStream& stream, net::TlsSession* tls,
                                 std::string_view remote)
    : impl_(std::make_unique<Impl>(server, stream, tls, remote)) {}

Http2Connection::~Http2Connection() = default;

void Http2Connection::serve(std::string_view preread) {
  if (impl_->start({}, nullptr)) impl_->serve(preread);
}

void Http2Connection::serve_upgraded(std::string_view settings, const Request& request,
                                     std::string_view preread) {
  if (impl_->start(settings, &request)) impl_->serve(preread);
}

void Http2Connection::drain() {
  impl_->draining.store(true, std::memory_order_relaxed);
  impl_->stream.wake_reader();
}

bool decode_base64url(std::string_view in, std::string* out) {
  out->clear();
  uint32_t acc = 0;
  int bits = 0;
  for (const char c : in) {
    int v;
    if (c >= 'A' && c <= 'Z') {
      v = c - 'A';
    } else if (c >= 'a' && c <= 'z') {
      v = c - 'a' + 26;
    } else if (c >= '0' && c <= '9') {
      v = c - '0' + 52;
    } else if (c == '-' || c == '+') {
      v = 62;
    } else if (c == '_' || c == '/') {
      v = 63;
    } else if (c == '=') {
      break;
    } else {
      return false;
    }
    acc = (acc << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out->push_back(static_cast<char>((acc >> bits) & 0xff));
    }
  }
  return true;
}

}  // namespace green::http
