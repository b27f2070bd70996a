// Server-Sent Events (green/http/sse.h) through real sockets: curl sees framed events as they
// are sent, multi-line data and hostile event names and ids cannot add fields, and a client
// that leaves ends the producer's loop.
#include "green/http/sse.h"

#include <atomic>
#include <chrono>
#include <string>

#include <gtest/gtest.h>

#include "green/green.h"
#include "tests/http/http_test_util.h"
#include "tests/http/server_process.h"

namespace green::http {
namespace {

using namespace std::chrono_literals;
using testing::Client;
using testing::get;
using testing::TestServer;
using testing::wait_until;

TEST(EventStream, CurlSeesFramedEvents) {
  TestServer s;
  std::string headers = "/tmp/greenhttp-sse-headers-" + std::to_string(s.port());
  const std::string out =
      testing::run_command("curl -sS -N --max-time 5 -D " + headers +
                           " 'http://127.0.0.1:" + std::to_string(s.port()) + "/events?n=3&ms=10'");
  EXPECT_EQ(out,
            "event: tick\nid: 1\ndata: 1\n\n"
            "event: tick\nid: 2\ndata: 2\n\n"
            "event: tick\nid: 3\ndata: 3\n\n");
  const std::string head = testing::read_file(headers);
  std::remove(headers.c_str());
  EXPECT_NE(head.find("Content-Type: text/event-stream\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("Cache-Control: no-cache\r\n"), std::string::npos) << head;
  EXPECT_NE(head.find("Transfer-Encoding: chunked\r\n"), std::string::npos) << head;
}

TEST(EventStream, EachEventIsOnTheWireBeforeTheNextIsMade) {
  std::atomic<bool> next{false};
  TestServer s({}, [&](Router& r) {
    r.handle(Method::kGet, "/two", [&](Request&, ResponseWriter& w) {
      EventStream es(w);
      es.send("first");
      // Released by the test (or by Release below); 10 s at most either way.
      (void)wait_until([&] { return next.load(); }, 10s);
      es.send("second");
    });
  });
  // Whatever happens below, the handler must not wait for ever (the server's end joins it).
  struct Release {
    std::atomic<bool>& flag;
    ~Release() { flag.store(true); }
  } release{next};
  Client c(s.port());
  ASSERT_TRUE(c.send(get(s.port(), "/two")));
  // The head and the first event arrive while the handler still waits to make the second.
  std::string got;
  char buf[4096];
  while (got.find("\r\n\r\n") == std::string::npos ||
         got.find("data: first\n\n") == std::string::npos) {
    const ssize_t n = ::recv(c.fd(), buf, sizeof buf, 0);
    ASSERT_GT(n, 0) << "got so far: " << got;
    got.append(buf, static_cast<std::size_t>(n));
  }
  EXPECT_EQ(got.rfind("HTTP/1.1 200 OK\r\n", 0), 0u) << got;
  EXPECT_NE(got.find("\r\n\r\nd\r\ndata: first\n\n\r\n"), std::string::npos) << got;
  EXPECT_EQ(got.find("second"), std::string::npos);
  next.store(true);
}

TEST(EventStream, MultiLineDataAndLineBreaksInNamesCannotAddFields) {
  TestServer s({}, [](Router& r) {
    r.handle(Method::kGet, "/hostile", [](Request&, ResponseWriter& w) {
      EventStream es(w);
      es.send("a\nb\r\nc\rd", "evil\ndata: injected", "7\r\nevent: x");
      es.comment("ping\nretry: 1");
      es.send("", "", std::string_view("n\0ul", 4));
    });
  });
  Client c(s.port());
  ASSERT_TRUE(c.send(get(s.port(), "/hostile")));
  const auto r = c.read_response();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body,
            "event: evil data: injected\n"
            "id: 7  event: x\n"
            "data: a\ndata: b\ndata: c\ndata: d\n\n"
            ": ping\n: retry: 1\n\n"
            "id: n ul\ndata: \n\n");
}

TEST(EventStream, SendReturnsFalseOnceTheClientLeaves) {
  std::atomic<int> sent{0};
  std::atomic<bool> stopped{false};
  TestServer s({}, [&](Router& r) {
    r.handle(Method::kGet, "/forever", [&](Request&, ResponseWriter& w) {
      EventStream es(w);
      while (es.send(std::string(1000, 'x'), "tick")) {
        sent.fetch_add(1);
        green::sleep_for(2ms);  // the stream's pace, on purpose: not a wait
      }
      EXPECT_FALSE(es.ok());
      EXPECT_FALSE(es.comment("after"));
      stopped.store(true);
    });
  });
  {
    Client c(s.port());
    ASSERT_TRUE(c.send(get(s.port(), "/forever")));
    ASSERT_TRUE(c.read_response(true));
    ASSERT_TRUE(wait_until([&] { return sent.load() >= 3; }, 5s));
    c.reset();
  }
  EXPECT_TRUE(wait_until([&] { return stopped.load(); }, 5s)) << "sent " << sent.load();
  EXPECT_TRUE(wait_until([&] { return s.server().metrics().open_connections.load() == 0; }, 5s));
}

}  // namespace
}  // namespace green::http
