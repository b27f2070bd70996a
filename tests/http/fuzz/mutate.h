// What the fuzz replay tests share (they run in every build, g++ too, where libFuzzer is not
// available): reading a corpus, and the bounded mutations they apply to its seeds (byte flips,
// cuts, inserted protocol tokens, duplicated runs; deterministic for a given generator state).
#pragma once

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>
#include <span>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace green::http::testing {

// Every file of a corpus directory as (file name, bytes), sorted by name.
inline std::vector<std::pair<std::string, std::string>> read_corpus(const std::string& dir) {
  std::vector<std::pair<std::string, std::string>> out;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    std::ifstream in(entry.path(), std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    out.emplace_back(entry.path().filename().string(), s.str());
  }
  std::sort(out.begin(), out.end());
  return out;
}

// Applies 1..max_edits random edits to `s` (none to an empty string).
inline void mutate(std::string& s, std::mt19937& rng, std::span<const char* const> tokens,
                   int max_edits) {
  const int edits = 1 + static_cast<int>(rng() % static_cast<unsigned>(max_edits));
  for (int e = 0; e < edits && !s.empty(); ++e) {
    const std::size_t at = rng() % s.size();
    switch (rng() % 4) {
      case 0:
        s[at] = static_cast<char>(rng());
        break;
      case 1:
        s.erase(at, 1 + rng() % 8);
        break;
      case 2:
        s.insert(at, tokens[rng() % tokens.size()]);
        break;
      case 3:
        s.insert(at, s.substr(at, rng() % 64));
        break;
    }
  }
}

}  // namespace green::http::testing
