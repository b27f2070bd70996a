// libFuzzer target for green::http::Client's response handling: the hostile upstream of issue
// 14. A real Client (server/client.cpp, server/client_conn.cpp) inside a green::run runtime calls
// an in-process upstream over 127.0.0.1 that answers its request with the fuzz bytes, so the
// llhttp glue, the head and body limits, 1xx skipping, body framing, streamed reads in small
// pieces, deadlines and the pool's decisions (what is kept, what is found stale) are fuzzed
// together, through real sockets.
//
// Input format (readable corpus files; a boundary moves by inserting or deleting three bytes):
//   * byte 0 is a set of flags (printable seeds use '@'..'\x7f'):
//       bits 0-1  the first request: 0 GET, 1 HEAD, 2 POST with the body "hello",
//                 3 GET with "Connection: close";
//       bit 2     keep the connection open after the bytes (the client must rely on framing);
//                 without it the upstream closes once it has sent them;
//       bit 3     pause at each split (below), so that each part is a separate read;
//       bits 4-5  the size of each ClientResponse::read: 0 -> 16 KiB, 1 -> 1, 2 -> 7, 3 -> 100;
//       bit 7     the keep-alive race: a kept-open connection answers its next request (the
//                 second GET, when the pool reuses it) by closing, with an RST when bit 3 is
//                 also set, so that GET must be retried once on a new connection.
//     So '@' is a GET answered and closed, 'D' the same kept open, 'A' a HEAD, 'L' a kept-open
//     GET with pauses, 'P' a GET read a byte at a time.
//   * the rest is what the upstream writes once it has read the request's head (and body),
//     except that every "|~|" marks a split: the part before it is one write, the rest another
//     (with bit 3: once the part has reached the client's receive queue, and 1 ms more, so
//     that the client reads it alone). At most kMaxChunks parts; separators past that are sent
//     as bytes.
//
// Per input: a new Client with small limits (1 KiB head, 10 headers, 8 KiB body) sends the
// first request under a context deadline (2 s; 100 ms when the connection is kept open, where an
// unframed or short body can only end at the deadline), reads the body in pieces, closes the
// response, then sends a second GET on the same Client, which the upstream answers "ok" on any
// connection (a reused one included), so whatever the first exchange left in the pool is
// exercised. Then close_idle() and the Client's destruction.
//
// Invariants (each failure prints what broke, the input and a trace, and aborts, which libFuzzer
// records as a crash with the input):
//   * the first call (send, reads, close) ends within its deadline + kMargin; every input ends
//     within kInputLimit;
//   * !ok() has an error(); ok() has a status in 200..599 (1xx are skipped, a 101 refused) and
//     at most 10 headers; reads never return more than asked, end with 0 or -1, and keep
//     returning that; body_bytes() is their sum and never passes the body limit;
//   * a HEAD, 204 or 304 has no body (has_body() false, the first read 0); a response with a
//     Content-Length whose reads ended with 0 has exactly that many bytes; a chunked one has no
//     Content-Length;
//   * the pool only keeps a connection whose response was complete: idle_connections grows at
//     close() only when the reads ended with 0, the body was framed (length, chunks, or none),
//     the response said keep-alive (HTTP/1.1 without "close", HTTP/1.0 with "keep-alive") and
//     the request did not say Connection: close;
//   * the second GET always gets 200 "ok": a connection left in the pool with unsolicited
//     bytes, or closed by the upstream, is never handed a request that then reads them; one
//     that the upstream closes as the GET arrives on it (bit 7) has that GET retried;
//   * after close_idle(): open_connections and idle_connections are 0; after the Client is gone,
//     every connection it opened has been seen by the upstream and closed (the upstream reads
//     end of stream on each), and green::net::netpoll_stats().open_descriptors is back to its
//     value before the input (no descriptor leak);
//   * no crash, no sanitizer report, no leak (build-fuzz runs ASan+UBSan; LSan at exit).
//
// One runtime and one upstream listener live for the whole process (green::run on a background
// thread, as connection_fuzz.cpp does): a listener per input would cycle through the ephemeral
// ports, whose TIME_WAIT entries then pile up at thousands of inputs a second. The listener's
// accept loop hands each connection to the current input's Upstream.
//
//   make fuzz                               # every target, FUZZ_TIME seconds each
//   build-fuzz/tests/http/response_fuzz -dict=tests/http/fuzz/response.dict
//       -max_total_time=60 build-fuzz/corpus-response_fuzz     (one command line)
// RESPONSE_FUZZ_VERBOSE=1 prints each input's outcome. The ordinary test builds replay the
// committed corpus (tests/http/fuzz/response_corpus/) through the same function
// (tests/http/response_fuzz_replay_test.cpp).
#include "tests/http/fuzz/response_fuzz.h"

