// The protocol rules in one table (Go net/http's serve_test style): raw request bytes → the
// exact status the real binary answers over a real socket, and whether it then closes the
// connection. Every framing and header-syntax rule the parser enforces has a row here, the old
// ones (smuggling, versions, limits) and those of issue 11 (empty values, bare CR, Host syntax,
// HTTP/1.0 with Transfer-Encoding, chunk-line bounds, trailers, encoded slashes). Below the
// table: pipelining and keep-alive must never stall, and empty lines must not keep an idle
// connection alive.
//
// Each row's bytes also seed the connection fuzzer's corpus (tests/http/fuzz/corpus/table-*):
//   GREEN_WRITE_TABLE_CORPUS=tests/http/fuzz/corpus build/tests/http/http_protocol_table_test
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "tests/http/http_test_util.h"
#include "tests/http/server_process.h"

namespace green::http {
namespace {

using namespace std::chrono_literals;
using testing::Client;
using testing::run_command;

// The binary (tests/http/server_process.h) with a static directory holding a/b, made before
// it starts (--static-dir must exist) and removed after it stops.
class ServerProcess {
 public:
  explicit ServerProcess(std::vector<std::string> args)
      : static_dir_(make_static_dir()), process_(with_static_dir(std::move(args), static_dir_)) {}
  ~ServerProcess() { run_command("rm -rf '" + static_dir_ + "'"); }
  uint16_t port() const { return process_.port(); }
  // What the server wrote to stderr: a sanitizer build reports there.
  std::string stderr_text() const { return process_.stderr_text(); }

