// libFuzzer target for a whole connection: a real green::http::Connection (server/connection.cpp)
// served by a real Server inside a green::run runtime, fed over a socketpair, so the read
// loop, buffer compaction at every split, pipelining, Expect: 100-continue, error answers and
// the lingering close are fuzzed, not only the parser (tests/http/fuzz/request_fuzz.cpp).
//
// Input format (so that corpus files stay readable and libFuzzer can move a boundary by
// inserting or deleting three bytes):
//   * the bytes are sent as they are, except that every "|~|" marks a split: the harness sends
//     the bytes before it, waits until the server has read all of them (SIOCOUTQ on our end of
//     the socketpair reads 0, or 20 ms pass), then sends the rest. Each split is therefore a
//     separate read(2) on the server's side, wherever it falls (inside a request line, a CRLF,
//     a chunk size, between pipelined requests). At most kMaxChunks splits are honoured.
//   * an input that starts with "|~|" (an empty first chunk) is served by a second server with
//     small limits (64-byte target, 256-byte head, 4 headers, 4 KiB read buffer, 4 KiB body),
//     so buffer-full and limit edges are reached with short inputs.
//   * an input whose first bytes (after that "|~|") are HTTP/2's client preface is served by a
//     server with h2c on (with the normal or the small limits): the HTTP/2 connection
//     (server/http2.cpp) over nghttp2, its stream green threads and its writer. Such seeds are
//     the corpus's h2-* files (tests/http/fuzz/make_h2_corpus.py writes them).
// After the last chunk the harness shuts down its write side and reads until end of stream.
//
// Invariants checked (each failure prints what broke and aborts, which libFuzzer records as a
// crash with the input):
//   * the server reads everything it is sent without needing our end of stream to wake it
//     (within 5 s of the last chunk; it lingers after an error answer, reading, then closes);
//   * the connection ends: the server closes its side within kDeadline of our end of stream,
//     and its green thread returns (Server::serve_connection), leaving no open connection;
//   * what came back parses as a sequence of whole HTTP/1.1 responses: status line with a
//     status in 100..599, header lines, a body framed by Content-Length or chunked coding
//     (none for 1xx, 204, 304 and answers to HEAD), nothing after a Connection: close one;
//   * for HTTP/2: what came back is a sequence of whole frames, the server's SETTINGS first;
//     only the types a server sends (no PUSH_PROMISE, PRIORITY or unknown types), each on the
//     stream kind it belongs to, with the sizes RFC 9113 gives the control frames; every
//     header block decodes (one HPACK decoder over the connection, as a client has) and starts
//     with a :status in 100..599; after a GOAWAY, no stream above its last stream id;
//   * no crash, no sanitizer report, no leak (build-fuzz runs ASan+UBSan; LSan at exit).
// CONNECTION_FUZZ_SKIP_STALL_CHECK=1 drops the first check, to explore past a known stall;
// CONNECTION_FUZZ_VERBOSE=1 prints each input's size, chunks and answer size.
//
// One runtime and two servers live for the whole process (a runtime per input would cost
// milliseconds): green::run runs on a background thread whose main green thread holds the
// servers until exit. Routes: the benchmark endpoints, the observability ones and /static/*
// on a temporary directory; none of the slow demos (/sleep, /blocking, /work). Requests are
// access-logged to /dev/null.
//
//   make fuzz                                   # both targets, FUZZ_TIME seconds each
//   build-fuzz/tests/http/connection_fuzz -max_total_time=60 build-fuzz/corpus
// The ordinary test builds replay the committed corpus through the same function
// (tests/http/connection_fuzz_replay_test.cpp).
#include <fcntl.h>
#include <linux/sockios.h>
#include <nghttp2/nghttp2.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "green/green.h"
#include "green/http/access_log.h"
#include "green/http/router.h"
#include "green/http/server.h"
#include "green/net.h"
#include "green/sync.h"
#include "handlers/handlers.h"
#include "tests/http/fuzz/print_bytes.h"

