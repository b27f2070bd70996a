// ResponseWriter's serialisation, with a sink that records what would be sent.
#include "green/http/response.h"

#include <string>

#include <gtest/gtest.h>

#include "green/http/router.h"
#include "server/date_cache.h"
#include "server/request_parser.h"

namespace green::http {
namespace {

struct RecordingSink : ResponseSink {
  ByteBuffer out;
  std::string sent;  // what flush_output() "wrote"
  int flushes = 0;
  ByteBuffer& output() override { return out; }
  bool flush_output() override {
    sent.append(out.view());
    out.clear();
    ++flushes;
    return true;
  }
  std::string all() {
    flush_output();
    return sent;
  }
};

struct Fixture {
  RecordingSink sink;
  ByteBuffer body, headers;
};

std::string without_date(std::string s) {
  const std::size_t d = s.find("Date: ");
  if (d != std::string::npos) s.erase(d, s.find("\r\n", d) + 2 - d);
  return s;
}

TEST(ResponseWriter, BufferedBodyGetsContentLengthServerAndDate) {
  Fixture f;
  ResponseWriter w(f.sink, f.body, f.headers, Method::kGet, 1, true);
  w.send(200, "text/plain", "Hello, World!");
  w.finish();
  const std::string s = f.sink.all();
  EXPECT_NE(s.find("\r\nDate: "), std::string::npos);
  EXPECT_EQ(without_date(s),
            "HTTP/1.1 200 OK\r\nServer: greenhttp\r\nContent-Type: text/plain\r\n"
            "Content-Length: 13\r\n\r\nHello, World!");
  EXPECT_EQ(f.sink.flushes, 1) << "a buffered response is not flushed by the writer";
}

TEST(ResponseWriter, HeadSendsTheGetHeadersWithoutTheBody) {
  Fixture f;
  ResponseWriter w(f.sink, f.body, f.headers, Method::kHead, 1, true);
  w.send(200, "text/plain", "Hello, World!");
  w.finish();
  EXPECT_EQ(without_date(f.sink.all()),
            "HTTP/1.1 200 OK\r\nServer: greenhttp\r\nContent-Type: text/plain\r\n"
            "Content-Length: 13\r\n\r\n");
}

TEST(ResponseWriter, NoContentCarriesNoLength) {
  Fixture f;
  ResponseWriter w(f.sink, f.body, f.headers, Method::kGet, 1, true);
  w.set_status(204);
  w.write("ignored");
  w.finish();
  EXPECT_EQ(without_date(f.sink.all()), "HTTP/1.1 204 No Content\r\nServer: greenhttp\r\n\r\n");
}

TEST(ResponseWriter, FlushStreamsChunked) {
  Fixture f;
  ResponseWriter w(f.sink, f.body, f.headers, Method::kGet, 1, true);
  w.set_content_type("text/plain");
  w.write("hello ");
  EXPECT_TRUE(w.flush());
  EXPECT_NE(f.sink.sent.find("Transfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n"),
            std::string::npos)
      << f.sink.sent;
  w.write("world");
  w.finish();
  const std::string s = f.sink.all();
  EXPECT_NE(s.find("6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"), std::string::npos) << s;
  EXPECT_TRUE(w.keep_alive());
}

TEST(ResponseWriter, LargeBodiesStreamWithoutWaitingForTheEnd) {
  Fixture f;
  ResponseWriter w(f.sink, f.body, f.headers, Method::kGet, 1, true);
  const std::string piece(16 * 1024, 'x');
  for (int i = 0; i < 20; ++i) w.write(piece);
  EXPECT_GT(f.sink.flushes, 0) << "320 KiB must not sit in memory until the handler returns";
  w.finish();
  const std::string s = f.sink.all();
  EXPECT_NE(s.find("Transfer-Encoding: chunked"), std::string::npos);
  EXPECT_EQ(s.substr(s.size() - 5), "0\r\n\r\n");
}

TEST(ResponseWriter, Http10StreamingClosesTheConnection) {
  Fixture f;
  ResponseWriter w(f.sink, f.body, f.headers, Method::kGet, 0, true);
  w.write("abc");
  w.flush();
  w.write("def");
  w.finish();
  const std::string s = f.sink.all();
  EXPECT_EQ(s.find("Transfer-Encoding"), std::string::npos);
  EXPECT_NE(s.find("Connection: close\r\n\r\nabcdef"), std::string::npos) << s;
  EXPECT_FALSE(w.keep_alive());
}

TEST(ResponseWriter, Http10KeepAliveIsEchoed) {
  Fixture f;
  ResponseWriter w(f.sink, f.body, f.headers, Method::kGet, 0, true);
  w.send(200, "text/plain", "x");
  w.finish();
  EXPECT_NE(f.sink.all().find("Connection: keep-alive\r\n"), std::string::npos);
}

TEST(ResponseWriter, DeclaredLengthStreamsUnchunked) {
  Fixture f;
  ResponseWriter w(f.sink, f.body, f.headers, Method::kGet, 1, true);
  w.set_content_length(6);
  w.write("abc");
  w.write("def");
  w.finish();
  const std::string s = f.sink.all();
  EXPECT_NE(s.find("Content-Length: 6\r\n\r\nabcdef"), std::string::npos) << s;
  EXPECT_TRUE(w.keep_alive());
}

TEST(ResponseWriter, WrongDeclaredLengthClosesTheConnection) {
  Fixture f;
  ResponseWriter w(f.sink, f.body, f.headers, Method::kGet, 1, true);
  w.set_content_length(10);
  w.write("abc");
  w.finish();
  EXPECT_FALSE(w.keep_alive());
}

TEST(ResponseWriter, HeaderInjectionIsRefused) {
  Fixture f;
  ResponseWriter w(f.sink, f.body, f.headers, Method::kGet, 1, true);
  w.set_header("X-Ok", "fine");
  w.set_header("X-Bad", "a\r\nSet-Cookie: evil");
  w.set_header("X-Bad\r\nY", "v");
  w.finish();
  const std::string s = f.sink.all();
  EXPECT_NE(s.find("X-Ok: fine\r\n"), std::string::npos);
  EXPECT_EQ(s.find("evil"), std::string::npos);
  EXPECT_EQ(s.find("X-Bad"), std::string::npos);
}

TEST(ResponseWriter, ClosingResponsesSayConnectionClose) {
  Fixture f;
  ResponseWriter w(f.sink, f.body, f.headers, Method::kGet, 1, false);
  w.send_status(404);
  w.finish();
  EXPECT_EQ(without_date(f.sink.all()),
            "HTTP/1.1 404 Not Found\r\nServer: greenhttp\r\nContent-Type: text/plain; "
            "charset=utf-8\r\nContent-Length: 14\r\nConnection: close\r\n\r\n404 Not Found\n");
}

TEST(ErrorResponse, NamesTheStatusAndCloses) {
  ByteBuffer out;
  append_error_response(out, 431, "Request Header Fields Too Large");
  const std::string s(out.view());
  EXPECT_EQ(s.rfind("HTTP/1.1 431 Request Header Fields Too Large\r\n", 0), 0u);
  EXPECT_NE(s.find("Connection: close\r\n"), std::string::npos);
}

TEST(DateCache, FormatsImfFixdate) {
  EXPECT_EQ(format_http_date(784111777), "Sun, 06 Nov 1994 08:49:37 GMT");
  ByteBuffer out;
  append_date_header(out);
  const std::string s(out.view());
  EXPECT_EQ(s.size(), std::string("Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n").size()) << s;
  EXPECT_EQ(s.substr(s.size() - 5), "GMT\r\n");
}

// Router ------------------------------------------------------------------------------------

struct RouterFixture {
  Router router;
  std::string hit;
  RouterFixture() {
    auto mark = [this](std::string name) {
      return [this, name](Request&, ResponseWriter&) { hit = name; };
    };
    router.handle(Method::kGet, "/plaintext", mark("plaintext"));
    router.handle(Method::kPost, "/plaintext", mark("post-plaintext"));
    router.handle(Method::kGet, "/users/:id", mark("user"));
    router.handle(Method::kGet, "/users/:id/posts/:post", mark("post"));
    router.handle(Method::kGet, "/static/*", mark("static"));
    router.handle(Method::kGet, "/static/special/*", mark("special"));
    router.handle(Method::kPut, "/only-put", mark("put"));
  }
};

// Builds a Request by parsing real bytes (the only way a Request is made).
struct ParsedRequest {
  Limits limits;
  RequestParser parser{limits};
  ParserStorage storage{limits};
  Request& parse(const std::string& method, const std::string& target) {
    parser.attach(&storage);
    const std::string bytes = method + " " + target + " HTTP/1.1\r\nHost: x\r\n\r\n";
    std::span<char> room = parser.spare();
    std::copy(bytes.begin(), bytes.end(), room.data());
    parser.commit(bytes.size());
    EXPECT_EQ(parser.next(), ParseEvent::kRequest);
    return parser.request();
  }
};

TEST(Router, MatchesExactParamsAndLongestPrefix) {
  RouterFixture f;
  struct Case {
    const char* method;
    const char* target;
    const char* hit;
    int status;
  } cases[] = {
      {"GET", "/plaintext", "plaintext", 0},       {"HEAD", "/plaintext", "plaintext", 0},
      {"POST", "/plaintext", "post-plaintext", 0}, {"GET", "/users/42", "user", 0},
      {"GET", "/users/42/posts/7", "post", 0},     {"GET", "/users/", "", 404},
      {"GET", "/users/42/other/7", "", 404},       {"GET", "/static/a/b.css", "static", 0},
      {"GET", "/static/special/x", "special", 0},  {"GET", "/nothing", "", 404},
      {"DELETE", "/plaintext", "", 405},           {"GET", "/only-put", "", 405},
  };
  for (const Case& c : cases) {
    ParsedRequest p;
    Request& r = p.parse(c.method, c.target);
    f.hit.clear();
    Router::Match m = f.router.route(r);
    if (m.handler != nullptr) {
      RecordingSink sink;
      ByteBuffer b, h;
      ResponseWriter w(sink, b, h, r.method(), 1, true);
      (*m.handler)(r, w);
    }
    EXPECT_EQ(f.hit, c.hit) << c.method << " " << c.target;
    EXPECT_EQ(m.status, c.status) << c.method << " " << c.target;
  }
}

TEST(Router, BindsPathParameters) {
  RouterFixture f;
  ParsedRequest p;
  Request& r = p.parse("GET", "/users/ann%20b/posts/9");
  ASSERT_NE(f.router.route(r).handler, nullptr);
  EXPECT_EQ(r.param("id"), "ann b");
  EXPECT_EQ(r.param("post"), "9");
  ParsedRequest q;
  Request& s = q.parse("GET", "/static/css/site.css");
  ASSERT_NE(f.router.route(s).handler, nullptr);
  EXPECT_EQ(s.param("*"), "css/site.css");
}

TEST(Router, WrongMethodListsTheAllowedOnes) {
  RouterFixture f;
  ParsedRequest p;
  Router::Match m = f.router.route(p.parse("DELETE", "/plaintext"));
  EXPECT_EQ(m.status, 405);
  EXPECT_EQ(m.allow, "GET, HEAD, POST");
  ParsedRequest q;
  EXPECT_EQ(f.router.route(q.parse("GET", "/only-put")).allow, "PUT");
}

}  // namespace
}  // namespace green::http