 private:
  static std::string make_static_dir() {
    char dir[] = "/tmp/greenhttp-table-XXXXXX";
    const std::string root = mkdtemp(dir);
    mkdir((root + "/a").c_str(), 0755);
    std::ofstream(root + "/a/b") << "file a/b";
    return root;
  }
  static std::vector<std::string> with_static_dir(std::vector<std::string> args,
                                                  const std::string& dir) {
    args.insert(args.begin(), {"--access-log", "off", "--static-dir", dir});
    return args;
  }
  std::string static_dir_;
  testing::ServerProcess process_;
};

struct Case {
  const char* name;  // also the corpus file's name: table-<name>
  std::string bytes;
  int status;
  bool closes;  // false: the connection must then serve another request
};

constexpr bool kClose = true;
constexpr bool kKeep = false;

std::string post_chunked(std::string_view body) {
  return "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" + std::string(body);
}

std::string repeat(const std::string& s, int n) {
  std::string out;
  for (int i = 0; i < n; ++i) out += s;
  return out;
}

std::vector<Case> cases() {
  const std::string get = "GET /plaintext HTTP/1.1\r\nHost: a\r\n";
  return {
      // --- accepted ---
      {"plain-get", get + "\r\n", 200, kKeep},
      {"empty-values", get + "X-Empty:\r\nAccept: \r\nCookie:\r\n\r\n", 200, kKeep},
      {"empty-host", "GET /plaintext HTTP/1.1\r\nHost:\r\n\r\n", 200, kKeep},
      {"host-with-port", "GET /plaintext HTTP/1.1\r\nHost: a.example:8080\r\n\r\n", 200, kKeep},
      {"host-ipv6", "GET /plaintext HTTP/1.1\r\nHost: [::1]:80\r\n\r\n", 200, kKeep},
      {"http10-no-host", "GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 200, kKeep},
      {"leading-empty-lines", "\r\n\r\n\n" + get + "\r\n", 200, kKeep},
      {"chunked-with-extension-and-trailer",
       post_chunked("5;name=value\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n"), 200, kKeep},
      {"chunked-empty-trailer-value", post_chunked("1\r\nx\r\n0\r\nX-Trailer:\r\n\r\n"), 200,
       kKeep},
      // A byte a chunk with short extensions: each adds 7 + 2 and earns 16 + 2, no excess.
      {"chunked-1000-one-byte-chunks", post_chunked(repeat("1;a=b\r\nx\r\n", 1000) + "0\r\n\r\n"),
       200, kKeep},
      {"chunk-size-16-digits", post_chunked("0000000000000001\r\nx\r\n0\r\n\r\n"), 200, kKeep},
      {"absolute-form", "GET http://a/plaintext HTTP/1.1\r\nHost: a\r\n\r\n", 200, kKeep},
      {"asterisk-form-options", "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", 200, kKeep},
      {"static-file", "GET /static/a/b HTTP/1.1\r\nHost: a\r\n\r\n", 200, kKeep},
      // --- encoded slashes are segment data, not separators (Go's ServeMux) ---
      {"encoded-slash-not-a-route", "GET /debug%2Fgreenthreads HTTP/1.1\r\nHost: a\r\n\r\n", 404,
       kKeep},
      {"encoded-slash-lowercase", "GET /debug%2fgreenthreads HTTP/1.1\r\nHost: a\r\n\r\n", 404,
       kKeep},
      {"encoded-slash-static", "GET /static/a%2Fb HTTP/1.1\r\nHost: a\r\n\r\n", 404, kKeep},
      {"encoded-dotdot-static", "GET /static/a/..%2F..%2Fport HTTP/1.1\r\nHost: a\r\n\r\n", 404,
       kKeep},
      // --- bare CR anywhere in the head or the chunked framing ---
      {"bare-cr-ends-head", "GET /plaintext HTTP/1.1\r\nHost: a\r\n\rX", 400, kClose},
      {"bare-cr-in-value", get + "X: a\rb\r\n\r\n", 400, kClose},
      {"bare-cr-after-empty-value", get + "X:\rB: c\r\n\r\n", 400, kClose},
      {"bare-cr-after-value-ws", get + "X: \r\r\n\r\n", 400, kClose},
      {"bare-cr-before-request", "\rGET /plaintext HTTP/1.1\r\nHost: a\r\n\r\n", 400, kClose},
      {"bare-cr-in-request-line", "GET /plaintext\r HTTP/1.1\r\nHost: a\r\n\r\n", 400, kClose},
      {"bare-cr-after-version", "GET /plaintext HTTP/1.1\rHost: a\r\n\r\n", 400, kClose},
      {"bare-cr-chunk-line", post_chunked("5\rXhello\r\n0\r\n\r\n"), 400, kClose},
      {"bare-cr-after-chunk-data", post_chunked("5\r\nhello\rX0\r\n\r\n"), 400, kClose},
      {"bare-cr-ends-trailers", post_chunked("5\r\nhello\r\n0\r\nT: v\r\n\rX"), 400, kClose},
      {"bare-lf-line-ends", "GET /plaintext HTTP/1.1\nHost: a\n\n", 400, kClose},
      // --- bare LF: no line inside a request ends in one (a front proxy framing it differently
      // is a smuggling vector); before a request line, empty lines of bare LF stay skipped ---
      {"asterisk-form-get", "GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400, kClose},
      {"absolute-form-userinfo", "GET http://u@a/plaintext HTTP/1.1\r\nHost: a\r\n\r\n", 400,
       kClose},
      {"absolute-form-empty-host", "GET http:///plaintext HTTP/1.1\r\nHost: a\r\n\r\n", 400,
       kClose},
      {"bare-lf-after-request-line", "GET /plaintext HTTP/1.1\nHost: a\r\n\r\n", 400, kClose},
      {"bare-lf-ends-head", get + "\n", 400, kClose},
      {"bare-lf-ends-head-without-headers", "GET /plaintext HTTP/1.0\r\n\n", 400, kClose},
      {"bare-lf-ends-content-length-head",
       "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\nabc"
       "GET /json HTTP/1.1\r\nHost: a\r\n\r\n",
       400, kClose},
      {"bare-lf-ends-trailers", post_chunked("0\r\n\nGET /json HTTP/1.1\r\nHost: a\r\n\r\n"), 400,
       kClose},
      {"bare-lf-after-trailer-field", post_chunked("1\r\nx\r\n0\r\nT: v\n\r\n"), 400, kClose},
      {"bare-lf-after-header-value", get + "X: v\n\r\n", 400, kClose},
      {"bare-lf-after-chunk-size", post_chunked("3\nabc\r\n0\r\n\r\n"), 400, kClose},
      {"bare-lf-after-chunk-data", post_chunked("3\r\nabc\n0\r\n\r\n"), 400, kClose},
      {"bare-lf-after-last-chunk", post_chunked("0\n\r\n"), 400, kClose},
      {"bare-lf-empty-lines-before-request", "\n\n" + get + "\r\n", 200, kKeep},
      // --- Host (RFC 9112 3.2) ---
      {"host-missing", "GET /plaintext HTTP/1.1\r\n\r\n", 400, kClose},
      {"host-duplicate", get + "Host: b\r\n\r\n", 400, kClose},
      {"host-space", "GET /plaintext HTTP/1.1\r\nHost: a b\r\n\r\n", 400, kClose},
      {"host-userinfo", "GET /plaintext HTTP/1.1\r\nHost: u@a\r\n\r\n", 400, kClose},
      {"host-slash", "GET /plaintext HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, kClose},
      {"host-invalid-http10", "GET /plaintext HTTP/1.0\r\nHost: a/b\r\n\r\n", 400, kClose},
      // --- message framing (RFC 9112 6) ---
      {"http10-transfer-encoding",
       "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, kClose},
      {"cl-and-te",
       "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
       400, kClose},
      {"te-and-cl",
       "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
       400, kClose},
      {"conflicting-cl",
       "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc", 400,
       kClose},
      {"negative-cl", "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400, kClose},
      {"te-chunked-not-final",
       "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400, kClose},
      {"te-unsupported-coding",
       "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501,
       kClose},
      {"te-chunked-twice",
       "POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: "
       "chunked\r\n\r\n",
       400, kClose},
      {"chunk-size-not-hex", post_chunked("zz\r\n"), 400, kClose},
      {"chunk-longer-than-size", post_chunked("3\r\nabcX\r\n"), 400, kClose},
      {"chunk-size-17-digits", post_chunked("10000000000000000\r\n"), 400, kClose},
      {"chunk-extension-over-4k",
       post_chunked("1;" + std::string(5000, 'e') + "\r\nx\r\n0\r\n\r\n"), 400, kClose},
      // Go's excess rule: each 4004-byte line a byte of data adds 3988; the 5th passes 16 KiB.
      {"chunk-extensions-excess",
       post_chunked(repeat("1;" + std::string(4000, 'a') + "\r\nx\r\n", 8) + "0\r\n\r\n"), 400,
       kClose},
      {"chunk-size-leading-zeros-over-4k",
       post_chunked(std::string(5000, '0') + "1\r\nx\r\n0\r\n\r\n"), 400, kClose},
      {"chunk-size-over-max-body", post_chunked("200000\r\n"), 413, kClose},
      {"chunked-body-over-max-body",
       post_chunked("80000\r\n" + std::string(0x80000, 'x') + "\r\n80001\r\n"), 413, kClose},
      {"declared-body-over-max-body",
       "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 2000000\r\n\r\n", 413, kClose},
      // --- header and trailer field syntax (RFC 9110 5, RFC 9112 5) ---
      {"obs-fold", get + "X: a\r\n  b\r\n\r\n", 400, kClose},
      {"obs-fold-after-empty-value", get + "X:\r\n b\r\n\r\n", 400, kClose},
      {"space-before-colon", "GET /plaintext HTTP/1.1\r\nHost : a\r\n\r\n", 400, kClose},
      {"tab-before-colon", "GET /plaintext HTTP/1.1\r\nHost\t: a\r\n\r\n", 400, kClose},
      {"space-before-first-header", "GET /plaintext HTTP/1.1\r\n Host: a\r\n\r\n", 400, kClose},
      {"nul-in-value", get + std::string("X: a\0b\r\n\r\n", 10), 400, kClose},
      {"control-in-value", get + "X: a\x01 b\r\n\r\n", 400, kClose},
      {"trailer-obs-fold", post_chunked("1\r\nx\r\n0\r\nT: a\r\n b\r\n\r\n"), 400, kClose},
      {"trailer-space-before-colon", post_chunked("1\r\nx\r\n0\r\nT : a\r\n\r\n"), 400, kClose},
      {"trailer-section-over-limit",
       post_chunked("1\r\nx\r\n0\r\nT: " + std::string(17000, 't') + "\r\n\r\n"), 431, kClose},
      {"header-section-over-limit", get + "X: " + std::string(17000, 'h') + "\r\n\r\n", 431,
       kClose},
      {"header-whitespace-over-limit", get + "X:" + std::string(30000, ' ') + "v\r\n\r\n", 431,
       kClose},
      {"too-many-headers",
       [&] {
         std::string s = get;
         for (int i = 0; i < 101; ++i) s += "X-" + std::to_string(i) + ": v\r\n";
         return s + "\r\n";
       }(),
       431, kClose},
      {"unknown-expectation",
       "POST /echo HTTP/1.1\r\nHost: a\r\nExpect: teapot\r\nContent-Length: 1\r\n\r\nx", 417,
       kClose},
      // --- request line ---
      {"target-over-limit", "GET /" + std::string(9000, 't') + " HTTP/1.1\r\nHost: a\r\n\r\n", 414,
       kClose},
      {"space-in-target", "GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", 400, kClose},
      {"tab-in-target", "GET /a\tb HTTP/1.1\r\nHost: a\r\n\r\n", 400, kClose},
      {"non-ascii-in-target", "GET /\xc3\xa9 HTTP/1.1\r\nHost: a\r\n\r\n", 400, kClose},
      {"target-not-origin-form", "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", 400, kClose},
      {"bad-percent-encoding", "GET /a%zz HTTP/1.1\r\nHost: a\r\n\r\n", 400, kClose},
      {"encoded-nul", "GET /a%00b HTTP/1.1\r\nHost: a\r\n\r\n", 400, kClose},
      {"unknown-method", "FOO / HTTP/1.1\r\nHost: a\r\n\r\n", 501, kClose},
      {"method-not-a-token", "GE(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400, kClose},
      {"connect", "CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n", 501, kClose},
      {"http-1-2", "GET / HTTP/1.2\r\nHost: a\r\n\r\n", 505, kClose},
      {"http-2-0", "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505, kClose},
      {"http2-preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, kClose},
      {"malformed-version", "GET / HTTP/x.1\r\nHost: a\r\n\r\n", 400, kClose},
      {"tls-handshake", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, kClose},
  };
}

class ProtocolTable : public ::testing::Test {
 protected:
  // HTTP/1.1's table: with --h2c false the HTTP/2 preface is a 505 like any HTTP/2.0 request
  // line (with h2c on, the default, it starts HTTP/2: tests/http/http2_test.py).
  static void SetUpTestSuite() { server_ = new ServerProcess({"--h2c", "false"}); }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  // ASan/UBSan in the server process report on its stderr, not in this test's.
  void TearDown() override {
    const std::string err = server_->stderr_text();
    EXPECT_EQ(err.find("Sanitizer"), std::string::npos) << err;
    EXPECT_EQ(err.find("runtime error"), std::string::npos) << err;
  }
  static ServerProcess* server_;
};
ServerProcess* ProtocolTable::server_ = nullptr;

TEST_F(ProtocolTable, EachRequestGetsItsExactStatusAndConnectionFate) {
  ASSERT_NE(server_->port(), 0);
  for (const Case& c : cases()) {
    SCOPED_TRACE(c.name);
    // EXPECT, not ASSERT: one failing row must not hide the others.
    Client client(server_->port());
    EXPECT_TRUE(client.connected() && client.send(c.bytes));
    const auto r = client.read_response();
    if (!r.has_value()) {
      ADD_FAILURE() << "no response";
      continue;
    }
    EXPECT_EQ(r->status, c.status) << r->head << "\n" << r->body;
    if (c.closes) {
      EXPECT_EQ(r->header("Connection"), "close");
      EXPECT_TRUE(client.at_eof()) << "the connection must close";
    } else {
      EXPECT_TRUE(client.send("GET /plaintext HTTP/1.1\r\nHost: a\r\n\r\n"));
      const auto next = client.read_response();
      EXPECT_TRUE(next.has_value() && next->status == 200) << "the connection must stay usable";
    }
  }
}

TEST_F(ProtocolTable, EncodedSlashNeverReachesTheRoute) {
  Client client(server_->port());
  ASSERT_TRUE(client.send("GET /debug%2Fgreenthreads HTTP/1.1\r\nHost: a\r\n\r\n"));
  const auto r = client.read_response();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 404);
  EXPECT_EQ(r->body.find("goroutine"), std::string::npos);
  EXPECT_EQ(r->body.find("green thread"), std::string::npos);
}

// The seeds of the connection fuzzer: written on request, committed under fuzz/corpus.
TEST_F(ProtocolTable, WritesTheCorpusWhenAsked) {
  const char* dir = std::getenv("GREEN_WRITE_TABLE_CORPUS");
  if (dir == nullptr) GTEST_SKIP() << "set GREEN_WRITE_TABLE_CORPUS=DIR to write the seeds";
  for (const Case& c : cases()) {
    if (c.bytes.size() > 64 * 1024) continue;  // seeds stay small; the fuzzer grows them
    std::ofstream(std::string(dir) + "/table-" + c.name, std::ios::binary) << c.bytes;
  }
}

// `count` pipelined 32-byte GET /json requests, written in pieces of `piece` bytes (0: one
// send) while the responses are read: how many were answered 200 before a stall (the client's
// 5 s receive timeout) or the end.
int pipeline_json(uint16_t port, int count, std::size_t piece) {
  std::string all;
  for (int i = 0; i < count; ++i) all += "GET /json HTTP/1.1\r\nHost: ab\r\n\r\n";
  if (piece == 0) piece = all.size();
  Client client(port);
  std::thread writer([&] {
    for (std::size_t at = 0; at < all.size(); at += piece) {
      if (!client.send(std::string_view(all).substr(at, piece))) return;
    }
  });
  int answered = 0;
  while (answered < count) {
    const auto r = client.read_response();
    if (!r.has_value() || r->status != 200) break;
    ++answered;
  }
  writer.join();
  return answered;
}

// 2,000 pipelined 32-byte requests in one write: a read that fills the input buffer exactly at
// a request boundary must not park the connection with the rest still in the socket.
TEST_F(ProtocolTable, TwoThousandPipelinedRequestsInOneWriteAreAllAnswered) {
  EXPECT_EQ(pipeline_json(server_->port(), 2000, 0), 2000);
}

// Every split of the same pipelined stream: the writer sends it in pieces of many sizes.
TEST_F(ProtocolTable, PipelinedRequestsAreAllAnsweredWhateverTheSplit) {
  for (const std::size_t piece : {std::size_t{7}, std::size_t{4096}, std::size_t{28672},
                                  std::size_t{32768}, std::size_t{40000}}) {
    EXPECT_EQ(pipeline_json(server_->port(), 1500, piece), 1500) << "pieces of " << piece;
  }
}

// RFC 9112 2.2 lets a server skip empty lines before a request; 100 KB of them must not stall.
TEST_F(ProtocolTable, LongRunOfEmptyLinesBeforeARequestIsSkipped) {
  std::string bytes;
  for (int i = 0; i < 50000; ++i) bytes += "\r\n";
  bytes += "GET /plaintext HTTP/1.1\r\nHost: a\r\n\r\n";
  Client client(server_->port());
  std::thread writer([&] { client.send(bytes); });
  const auto r = client.read_response();
  writer.join();
  ASSERT_TRUE(r.has_value());
  EXPECT_EQ(r->status, 200);
}

// A client that sends a CRLF every 200 ms sends no request: it must be closed when the idle
// timeout (1 s) has passed since its last response, not kept alive by each CRLF.
TEST(ProtocolIdle, EmptyLinesDoNotKeepAnIdleConnectionAlive) {
  ServerProcess server({"--idle-timeout", "1s"});
  ASSERT_NE(server.port(), 0);
  Client client(server.port());
  ASSERT_TRUE(client.send("GET /plaintext HTTP/1.1\r\nHost: a\r\n\r\n"));
  ASSERT_TRUE(client.read_response().has_value());
  const auto start = std::chrono::steady_clock::now();
  bool closed = false;
  while (!closed && std::chrono::steady_clock::now() - start < 5s) {
    pollfd p{client.fd(), POLLIN, 0};
    // Wait up to 200 ms for the server's close; otherwise send the next empty line.
    if (poll(&p, 1, 200) > 0) {
      char c;
      closed = ::recv(client.fd(), &c, 1, 0) <= 0;
    } else if (!client.send("\r\n")) {
      closed = true;
    }
  }
  const auto took = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(closed);
  EXPECT_LT(took, 2500ms) << "closed only after "
                          << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
                          << " ms";
}

}  // namespace
}  // namespace green::http