namespace {

using Clock = std::chrono::steady_clock;
using green::http::Server;

constexpr std::string_view kSplit = "|~|";
constexpr std::size_t kMaxChunks = 64;
// Per input, from our end of stream to the server's: everything legitimate ends at once (the
// server reads end of stream), so this only trips on a stalled connection. Generous for the
// sanitizer builds on a loaded machine; the servers' own timeouts are longer still, so a stall
// is caught here rather than ended quietly by a timeout.
constexpr auto kDeadline = std::chrono::seconds(10);
constexpr auto kSplitWait = std::chrono::milliseconds(20);
// After the last chunk, how long the server may take to read all of it without our end of
// stream (it reads at once; see the drain below).
constexpr auto kDrainDeadline = std::chrono::seconds(5);
constexpr std::size_t kMaxResponseBytes = 32 << 20;

// The process-wide runtime and servers (see the top). Globals, so that LeakSanitizer sees
// them as reachable while the runtime's main green thread is parked.
struct Runtime {
  std::thread thread;
  green::http::Router* router = nullptr;
  green::handlers::AppState* context = nullptr;
  Server* normal = nullptr;
  Server* small = nullptr;
  Server* h2 = nullptr;
  Server* h2_small = nullptr;
  std::unique_ptr<green::http::AccessLog> access_log;
  std::string static_dir;
  std::atomic<int> ready{0};
  green::WaitGroup stop;
};
Runtime* g_runtime = nullptr;

green::http::ServerOptions options(bool small, bool h2) {
  green::http::ServerOptions o;
  o.listen = "127.0.0.1:0";  // never bound: connections come through serve_connection
  o.read_header_timeout = std::chrono::seconds(30);
  o.idle_timeout = std::chrono::seconds(30);
  o.write_timeout = std::chrono::seconds(30);
  o.shutdown_timeout = std::chrono::seconds(1);
  o.limits.max_body_bytes = 64 * 1024;
  // The HTTP/1.1 servers' oracle reads HTTP/1.1 responses: the h2c preface must stay a 505
  // there.
  o.http2.cleartext = h2;
  if (small) {
    o.limits.max_target_bytes = 64;
    o.limits.max_header_bytes = 256;
    o.limits.max_headers = 4;
    o.limits.max_body_bytes = 4 * 1024;
  }
  return o;
}

void stop_runtime() {
  Runtime* rt = g_runtime;
  if (rt == nullptr) return;
  rt->stop.done();
  rt->thread.join();
  std::error_code ec;
  std::filesystem::remove_all(rt->static_dir, ec);
  delete rt;
  g_runtime = nullptr;
}

Runtime& runtime() {
  static std::once_flag once;
  std::call_once(once, [] {
    auto* rt = new Runtime;
    g_runtime = rt;
    char dir[] = "/tmp/greenhttp-connection-fuzz-XXXXXX";
    if (mkdtemp(dir) == nullptr) std::abort();
    rt->static_dir = dir;
    std::ofstream(rt->static_dir + "/a.txt") << "static file\n";
    std::ofstream(rt->static_dir + "/index.html") << "<p>index</p>\n";
    // Every request is logged (its fuzzed target, Referer and User-Agent formatted and escaped)
    // to /dev/null: the formatting runs, and a long fuzzing run fills no disk.
    std::string error;
    rt->access_log = green::http::AccessLog::open("/dev/null", &error);
    if (!rt->access_log) {
      std::fprintf(stderr, "connection_fuzz: access log: %s\n", error.c_str());
      std::abort();
    }
    rt->stop.add(1);
    rt->thread = std::thread([rt] {
      green::Options o;
      o.procs = 2;
      green::run(o, [rt] {
        rt->router = new green::http::Router;
        rt->context = new green::handlers::AppState;
        green::http::FileServerOptions files;
        files.root = rt->static_dir;
        std::string files_error;
        rt->context->files = green::http::FileServer::create(files, &files_error);
        green::handlers::register_benchmarks(*rt->router);
        green::handlers::register_static(*rt->router, *rt->context);
        green::handlers::register_observability(*rt->router, *rt->context);
        rt->access_log->start();
        rt->normal = new Server(options(false, false), *rt->router, rt->access_log.get());
        rt->small = new Server(options(true, false), *rt->router, rt->access_log.get());
        rt->h2 = new Server(options(false, true), *rt->router, rt->access_log.get());
        rt->h2_small = new Server(options(true, true), *rt->router, rt->access_log.get());
        rt->context->server = rt->normal;
        rt->ready.store(1);
        rt->ready.notify_all();
        rt->stop.wait();
        delete rt->normal;  // waits for connection green threads (none are left)
        delete rt->small;
        delete rt->h2;
        delete rt->h2_small;
        delete rt->context;
        delete rt->router;
        rt->access_log->stop();
      });
    });
    rt->ready.wait(0);
    std::atexit(stop_runtime);
  });
  return *g_runtime;
}

using green::http::testing::print_bytes;

[[noreturn]] void fail(const char* what, const std::string& input, const std::string& output) {
  std::fprintf(stderr, "connection_fuzz: %s\n  input (%zu bytes): \"", what, input.size());
  print_bytes(input);
  std::fprintf(stderr, "\"\n  output (%zu bytes): \"", output.size());
  print_bytes(output);
  std::fputs("\"\n", stderr);
  std::abort();
}

// ---- The response stream checker -------------------------------------------------------

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i]))) {
      return false;
    }
  }
  return true;
}