#include <linux/sockios.h>
#include <sys/ioctl.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "green/context.h"
#include "green/green.h"
#include "green/http/client.h"
#include "green/net.h"
#include "green/sync.h"
#include "tests/http/fuzz/print_bytes.h"

namespace {

using Clock = std::chrono::steady_clock;
using green::http::Client;
using green::http::ClientError;
using green::http::ClientRequest;
using green::http::ClientResponse;
using green::http::testing::ResponseFuzzOutcome;
using namespace std::chrono_literals;

constexpr std::string_view kSplit = "|~|";
constexpr std::size_t kMaxChunks = 64;
constexpr std::string_view kOkResponse = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

constexpr std::size_t kMaxHeadBytes = 1024;
constexpr std::size_t kMaxHeaders = 10;
constexpr uint64_t kMaxBodyBytes = 8 * 1024;

// The first call's deadline: a closing upstream ends every response at once, so 2 s is only a
// bound; a kept-open one leaves an unframed or short body waiting for the deadline, which
// should not cost the fuzzer seconds per input. Splits with pauses add 5 ms each (a pause
// costs about 1.5 ms).
constexpr auto kFirstDeadlineClosing = 2000ms;
constexpr auto kFirstDeadlineKeptOpen = 100ms;
constexpr auto kPausePerChunk = 5ms;
constexpr auto kSecondDeadline = 5000ms;
// How late past its deadline a call may end: generous for ASan on a loaded machine. The
// client's own read/write timeouts (30 s by default) are far past it, so a call that ignores
// its context's deadline fails here.
constexpr auto kMargin = 1500ms;
constexpr auto kUpstreamTimeout = 5000ms;  // each socket operation of the upstream
constexpr auto kSettle = 5000ms;           // for the upstream's connections to end
// Under make fuzz's -timeout=30, so that a stuck input is reported with this file's message.
constexpr auto kInputLimit = 20s;

struct Flags {
  int method = 0;  // 0 GET, 1 HEAD, 2 POST, 3 GET with Connection: close
  bool keep_open = false;
  bool pause = false;
  std::size_t piece = 16 * 1024;
  bool race = false;
};

Flags flags_of(unsigned char b) {
  static constexpr std::size_t kPieces[] = {16 * 1024, 1, 7, 100};
  Flags f;
  f.method = b & 3;
  f.keep_open = (b & 4) != 0;
  f.pause = (b & 8) != 0;
  f.piece = kPieces[(b >> 4) & 3];
  f.race = (b & 0x80) != 0;
  return f;
}

std::vector<std::string_view> chunks_of(std::string_view in) {
  std::vector<std::string_view> out;
  while (out.size() + 1 < kMaxChunks) {
    const std::size_t at = in.find(kSplit);
    if (at == std::string_view::npos) break;
    out.push_back(in.substr(0, at));
    in.remove_prefix(at + kSplit.size());
  }
  out.push_back(in);
  return out;
}

// ---- Reporting ------------------------------------------------------------------------------

using green::http::testing::print_bytes;

[[noreturn]] void fail(const std::string& what, std::string_view input, const std::string& trace) {
  std::fprintf(stderr, "response_fuzz: %s\n  input (%zu bytes): \"", what.c_str(), input.size());
  print_bytes(input);
  std::fprintf(stderr, "\"\n  trace: %s\n", trace.c_str());
  std::abort();
}

// ---- The upstream ---------------------------------------------------------------------------

// One input's upstream: its first connection answers with the fuzz bytes, every other request
// (on it, when kept open, or on a later connection) with kOkResponse.
struct Upstream {
  std::vector<std::string_view> chunks;  // into the caller's input, alive until the input ends
  bool keep_open = false;
  bool pause = false;
  bool race = false;
  int accepted = 0;  // under Runtime::mu
  std::atomic<int> running{0};
  std::atomic<bool> first_done{false};  // the fuzz bytes are written (and, closing, closed)
  std::atomic<int> ok_answers{0};
};

struct Runtime {
  std::thread thread;
  green::net::TcpListener listener;
  uint16_t port = 0;
  green::Mutex mu;
  std::shared_ptr<Upstream> current GREEN_GUARDED_BY(mu);
  std::atomic<int> ready{0};
  green::WaitGroup stop;
  green::WaitGroup accept_loop;
};
Runtime* g_runtime = nullptr;

// Polls `done` from a green thread, backing off to 2 ms, until it holds or `limit` passes.
template <typename Pred>
bool wait_for(Pred&& done, std::chrono::nanoseconds limit) {
  const Clock::time_point until = Clock::now() + limit;
  auto pause = std::chrono::microseconds(50);
  while (!done()) {
    if (Clock::now() >= until) return false;
    green::sleep_for(pause);
    pause = std::min<std::chrono::microseconds>(pause * 2, 2ms);
  }
  return true;
}

// Until what was written has reached the client's receive queue, where its next read (or its
// pool's peek) finds it. Over loopback a segment is delivered as it is transmitted, so "nothing
// left unsent" (SIOCOUTQNSD 0) is the condition; the acknowledgement (SIOCOUTQ 0) would come
// only with the client's delayed ACK, up to 40 ms later, when it is not reading. Then 1 ms more,
// for the receiving side's softirq when the kernel defers it to ksoftirqd.
void wait_delivered(const green::net::TcpStream& s) {
  (void)wait_for(
      [&] {
        int unsent = 0;
        return ::ioctl(s.fd(), SIOCOUTQNSD, &unsent) != 0 || unsent == 0;
      },
      100ms);
  green::sleep_for(1ms);
}

bool iequals_prefix(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && green::http::iequals(s.substr(0, prefix.size()), prefix);
}

// Reads one request (its head, and a body of its Content-Length) from s; false at end of
// stream, on an error or past the deadline. The client never pipelines, so nothing follows.
bool read_request(green::net::TcpStream& s, std::string& buf) {
  char tmp[4096];
  auto more = [&] {
    s.set_read_deadline(green::net::deadline_after(kUpstreamTimeout));
    const ssize_t n = s.read(tmp, sizeof tmp);
    if (n <= 0 || buf.size() > 64 * 1024) return false;
    buf.append(tmp, static_cast<std::size_t>(n));
    return true;
  };
  std::size_t end;
  while ((end = buf.find("\r\n\r\n")) == std::string::npos) {
    if (!more()) return false;
  }
  uint64_t body = 0;
  std::string_view head(buf.data(), end + 2);
  for (std::size_t at = head.find("\r\n") + 2; at < head.size();) {
    const std::size_t eol = head.find("\r\n", at);
    std::string_view line = head.substr(at, eol - at);
    if (iequals_prefix(line, "Content-Length:")) {
      body = std::strtoull(std::string(line.substr(15)).c_str(), nullptr, 10);
    }
    at = eol + 2;
  }
  const std::size_t total = end + 4 + static_cast<std::size_t>(std::min<uint64_t>(body, 1 << 20));
  while (buf.size() < total) {
    if (!more()) return false;
  }
  buf.erase(0, total);
  return true;
}

bool write_all(green::net::TcpStream& s, std::string_view bytes) {
  s.set_write_deadline(green::net::deadline_after(kUpstreamTimeout));
  return s.write(bytes.data(), bytes.size()) == static_cast<ssize_t>(bytes.size());
}

void serve_ok(Upstream& up, green::net::TcpStream& s, std::string& buf) {
  while (read_request(s, buf)) {
    up.ok_answers.fetch_add(1, std::memory_order_relaxed);
    if (!write_all(s, kOkResponse)) return;
  }
}

void serve_fuzz(Upstream& up, green::net::TcpStream& s, std::string& buf) {
  if (read_request(s, buf)) {
    for (std::size_t i = 0; i < up.chunks.size(); ++i) {
      if (!up.chunks[i].empty() && !write_all(s, up.chunks[i])) break;
      if (up.pause && i + 1 < up.chunks.size()) {
        wait_delivered(s);
      }
    }
  }
  if (!up.keep_open) {
    // Our FIN reaches the client before the second GET looks at its pool: the stale
    // connection is then found by its peek (a later close would be the keep-alive race,
    // retried; both are fine, but one outcome per input keeps crashes reproducible).
    (void)s.shutdown(SHUT_WR);
  }
  wait_delivered(s);
  up.first_done.store(true, std::memory_order_release);
  if (!up.keep_open) return;
  if (up.race) {
    // The server's idle timeout fires just as the client reuses the connection.
    if (read_request(s, buf) && up.pause) s.set_linger_zero();
    return;
  }
  serve_ok(up, s, buf);
}

void accept_loop(Runtime& rt) {
  for (;;) {
    green::net::TcpStream s;
    const int rc = rt.listener.accept(&s);
    if (rc == -ECANCELED) return;
    if (rc != 0) {
      green::sleep_for(1ms);
      continue;
    }
    std::shared_ptr<Upstream> up;
    bool first = false;
    {
      green::MutexGuard g(rt.mu);
      up = rt.current;
      if (up != nullptr) {
        first = up->accepted++ == 0;
        up->running.fetch_add(1, std::memory_order_relaxed);
      }
    }
    if (up == nullptr) continue;  // between inputs (none are expected): closed
    green::go([up, first, s = std::move(s)]() mutable {
      std::string buf;
      if (first) {
        serve_fuzz(*up, s, buf);
      } else {
        serve_ok(*up, s, buf);
      }
      s.close();
      up->running.fetch_sub(1, std::memory_order_release);
    });
  }
}

void stop_runtime() {
  Runtime* rt = g_runtime;
  if (rt == nullptr) return;
  rt->stop.done();
  rt->thread.join();
  delete rt;
  g_runtime = nullptr;
}

Runtime& runtime() {
  static std::once_flag once;
  std::call_once(once, [] {
    auto* rt = new Runtime;
    g_runtime = rt;
    rt->stop.add(1);
    rt->thread = std::thread([rt] {
      green::Options o;
      o.procs = 2;
      green::run(o, [rt] {
        const auto at = green::net::Address::parse("127.0.0.1:0");
        if (!at || green::net::TcpListener::listen(*at, &rt->listener) != 0) {
          std::fputs("response_fuzz: cannot listen on 127.0.0.1\n", stderr);
          std::abort();
        }
        rt->port = rt->listener.local_address().port();
        rt->accept_loop.add(1);
        green::go([rt] {
          accept_loop(*rt);
          rt->accept_loop.done();
        });
        rt->ready.store(1);
        rt->ready.notify_all();
        rt->stop.wait();
        rt->listener.close();
        rt->accept_loop.wait();
      });
    });
    rt->ready.wait(0);
    std::atexit(stop_runtime);
  });
  return *g_runtime;
}

// ---- The client's side ----------------------------------------------------------------------

bool has_token(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    const std::size_t comma = list.find(',');
    std::string_view item = list.substr(0, comma);
    while (!item.empty() && (item.front() == ' ' || item.front() == '\t')) item.remove_prefix(1);
    while (!item.empty() && (item.back() == ' ' || item.back() == '\t')) item.remove_suffix(1);
    if (green::http::iequals(item, token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

// Whether the response lets the connection carry another request (RFC 9112 9.3): HTTP/1.1
// unless a Connection header says "close"; HTTP/1.0 (and 0.9, 2.0: minor not 1) only with
// "keep-alive".
bool said_keep_alive(const ClientResponse& r) {
  bool close = false;
  bool keep_alive = false;
  for (const green::http::Header& h : r.headers()) {
    if (!green::http::iequals(h.name, "Connection")) continue;
    close = close || has_token(h.value, "close");
    keep_alive = keep_alive || has_token(h.value, "keep-alive");
  }
  return r.version_minor() == 1 ? !close : keep_alive && !close;
}

bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) != 0 ||
           std::string_view("!#$%&'*+-.^_`|~").find(c) != std::string_view::npos;
  });
}

