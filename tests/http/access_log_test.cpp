// The access log: Combined Log Format lines, and a bounded queue that drops and counts.
#include "green/http/access_log.h"

#include <unistd.h>

#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

#include "green/green.h"
#include "server/byte_buffer.h"

namespace green::http {
namespace {

AccessRecord sample() {
  AccessRecord r;
  r.time = 971211336;  // 10/Oct/2000:20:55:36 +0000
  r.status = 200;
  r.bytes = 2326;
  r.remote.set("127.0.0.1");
  r.request.set("GET /apache_pb.gif HTTP/1.0");
  r.referer.set("http://www.example.com/start.html");
  r.user_agent.set("Mozilla/4.08 [en] (Win98; I ;Nav)");
  return r;
}

TEST(AccessLog, FormatsCombinedLogFormat) {
  ByteBuffer out;
  format_combined(sample(), out);
  EXPECT_EQ(out.view(),
            "127.0.0.1 - - [10/Oct/2000:20:55:36 +0000] \"GET /apache_pb.gif HTTP/1.0\" 200 2326 "
            "\"http://www.example.com/start.html\" \"Mozilla/4.08 [en] (Win98; I ;Nav)\"\n");
}

TEST(AccessLog, EscapesWhatCouldForgeALine) {
  AccessRecord r = sample();
  r.user_agent.set("evil\"\n127.0.0.1 - - fake\x01");
  r.referer.set("");
  ByteBuffer out;
  format_combined(r, out);
  const std::string s(out.view());
  EXPECT_EQ(s.find('\n'), s.size() - 1) << s;
  EXPECT_NE(s.find("\"-\" \"evil\\x22\\x0A127.0.0.1 - - fake\\x01\""), std::string::npos) << s;
}

TEST(AccessLog, LongFieldsAreCut) {
  AccessRecord r;
  r.user_agent.set(std::string(5000, 'u'));
  EXPECT_EQ(r.user_agent.view().size(), sizeof r.user_agent.text);
}

TEST(AccessLog, DropsAndCountsWhenTheWriterFallsBehind) {
  std::string error;
  char path[] = "/tmp/greenhttp-access-XXXXXX";
  close(mkstemp(path));
  auto log = AccessLog::open(path, &error, 8);
  ASSERT_TRUE(log) << error;
  // No writer yet: the queue holds 8, the rest are dropped, and submit never blocks.
  for (int i = 0; i < 20; ++i) log->submit(sample());
  EXPECT_EQ(log->dropped(), 12u);
  green::run({}, [&] {
    log->start();
    log->stop();  // writes what was queued
  });
  EXPECT_EQ(log->written(), 8u);
  std::ifstream in(path);
  std::string line;
  int lines = 0;
  while (std::getline(in, line)) {
    EXPECT_NE(line.find("\"GET /apache_pb.gif HTTP/1.0\" 200 2326"), std::string::npos) << line;
    ++lines;
  }
  EXPECT_EQ(lines, 8);
  unlink(path);
}

TEST(AccessLog, OffWritesNothingAndCountsNothing) {
  std::string error;
  auto log = AccessLog::open("off", &error);
  ASSERT_TRUE(log);
  EXPECT_FALSE(log->enabled());
  log->submit(sample());
  EXPECT_EQ(log->dropped(), 0u);
}

TEST(AccessLog, UnwritablePathIsAnError) {
  std::string error;
  EXPECT_FALSE(AccessLog::open("/etc/hostname/access.log", &error));
  EXPECT_FALSE(error.empty());
}

}  // namespace
}  // namespace green::http