struct Head {
  int status = 0;
  std::optional<uint64_t> content_length;
  bool chunked = false;
  bool close = false;
  std::size_t end = 0;  // offset just past the blank line
};

// Parses a response head at `at`; nullopt if it is not a well-formed one.
std::optional<Head> parse_head(std::string_view s, std::size_t at) {
  const std::size_t end = s.find("\r\n\r\n", at);
  if (end == std::string_view::npos) return std::nullopt;
  std::string_view head = s.substr(at, end + 2 - at);
  Head h;
  h.end = end + 4;
  const std::size_t eol = head.find("\r\n");
  std::string_view line = head.substr(0, eol);
  if (line.size() < 12 || (line.substr(0, 9) != "HTTP/1.1 " && line.substr(0, 9) != "HTTP/1.0 ")) {
    return std::nullopt;
  }
  for (std::size_t i = 9; i < 12; ++i) {
    if (line[i] < '0' || line[i] > '9') return std::nullopt;
  }
  h.status = (line[9] - '0') * 100 + (line[10] - '0') * 10 + (line[11] - '0');
  if (h.status < 100 || h.status > 599) return std::nullopt;
  if (line.size() > 12 && line[12] != ' ') return std::nullopt;
  std::string_view rest = head.substr(eol + 2);
  while (!rest.empty()) {
    const std::size_t e = rest.find("\r\n");
    std::string_view field = rest.substr(0, e);
    rest.remove_prefix(e + 2);
    const std::size_t colon = field.find(':');
    if (colon == std::string_view::npos || colon == 0) return std::nullopt;
    std::string_view name = field.substr(0, colon);
    std::string_view value = field.substr(colon + 1);
    while (!value.empty() && value.front() == ' ') value.remove_prefix(1);
    if (name.find_first_of(" \t\r\n") != std::string_view::npos) return std::nullopt;
    if (value.find_first_of("\r\n") != std::string_view::npos) return std::nullopt;
    if (iequals(name, "Content-Length")) {
      if (h.content_length || value.empty() || value.size() > 18) return std::nullopt;
      uint64_t n = 0;
      for (char c : value) {
        if (c < '0' || c > '9') return std::nullopt;
        n = n * 10 + static_cast<uint64_t>(c - '0');
      }
      h.content_length = n;
    } else if (iequals(name, "Transfer-Encoding")) {
      if (!iequals(value, "chunked")) return std::nullopt;
      h.chunked = true;
    } else if (iequals(name, "Connection")) {
      h.close = iequals(value, "close");
    }
  }
  if (h.chunked && h.content_length) return std::nullopt;
  return h;
}

// Offset just past a chunked body starting at `at`, or npos.
std::size_t skip_chunked(std::string_view s, std::size_t at) {
  for (int chunks = 0; chunks < 1'000'000; ++chunks) {
    const std::size_t eol = s.find("\r\n", at);
    if (eol == std::string_view::npos || eol == at || eol - at > 16) return std::string_view::npos;
    uint64_t n = 0;
    for (std::size_t i = at; i < eol; ++i) {
      const char c = s[i];
      int d = 0;
      if (c >= '0' && c <= '9') d = c - '0';
      else if (c >= 'a' && c <= 'f') d = c - 'a' + 10;
      else if (c >= 'A' && c <= 'F') d = c - 'A' + 10;
      else return std::string_view::npos;
      n = n * 16 + static_cast<uint64_t>(d);
    }
    at = eol + 2;
    if (n == 0) {
      // No trailers from this server: the blank line follows.
      return s.substr(at, 2) == "\r\n" ? at + 2 : std::string_view::npos;
    }
    if (n > s.size() - at || s.substr(at + n, 2) != "\r\n") return std::string_view::npos;
    at += n + 2;
  }
  return std::string_view::npos;
}

