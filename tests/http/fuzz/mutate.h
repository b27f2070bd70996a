// The bounded mutations the fuzz replay tests apply to corpus seeds (in every build, g++ too,
// where libFuzzer is not available): byte flips, cuts, inserted protocol tokens, duplicated
// runs. Deterministic for a given generator state.
#pragma once

#include <random>
#include <span>
#include <string>

namespace green::http::testing {

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
