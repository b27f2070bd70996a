// Middleware through real sockets: composition order (global and per route), the router's
// 404/405 through global middleware, recover(), request_id(), access_log() and gzip(), each
// against an in-process Server on 127.0.0.1 with its own Router, and real clients (curl,
// python3) where they add something.
#include "green/http/middleware.h"

#include <atomic>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <spdlog/sinks/ostream_sink.h>
#include <spdlog/spdlog.h>
#include <zlib.h>

#include "green/http/access_log.h"
#include "green/http/router.h"
#include "green/http/server.h"
#include "tests/http/http_test_util.h"

namespace green::http {
namespace {

using namespace std::chrono_literals;
using testing::Client;
using testing::get;
using testing::kRoutesOnly;
using testing::run_command;
using testing::TestServer;

// One request on a new connection; the response.
std::optional<Client::Response> fetch(uint16_t port, std::string_view target,
                                      std::string_view extra = "") {
  Client c(port);
  if (!c.send(get(port, target, extra))) return std::nullopt;
  return c.read_response();
}

// A middleware that writes "name(" before the inner handler and ")name" after it.
Middleware tag(std::string name) {
  return [name](Handler next) -> Handler {
    return [name, next = std::move(next)](Request& r, ResponseWriter& w) {
      w.write(name + "(");
      next(r, w);
      w.write(")" + name);
    };
  };
}

void hello(Request&, ResponseWriter& w) { w.write("h"); }

// Captures what spdlog's default logger writes during a test.
class LogCapture {
 public:
  LogCapture() {
    auto sink = std::make_shared<spdlog::sinks::ostream_sink_mt>(out_);
    previous_ = spdlog::default_logger();
    spdlog::set_default_logger(std::make_shared<spdlog::logger>("capture", sink));
  }
  ~LogCapture() { spdlog::set_default_logger(previous_); }
  std::string text() {
    spdlog::default_logger()->flush();
    return out_.str();
  }
  int count(std::string_view needle) {
    const std::string t = text();
    int n = 0;
    for (std::size_t at = t.find(needle); at != std::string::npos; at = t.find(needle, at + 1)) {
      ++n;
    }
    return n;
  }