// True if s[at..] is a sequence of whole responses. `head_possible`: the input contained a
// HEAD request, whose answer has framing headers but no body; which responses those are is
// not known here, so both readings are tried (rarely ambiguous; `failed` memoises offsets).
bool parse_responses(std::string_view s, std::size_t at, bool head_possible,
                     std::vector<char>& failed, int depth) {
  while (at < s.size()) {
    if (failed[at] != 0 || depth > 100000) return false;
    const std::optional<Head> h = parse_head(s, at);
    if (!h) {
      failed[at] = 1;
      return false;
    }
    const bool bodiless = h->status < 200 || h->status == 204 || h->status == 304;
    if (bodiless) {
      if (h->close && h->end != s.size()) return false;
      at = h->end;
      ++depth;
      continue;
    }
    std::size_t with_body = std::string_view::npos;
    if (h->chunked) {
      with_body = skip_chunked(s, h->end);
    } else if (h->content_length) {
      if (*h->content_length <= s.size() - h->end) with_body = h->end + *h->content_length;
    } else {
      with_body = s.size();  // delimited by the close
    }
    if (head_possible && h->end != with_body &&
        (h->end == s.size() || s.substr(h->end, 7) == "HTTP/1.")) {
      // As the answer to a HEAD: no body.
      if (!(h->close && h->end != s.size()) &&
          parse_responses(s, h->end, head_possible, failed, depth + 1)) {
        return true;
      }
    }
    if (with_body == std::string_view::npos || (h->close && with_body != s.size())) {
      failed[at] = 1;
      return false;
    }
    at = with_body;
    ++depth;
  }
  return true;
}

// ---- The HTTP/2 frame stream checker ------------------------------------------------------

constexpr std::string_view kH2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

uint32_t be(std::string_view s, std::size_t at, int bytes) {
  uint32_t v = 0;
  for (int i = 0; i < bytes; ++i)
    v = v << 8 | static_cast<uint8_t>(s[at + static_cast<std::size_t>(i)]);
  return v;
}

// Decodes one header block with the connection's decoder: the :status it starts with
// (100..599), 0 if it starts with another field or is empty (trailers), -1 if it does not
// decode whole or has a bad :status.
int decode_header_block(nghttp2_hd_inflater* inflater, std::string_view block) {
  auto* in = reinterpret_cast<const uint8_t*>(block.data());
  std::size_t left = block.size();
  bool first = true;
  int status = 0;
  for (;;) {
    nghttp2_nv nv;
    int flags = 0;
    const ssize_t n = nghttp2_hd_inflate_hd2(inflater, &nv, &flags, in, left, 1);
    if (n < 0) return -1;
    in += n;
    left -= static_cast<std::size_t>(n);
    if ((flags & NGHTTP2_HD_INFLATE_EMIT) != 0) {
      if (first) {
        const std::string_view name(reinterpret_cast<const char*>(nv.name), nv.namelen);
        const std::string_view value(reinterpret_cast<const char*>(nv.value), nv.valuelen);
        if (name == ":status") {
          if (value.size() != 3 || value[0] < '1' || value[0] > '5' ||
              !std::isdigit(static_cast<unsigned char>(value[1])) ||
              !std::isdigit(static_cast<unsigned char>(value[2]))) {
            return -1;
          }
          status = (value[0] - '0') * 100 + (value[1] - '0') * 10 + (value[2] - '0');
        }
        first = false;
      } else if (std::string_view(reinterpret_cast<const char*>(nv.name), nv.namelen)
                     .starts_with(':')) {
        return -1;  // a pseudo-header after a regular field, or a second one
      }
    }
    if ((flags & NGHTTP2_HD_INFLATE_FINAL) != 0) {
      nghttp2_hd_inflate_end_headers(inflater);
      return status;
    }
    if (n == 0 && left == 0) return -1;  // ended inside a field
  }
}

