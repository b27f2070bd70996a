// Runs the connection-level libFuzzer target (fuzz/connection_fuzz.cpp) in the ordinary test
// builds, g++ included: every file of the committed corpus, then a bounded number of
// deterministic mutations of them with extra read splits, so the Release and sanitizer suites
// check a real Connection against the same invariants as `make fuzz` (the connection ends, the
// responses parse, no sanitizer report) without clang's libFuzzer. A failing input is printed
// by the target before it aborts. The HTTP/2 seeds (h2-*) get mutations of their own, frame by
// frame: dropped, repeated, swapped, cut, their bytes and lengths changed, frames a hostile
// client sends put in between, read splits anywhere.
#include <algorithm>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <gtest/gtest.h>

#include "tests/http/fuzz/mutate.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size);

namespace {

using Seeds = std::vector<std::pair<std::string, std::string>>;

Seeds all_seeds() {
  return green::http::testing::read_corpus(GREENHTTP_SOURCE_DIR "/tests/http/fuzz/corpus");
}

// The HTTP/1.1 seeds, or the HTTP/2 ones (h2-*, written by fuzz/make_h2_corpus.py).
Seeds corpus(bool h2 = false) {
  Seeds out;
  for (auto& seed : all_seeds()) {
    if (seed.first.starts_with("h2-") == h2) out.push_back(std::move(seed));
  }
  return out;
}

void run(const std::string& input) {
  LLVMFuzzerTestOneInput(reinterpret_cast<const uint8_t*>(input.data()), input.size());
}

TEST(ConnectionFuzz, SeedCorpusRuns) {
  const auto seeds = all_seeds();
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

// ---- HTTP/2 -------------------------------------------------------------------------------

constexpr std::string_view kPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
constexpr std::string_view kSplit = "|~|";

std::string frame(uint8_t type, uint8_t flags, uint32_t stream, std::string_view payload) {
  std::string f;
  const auto n = static_cast<uint32_t>(payload.size());
  f += static_cast<char>(n >> 16);
  f += static_cast<char>(n >> 8);
  f += static_cast<char>(n);
  f += static_cast<char>(type);
  f += static_cast<char>(flags);
  for (int shift = 24; shift >= 0; shift -= 8) f += static_cast<char>(stream >> shift);
  f += payload;
  return f;
}

std::string u32(uint32_t v) {
  return {static_cast<char>(v >> 24), static_cast<char>(v >> 16), static_cast<char>(v >> 8),
          static_cast<char>(v)};
}

// What a hostile or careless client puts between a seed's frames.
std::vector<std::string> hostile_frames() {
  using namespace std::string_literals;
  return {
      frame(4, 0, 0, "\x00\x04"s + u32(0)),             // SETTINGS: stream windows shut
      frame(4, 0, 0, "\x00\x04"s + u32(0x7fffffff)),    // ... and opened to the maximum
      frame(4, 0, 0, "\x00\x05"s + u32(1 << 20)),       // a larger max frame size
      frame(4, 0, 0, "\x00\x01"s + u32(0)),             // no HPACK table
      frame(4, 0, 0, "\x00\x03"s + u32(1)),             // one concurrent stream
      frame(4, 1, 0, ""),                               // SETTINGS ACK (unasked)
      frame(6, 0, 0, "pingping"),                       // PING
      frame(3, 0, 1, u32(8)),                           // RST_STREAM CANCEL on 1
      frame(3, 0, 3, u32(0)),                           // ... on 3
      frame(8, 0, 1, u32(0x7fffffff)),                  // WINDOW_UPDATE overflowing stream 1
      frame(8, 0, 0, u32(1)),                           // a connection WINDOW_UPDATE of 1
      frame(8, 0, 3, u32(0)),                           // a WINDOW_UPDATE of 0
      frame(0, 0, 1, "body bytes"),                     // DATA on 1
      frame(0, 1, 3, ""),                               // empty DATA ending 3
      frame(9, 4, 1, "\x82"),                           // CONTINUATION out of place
      frame(2, 0, 5, u32(5) + "\x10"),                  // PRIORITY on itself
      frame(1, 5, 7, "\x82\x86\x84\x41\x09localhost"),  // HEADERS: GET / on 7 (static table)
      frame(1, 4, 9, "\x82\x86\x84"),                   // HEADERS without :authority, open
      frame(1, 5, 11, "\xff\xff\xff\xff"),              // HEADERS that do not decode
      frame(7, 0, 0, u32(1) + u32(0)),                  // GOAWAY from the client
      frame(0xfa, 0, 0, "unknown"),                     // an unknown type
  };
}

// A seed as its lead-in (a "|~|" that picks the small server, the preface) and its frames,
// each with whatever split markers preceded it.
struct H2Seed {
  std::string lead;
  std::vector<std::string> frames;
};

H2Seed split_frames(std::string_view s) {
  H2Seed out;
  if (s.starts_with(kSplit)) {
    out.lead += kSplit;
    s.remove_prefix(kSplit.size());
  }
  out.lead += kPreface;
  s.remove_prefix(kPreface.size());
  std::string pending;
  while (!s.empty()) {
    if (s.starts_with(kSplit)) {
      pending += kSplit;
      s.remove_prefix(kSplit.size());
      continue;
    }
    if (s.size() < 9) break;
    const std::size_t length = static_cast<uint8_t>(s[0]) << 16 | static_cast<uint8_t>(s[1]) << 8 |
                               static_cast<uint8_t>(s[2]);
    const std::size_t n = std::min(s.size(), 9 + length);
    out.frames.push_back(pending + std::string(s.substr(0, n)));
    pending.clear();
    s.remove_prefix(n);
  }
  return out;
}

TEST(ConnectionFuzz, Http2FrameMutationsNeverBreakTheConnection) {
  const auto seeds = corpus(/*h2=*/true);
  ASSERT_GE(seeds.size(), 10u);
  const std::vector<std::string> hostile = hostile_frames();
  std::mt19937 rng(2017);
#if defined(GREEN_SANITIZER_BUILD)
  const int rounds = 600;
#else
  const int rounds = 2000;
#endif
  for (int i = 0; i < rounds; ++i) {
    H2Seed seed = split_frames(seeds[rng() % seeds.size()].second);
    std::vector<std::string>& f = seed.frames;
    const int edits = 1 + static_cast<int>(rng() % 4);
    for (int e = 0; e < edits; ++e) {
      const std::size_t at = f.empty() ? 0 : rng() % f.size();
      switch (f.empty() ? 2 : rng() % 7) {
        case 0:
          f.erase(f.begin() + static_cast<std::ptrdiff_t>(at));
          break;
        case 1:
          f.insert(f.begin() + static_cast<std::ptrdiff_t>(at), f[at]);
          break;
        case 2:
          f.insert(f.begin() + static_cast<std::ptrdiff_t>(at), hostile[rng() % hostile.size()]);
          break;
        case 3:  // a byte of the frame, header included
          f[at][rng() % f[at].size()] = static_cast<char>(rng());
          break;
        case 4: {  // its length field (the low byte), so that it takes or leaves bytes
          std::size_t head = 0;  // past the split markers in front of it
          while (f[at].compare(head, kSplit.size(), kSplit) == 0) head += kSplit.size();
          if (f[at].size() >= head + 9) f[at][head + 2] ^= static_cast<char>(1 + rng() % 7);
          break;
        }
        case 5:  // a read split anywhere in it
          f[at].insert(rng() % (f[at].size() + 1), kSplit);
          break;
        case 6:
          if (at + 1 < f.size()) std::swap(f[at], f[at + 1]);
          break;
      }
    }
    std::string input = seed.lead;
    for (const std::string& one : f) input += one;
    run(input);
  }
}

}  // namespace
