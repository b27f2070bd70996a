// libFuzzer target for the request path: llhttp plus our glue (RequestParser), fed the input
// in pieces whose sizes come from the input itself, so splits are fuzzed too. Every outcome
// must be a request, "need more" or one error status in 400..505; requests must be views into
// the parser's own memory; the parser must never read or write out of bounds (run it under
// ASan/UBSan: build-fuzz is configured with -fsanitize=fuzzer,address,undefined).
//
//   make fuzz                       # builds build-fuzz/tests/http/request_fuzz with clang
//   build-fuzz/tests/http/request_fuzz -max_total_time=60 tests/http/fuzz/corpus
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "server/request_parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  using namespace green::http;
  if (size == 0) return 0;
  Limits limits;
  limits.max_body_bytes = 64 * 1024;
  // Small limits too, so their edges are reached with short inputs.
  if ((data[0] & 1) != 0) {
    limits.max_target_bytes = 64;
    limits.max_header_bytes = 256;
    limits.max_headers = 4;
  }
  const std::size_t step = 1 + (data[0] >> 1);  // 1..128 bytes per read
  ++data;
  --size;
  RequestParser parser(limits);
  ParserStorage storage(limits);
  parser.attach(&storage);
  std::size_t pos = 0;
  int requests = 0;
  while (pos < size) {
    std::span<char> room = parser.spare();
    if (room.empty()) break;
    const std::size_t n = std::min({room.size(), size - pos, step});
    std::memcpy(room.data(), data + pos, n);
    parser.commit(n);
    pos += n;
    for (;;) {
      const ParseEvent e = parser.next();
      if (e == ParseEvent::kNeedMore) break;
      if (e == ParseEvent::kExpectContinue) continue;
      if (e == ParseEvent::kError) {
        const int s = parser.error_status();
        if (s < 400 || s > 505) std::abort();
        return 0;
      }
      Request& r = parser.request();
      // Touch every byte a handler could see (the parser alone collects every body).
      const std::string_view body = r.body().read_all().value_or(std::string_view{});
      std::size_t sum = r.method_name().size() + r.target().size() + r.path().size() +
                        r.query().size() + body.size();
      for (const Header& h : r.headers()) sum += h.name.size() + h.value.size();
      if (body.size() > limits.max_body_bytes) std::abort();
      if (r.path().find('\0') != std::string_view::npos) std::abort();
      if (sum == static_cast<std::size_t>(-1)) std::abort();
      if (++requests > 100000) std::abort();
      if (!r.keep_alive()) return 0;  // the connection would close here
    }
  }
  return 0;
}