// Why `out` is not what an HTTP/2 server may send (see the top), or null if it is.
const char* check_h2_frames(std::string_view out) {
  nghttp2_hd_inflater* inflater = nullptr;
  if (nghttp2_hd_inflate_new(&inflater) != 0) std::abort();
  struct Free {
    nghttp2_hd_inflater* p;
    ~Free() { nghttp2_hd_inflate_del(p); }
  } free_inflater{inflater};
  std::string block;          // a header block being gathered (HEADERS + CONTINUATION)
  uint32_t block_stream = 0;  // its stream, 0 when none is open
  bool block_ends_stream = false;
  std::unordered_map<uint32_t, bool> answered;  // stream -> its final (non-1xx) head was sent
  uint32_t goaway_last = UINT32_MAX;
  std::size_t at = 0;
  bool first = true;
  while (at < out.size()) {
    if (out.size() - at < 9) return "a frame header cut short";
    const uint32_t length = be(out, at, 3);
    const auto type = static_cast<uint8_t>(out[at + 3]);
    const auto flags = static_cast<uint8_t>(out[at + 4]);
    const uint32_t stream = be(out, at + 5, 4) & 0x7fffffffU;
    if (out.size() - at - 9 < length) return "a frame cut short";
    const std::string_view payload = out.substr(at + 9, length);
    at += 9 + length;
    if (first && (type != NGHTTP2_SETTINGS || (flags & NGHTTP2_FLAG_ACK) != 0)) {
      return "the first frame is not the server's SETTINGS";
    }
    first = false;
    if (block_stream != 0 && (type != NGHTTP2_CONTINUATION || stream != block_stream)) {
      return "a header block interrupted by another frame";
    }
    const bool control = type == NGHTTP2_SETTINGS || type == NGHTTP2_PING || type == NGHTTP2_GOAWAY;
    if (control != (stream == 0) && type != NGHTTP2_WINDOW_UPDATE) {
      return "a frame on the wrong kind of stream";
    }
    if (stream != 0 && stream % 2 == 0) return "a frame on an even (server-initiated) stream";
    if (stream != 0 && stream > goaway_last && type != NGHTTP2_WINDOW_UPDATE) {
      return "a stream answered above the last stream id of a GOAWAY";
    }
    switch (type) {
      case NGHTTP2_DATA:
        if (auto it = answered.find(stream); it == answered.end() || !it->second) {
          return "DATA before the stream's final head";
        }
        break;
      case NGHTTP2_HEADERS:
      case NGHTTP2_CONTINUATION: {
        std::string_view fragment = payload;
        if (type == NGHTTP2_HEADERS) {
          if ((flags & NGHTTP2_FLAG_PADDED) != 0 || (flags & NGHTTP2_FLAG_PRIORITY) != 0) {
            return "HEADERS with padding or priority (this server sends neither)";
          }
          block_ends_stream = (flags & NGHTTP2_FLAG_END_STREAM) != 0;
        } else if (block_stream == 0) {
          return "CONTINUATION without HEADERS";
        }
        block.append(fragment);
        block_stream = stream;
        if ((flags & NGHTTP2_FLAG_END_HEADERS) != 0) {
          const int status = decode_header_block(inflater, block);
          bool& final_sent = answered[stream];
          if (status < 0) return "a header block that does not decode, or a bad :status";
          if (final_sent) {
            if (status != 0 || !block_ends_stream) {
              return "a header block after the final one that is not trailers ending the stream";
            }
          } else if (status == 0) {
            return "a response head without :status first";
          } else if (status >= 200) {
            final_sent = true;
          } else if (block_ends_stream) {
            return "a 1xx head that ends the stream";
          }
          block.clear();
          block_stream = 0;
        }
        break;
      }
      case NGHTTP2_RST_STREAM:
        if (length != 4) return "RST_STREAM of a length other than 4";
        break;
      case NGHTTP2_SETTINGS:
        if ((flags & NGHTTP2_FLAG_ACK) != 0 ? length != 0 : length % 6 != 0) {
          return "SETTINGS of a bad length";
        }
        break;
      case NGHTTP2_PING:
        if (length != 8) return "PING of a length other than 8";
        break;
      case NGHTTP2_GOAWAY:
        if (length < 8) return "GOAWAY shorter than 8";
        if ((be(payload, 0, 4) & 0x7fffffffU) > goaway_last) {
          return "a GOAWAY raised the last stream id";
        }
        goaway_last = be(payload, 0, 4) & 0x7fffffffU;
        break;
      case NGHTTP2_WINDOW_UPDATE:
        if (length != 4) return "WINDOW_UPDATE of a length other than 4";
        if ((be(payload, 0, 4) & 0x7fffffffU) == 0) return "a WINDOW_UPDATE of 0";
        break;
      default:
        return "a frame type a server does not send (PUSH_PROMISE, PRIORITY, unknown)";
    }
  }
  if (block_stream != 0) return "the stream ended inside a header block";
  if (out.empty()) return "nothing back: not even the server's SETTINGS";
  return nullptr;
}