bool has_control(std::string_view s) {
  return s.find_first_of(std::string_view("\r\n\0", 3)) != s.npos;
}

// What the client hands its caller must not smuggle anything into a response a proxy builds
// from it: header names are tokens, values hold no CR, LF or NUL, the reason no CR or LF. (llhttp
// lets other control bytes, NUL included, through in the reason phrase, as Go's ReadResponse
// does; RFC 9112 4 allows only HTAB, SP, VCHAR and obs-text there, so a proxy should send its
// own reason rather than the upstream's.)
bool valid_fields(const ClientResponse& r) {
  if (r.reason().find_first_of("\r\n") != std::string_view::npos) return false;
  return std::all_of(r.headers().begin(), r.headers().end(), [](const green::http::Header& h) {
    return is_token(h.name) && !has_control(h.value);
  });
}

std::string escaped(std::string_view s) {
  std::string out;
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += ch;
    } else {
      char b[5];
      std::snprintf(b, sizeof b, "\\x%02x", c);
      out += b;
    }
  }
  return out;
}

std::string describe(const ClientResponse& r) {
  std::string s = "ok=" + std::to_string(r.ok()) +
                  " error=" + green::http::client_error_name(r.error()) +
                  " status=" + std::to_string(r.status());
  if (!r.error_message().empty()) s += " (" + r.error_message() + ")";
  if (r.status() != 0) {
    s += " 1." + std::to_string(r.version_minor()) + " cl=" + std::to_string(r.content_length()) +
         " chunked=" + std::to_string(r.chunked()) + " has_body=" + std::to_string(r.has_body()) +
         " headers=" + std::to_string(r.headers().size()) + " [";
    for (const green::http::Header& h : r.headers()) {
      s += escaped(h.name) + ": " + escaped(h.value) + "; ";
    }
    s += "]";
  }
  return s;
}

