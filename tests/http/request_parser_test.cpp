// The llhttp glue on its own: bytes in, requests or one precise status out. No sockets.
#include "server/request_parser.h"

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace green::http {
namespace {

struct Parsed {
  std::vector<std::string> targets;
  std::vector<std::string> bodies;
  std::vector<std::string> paths;
  std::vector<bool> keep_alive;
  int continues = 0;
  int error = 0;
  std::string reason;
};

// Feeds `input` to a parser in pieces of `step` bytes (0: all at once).
Parsed parse(const std::string& input, std::size_t step = 0, Limits limits = {}) {
  RequestParser parser(limits);
  ParserStorage storage(limits);
  parser.attach(&storage);
  Parsed out;
  std::size_t pos = 0;
  while (pos < input.size() || pos == 0) {
    std::span<char> room = parser.spare();
    if (room.empty()) break;
    std::size_t n = std::min(room.size(), input.size() - pos);
    if (step != 0) n = std::min(n, step);
    std::copy_n(input.data() + pos, n, room.data());
    parser.commit(n);
    pos += n;
    for (;;) {
      const ParseEvent e = parser.next();
      if (e == ParseEvent::kNeedMore) break;
      if (e == ParseEvent::kExpectContinue) {
        ++out.continues;
        continue;
      }
      if (e == ParseEvent::kError) {
        out.error = parser.error_status();
        out.reason = std::string(parser.error_reason());
        return out;
      }
      Request& r = parser.request();
      out.targets.emplace_back(r.target());
      out.paths.emplace_back(r.path());
      out.bodies.emplace_back(*r.body().read_all());
      out.keep_alive.push_back(r.keep_alive());
    }
    if (pos == input.size()) break;
  }
  return out;
}

TEST(RequestParser, ParsesASimpleGet) {
  Parsed p = parse("GET /plaintext HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n");
  ASSERT_EQ(p.error, 0) << p.reason;
  ASSERT_EQ(p.targets.size(), 1u);
  EXPECT_EQ(p.targets[0], "/plaintext");
  EXPECT_TRUE(p.keep_alive[0]);
}

TEST(RequestParser, ExposesMethodVersionHeadersAndQuery) {
  const Limits limits;
  RequestParser parser(limits);
  ParserStorage storage(limits);
  parser.attach(&storage);
  const std::string req =
      "DELETE /a/b%20c?x=1&y=two HTTP/1.1\r\nHost: example\r\nX-Thing:   spaced value  \r\n"
      "user-agent: t\r\n\r\n";
  std::span<char> room = parser.spare();
  std::copy(req.begin(), req.end(), room.data());
  parser.commit(req.size());
  ASSERT_EQ(parser.next(), ParseEvent::kRequest);
  const Request& r = parser.request();
  EXPECT_EQ(r.method(), Method::kDelete);
  EXPECT_EQ(r.method_name(), "DELETE");
  EXPECT_EQ(r.path(), "/a/b c");
  EXPECT_EQ(r.query(), "x=1&y=two");
  EXPECT_EQ(r.query_param("y").value_or("?"), "two");
  EXPECT_FALSE(r.query_param("z").has_value());
  EXPECT_EQ(r.query_int("x", 0, 100), 1);
  EXPECT_EQ(r.header("x-thing"), "spaced value");
  EXPECT_EQ(r.header("USER-AGENT"), "t");
  EXPECT_EQ(r.headers().size(), 3u);
  EXPECT_EQ(r.version_minor(), 1);
  EXPECT_EQ(parser.next(), ParseEvent::kNeedMore);
  EXPECT_TRUE(parser.idle());
}

TEST(RequestParser, SameResultWhateverTheSplit) {
  const std::string req = "POST /echo?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nX-Long: " +
                          std::string(3000, 'v') + "\r\n\r\nhello world";
  for (std::size_t step : {1, 2, 3, 7, 64, 1000}) {
    Parsed p = parse(req + req, step);
    ASSERT_EQ(p.error, 0) << "step " << step << ": " << p.reason;
    ASSERT_EQ(p.bodies.size(), 2u) << "step " << step;
    EXPECT_EQ(p.bodies[0], "hello world");
    EXPECT_EQ(p.bodies[1], "hello world");
    EXPECT_EQ(p.targets[1], "/echo?q=1");
  }
}

TEST(RequestParser, PipelinedRequestsComeOutInOrder) {
  std::string batch;
  for (int i = 0; i < 100; ++i)
    batch += "GET /r" + std::to_string(i) + " HTTP/1.1\r\nHost: x\r\n\r\n";
  Parsed p = parse(batch);
  ASSERT_EQ(p.error, 0) << p.reason;
  ASSERT_EQ(p.targets.size(), 100u);
  for (int i = 0; i < 100; ++i)
    EXPECT_EQ(p.targets[static_cast<std::size_t>(i)], "/r" + std::to_string(i));
}

TEST(RequestParser, DecodesChunkedBodiesAcrossSplits) {
  const std::string req =
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5\r\nhello\r\n1;ext=1\r\n \r\n5\r\nworld\r\n0\r\nTrailer-Field: t\r\n\r\n";
  for (std::size_t step : {0, 1, 5}) {
    Parsed p = parse(req, step);
    ASSERT_EQ(p.error, 0) << p.reason;
    ASSERT_EQ(p.bodies.size(), 1u);
    EXPECT_EQ(p.bodies[0], "hello world");
  }
}

TEST(RequestParser, BodyLargerThanTheBufferIsCopiedWhole) {
  Limits limits;
  limits.max_body_bytes = 1 << 20;
  const std::string body(300'000, 'b');
  const std::string req =
      "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\n\r\n" + body + "GET /after HTTP/1.1\r\nHost: x\r\n\r\n";
  for (std::size_t step : {0, 4096, 777}) {
    Parsed p = parse(req, step, limits);
    ASSERT_EQ(p.error, 0) << p.reason;
    ASSERT_EQ(p.bodies.size(), 2u);
    EXPECT_EQ(p.bodies[0], body);
    EXPECT_EQ(p.targets[0], "/echo");
    EXPECT_EQ(p.targets[1], "/after");
  }
}

TEST(RequestParser, LeadingEmptyLineIsIgnored) {
  Parsed p = parse("\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n");
  EXPECT_EQ(p.error, 0);
  EXPECT_EQ(p.targets.size(), 1u);
}

TEST(RequestParser, AnyRunOfEmptyLinesIsSkippedWhateverTheSplit) {
  std::string run;
  for (int i = 0; i < 40000; ++i) run += "\r\n";
  const std::string req = run + "GET / HTTP/1.1\r\nHost: x\r\n\r\n" + run;
  for (const std::size_t step :
       {std::size_t{0}, std::size_t{1}, std::size_t{3}, std::size_t{4097}}) {
    Parsed p = parse(req + "GET /2 HTTP/1.1\r\nHost: x\r\n\r\n", step);
    EXPECT_EQ(p.error, 0) << step << ": " << p.reason;
    EXPECT_EQ(p.targets.size(), 2u) << step;
  }
}

TEST(RequestParser, EmptyFieldValuesAreValid) {
  for (const std::size_t step : {std::size_t{0}, std::size_t{1}}) {
    Parsed p = parse("GET / HTTP/1.1\r\nHost: x\r\nX-Empty:\r\nAccept: \r\nCookie:\r\n\r\n", step);
    EXPECT_EQ(p.error, 0) << p.reason;
    EXPECT_EQ(p.targets.size(), 1u);
  }
}

TEST(RequestParser, EncodedSlashStaysEncodedInThePath) {
  Parsed p = parse("GET /debug%2fgreen%20threads/x%2F HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_EQ(p.paths.size(), 1u);
  EXPECT_EQ(p.paths[0], "/debug%2Fgreen threads/x%2F");
}

TEST(RequestParser, ChunkedBodyWithExtensionsAndTrailersSurvivesEverySplit) {
  const std::string req =
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      "5;a=b\r\nhello\r\n0006\r\n world\r\n0\r\nT: v\r\nU:\r\n\r\n"
      "GET /next HTTP/1.1\r\nHost: x\r\n\r\n";
  for (std::size_t step = 0; step < 12; ++step) {
    Parsed p = parse(req, step);
    EXPECT_EQ(p.error, 0) << step << ": " << p.reason;
    ASSERT_EQ(p.bodies.size(), 2u) << step;
    EXPECT_EQ(p.bodies[0], "hello world");
  }
}

// Bare LF empty lines before a request line stay skipped, as nginx skips them: between two
// requests they cannot move a boundary (RequestParser::skip_empty_lines()).
TEST(RequestParser, BareLfEmptyLinesBeforeARequestAreSkipped) {
  for (const std::size_t step : {std::size_t{0}, std::size_t{1}}) {
    Parsed p = parse(
        "\n\r\n\nGET / HTTP/1.1\r\nHost: x\r\n\r\n\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n", step);
    EXPECT_EQ(p.error, 0) << step << ": " << p.reason;
    EXPECT_EQ(p.targets.size(), 2u) << step;
  }
}

std::string chunks(int count, const std::string& line, const std::string& data) {
  std::string out = "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (int i = 0; i < count; ++i) out += line + "\r\n" + data + "\r\n";
  return out + "0\r\n\r\n";
}

// Go's excess rule: each chunk adds its line (CRLF included) + 2 and takes away 16 + 2 × size,
// never below 0; past 16 KiB, 400. A 4004-byte line per byte of data adds 4004 + 2 - 18 = 3988:
// 4 such chunks (15952) pass, the 5th (19940) fails, whatever the split.
TEST(RequestParser, ChunkFramingBeyondTheDataIsRefusedAfter16KiB) {
  const std::string line = "1;" + std::string(4000, 'a');
  for (const std::size_t step : {std::size_t{0}, std::size_t{1}, std::size_t{1000}}) {
    Parsed four = parse(chunks(4, line, "x"), step);
    EXPECT_EQ(four.error, 0) << step << ": " << four.reason;
    EXPECT_EQ(four.bodies, std::vector<std::string>{"xxxx"}) << step;
    Parsed five = parse(chunks(5, line, "x"), step);
    EXPECT_EQ(five.error, 400) << step;
    EXPECT_EQ(five.reason, "too much chunk framing for the data") << step;
  }
  // Data earns its allowance: the same extensions on 2 KiB chunks never accrue any.
  Parsed big = parse(chunks(50, "7d0;" + std::string(4000, 'a'), std::string(2000, 'd')));
  EXPECT_EQ(big.error, 0) << big.reason;
}

// Streaming a byte a chunk with short extensions is legitimate: "1;a=b\r\n" + "x\r\n" adds
// 7 + 2 = 9 and earns 18, so the excess stays 0 however many chunks come.
TEST(RequestParser, ManyOneByteChunksWithShortExtensionsAreAccepted) {
  Parsed p = parse(chunks(5000, "1;a=b", "x"));
  EXPECT_EQ(p.error, 0) << p.reason;
  ASSERT_EQ(p.bodies.size(), 1u);
  EXPECT_EQ(p.bodies[0], std::string(5000, 'x'));
}

TEST(RequestParser, ChunkLargerThanTheBodyLimitIs413BeforeItsData) {
  Limits limits;
  limits.max_body_bytes = 10;
  Parsed p = parse(
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      "6\r\nabcdef\r\n5\r\n",
      0, limits);
  EXPECT_EQ(p.error, 413);
}

TEST(RequestParser, AbsoluteFormRoutesByPath) {
  Parsed p = parse(
      "GET http://example.com/p/q?x=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"
      "GET http://example.com HTTP/1.1\r\nHost: example.com\r\n\r\n");
  ASSERT_EQ(p.paths.size(), 2u);
  EXPECT_EQ(p.paths[0], "/p/q");
  EXPECT_EQ(p.paths[1], "/");
}

TEST(RequestParser, ConnectionSemanticsFollowTheVersion) {
  Parsed p = parse("GET / HTTP/1.0\r\n\r\n");
  ASSERT_EQ(p.keep_alive.size(), 1u);
  EXPECT_FALSE(p.keep_alive[0]);
  p = parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  EXPECT_TRUE(p.keep_alive[0]);
  p = parse("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_FALSE(p.keep_alive[0]);
}

TEST(RequestParser, ExpectContinueIsReportedBeforeTheBody) {
  Parsed p = parse(
      "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi");
  EXPECT_EQ(p.error, 0) << p.reason;
  EXPECT_EQ(p.continues, 1);
  ASSERT_EQ(p.bodies.size(), 1u);
  EXPECT_EQ(p.bodies[0], "hi");
}

TEST(RequestParser, OversizedDeclaredBodyIs413BeforeTheBody) {
  Limits limits;
  limits.max_body_bytes = 10;
  Parsed p =
      parse("POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 11\r\n\r\n",
            0, limits);
  EXPECT_EQ(p.error, 413);
  EXPECT_EQ(p.continues, 0);
}

TEST(RequestParser, OversizedChunkedBodyIs413) {
  Limits limits;
  limits.max_body_bytes = 10;
  Parsed p = parse(
      "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
      "6\r\nabcdef\r\n6\r\nabcdef\r\n0\r\n\r\n",
      0, limits);
  EXPECT_EQ(p.error, 413);
}

// Bytes → the status the server must answer (Go net/http's table style). Each case is also
// run byte by byte: a split must never change the verdict.
struct BadInput {
  const char* name;
  std::string bytes;
  int status;
};

std::vector<BadInput> bad_inputs() {
  return {
      {"missing Host in 1.1", "GET / HTTP/1.1\r\n\r\n", 400},
      {"duplicate Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
      {"CL with TE (smuggling)",
       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
       400},
      {"TE with CL (smuggling)",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
       400},
      {"conflicting CL",
       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400},
      {"duplicate CL",
       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc", 400},
      {"negative CL", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400},
      {"CL with a space", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1 2\r\n\r\n", 400},
      {"CL not a number", "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n", 400},
      {"CL overflow",
       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\n", 400},
      {"bad chunk size", "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
       400},
      {"chunk longer than its size",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n", 400},
      {"TE last coding not chunked",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
      {"TE chunked then gzip",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400},
      {"TE gzip then chunked (unsupported coding)",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501},
      {"TE chunked twice",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
       "chunked\r\n\r\n",
       400},
      {"whitespace before colon", "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400},
      {"tab before colon", "GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400},
      {"NUL in header value", std::string("GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n", 26), 400},
      {"bare CR in header value", "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400},
      {"obs-fold with spaces", "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n  b\r\n\r\n", 400},
      {"obs-fold with a tab", "GET / HTTP/1.1\r\nHost: a\r\n\tX: b\r\n\r\n", 400},
      {"obs-fold after an empty value", "GET / HTTP/1.1\r\nHost: a\r\nX:\r\n b\r\n\r\n", 400},
      {"space before first header", "GET / HTTP/1.1\r\n Host: a\r\n\r\n", 400},
      {"control byte in header", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x01 b\r\n\r\n", 400},
      {"DEL in header", "GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f b\r\n\r\n", 400},
      {"control byte in target", "GET /\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"space in target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"target not origin-form", "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"bad percent-encoding", "GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"truncated percent-encoding", "GET /a%2 HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"encoded NUL in path", "GET /a%00b HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"unknown method token", "FOO / HTTP/1.1\r\nHost: a\r\n\r\n", 501},
      {"lowercase method (methods are case-sensitive)", "get / HTTP/1.1\r\nHost: a\r\n\r\n", 501},
      {"method with a non-token byte", "GE(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"HTTP/2 preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505},
      {"HTTP/2.0 request", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505},
      {"HTTP/1.2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505},
      {"HTTP/3.0", "GET / HTTP/3.0\r\nHost: a\r\n\r\n", 505},
      {"CONNECT", "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 501},
      {"unknown expectation",
       "POST / HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\nContent-Length: 1\r\n\r\nx", 417},
      {"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400},
      {"garbage text", "{\"json\": true}\r\n\r\n", 400},
      {"HTTP/0.9 request line (no version)", "GET /\r\nHost: a\r\n\r\n", 505},
      {"malformed version", "GET / HTTP/x.1\r\nHost: a\r\n\r\n", 400},
      // Issue 11: bare CR, Host syntax, HTTP/1.0 framing, chunk lines and trailers.
      {"bare CR ends the head", "GET / HTTP/1.1\r\nHost: a\r\n\rX", 400},
      {"bare CR after an empty value", "GET / HTTP/1.1\r\nHost: a\r\nX:\rB: c\r\n\r\n", 400},
      {"bare CR before the request line", "\r\n\rGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"bare CR after the version", "GET / HTTP/1.1\rHost: a\r\n\r\n", 400},
      {"bare CR in a chunk line",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\rXhello\r\n0\r\n\r\n",
       400},
      {"bare CR after chunk data",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\rX0\r\n\r\n",
       400},
      {"bare CR ends the trailers",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: v\r\n\rX", 400},
      // A bare LF ends no line inside a request (llhttp alone takes the first four).
      {"bare LF after the request line", "GET / HTTP/1.1\nHost: a\r\n\r\n", 400},
      {"bare LF ends the head", "GET / HTTP/1.1\r\nHost: a\r\n\n", 400},
      {"bare LF ends a head without headers", "GET / HTTP/1.0\r\n\n", 400},
      {"bare LF after a request line without headers", "GET / HTTP/1.0\n\r\n", 400},
      {"bare LF ends a Content-Length head",
       "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\nabcGET / HTTP/1.1\r\nHost: a\r\n\r\n",
       400},
      {"bare LF ends the trailers",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\n"
       "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
       400},
      {"bare LF after a trailer field",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: v\n\r\n", 400},
      {"bare LF after a header value", "GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400},
      {"bare LF after header whitespace", "GET / HTTP/1.1\r\nHost: a \n\r\n", 400},
      {"bare LF after an empty value", "GET / HTTP/1.1\r\nHost: a\r\nX:\n\r\n", 400},
      {"bare LF after a chunk size",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\nabc\r\n0\r\n\r\n", 400},
      {"bare LF after chunk data",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\n0\r\n\r\n", 400},
      {"bare LF after the last chunk",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\n\r\n", 400},
      {"Host with a space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400},
      {"Host with userinfo", "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n", 400},
      {"Host with a slash", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400},
      {"HTTP/1.0 with Transfer-Encoding",
       "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
      {"chunk extension over 4 KiB",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;" +
           std::string(5000, 'e') + "\r\nx\r\n0\r\n\r\n",
       400},
      {"chunk size with 5000 leading zeros",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + std::string(5000, '0') +
           "1\r\nx\r\n0\r\n\r\n",
       400},
      {"chunk size over 16 hex digits",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n",
       400},
      {"obs-fold in a trailer",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT: a\r\n b\r\n\r\n",
       400},
      {"space before colon in a trailer",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT : a\r\n\r\n", 400},
      {"trailers over the header limit",
       "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nT:" +
           std::string(17000, ' ') + "v\r\n\r\n",
       431},
      {"target over 8 KiB", "GET /" + std::string(9000, 'a') + " HTTP/1.1\r\nHost: a\r\n\r\n", 414},
      {"header section over 16 KiB",
       "GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(17000, 'h') + "\r\n\r\n", 431},
      {"header whitespace padding over the limit",
       "GET / HTTP/1.1\r\nHost: a\r\nX:" + std::string(30000, ' ') + "v\r\n\r\n", 431},
  };
}

TEST(RequestParser, BadInputGetsItsPreciseStatus) {
  for (const BadInput& c : bad_inputs()) {
    Parsed whole = parse(c.bytes);
    EXPECT_EQ(whole.error, c.status) << c.name << " (reason: " << whole.reason << ")";
    EXPECT_TRUE(whole.targets.empty()) << c.name << ": a bad request must not be handled";
    Parsed split = parse(c.bytes, 1);
    EXPECT_EQ(split.error, c.status) << c.name << ", byte by byte (reason: " << split.reason << ")";
  }
}

TEST(RequestParser, TooManyHeadersIs431) {
  std::string req = "GET / HTTP/1.1\r\nHost: a\r\n";
  for (int i = 0; i < 101; ++i) req += "X-" + std::to_string(i) + ": v\r\n";
  EXPECT_EQ(parse(req + "\r\n").error, 431);
}

TEST(RequestParser, NothingAfterAnErrorIsProcessed) {
  Parsed p = parse(
      "GET /ok HTTP/1.1\r\nHost: a\r\n\r\nGET /bad HTTP/1.1\r\n\r\nGET /never HTTP/1.1\r\nHost: "
      "a\r\n\r\n");
  EXPECT_EQ(p.error, 400);
  ASSERT_EQ(p.targets.size(), 1u);
  EXPECT_EQ(p.targets[0], "/ok");
}

TEST(RequestParser, HeadOfExactlyTheLimitsIsAccepted) {
  Limits limits;
  std::string req =
      "GET /" + std::string(limits.max_target_bytes - 1, 't') + " HTTP/1.1\r\nHost: a\r\n";
  // Header names and values may add up to the limit.
  req += "X: " + std::string(limits.max_header_bytes - 1 - 4 - 1 - 1, 'h') + "\r\n\r\n";
  Parsed p = parse(req, 0, limits);
  EXPECT_EQ(p.error, 0) << p.reason;
  EXPECT_EQ(p.targets.size(), 1u);
}

}  // namespace
}  // namespace green::http

namespace green::http {
namespace {

// Streamed bodies (set_stream_threshold): the request is handed out at its head and its body
// pumped on demand into a `read_size` buffer, input arriving `step` bytes at a time. For each
// request: its target and Host header read after its body (the views must survive the body's
// compactions), and its body.
struct Streamed {
  std::vector<std::string> heads;
  std::vector<std::string> bodies;
  std::vector<bool> streamed;
  int error = 0;
};

Streamed parse_streaming(const std::string& input, std::size_t step, std::size_t read_size,
                         Limits limits = {}) {
  RequestParser parser(limits);
  ParserStorage storage(limits);
  parser.set_stream_threshold(100);
  parser.attach(&storage);
  Streamed out;
  std::size_t pos = 0;
  auto feed = [&] {
    const std::span<char> room = parser.spare();
    const std::size_t n = std::min({room.size(), input.size() - pos, step});
    if (n == 0) return false;
    std::copy_n(input.data() + pos, n, room.data());
    parser.commit(n);
    pos += n;
    return true;
  };
  for (;;) {
    const ParseEvent e = parser.next();
    if (e == ParseEvent::kError) {
      out.error = parser.error_status();
      return out;
    }
    if (e == ParseEvent::kNeedMore) {
      if (!feed()) return out;
      continue;
    }
    if (e != ParseEvent::kRequest) continue;
    Request& r = parser.request();
    std::string body;
    out.streamed.push_back(parser.body_streaming());
    if (parser.body_streaming()) {
      std::vector<char> buf(read_size);
      for (;;) {
        const long n = parser.pump_body(RequestParser::BodySink::kCopy, buf);
        if (n < 0) {
          out.error = parser.error_status();
          return out;
        }
        if (n > 0) {
          body.append(buf.data(), static_cast<std::size_t>(n));
        } else if (parser.body_done()) {
          break;
        } else if (!feed()) {
          return out;
        }
      }
    } else {
      body = std::string(*r.body().read_all());
    }
    out.heads.push_back(std::string(r.target()) + " " + std::string(r.header("Host")));
    out.bodies.push_back(body);
  }
}

std::string chunked_of(const std::string& body, std::size_t chunk) {
  std::string out;
  for (std::size_t i = 0; i < body.size(); i += chunk) {
    const std::string piece = body.substr(i, chunk);
    char size[20];
    std::snprintf(size, sizeof size, "%zx", piece.size());
    out += std::string(size) + ";ext=1\r\n" + piece + "\r\n";
  }
  return out + "0\r\nTrailer: t\r\n\r\n";
}

TEST(RequestParser, StreamedBodiesArePumpedOnDemandAndTheHeadStaysValid) {
  std::string body;
  for (int i = 0; i < 100'000; ++i) body.push_back(static_cast<char>('a' + i % 26));
  const std::string small = "GET /first HTTP/1.1\r\nHost: one\r\n\r\n";
  const std::string by_length =
      "POST /length HTTP/1.1\r\nHost: two\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\n\r\n" + body;
  const std::string by_chunks =
      "POST /chunks HTTP/1.1\r\nHost: three\r\nTransfer-Encoding: chunked\r\n\r\n" +
      chunked_of(body, 777);
  const std::string below = "POST /small HTTP/1.1\r\nHost: four\r\nContent-Length: 5\r\n\r\nhello";
  const std::string input = small + by_length + by_chunks + below;
  for (const std::size_t step : {std::size_t{1} << 20, std::size_t{4096}, std::size_t{1000}}) {
    for (const std::size_t read_size : {std::size_t{1}, std::size_t{7}, std::size_t{65536}}) {
      if (read_size == 1 && step != 4096) continue;  // one byte at a time: once is enough
      SCOPED_TRACE("step " + std::to_string(step) + ", read " + std::to_string(read_size));
      const Streamed s = parse_streaming(input, step, read_size);
      EXPECT_EQ(s.error, 0);
      ASSERT_EQ(s.heads.size(), 4u);
      EXPECT_EQ(s.heads[0], "/first one");
      EXPECT_EQ(s.heads[1], "/length two");
      EXPECT_EQ(s.heads[2], "/chunks three");
      EXPECT_EQ(s.heads[3], "/small four");
      EXPECT_TRUE(s.bodies[1] == body);
      EXPECT_TRUE(s.bodies[2] == body);
      EXPECT_EQ(s.bodies[3], "hello");
      EXPECT_EQ(s.streamed, (std::vector<bool>{false, true, true, false}));
    }
  }
}

TEST(RequestParser, StreamedBodyErrorsSurfaceFromThePump) {
  Limits limits;
  limits.max_body_bytes = 1000;
  // Over the limit mid-stream (chunked: nothing declared), and bad chunk framing.
  EXPECT_EQ(parse_streaming("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" +
                                chunked_of(std::string(2000, 'x'), 500),
                            4096, 64, limits)
                .error,
            413);
  EXPECT_EQ(parse_streaming("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
                            "3\r\nabcX\r\n",
                            4096, 64)
                .error,
            400);
}

}  // namespace
}  // namespace green::http