// For CONNECTION_FUZZ_VERBOSE: the frames that came back, as "type:stream" (H HEADERS,
// D DATA, R RST_STREAM, S SETTINGS, P PING, G GOAWAY, W WINDOW_UPDATE, C CONTINUATION).
void print_frame_types(std::string_view out) {
  std::string line = " ";
  for (std::size_t at = 0; out.size() - at >= 9;) {
    const uint32_t length = be(out, at, 3);
    const auto type = static_cast<uint8_t>(out[at + 3]);
    char one[24];
    std::snprintf(one, sizeof one, " %c:%u", type < 10 ? "DH?RS?PGWC"[type] : '?',
                  be(out, at + 5, 4) & 0x7fffffffU);
    line += one;
    if (out.size() - at - 9 < length) break;
    at += 9 + length;
  }
  std::fprintf(stderr, "%s\n", line.c_str());
}

// ---- Driving one connection ---------------------------------------------------------------

std::vector<std::string_view> chunks_of(std::string_view in, bool* small) {
  *small = in.substr(0, kSplit.size()) == kSplit;
  if (*small) in.remove_prefix(kSplit.size());
  std::vector<std::string_view> out;
  while (out.size() + 1 < kMaxChunks) {
    const std::size_t at = in.find(kSplit);
    if (at == std::string_view::npos) break;
    out.push_back(in.substr(0, at));
    in.remove_prefix(at + kSplit.size());
  }
  out.push_back(in);  // the rest, separators included once past kMaxChunks
  return out;
}

void read_available(int fd, std::string& out, bool* eof, const std::string& input) {
  char buf[16384];
  for (;;) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n > 0) {
      out.append(buf, static_cast<std::size_t>(n));
      if (out.size() > kMaxResponseBytes) fail("response stream over 32 MiB", input, out);
      continue;
    }
    if (n == 0 || errno == ECONNRESET) {
      *eof = true;
      return;
    }
    if (errno == EINTR) continue;
    return;  // EAGAIN
  }
}

// Reads what the server sent only once a lot is waiting (the server may soon block writing
// it). Reading earlier would hide stalls: on a socketpair every read of ours makes the server's
// socket writable, and that wakeup reports it readable too when our unread bytes still sit
// there, waking a connection that a real TCP peer would have left parked.
constexpr int kReadBackedUpBytes = 32 * 1024;
void read_if_backed_up(int fd, std::string& out, bool* eof, const std::string& input) {
  int pending = 0;
  if (::ioctl(fd, FIONREAD, &pending) != 0 || pending >= kReadBackedUpBytes) {
    read_available(fd, out, eof, input);
  }
}

