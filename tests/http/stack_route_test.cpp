// /stack?depth=N through the real binary: a request's green thread recurses megabytes deep on
// its lazily committed stack, the committed figure follows the depth and falls back after the
// trim, and a depth that cannot fit is refused before it is tried.
#include <cstdint>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "tests/http/http_test_util.h"
#include "tests/http/server_process.h"

namespace green::http {
namespace {

using testing::Client;
using testing::get;
using testing::ServerProcess;

constexpr int64_t kMiB = 1024 * 1024;

// The number after "\"name\":" in a flat JSON object; -1 when absent.
int64_t field(const std::string& json, const std::string& name) {
  const std::string key = "\"" + name + "\":";
  const std::size_t at = json.find(key);
  if (at == std::string::npos) return -1;
  return std::stoll(json.substr(at + key.size()));
}

std::optional<Client::Response> fetch(Client& c, uint16_t port, const std::string& target) {
  if (!c.send(get(port, target))) return std::nullopt;
  return c.read_response();
}

TEST(StackRoute, DepthZeroReportsTheReservationAndAShallowStack) {
  ServerProcess server({"--access-log", "off"});
  ASSERT_NE(server.port(), 0);
  Client c(server.port());
  const std::optional<Client::Response> r = fetch(c, server.port(), "/stack?depth=0");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(r->header("Content-Type"), "application/json");
  EXPECT_EQ(field(r->body, "depth"), 0);
  EXPECT_EQ(field(r->body, "reserved_bytes"), 8 * kMiB) << r->body;
  EXPECT_GT(field(r->body, "committed_before"), 0) << r->body;
  EXPECT_LT(field(r->body, "committed_before"), 1 * kMiB) << r->body;
  EXPECT_GE(field(r->body, "frame_bytes"), 1024) << r->body;
  // The deepest that fits: most of the 8 MiB, in frames of about 1 KiB.
  EXPECT_GT(field(r->body, "max_depth") * field(r->body, "frame_bytes"), 6 * kMiB) << r->body;
}

TEST(StackRoute, FourMiBDeepIsCommittedThenTrimmedBack) {
  ServerProcess server({"--access-log", "off"});
  ASSERT_NE(server.port(), 0);
  Client c(server.port());
  // 4,096 frames of at least 1 KiB: 16 times what a 256 KiB stack held.
  const std::optional<Client::Response> r = fetch(c, server.port(), "/stack?depth=4096");
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  EXPECT_EQ(field(r->body, "depth"), 4096);
  const int64_t before = field(r->body, "committed_before");
  const int64_t deepest = field(r->body, "committed_deepest");
  const int64_t after_trim = field(r->body, "committed_after_trim");
  EXPECT_GE(deepest, 4 * kMiB) << r->body;
  EXPECT_GE(field(r->body, "committed_after_return"), 4 * kMiB) << r->body;
  EXPECT_LT(after_trim, 256 * 1024) << r->body;
  EXPECT_LE(after_trim, before + 64 * 1024) << r->body;
  // The connection's green thread, reused for the next request on it, starts shallow again.
  const std::optional<Client::Response> again = fetch(c, server.port(), "/stack?depth=0");
  ASSERT_TRUE(again);
  ASSERT_EQ(again->status, 200) << again->body;
  EXPECT_LT(field(again->body, "committed_before"), 256 * 1024) << again->body;
}

TEST(StackRoute, ADepthBeyondTheReservationIs400AndTheServerLives) {
  ServerProcess server({"--access-log", "off"});
  ASSERT_NE(server.port(), 0);
  Client c(server.port());
  const std::optional<Client::Response> probe = fetch(c, server.port(), "/stack?depth=0");
  ASSERT_TRUE(probe);
  ASSERT_EQ(probe->status, 200) << probe->body;
  const int64_t max_depth = field(probe->body, "max_depth");
  ASSERT_GT(max_depth, 0);
  for (const std::string& target :
       {"/stack?depth=" + std::to_string(max_depth + 1), std::string("/stack?depth=100000000"),
        std::string("/stack?depth=-1"), std::string("/stack?depth=deep"), std::string("/stack")}) {
    const std::optional<Client::Response> r = fetch(c, server.port(), target);
    ASSERT_TRUE(r) << target;
    EXPECT_EQ(r->status, 400) << target << ": " << r->body;
    EXPECT_NE(r->body.find(std::to_string(max_depth)), std::string::npos) << r->body;
  }
  // The deepest allowed depth itself fits: no overflow, the process answers and lives.
  const std::optional<Client::Response> deepest =
      fetch(c, server.port(), "/stack?depth=" + std::to_string(max_depth));
  ASSERT_TRUE(deepest);
  EXPECT_EQ(deepest->status, 200) << deepest->body;
  EXPECT_TRUE(server.alive()) << server.stderr_text();
}

}  // namespace
}  // namespace green::http
