// Runs the client's response fuzzer (fuzz/response_fuzz.cpp: a real Client against an upstream
// that answers with the input's bytes) in the ordinary test builds, g++ included: every seed of
// tests/http/fuzz/response_corpus/, each checked against what its name says the client must do
// (the table below), then a bounded number of deterministic mutations of them with extra write
// splits, under the same invariants as `make fuzz` (framing, limits, what the pool keeps, no
// descriptor left open, no sanitizer report). A failing input is printed by the target before
// it aborts.
#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "tests/http/fuzz/mutate.h"
#include "tests/http/fuzz/response_fuzz.h"

namespace {

using green::http::ClientError;
using green::http::testing::ResponseFuzzOutcome;
using green::http::testing::run_response_fuzz_input;

std::vector<std::pair<std::string, std::string>> corpus() {
  return green::http::testing::read_corpus(GREENHTTP_SOURCE_DIR "/tests/http/fuzz/response_corpus");
}

// What the first call of a seed must end with. kAny: not checked (it depends on timing, or on a
// leniency the client may drop).
constexpr int kAny = -2;
struct Expected {
  const char* seed;
  bool ok;  // a response head arrived
  int status;
  ClientError error;  // after the body was read
  int64_t body_bytes;
  int pooled;  // 1, 0 or kAny
  int reused;  // the second GET went out on a pooled connection: 1, 0 or kAny
};

// A seed's name says what its bytes are (tests/http/fuzz/make_response_seeds.py).
const Expected kExpected[] = {
    // Complete, keep-alive responses go back to the pool and carry the second GET.
    {"length-kept-open", true, 200, ClientError::kNone, 5, 1, 1},
    {"chunked-ext-trailers", true, 200, ClientError::kNone, 11, 1, 1},
    {"chunked-byte-reads", true, 200, ClientError::kNone, 19, 1, 1},
    {"trailer-long", true, 200, ClientError::kNone, 1, 1, 1},
    {"early-hints-then-200", true, 200, ClientError::kNone, 2, 1, 1},
    {"post-created", true, 201, ClientError::kNone, 0, 1, 1},
    {"http10-keep-alive", true, 200, ClientError::kNone, 2, 1, 1},
    // Body-less whatever the framing headers say; what follows one is unsolicited.
    {"no-content", true, 204, ClientError::kNone, 0, 1, 1},
    {"not-modified-with-length", true, 304, ClientError::kNone, 0, 1, 1},
    {"head", true, 200, ClientError::kNone, 0, 1, 1},
    {"no-content-with-length", true, 204, ClientError::kNone, 0, 0, 0},
    {"head-then-body-bytes", true, 200, ClientError::kNone, 0, 0, 0},
    // Pooled, then closed by the upstream: the second GET's peek finds it stale.
    {"length", true, 200, ClientError::kNone, 5, 1, 0},
    {"continue-then-200", true, 200, ClientError::kNone, 2, 1, 0},
    {"split-everywhere", true, 200, ClientError::kNone, 3, 1, 0},
    // Complete but not reusable.
    {"until-close", true, 200, ClientError::kNone, 20, 0, 0},
    {"two-responses", true, 200, ClientError::kNone, 2, 0, 0},
    {"two-responses-paused", true, 200, ClientError::kNone, 2, kAny, 0},
    {"request-said-close", true, 200, ClientError::kNone, 2, 0, 0},
    {"response-said-close", true, 200, ClientError::kNone, 2, 0, 0},
    {"http10", true, 200, ClientError::kNone, 2, 0, 0},
    {"http10-keep-alive-and-close", true, 200, ClientError::kNone, 2, 0, 0},
    // The head is fine, the body is not.
    {"until-close-kept-open", true, 200, ClientError::kDeadlineExceeded, kAny, 0, 0},
    {"bad-chunk-size", true, 200, ClientError::kProtocol, 0, 0, 0},
    {"body-too-large", true, 200, ClientError::kBodyTooLarge, kAny, 0, 0},
    {"short-body", true, 200, ClientError::kRead, 5, 0, 0},
    {"trailers-too-large", true, 200, ClientError::kHeadersTooLarge, kAny, 0, 0},
    // No response at all.
    {"switching-protocols", false, 0, ClientError::kProtocol, 0, 0, 0},
    {"length-and-chunked", false, 0, ClientError::kProtocol, 0, 0, 0},
    {"two-lengths", false, 0, ClientError::kProtocol, 0, 0, 0},
    {"huge-length", false, 0, ClientError::kProtocol, 0, 0, 0},
    {"bare-lf", false, 0, ClientError::kProtocol, 0, 0, 0},
    {"garbage", false, 0, ClientError::kProtocol, 0, 0, 0},
    {"empty-header-name", false, 0, ClientError::kProtocol, 0, 0, 0},
    {"status-missing", false, 0, ClientError::kProtocol, 0, 0, 0},
    {"status-one-digit", false, 0, ClientError::kProtocol, 0, 0, 0},
    {"status-600", false, 0, ClientError::kProtocol, 0, 0, 0},
    {"huge-header", false, 0, ClientError::kHeadersTooLarge, 0, 0, 0},
    {"many-headers", false, 0, ClientError::kHeadersTooLarge, 0, 0, 0},
    {"empty", false, 0, ClientError::kRead, 0, 0, 0},
};

ResponseFuzzOutcome run(const std::string& input) { return run_response_fuzz_input(input); }

TEST(ResponseFuzz, EverySeedEndsAsItsNameSays) {
  const auto seeds = corpus();
  ASSERT_GE(seeds.size(), 20u);
  for (const Expected& e : kExpected) {
    SCOPED_TRACE(e.seed);
    auto it =
        std::find_if(seeds.begin(), seeds.end(), [&](const auto& s) { return s.first == e.seed; });
    ASSERT_NE(it, seeds.end()) << "no seed " << e.seed << " in response_corpus/";
    const ResponseFuzzOutcome o = run(it->second);
    EXPECT_EQ(o.ok, e.ok);
    EXPECT_EQ(o.status, e.status);
    EXPECT_EQ(o.error, e.error) << green::http::client_error_name(o.error);
    if (e.body_bytes != kAny) {
      EXPECT_EQ(o.body_bytes, static_cast<uint64_t>(e.body_bytes));
    }
    EXPECT_EQ(o.last_read, e.error == ClientError::kNone ? 0 : -1);
    if (e.pooled != kAny) {
      EXPECT_EQ(o.pooled, e.pooled == 1);
    }
    if (e.reused != kAny) {
      EXPECT_EQ(o.reused, e.reused == 1);
    }
  }
}

// The pooled connection is closed (FIN, then RST) as the second GET arrives on it: that GET is
// sent again on a new connection, once.
TEST(ResponseFuzz, GetOnAConnectionClosedAsItArrivesIsRetried) {
  const auto seeds = corpus();
  for (const char* name : {"race-fin", "race-rst"}) {
    SCOPED_TRACE(name);
    auto it =
        std::find_if(seeds.begin(), seeds.end(), [&](const auto& s) { return s.first == name; });
    ASSERT_NE(it, seeds.end());
    const ResponseFuzzOutcome o = run(it->second);
    EXPECT_TRUE(o.pooled);
    EXPECT_TRUE(o.reused);
    EXPECT_TRUE(o.retried);
  }
}

TEST(ResponseFuzz, SeedCorpusRuns) {
  for (const auto& [name, bytes] : corpus()) {
    SCOPED_TRACE(name);
    run(bytes);
  }
}

TEST(ResponseFuzz, BoundedMutationsWithSplitsKeepTheClientsInvariants) {
  const auto seeds = corpus();
  std::mt19937 rng(1414);
#if defined(GREEN_SANITIZER_BUILD)
  const int rounds = 300;
#else
  const int rounds = 600;
#endif
  static const char* kTokens[] = {"|~|",
                                  "|~|",
                                  "\r\n",
                                  "\r",
                                  "\n",
                                  " ",
                                  ":",
                                  "\t",
                                  "HTTP/1.1 200 OK\r\n",
                                  "HTTP/1.1 100 Continue\r\n\r\n",
                                  "HTTP/1.0 ",
                                  "204",
                                  "304",
                                  "Content-Length: 5\r\n",
                                  "Transfer-Encoding: chunked\r\n",
                                  "Connection: close\r\n",
                                  "Connection: keep-alive\r\n",
                                  "0\r\n\r\n",
                                  "ffff\r\n"};
  for (int i = 0; i < rounds; ++i) {
    std::string s = seeds[rng() % seeds.size()].second;
    green::http::testing::mutate(s, rng, kTokens, 6);
    // Mostly a closing upstream: against a kept-open one a broken frame waits for the first
    // call's deadline (100 ms), which would make this test seconds long.
    if (!s.empty() && rng() % 4 != 0) s[0] = static_cast<char>(s[0] & ~4);
    run(s);
  }
}

}  // namespace
