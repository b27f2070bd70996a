// How the fuzz targets show an input or an output in a failure report.
#pragma once

#include <cstdio>
#include <string_view>

namespace green::http::testing {

// Prints bytes to stderr as a C string literal would show them, the first 384 and the last 128.
inline void print_bytes(std::string_view s) {
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (i == 384 && s.size() > 512) {
      std::fprintf(stderr, "\" ... %zu bytes ... \"", s.size() - 512);
      i = s.size() - 128;
    }
    const auto c = static_cast<unsigned char>(s[i]);
    if (c == '\r') std::fputs("\\r", stderr);
    else if (c == '\n') std::fputs("\\n", stderr);
    else if (c >= 0x20 && c < 0x7f && c != '\\' && c != '"') std::fputc(c, stderr);
    else std::fprintf(stderr, "\\x%02x", c);
  }
}

}  // namespace green::http::testing
