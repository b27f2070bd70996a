// Runs the connection-level libFuzzer target (fuzz/connection_fuzz.cpp) in the ordinary test
// builds, g++ included: every file of the committed corpus, then a bounded number of
// deterministic mutations of them with extra read splits, so the Release and sanitizer suites
// check a real Connection against the same invariants as `make fuzz` (the connection ends, the
// responses parse, no sanitizer report) without clang's libFuzzer. A failing input is printed
// by the target before it aborts.
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/http/fuzz/mutate.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size);

namespace {

std::vector<std::pair<std::string, std::string>> corpus() {
  return green::http::testing::read_corpus(GREENHTTP_SOURCE_DIR "/tests/http/fuzz/corpus");
}

void run(const std::string& input) {
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
}

TEST(ConnectionFuzz, SeedCorpusRuns) {
  const auto seeds = corpus();
  ASSERT_GE(seeds.size(), 20u);
  for (const auto& [name, bytes] : seeds) {
    SCOPED_TRACE(name);
    run(bytes);
  }
}

TEST(ConnectionFuzz, BoundedMutationsWithSplitsNeverBreakTheConnection) {
  const auto seeds = corpus();
  std::mt19937 rng(4242);
#if defined(GREEN_SANITIZER_BUILD)
  const int rounds = 1500;
#else
  const int rounds = 5000;
#endif
  static const char* kTokens[] = {"|~|",
                                  "|~|",
                                  "\r\n",
                                  "\r",
                                  "\n",
                                  " ",
                                  ":",
                                  "%2F",
                                  "chunked",
                                  "Content-Length: 5\r\n",
                                  "Transfer-Encoding: chunked\r\n",
                                  "Expect: 100-continue\r\n",
                                  "Connection: close\r\n",
                                  "GET /json HTTP/1.1\r\n\r\n",
                                  "HEAD / HTTP/1.1\r\n\r\n",
                                  "HTTP/1.0",
                                  "0\r\n\r\n",
                                  "ffff\r\n",
                                  "\t"};
  for (int i = 0; i < rounds; ++i) {
    std::string s = seeds[rng() % seeds.size()].second;
    green::http::testing::mutate(s, rng, kTokens, 6);
    run(s);
  }
}

}  // namespace