long ms_since(Clock::time_point t) {
  return static_cast<long>(
      std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count());
}

ResponseFuzzOutcome drive(std::string_view input) {
  Runtime& rt = runtime();
  const Flags f = flags_of(input.empty() ? 0 : static_cast<unsigned char>(input[0]));
  const std::string_view response = input.empty() ? input : input.substr(1);
  std::string trace;
  auto check = [&](bool holds, const char* what) {
    if (!holds) fail(what, input, trace);
  };

  const Clock::time_point input_start = Clock::now();
  // Appended piecewise: GCC 12's -Wrestrict misfires on "literal" + std::string&&.
  auto stamp = [&] {
    trace += '[';
    trace += std::to_string(ms_since(input_start));
    trace += " ms] ";
  };
  const uint64_t descriptors_before = green::net::netpoll_stats().open_descriptors;
  auto up = std::make_shared<Upstream>();
  up->chunks = chunks_of(response);
  up->keep_open = f.keep_open;
  up->pause = f.pause;
  up->race = f.race;
  {
    green::MutexGuard g(rt.mu);
    rt.current = up;
  }
  static const char* kMethods[] = {"GET", "HEAD", "POST", "GET+close"};
  trace = std::string(kMethods[f.method]) + (f.keep_open ? " kept-open" : " closing") +
          (f.pause ? " paused" : "") + (f.race ? " race" : "") +
          " piece=" + std::to_string(f.piece) + " chunks=" + std::to_string(up->chunks.size()) +
          "; ";

  ResponseFuzzOutcome out;
  uint64_t dials = 0;
  {
    green::http::ClientOptions o;
    o.max_response_header_bytes = kMaxHeadBytes;
    o.max_response_headers = kMaxHeaders;
    o.max_response_body_bytes = kMaxBodyBytes;
    Client client(o);
    const std::string base = "http://127.0.0.1:" + std::to_string(rt.port);

    // ---- The first call: the fuzz bytes.
    std::chrono::nanoseconds deadline = kFirstDeadlineClosing;
    if (f.keep_open) deadline = kFirstDeadlineKeptOpen;
    if (f.pause) deadline += kPausePerChunk * static_cast<int64_t>(up->chunks.size());
    const std::string url = base + "/first";
    ClientRequest req;
    req.url = url;
    const green::http::Header close_header[] = {{"Connection", "close"}};
    if (f.method == 1) req.method = "HEAD";
    if (f.method == 2) {
      req.method = "POST";
      req.body = "hello";
    }
    if (f.method == 3) req.headers = close_header;
    const bool head = f.method == 1;
    {
      auto [ctx, cancel] = green::with_timeout(green::Context::background(), deadline);
      const Clock::time_point start = Clock::now();
      // Before the call: the connection goes back to the pool as soon as its body ends (in a
      // read(), or inside send() for a body-less response), not only at close().
      const int64_t idle_before = client.stats().idle_connections;
      ClientResponse resp = client.send(ctx, req);
      trace += "first: " + describe(resp);
      const bool head_ok = resp.ok();
      check(resp.ok() || resp.error() != ClientError::kNone, "!ok() without an error()");
      if (resp.ok()) {
        check(resp.status() >= 200 && resp.status() <= 599,
              "ok() with a status outside 200..599 (1xx must be skipped, 101 refused)");
        check(resp.headers().size() <= kMaxHeaders, "more headers than max_response_headers");
        check(valid_fields(resp),
              "a header name that is not a token, a value holding CR, LF or NUL, or a reason "
              "holding CR or LF (a proxy copying it would smuggle it)");
        check(!resp.chunked() || resp.content_length() == -1,
              "a chunked response with a Content-Length");
        if (head || resp.status() == 204 || resp.status() == 304) {
          check(!resp.has_body(), "has_body() for a HEAD, 204 or 304");
        }
      }
      std::vector<char> buf(f.piece);
      uint64_t sum = 0;
      long n = 0;
      bool first_read = true;
      for (;;) {
        n = resp.read(std::span<char>(buf.data(), buf.size()));
        if (!resp.ok()) check(n == -1, "read() of a failed response did not return -1");
        if (first_read && head_ok && !resp.has_body()) {
          check(n == 0, "the first read() of a body-less response did not return 0");
        }
        first_read = false;
        if (n <= 0) break;
        check(static_cast<std::size_t>(n) <= buf.size(), "read() returned more than asked");
        sum += static_cast<uint64_t>(n);
        check(sum <= kMaxBodyBytes, "more body bytes than max_response_body_bytes");
      }
      check(n == 0 || n == -1, "read() ended with neither 0 nor -1");
      check(resp.read(std::span<char>(buf.data(), buf.size())) == n,
            "read() after the end returned something else");
      check(resp.body_bytes() == sum, "body_bytes() is not the sum of the reads");
      if (n == -1) check(resp.error() != ClientError::kNone, "read() -1 without an error()");
      trace += " -> read " + std::to_string(sum) + " then " + std::to_string(n) +
               " error=" + green::http::client_error_name(resp.error());
      if (resp.ok() && n == 0 && resp.has_body() && resp.content_length() >= 0) {
        check(resp.body_bytes() == static_cast<uint64_t>(resp.content_length()),
              "a complete body is not Content-Length bytes long");
      }
      // What the pool may do with the connection, decided from the response alone.
      const bool framed = !resp.has_body() || resp.content_length() >= 0 || resp.chunked();
      const bool may_pool = resp.ok() && n == 0 && resp.error() == ClientError::kNone && framed &&
                            said_keep_alive(resp) && f.method != 3;
      out.ok = head_ok;
      out.error = resp.error();
      out.status = resp.status();
      out.content_length = resp.content_length();
      out.body_bytes = resp.body_bytes();
      out.last_read = n;
      resp.close();
      out.pooled = client.stats().idle_connections > idle_before;
      trace += out.pooled ? ", pooled" : ", not pooled";
      trace += " (" + std::to_string(ms_since(start)) + " ms); ";
      check(!out.pooled || may_pool,
            "the pool kept a connection whose response was incomplete, unframed or not "
            "keep-alive");
      check(Clock::now() - start <= deadline + kMargin,
            "the first call ended more than 1.5 s after its context's deadline");
      cancel();
    }
    stamp();
    if (!wait_for([&] { return up->first_done.load(std::memory_order_acquire); }, 10s)) {
      fail("the upstream did not finish writing the fuzz bytes within 10 s", input, trace);
    }

    // ---- The second call: "ok" from wherever the pool sends it.
    {
      const green::http::ClientStats before = client.stats();
      auto [ctx, cancel] = green::with_timeout(green::Context::background(), kSecondDeadline);
      const Clock::time_point start = Clock::now();
      ClientResponse resp = client.get(ctx, base + "/second");
      const green::http::ClientStats after = client.stats();
      out.reused = after.pool_hits > before.pool_hits;
      out.retried = after.retries > before.retries;
      stamp();
      trace += "second: " + describe(resp) + (out.reused ? " reused" : " new") +
               (out.retried ? " retried" : "");
      const std::optional<std::string> body = resp.read_all();
      trace += " body=" + (body ? "\"" + *body + "\"" : std::string("none"));
      trace += " (" + std::to_string(ms_since(start)) + " ms); ";
      check(resp.ok() && resp.status() == 200 && body && *body == "ok",
            "the second GET did not get the upstream's 200 \"ok\" (what the first left in the "
            "pool leaked into it)");
      if (f.race && f.keep_open && out.reused) {
        check(out.retried,
              "a GET on a reused connection that the upstream closed before any byte of the "
              "response was not retried on a new one");
      }
      resp.close();
      cancel();
    }

    client.close_idle();
    const green::http::ClientStats s = client.stats();
    dials = s.pool_misses;
    trace += "open=" + std::to_string(s.open_connections) +
             " idle=" + std::to_string(s.idle_connections) + " dials=" + std::to_string(dials);
    check(s.open_connections == 0 && s.idle_connections == 0,
          "connections still counted open or idle after every response closed and close_idle()");
  }

  // Every connection the client opened reached the upstream and was closed by the client.
  auto accepted = [&] {
    green::MutexGuard g(rt.mu);
    return static_cast<uint64_t>(up->accepted);
  };
  if (!wait_for([&] { return accepted() >= dials; }, kSettle)) {
    fail("a connection the client opened never reached the upstream", input, trace);
  }
  {
    green::MutexGuard g(rt.mu);
    rt.current = nullptr;
    trace += " accepted=" + std::to_string(up->accepted) + " ";
  }
  stamp();
  if (!wait_for([&] { return up->running.load(std::memory_order_acquire) == 0; }, kSettle)) {
    fail(
        "an upstream connection is still open 5 s after the Client was destroyed (a client "
        "connection leaked)",
        input, trace);
  }
  if (!wait_for([&] { return green::net::netpoll_stats().open_descriptors == descriptors_before; },
                kSettle)) {
    fail("open descriptors did not return to their count before the input (" +
             std::to_string(descriptors_before) + " -> " +
             std::to_string(green::net::netpoll_stats().open_descriptors) + ")",
         input, trace);
  }
  stamp();
  if (std::getenv("RESPONSE_FUZZ_VERBOSE") != nullptr) {
    std::fprintf(stderr, "response_fuzz: %s\n", trace.c_str());
  }
  return out;
}

}  // namespace

namespace green::http::testing {

ResponseFuzzOutcome run_response_fuzz_input(std::string_view input) {
  (void)runtime();
  ResponseFuzzOutcome out;
  std::atomic<int> finished{0};
  green::go([&] {
    out = drive(input);
    finished.store(1, std::memory_order_release);
  });
  const Clock::time_point until = Clock::now() + kInputLimit;
  while (finished.load(std::memory_order_acquire) == 0) {
    if (Clock::now() > until) fail("the input did not finish within 20 s", input, "(stuck)");
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  return out;
}

}  // namespace green::http::testing

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  (void)green::http::testing::run_response_fuzz_input(
      std::string_view(reinterpret_cast<const char*>(data), size));
  return 0;
}
