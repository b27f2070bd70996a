// Runs the libFuzzer target (fuzz/request_fuzz.cpp) in the ordinary test builds: over the seed
// corpus, and over a bounded number of deterministic mutations of it, so the Release and
// sanitizer suites exercise the same checks as `make fuzz` without clang's libFuzzer.
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/http/fuzz/mutate.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size);

namespace {

std::vector<std::string> corpus() {
  std::vector<std::string> out;
  for (auto& [name, bytes] :
       green::http::testing::read_corpus(GREENHTTP_SOURCE_DIR "/tests/http/fuzz/corpus")) {
    out.push_back(std::move(bytes));
  }
  return out;
}

void run(const std::string& input) {
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
}

TEST(RequestFuzz, SeedCorpusRuns) {
  const std::vector<std::string> seeds = corpus();
  ASSERT_GE(seeds.size(), 4u);
  for (const std::string& s : seeds) run(s);
}

TEST(RequestFuzz, BoundedMutationsNeverCrash) {
  const std::vector<std::string> seeds = corpus();
  std::mt19937 rng(12345);
#if defined(GREEN_SANITIZER_BUILD)
  const int rounds = 3000;
#else
  const int rounds = 20000;
#endif
  static const char* kTokens[] = {"\r\n",
                                  "\r",
                                  "\n",
                                  " ",
                                  ":",
                                  "\0",
                                  "%",
                                  "%00",
                                  "chunked",
                                  "Content-Length: ",
                                  "Transfer-Encoding: ",
                                  "Host: x\r\n",
                                  "HTTP/1.1",
                                  "HTTP/1.0",
                                  "0\r\n\r\n",
                                  "ffffffff\r\n",
                                  "\t"};
  for (int i = 0; i < rounds; ++i) {
    std::string s = seeds[rng() % seeds.size()];
    green::http::testing::mutate(s, rng, kTokens, 8);
    run(s);
  }
}

}  // namespace