 private:
  std::ostringstream out_;
  std::shared_ptr<spdlog::logger> previous_;
};

// ---- composition ----

TEST(Middleware, GlobalThenRouteMiddlewareComposeOutermostFirst) {
  TestServer s(kRoutesOnly, [](Router& r, AccessLog*) {
    r.use(tag("a"));
    r.use(tag("b"));
    r.handle(Method::kGet, "/x", hello, {tag("c"), tag("d")});
  });
  auto r = fetch(s.port(), "/x");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "a(b(c(d(h)d)c)b)a");
}

TEST(Middleware, GlobalMiddlewareWrapsRoutesRegisteredBeforeIt) {
  TestServer s(kRoutesOnly, [](Router& r, AccessLog*) {
    r.handle(Method::kGet, "/early", hello, {tag("route")});
    r.use(tag("global"));
    r.handle(Method::kGet, "/late", hello);
  });
  auto early = fetch(s.port(), "/early");
  auto late = fetch(s.port(), "/late");
  ASSERT_TRUE(early && late);
  EXPECT_EQ(early->body, "global(route(h)route)global");
  EXPECT_EQ(late->body, "global(h)global");
}

TEST(Middleware, RouteMiddlewareAppliesToItsRouteAndMethodOnly) {
  TestServer s(kRoutesOnly, [](Router& r, AccessLog*) {
    r.handle(Method::kGet, "/with", hello, {tag("m")});
    r.handle(Method::kGet, "/without", hello);
    r.handle(Method::kPost, "/with", hello);
  });
  auto with = fetch(s.port(), "/with");
  auto without = fetch(s.port(), "/without");
  ASSERT_TRUE(with && without);
  EXPECT_EQ(with->body, "m(h)m");
  EXPECT_EQ(without->body, "h");
  Client c(s.port());
  ASSERT_TRUE(c.send("POST /with HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"));
  auto post = c.read_response();
  ASSERT_TRUE(post);
  EXPECT_EQ(post->body, "h");
}

TEST(Middleware, HeadUsesTheGetRoutesChain) {
  std::atomic<int> seen{0};
  TestServer s(kRoutesOnly, [&](Router& r, AccessLog*) {
    r.handle(Method::kGet, "/x", hello, {[&seen](Handler next) -> Handler {
               return [&seen, next](Request& q, ResponseWriter& w) {
                 ++seen;
                 next(q, w);
               };
             }});
  });
  Client c(s.port());
  ASSERT_TRUE(c.send("HEAD /x HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto r = c.read_response(true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header("Content-Length"), "1");
  EXPECT_EQ(seen.load(), 1);
}

// Go: middleware wrapping a ServeMux sees its NotFound; here global middleware wraps the
// router's 404 and 405 answers too.
TEST(Middleware, GlobalMiddlewareSeesNotFoundAndMethodNotAllowed) {
  auto mark = [](Handler next) -> Handler {
    return [next](Request& r, ResponseWriter& w) {
      w.set_header("X-Seen", "yes");
      next(r, w);
    };
  };
  TestServer s(kRoutesOnly, [&](Router& r, AccessLog*) {
    r.handle(Method::kGet, "/x", hello);
    r.use(mark);
  });
  auto missing = fetch(s.port(), "/nothing/here");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(missing->header("X-Seen"), "yes");
  EXPECT_EQ(missing->body, "404 Not Found\n");
  Client c(s.port());
  ASSERT_TRUE(c.send("DELETE /x HTTP/1.1\r\nHost: x\r\n\r\n"));
  auto wrong = c.read_response();
  ASSERT_TRUE(wrong);
  EXPECT_EQ(wrong->status, 405);
  EXPECT_EQ(wrong->header("Allow"), "GET, HEAD");
  EXPECT_EQ(wrong->header("X-Seen"), "yes");
}

TEST(Middleware, RouteMiddlewareDoesNotSeeNotFound) {
  TestServer s(kRoutesOnly,
               [](Router& r, AccessLog*) { r.handle(Method::kGet, "/x", hello, {tag("m")}); });
  auto missing = fetch(s.port(), "/y");
  ASSERT_TRUE(missing);
  EXPECT_EQ(missing->status, 404);
  EXPECT_EQ(missing->body, "404 Not Found\n");
}

// ---- recover ----

void throws_after_setting_things(Request&, ResponseWriter& w) {
  w.set_status(201);
  w.set_header("X-Half-Done", "1");
  w.write("partial body that must not be sent");
  throw std::runtime_error("database on fire");
}

TEST(Recover, ThrowingHandlerGetsClean500LoggedOnceAndServerKeepsServing) {
  LogCapture log;
  TestServer s(kRoutesOnly, [](Router& r, AccessLog*) {
    r.use(middleware::recover());
    r.handle(Method::kGet, "/boom", throws_after_setting_things);
    r.handle(Method::kGet, "/ok", hello);
  });
  for (int i = 0; i < 3; ++i) {
    Client c(s.port());
    ASSERT_TRUE(c.send(get(s.port(), "/boom")));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 500);
    EXPECT_EQ(r->body, "500 Internal Server Error\n");
    EXPECT_EQ(r->header("X-Half-Done"), "");
    EXPECT_EQ(r->header("Connection"), "close");
    EXPECT_TRUE(c.at_eof());
  }
  auto ok = fetch(s.port(), "/ok");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(ok->body, "h");
  EXPECT_EQ(log.count("database on fire"), 3) << log.text();
  EXPECT_EQ(log.count("GET /boom"), 3) << log.text();
}

// Without recover() the connection's own catch answers the same 500, logged the same way,
// once (never once by recover and again by the connection).
TEST(Recover, ServerRecoversAndLogsWithoutTheMiddlewareToo) {
  LogCapture log;
  TestServer s(kRoutesOnly, [](Router& r, AccessLog*) {
    r.handle(Method::kGet, "/boom", throws_after_setting_things);
    r.handle(Method::kGet, "/ok", hello);
  });
  auto r = fetch(s.port(), "/boom");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  EXPECT_EQ(r->header("X-Half-Done"), "");
  auto ok = fetch(s.port(), "/ok");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->status, 200);
  EXPECT_EQ(log.count("database on fire"), 1) << log.text();
}

TEST(Recover, NonStdExceptionIsRecoveredToo) {
  LogCapture log;
  TestServer s(kRoutesOnly, [](Router& r, AccessLog*) {
    r.use(middleware::recover());
    r.handle(Method::kGet, "/int", [](Request&, ResponseWriter&) { throw 42; });
  });
  auto r = fetch(s.port(), "/int");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  EXPECT_EQ(log.count("handler exception serving GET /int"), 1) << log.text();
}

// The head is out: a 500 can no longer be sent, and a complete response would be a lie. The
// client sees the chunks sent so far, no last chunk, and the end of the connection.
TEST(Recover, ExceptionAfterTheHeadWasSentTruncatesTheResponse) {
  LogCapture log;
  TestServer s(kRoutesOnly, [](Router& r, AccessLog*) {
    r.use(middleware::recover());
    r.handle(Method::kGet, "/stream", [](Request&, ResponseWriter& w) {
      w.set_content_type("text/plain");
      w.write("first part");
      w.flush();
      w.write("never completed");
      throw std::runtime_error("stream broke");
    });
  });
  Client c(s.port());
  ASSERT_TRUE(c.send(get(s.port(), "/stream")));
  const std::string raw = c.read_all();
  EXPECT_FALSE(c.timed_out());
  EXPECT_EQ(raw.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << raw;
  EXPECT_NE(raw.find("Transfer-Encoding: chunked"), std::string::npos);
  EXPECT_NE(raw.find("a\r\nfirst part\r\n"), std::string::npos) << raw;
  EXPECT_EQ(raw.find("0\r\n\r\n"), std::string::npos) << "no last chunk: " << raw;
  EXPECT_EQ(log.count("stream broke"), 1) << log.text();
}

// ---- request id ----

bool is_generated_id(std::string_view id) {
  if (id.size() != 32) return false;
  for (char c : id) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

void echo_request_id(Request& r, ResponseWriter& w) { w.write(r.request_id()); }

TEST(RequestId, GeneratedWhenAbsentEchoedAndSeenByTheHandler) {
  TestServer s(kRoutesOnly, [](Router& r, AccessLog*) {
    r.use(middleware::request_id());
    r.handle(Method::kGet, "/id", echo_request_id);
  });
  std::set<std::string> seen;
  Client c(s.port());
  for (int i = 0; i < 50; ++i) {
    ASSERT_TRUE(c.send(get(s.port(), "/id")));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    const std::string id = r->header("X-Request-Id");
    EXPECT_TRUE(is_generated_id(id)) << id;
    EXPECT_EQ(r->body, id);
    seen.insert(id);
  }
  EXPECT_EQ(seen.size(), 50u) << "ids are unique";
}

TEST(RequestId, SaneClientIdIsKept) {
  TestServer s(kRoutesOnly, [](Router& r, AccessLog*) {
    r.use(middleware::request_id());
    r.handle(Method::kGet, "/id", echo_request_id);
  });
  const std::string id = "f47ac10b-58cc-4372-a567-0e02b2c3d479";
  auto r = fetch(s.port(), "/id", "X-Request-Id: " + id + "\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header("X-Request-Id"), id);
  EXPECT_EQ(r->body, id);
}

TEST(RequestId, OversizedOrUnprintableClientIdIsReplaced) {
  TestServer s(kRoutesOnly, [](Router& r, AccessLog*) {
    r.use(middleware::request_id());
    r.handle(Method::kGet, "/id", echo_request_id);
  });
  const std::vector<std::string> bad = {
      std::string(10 * 1024, 'a'),  // 10 KB
      std::string(65, 'b'),         // one past the bound
      "two words",                  // a space
      "tab\there",                  // a tab
      "caf\xc3\xa9",                // non-ASCII
      "",                           // empty
  };
  for (const std::string& id : bad) {
    auto r = fetch(s.port(), "/id", "X-Request-Id: " + id + "\r\n");
    ASSERT_TRUE(r) << id.substr(0, 20);
    EXPECT_EQ(r->status, 200);
    EXPECT_TRUE(is_generated_id(r->header("X-Request-Id"))) << r->header("X-Request-Id");
    EXPECT_EQ(r->body, r->header("X-Request-Id"));
  }
  auto edge = fetch(s.port(), "/id", "X-Request-Id: " + std::string(64, 'c') + "\r\n");
  ASSERT_TRUE(edge);
  EXPECT_EQ(edge->header("X-Request-Id"), std::string(64, 'c'));
}

// A CR inside the value is no header a client can send: the parser answers 400 before any
// middleware runs, and nothing of it is echoed.
TEST(RequestId, CrlfInTheClientIdNeverReachesTheResponse) {
  TestServer s(kRoutesOnly, [](Router& r, AccessLog*) {
    r.use(middleware::request_id());
    r.handle(Method::kGet, "/id", echo_request_id);
  });
  Client c(s.port());
  ASSERT_TRUE(c.send("GET /id HTTP/1.1\r\nHost: x\r\nX-Request-Id: a\rSet-Cookie: x=1\r\n\r\n"));
  const std::string raw = c.read_all();
  EXPECT_EQ(raw.rfind("HTTP/1.1 400", 0), 0u) << raw;
  EXPECT_EQ(raw.find("Set-Cookie"), std::string::npos);
}

TEST(RequestId, TheFiveHundredOfRecoverKeepsTheId) {
  LogCapture log;
  TestServer s(kRoutesOnly, [](Router& r, AccessLog*) {
    r.use(middleware::request_id());
    r.use(middleware::recover());
    r.handle(Method::kGet, "/boom", throws_after_setting_things);
  });
  auto r = fetch(s.port(), "/boom", "X-Request-Id: trace-123\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  EXPECT_EQ(r->header("X-Request-Id"), "trace-123");
  EXPECT_EQ(log.count("request id trace-123"), 1) << log.text();
}

// ---- access log ----

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Polls `path` until it holds `lines` lines, or 5 s pass.
std::string wait_for_lines(const std::string& path, int lines) {
  std::string text;
  (void)testing::wait_until(
      [&] {
        text = read_file(path);
        return std::count(text.begin(), text.end(), '\n') >= lines;
      },
      5s);
  return text;
}

struct TempPath {
  std::string path;
  TempPath() {
    char p[] = "/tmp/greenhttp-mw-XXXXXX";
    const int fd = mkstemp(p);
    close(fd);
    path = p;
  }
  ~TempPath() { unlink(path.c_str()); }
};

TEST(AccessLogMiddleware, RecordsStatusBytesAndRequestIdOfWhatReachesIt) {
  TempPath file;
  TestServer s(
      kRoutesOnly,
      [](Router& r, AccessLog* log) {
        r.use(middleware::access_log(*log));
        r.use(middleware::request_id());
        r.use(middleware::recover());
        r.handle(Method::kGet, "/x", hello);
        r.handle(Method::kGet, "/boom", throws_after_setting_things);
      },
      file.path);
  ASSERT_TRUE(fetch(s.port(), "/x", "X-Request-Id: abc-1\r\nUser-Agent: t/1\r\n"));
  ASSERT_TRUE(fetch(s.port(), "/missing", "X-Request-Id: abc-2\r\n"));
  {
    LogCapture quiet;
    ASSERT_TRUE(fetch(s.port(), "/boom", "X-Request-Id: abc-3\r\n"));
  }
  const std::string text = wait_for_lines(file.path, 3);
  EXPECT_NE(text.find("\"GET /x HTTP/1.1\" 200 1 \"-\" \"t/1\" \"abc-1\"\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("\"GET /missing HTTP/1.1\" 404 14 \"-\" \"-\" \"abc-2\"\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("\"GET /boom HTTP/1.1\" 500 26 \"-\" \"-\" \"abc-3\"\n"), std::string::npos)
      << text;
}

// The server's own access log (the binary's) records the request id too, when the middleware
// set one, and keeps plain Combined lines otherwise.
TEST(AccessLogMiddleware, ServerAccessLogCarriesTheRequestIdWhenSet) {
  TempPath file;
  testing::TestServer s(
      {}, [](Router& r) { r.handle(Method::kGet, "/with-id", hello, {middleware::request_id()}); },
      file.path);
  ASSERT_TRUE(fetch(s.port(), "/with-id", "X-Request-Id: zzz-9\r\n"));
  ASSERT_TRUE(fetch(s.port(), "/plaintext"));
  const std::string text = wait_for_lines(file.path, 2);
  EXPECT_NE(text.find("\"GET /with-id HTTP/1.1\" 200 1 \"-\" \"-\" \"zzz-9\"\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("\"GET /plaintext HTTP/1.1\" 200 13 \"-\" \"-\"\n"), std::string::npos)
      << text;
}

// ---- gzip ----

std::string text_of(std::size_t n) {
  std::string s;
  int i = 0;
  while (s.size() < n) s += "line " + std::to_string(i++) + ": the quick brown fox jumps\n";
  s.resize(n);
  return s;
}

// Inflates a gzip stream incrementally.
class Gunzip {
 public:
  Gunzip() { inflateInit2(&z_, 16 + 15); }
  ~Gunzip() { inflateEnd(&z_); }
  // Feeds `in`; returns what it decodes to (everything a sync flush made decodable).
  std::string feed(std::string_view in, int* rc = nullptr) {
    std::string out;
    z_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    z_.avail_in = static_cast<uInt>(in.size());
    int r = Z_OK;
    do {
      char buf[16384];
      z_.next_out = reinterpret_cast<Bytef*>(buf);
      z_.avail_out = sizeof buf;
      r = inflate(&z_, Z_SYNC_FLUSH);
      out.append(buf, sizeof buf - z_.avail_out);
    } while (r == Z_OK && (z_.avail_in > 0 || z_.avail_out == 0));
    if (rc != nullptr) *rc = r;
    return out;
  }

 private:
  z_stream z_{};
};

// python3's gzip module decodes `body` (written to a file) and prints it back.
std::string python_gunzip(const std::string& body) {
  TempPath file;
  std::ofstream(file.path, std::ios::binary) << body;
  int status = -1;
  std::string out = run_command(
      "python3 -c 'import gzip,sys; sys.stdout.buffer.write("
      "gzip.decompress(open(sys.argv[1],\"rb\").read()))' " +
          file.path,
      &status);
  EXPECT_EQ(status, 0);
  return out;
}

void gzip_routes(Router& r, AccessLog*) {
  r.use(middleware::gzip());
  static const std::string big = text_of(20'000);
  static const std::string huge = text_of(300'000);
  r.handle(Method::kGet, "/big",
           [](Request&, ResponseWriter& w) { w.send(200, "text/html; charset=utf-8", big); });
  r.handle(Method::kGet, "/huge",
           [](Request&, ResponseWriter& w) { w.send(200, "application/json", huge); });
  // 1 MB that does not compress: the encoded chunks are large too, so they (and the identity
  // body, and a declared-length one) go out through the sink's direct write, uncopied.
  static const std::string noise = [] {
    std::string n(1 << 20, '\0');
    uint32_t x = 7;
    for (char& c : n) c = static_cast<char>((x = x * 1103515245 + 12345) >> 24);
    return n;
  }();
  r.handle(Method::kGet, "/noise",
           [](Request&, ResponseWriter& w) { w.send(200, "application/json", noise); });
  r.handle(Method::kGet, "/noise-declared", [](Request&, ResponseWriter& w) {
    w.set_content_type("application/json");
    w.set_content_length(noise.size());
    w.write(std::string_view(noise).substr(0, 1000));
    w.write(std::string_view(noise).substr(1000));
  });
  r.handle(Method::kGet, "/small",
           [](Request&, ResponseWriter& w) { w.send(200, "text/plain", text_of(100)); });
  r.handle(Method::kGet, "/png",
           [](Request&, ResponseWriter& w) { w.send(200, "image/png", big); });
  r.handle(Method::kGet, "/encoded", [](Request&, ResponseWriter& w) {
    w.set_header("Content-Encoding", "br");
    w.send(200, "text/plain", big);
  });
  r.handle(Method::kGet, "/declared", [](Request&, ResponseWriter& w) {
    w.set_content_type("text/plain");
    w.set_content_length(big.size());
    w.write(big.substr(0, 5000));
    w.write(big.substr(5000));
  });
  r.handle(Method::kGet, "/etag", [](Request&, ResponseWriter& w) {
    w.set_header("ETag", "\"v1\"");
    w.set_header("Accept-Ranges", "bytes");
    w.send(200, "text/css", big);
  });
  r.handle(Method::kGet, "/nocontent", [](Request&, ResponseWriter& w) {
    w.set_content_type("text/plain");
    w.set_status(204);
  });
}

TEST(Gzip, CompressesTextOverTheThresholdAndPythonDecodesIt) {
  TestServer s(kRoutesOnly, gzip_routes);
  auto r = fetch(s.port(), "/big", "Accept-Encoding: gzip, deflate, br\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->header("Content-Encoding"), "gzip");
  EXPECT_EQ(r->header("Vary"), "Accept-Encoding");
  EXPECT_EQ(r->header("Content-Length"), std::to_string(r->body.size()));
  EXPECT_LT(r->body.size(), 20'000u / 4);
  EXPECT_EQ(python_gunzip(r->body), text_of(20'000));
}

TEST(Gzip, LargeBodyStreamsCompressedInChunks) {
  TestServer s(kRoutesOnly, gzip_routes);
  auto r = fetch(s.port(), "/huge", "Accept-Encoding: gzip\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header("Content-Encoding"), "gzip");
  EXPECT_EQ(r->header("Transfer-Encoding"), "chunked");
  EXPECT_EQ(r->header("Content-Length"), "");
  EXPECT_EQ(python_gunzip(r->body), text_of(300'000));
}

TEST(Gzip, LargeIncompressibleBodyIsWrittenDirectlyAndStillDecodes) {
  TestServer s(kRoutesOnly, gzip_routes);
  std::string noise(1 << 20, '\0');
  uint32_t x = 7;
  for (char& c : noise) c = static_cast<char>((x = x * 1103515245 + 12345) >> 24);
  Client c(s.port());
  for (const char* path : {"/noise", "/noise-declared"}) {
    ASSERT_TRUE(c.send(get(s.port(), path, "Accept-Encoding: gzip\r\n")));
    auto r = c.read_response();
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->header("Content-Encoding"), "gzip") << path;
    EXPECT_EQ(r->header("Transfer-Encoding"), "chunked") << path;
    EXPECT_TRUE(python_gunzip(r->body) == noise) << path;
    ASSERT_TRUE(c.send(get(s.port(), path)));  // identity: chunked, or the declared length
    r = c.read_response();
    ASSERT_TRUE(r) << path;
    EXPECT_EQ(r->header("Content-Encoding"), "") << path;
    EXPECT_TRUE(r->body == noise) << path;
  }
}

TEST(Gzip, DeclaredContentLengthIsDroppedForTheCompressedLength) {
  TestServer s(kRoutesOnly, gzip_routes);
  Client c(s.port());
  for (int i = 0; i < 2; ++i) {  // and the connection stays usable
    ASSERT_TRUE(c.send(get(s.port(), "/declared", "Accept-Encoding: gzip\r\n")));
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->header("Content-Encoding"), "gzip");
    EXPECT_EQ(r->header("Content-Length"), "");
    EXPECT_EQ(r->header("Connection"), "");
    EXPECT_EQ(python_gunzip(r->body), text_of(20'000));
  }
}

TEST(Gzip, QZeroRefusesAndGetsIdentityWithVary) {
  TestServer s(kRoutesOnly, gzip_routes);
  for (const char* ae : {"gzip;q=0", "gzip; q=0.000, deflate", "*;q=0", "identity", "br"}) {
    auto r = fetch(s.port(), "/big", std::string("Accept-Encoding: ") + ae + "\r\n");
    ASSERT_TRUE(r) << ae;
    EXPECT_EQ(r->header("Content-Encoding"), "") << ae;
    EXPECT_EQ(r->header("Vary"), "Accept-Encoding") << ae;
    EXPECT_EQ(r->body, text_of(20'000)) << ae;
  }
  auto none = fetch(s.port(), "/big");
  ASSERT_TRUE(none);
  EXPECT_EQ(none->header("Content-Encoding"), "");
  EXPECT_EQ(none->body, text_of(20'000));
}

TEST(Gzip, AcceptEncodingQValuesAreParsed) {
  struct Case {
    const char* value;
    bool accepts;
  };
  const Case cases[] = {
      {"gzip", true},
      {"GZIP", true},
      {"x-gzip", true},
      {"deflate, gzip;q=0.5", true},
      {"gzip;q=1.0", true},
      {"gzip ; Q=0.001", true},
      {"*", true},
      {"br, *;q=0.1", true},
      {"gzip;q=0", false},
      {"gzip;q=0.0", false},
      {"gzip;q=0.000", false},
      {"*, gzip;q=0", false},
      {"gzip;q=abc", false},
      {"gzip;q=2", false},
      {"identity", false},
      {"", false},
      {"*;q=0", false},
      {"gzipx", false},
      {"deflate,,  gzip", true},
  };
  for (const Case& c : cases) {
    EXPECT_EQ(middleware::accepts_gzip(c.value), c.accepts) << c.value;
  }
}

TEST(Gzip, SmallBodiesAndOtherTypesAreNotCompressed) {
  TestServer s(kRoutesOnly, gzip_routes);
  auto small = fetch(s.port(), "/small", "Accept-Encoding: gzip\r\n");
  ASSERT_TRUE(small);
  EXPECT_EQ(small->header("Content-Encoding"), "");
  EXPECT_EQ(small->header("Vary"), "");
  EXPECT_EQ(small->body, text_of(100));
  auto png = fetch(s.port(), "/png", "Accept-Encoding: gzip\r\n");
  ASSERT_TRUE(png);
  EXPECT_EQ(png->header("Content-Encoding"), "");
  EXPECT_EQ(png->body, text_of(20'000));
  auto empty = fetch(s.port(), "/nocontent", "Accept-Encoding: gzip\r\n");
  ASSERT_TRUE(empty);
  EXPECT_EQ(empty->status, 204);
  EXPECT_EQ(empty->header("Content-Encoding"), "");
}

TEST(Gzip, AlreadyEncodedResponsesAreUntouched) {
  TestServer s(kRoutesOnly, gzip_routes);
  auto r = fetch(s.port(), "/encoded", "Accept-Encoding: gzip\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header("Content-Encoding"), "br");
  EXPECT_EQ(r->body, text_of(20'000));
}

TEST(Gzip, HeadIsNotCompressedAndKeepsTheIdentityLength) {
  TestServer s(kRoutesOnly, gzip_routes);
  Client c(s.port());
  ASSERT_TRUE(c.send("HEAD /big HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\n\r\n" +
                     get(s.port(), "/small")));
  auto r = c.read_response(true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header("Content-Encoding"), "");
  EXPECT_EQ(r->header("Content-Length"), "20000");
  auto next = c.read_response();  // no body bytes between the two
  ASSERT_TRUE(next);
  EXPECT_EQ(next->body, text_of(100));
}

TEST(Gzip, StrongEtagBecomesWeakAndRangesAreNoLongerOffered) {
  TestServer s(kRoutesOnly, gzip_routes);
  auto r = fetch(s.port(), "/etag", "Accept-Encoding: gzip\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->header("Content-Encoding"), "gzip");
  EXPECT_EQ(r->header("ETag"), "W/\"v1\"");
  EXPECT_EQ(r->header("Accept-Ranges"), "");
  auto plain = fetch(s.port(), "/etag");
  ASSERT_TRUE(plain);
  EXPECT_EQ(plain->header("ETag"), "\"v1\"");
  EXPECT_EQ(plain->header("Accept-Ranges"), "bytes");
}

// Each flush() makes what was written so far decodable: the client decodes the first part
// while the handler still waits (for the client's signal) to write the second.
TEST(Gzip, FlushedStreamDecodesIncrementally) {
  std::atomic<bool> client_decoded_first{false};
  TestServer s(kRoutesOnly, [&](Router& r, AccessLog*) {
    r.use(middleware::gzip());
    r.handle(Method::kGet, "/events", [&](Request&, ResponseWriter& w) {
      w.set_content_type("text/event-stream");
      w.write("data: first\n\n");
      w.flush();
      (void)testing::wait_until([&] { return client_decoded_first.load(); }, 5s);
      w.write("data: second\n\n");
    });
  });
  Client c(s.port());
  ASSERT_TRUE(c.send(get(s.port(), "/events", "Accept-Encoding: gzip\r\n")));
  std::string raw;
  char buf[4096];
  std::size_t head_end = std::string::npos;
  Gunzip gunzip;
  std::string decoded;
  std::size_t consumed = 0;  // of the chunked body
  // Reads until the first event decodes (chunked framing parsed by hand, incrementally).
  auto pump = [&](std::string_view want) {
    while (decoded.find(want) == std::string::npos) {
      const ssize_t n = ::recv(c.fd(), buf, sizeof buf, 0);
      if (n <= 0) return false;
      raw.append(buf, static_cast<std::size_t>(n));
      if (head_end == std::string::npos) {
        head_end = raw.find("\r\n\r\n");
        if (head_end == std::string::npos) continue;
        consumed = head_end + 4;
      }
      for (;;) {
        const std::size_t eol = raw.find("\r\n", consumed);
        if (eol == std::string::npos) break;
        const std::size_t size = std::stoul(raw.substr(consumed, eol - consumed), nullptr, 16);
        if (raw.size() < eol + 2 + size + 2) break;
        decoded += gunzip.feed(std::string_view(raw).substr(eol + 2, size));
        consumed = eol + 2 + size + 2;
        if (size == 0) break;
      }
    }
    return true;
  };
  ASSERT_TRUE(pump("data: first\n\n")) << raw;
  EXPECT_EQ(decoded, "data: first\n\n");
  EXPECT_NE(raw.find("Content-Encoding: gzip\r\n"), std::string::npos);
  EXPECT_NE(raw.find("Transfer-Encoding: chunked\r\n"), std::string::npos);
  client_decoded_first.store(true);
  ASSERT_TRUE(pump("data: second\n\n")) << raw;
  EXPECT_EQ(decoded, "data: first\n\ndata: second\n\n");
}

TEST(Gzip, CurlCompressedDecodesTheBody) {
  TestServer s(kRoutesOnly, gzip_routes);
  const std::string url = "http://127.0.0.1:" + std::to_string(s.port()) + "/big";
  int status = -1;
  const std::string body = run_command("curl -sS --compressed " + url, &status);
  EXPECT_EQ(status, 0);
  EXPECT_EQ(body, text_of(20'000));
  const std::string headers =
      run_command("curl -sS --compressed -o /dev/null -D - " + url, &status);
  EXPECT_NE(headers.find("Content-Encoding: gzip"), std::string::npos) << headers;
}

// recover() outside gzip: the 500 replaces a half-written compressible body cleanly.
TEST(Gzip, RecoverAroundGzipAnswersAPlain500) {
  LogCapture log;
  TestServer s(kRoutesOnly, [](Router& r, AccessLog*) {
    r.use(middleware::recover());
    r.use(middleware::gzip());
    r.handle(Method::kGet, "/boom", [](Request&, ResponseWriter& w) {
      w.set_content_type("text/plain");
      w.write(text_of(5000));
      throw std::runtime_error("late failure");
    });
  });
  auto r = fetch(s.port(), "/boom", "Accept-Encoding: gzip\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  EXPECT_EQ(r->header("Content-Encoding"), "");
  EXPECT_EQ(r->body, "500 Internal Server Error\n");
}

}  // namespace
}  // namespace green::http
