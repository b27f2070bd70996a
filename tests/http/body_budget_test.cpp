// The request-body budget on its own and in the parser: what a body reserves, when a growth is
// refused (503), and that every reservation comes back. No sockets.
#include "server/body_budget.h"

#include <string>

#include <gtest/gtest.h>

#include "server/request_parser.h"

namespace green::http {
namespace {

// Copies `bytes` into the parser and returns the first event that is not kNeedMore (or
// kNeedMore when the bytes end first).
ParseEvent feed(RequestParser& parser, const std::string& bytes) {
  std::size_t pos = 0;
  while (pos < bytes.size()) {
    std::span<char> room = parser.spare();
    if (room.empty()) return ParseEvent::kError;
    const std::size_t n = std::min(room.size(), bytes.size() - pos);
    std::copy_n(bytes.data() + pos, n, room.data());
    parser.commit(n);
    pos += n;
    const ParseEvent e = parser.next();
    if (e != ParseEvent::kNeedMore) return e;
  }
  return ParseEvent::kNeedMore;
}

std::string chunked_body(std::size_t bytes) {
  const std::string one = "3e8\r\n" + std::string(1000, 'b') + "\r\n";
  std::string out;
  for (std::size_t i = 0; i < bytes / 1000; ++i) out += one;
  return out;
}

const std::string kChunkedHead =
    "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";

// A parser with its storage attached, counting against a budget of `limit` bytes.
struct Attached {
  explicit Attached(uint64_t limit) : budget(limit), storage(limits), parser(limits, &budget) {
    parser.attach(&storage);
  }
  const Limits limits;
  BodyBudget budget;
  ParserStorage storage;
  RequestParser parser;
};

TEST(BodyBudget, ReservesUpToTheLimitAndCountsRejections) {
  BodyBudget budget(100);
  EXPECT_TRUE(budget.try_reserve(60));
  EXPECT_FALSE(budget.try_reserve(41));
  EXPECT_TRUE(budget.try_reserve(40));
  EXPECT_EQ(budget.in_use(), 100u);
  budget.release(60);
  EXPECT_EQ(budget.in_use(), 40u);
  EXPECT_EQ(budget.rejections(), 1u);
  EXPECT_EQ(budget.released(), 60u);
  BodyBudget unlimited(0);
  EXPECT_TRUE(unlimited.try_reserve(uint64_t{1} << 40));
}

TEST(BodyBudget, ParserReservesABodyPastTheReadBufferAndGivesItBackAfterTheRequest) {
  Attached p(1 << 20);
  auto& [limits, budget, storage, parser] = p;
  // A small body costs nothing.
  ASSERT_EQ(feed(parser, kChunkedHead + chunked_body(10'000) + "0\r\n\r\n"), ParseEvent::kRequest);
  EXPECT_EQ(budget.in_use(), 0u);
  // 100,000 bytes: the buffer doubles to 128 KiB, and that is what is reserved.
  ASSERT_EQ(feed(parser, kChunkedHead + chunked_body(100'000) + "0\r\n\r\n"), ParseEvent::kRequest);
  EXPECT_EQ(parser.request().body().read_all()->size(), 100'000u);
  EXPECT_EQ(budget.in_use(), 128u * 1024);
  EXPECT_EQ(parser.body_reserved(), 128u * 1024);
  // The next request gives it back, and the grown buffer with it.
  ASSERT_EQ(feed(parser, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"), ParseEvent::kRequest);
  EXPECT_EQ(budget.in_use(), 0u);
  EXPECT_LE(storage.body.capacity(), limits.input_buffer_bytes());
}

TEST(BodyBudget, ParserAnswers503WhenAGrowthDoesNotFit) {
  Attached p(64 * 1024);
  auto& [limits, budget, storage, parser] = p;
  ASSERT_EQ(feed(parser, kChunkedHead + chunked_body(100'000)), ParseEvent::kError);
  EXPECT_EQ(parser.error_status(), 503);
  EXPECT_EQ(budget.rejections(), 1u);
  parser.detach();
  EXPECT_EQ(budget.in_use(), 0u);
}

TEST(BodyBudget, ParserRefusesADeclaredBodyAtItsHeaders) {
  Attached p(64 * 1024);
  auto& [limits, budget, storage, parser] = p;
  ASSERT_EQ(feed(parser,
                 "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                 "Expect: 100-continue\r\n\r\n"),
            ParseEvent::kError);
  EXPECT_EQ(parser.error_status(), 503);
  EXPECT_EQ(budget.in_use(), 0u);
}

TEST(BodyBudget, FitsChecksWithoutTaking) {
  BodyBudget budget(100);
  EXPECT_TRUE(budget.fits(100));
  EXPECT_EQ(budget.in_use(), 0u);
  ASSERT_TRUE(budget.try_reserve(60));
  EXPECT_FALSE(budget.fits(41));
  EXPECT_TRUE(budget.fits(40));
  EXPECT_EQ(budget.rejections(), 1u);
  EXPECT_EQ(budget.in_use(), 60u);
}

TEST(BodyBudget, ADeclaredBodyReservesOnlyAsItsBytesArrive) {
  Attached p(2 << 20);
  auto& [limits, budget, storage, parser] = p;
  // Headers declaring 1 MiB take nothing: a client that only declares holds no budget.
  ASSERT_EQ(feed(parser, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n"),
            ParseEvent::kNeedMore);
  EXPECT_EQ(budget.in_use(), 0u);
  EXPECT_EQ(parser.body_reserved(), 0u);
  // 100,000 bytes of it: the buffer has grown to 128 KiB, and that much is reserved.
  ASSERT_EQ(feed(parser, std::string(100'000, 'b')), ParseEvent::kNeedMore);
  EXPECT_EQ(budget.in_use(), 128u * 1024);
  parser.detach();
  EXPECT_EQ(budget.in_use(), 0u);
}

TEST(BodyBudget, ADeclaredBodyIsRefusedWhenWhatIsLeftCannotHoldIt) {
  Attached p(1 << 20);
  auto& [limits, budget, storage, parser] = p;
  ASSERT_TRUE(budget.try_reserve(512 * 1024));  // another body's
  // 600,000 bytes would need a 1 MiB buffer; 512 KiB are left: 503 at the headers.
  ASSERT_EQ(feed(parser, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 600000\r\n\r\n"),
            ParseEvent::kError);
  EXPECT_EQ(parser.error_status(), 503);
  EXPECT_EQ(budget.in_use(), 512u * 1024);
  EXPECT_EQ(budget.rejections(), 1u);
}

TEST(BodyBudget, AConnectionThatDiesMidBodyGivesItsReservationBack) {
  const Limits limits;
  BodyBudget budget(1 << 20);
  ParserStorage storage(limits);
  {
    RequestParser parser(limits, &budget);
    parser.attach(&storage);
    ASSERT_EQ(feed(parser, kChunkedHead + chunked_body(200'000)), ParseEvent::kNeedMore);
    EXPECT_EQ(budget.in_use(), 256u * 1024);
    parser.detach();  // the connection's release_buffers()
    EXPECT_EQ(budget.in_use(), 0u);
    ASSERT_EQ(parser.body_reserved(), 0u);
  }
  {
    RequestParser parser(limits, &budget);
    parser.attach(&storage);
    ASSERT_EQ(feed(parser, kChunkedHead + chunked_body(200'000)), ParseEvent::kNeedMore);
    EXPECT_GT(budget.in_use(), 0u);
  }  // destroyed while attached
  EXPECT_EQ(budget.in_use(), 0u);
}

}  // namespace
}  // namespace green::http