void poll_once(int fd, short events, Clock::time_point until) {
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - Clock::now());
  pollfd p{fd, events, 0};
  ::poll(&p, 1, static_cast<int>(std::clamp<int64_t>(left.count(), 0, 1000)));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  Runtime& rt = runtime();
  const std::string input(reinterpret_cast<const char*>(data), size);
  bool small = false;
  const std::vector<std::string_view> chunks = chunks_of(input, &small);
  const bool h2 = std::string_view(input).substr(small ? kSplit.size() : 0).starts_with(kH2Preface);
  Server* server = h2 ? (small ? rt.h2_small : rt.h2) : (small ? rt.small : rt.normal);

  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) std::abort();
  const int client = fds[0];
  ::fcntl(client, F_SETFL, ::fcntl(client, F_GETFL) | O_NONBLOCK);
  // The first chunk is queued before the server sees the socket, as a client's first request
  // usually is by the time the server accepts: the connection's first read then finds all of it
  // at once, with the one readiness edge that registering the socket gives (over TCP a large
  // write arrives the same way). What does not fit the socket buffer follows below.
  std::string_view first = chunks[0];
  if (!first.empty()) {
    const ssize_t n = ::send(client, first.data(), first.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) first.remove_prefix(static_cast<std::size_t>(n));
  }
  std::atomic<int> finished{0};
  const int server_fd = fds[1];
  green::go([server, server_fd, &finished] {
    static const green::net::Address peer = *green::net::Address::parse("127.0.0.1:1");
    server->serve_connection(green::net::TcpStream::adopt(server_fd), peer);
    finished.store(1, std::memory_order_release);
  });

  std::string output;
  bool eof = false;
  bool peer_gone = false;  // our writes fail: the server closed (after an error answer)
  const Clock::time_point start = Clock::now();
  const Clock::time_point write_until = start + kDeadline;
  for (std::size_t i = 0; i < chunks.size() && !peer_gone && !eof; ++i) {
    std::string_view rest = i == 0 ? first : chunks[i];
    while (!rest.empty() && !peer_gone && !eof) {
      if (Clock::now() > write_until)
        fail("server stopped reading (write deadline)", input, output);
      const ssize_t n = ::send(client, rest.data(), rest.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        rest.remove_prefix(static_cast<std::size_t>(n));
      } else if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) {
        peer_gone = true;
      } else if (n < 0 && errno != EAGAIN && errno != EINTR) {
        std::abort();
      } else {
        read_available(client, output, &eof, input);
        poll_once(client, POLLIN | POLLOUT, write_until);
      }
    }
    if (i + 1 == chunks.size()) break;
    // The split: wait until the server has read everything sent so far.
    const Clock::time_point split_until = Clock::now() + kSplitWait;
    for (;;) {
      read_if_backed_up(client, output, &eof, input);
      int queued = 0;
      if (eof || ::ioctl(client, SIOCOUTQ, &queued) != 0 || queued == 0) break;
      if (Clock::now() > split_until) break;
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }
  // Before our end of stream: the server must read everything we sent by itself. Our
  // shutdown would wake a connection parked on the socket, hiding a stall (issue 11 section 2:
  // a read that filled the buffer at a request boundary left the rest unread until the idle
  // timeout); a server that has closed its side has nothing queued from us.
  const Clock::time_point drain_until = Clock::now() + kDrainDeadline;
  static const bool skip_stall_check = std::getenv("CONNECTION_FUZZ_SKIP_STALL_CHECK") != nullptr;
  while (!peer_gone && !eof && !skip_stall_check) {
    read_if_backed_up(client, output, &eof, input);
    int queued = 0;
    if (eof || ::ioctl(client, SIOCOUTQ, &queued) != 0 || queued == 0) break;
    if (Clock::now() > drain_until) {
      read_available(client, output, &eof, input);  // to show what was answered
      char what[200];
      std::snprintf(what, sizeof what,
                    "the server stopped reading: input is still queued for it (SIOCOUTQ %d) "
                    "5 s after the last write, before any end of stream (a stalled connection)",
                    queued);
      fail(what, input, output);
    }
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
  ::shutdown(client, SHUT_WR);
  const Clock::time_point read_until = Clock::now() + kDeadline;
  while (!eof) {
    if (Clock::now() > read_until) {
      fail("connection did not end within 10 s of the client's end of stream", input, output);
    }
    read_available(client, output, &eof, input);
    if (!eof) poll_once(client, POLLIN, read_until);
  }
  ::close(client);
  while (finished.load(std::memory_order_acquire) == 0) {
    if (Clock::now() > read_until) fail("connection green thread did not return", input, output);
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  }
  if (server->metrics().open_connections.load() != 0) {
    fail("open_connections is not 0 after the connection ended", input, output);
  }

  if (std::getenv("CONNECTION_FUZZ_VERBOSE") != nullptr) {
    std::fprintf(stderr, "connection_fuzz: %zu bytes in %zu chunk(s) -> %zu bytes back%s\n",
                 input.size(), chunks.size(), output.size(), h2 ? " (HTTP/2)" : "");
    if (h2) print_frame_types(output);
  }
  if (h2) {
    if (const char* why = check_h2_frames(output)) fail(why, input, output);
    return 0;
  }
  std::vector<char> failed(output.size() + 1, 0);
  const bool head_possible = input.find("HEAD") != std::string::npos;
  if (!parse_responses(output, 0, head_possible, failed, 0)) {
    fail("the response stream is not a sequence of whole HTTP/1.1 responses", input, output);
  }
  return 0;
}
