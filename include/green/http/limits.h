// The protocol limits a server enforces on every request (config: [limits]).
#pragma once

#include <cstddef>
#include <cstdint>

namespace green::http {

struct Limits {
  // Request target (path and query) longer than this: 414.
  std::size_t max_target_bytes = 8 * 1024;
  // Header section (field names and values, and the whitespace and line ends between them)
  // longer than this: 431.
  std::size_t max_header_bytes = 16 * 1024;
  // More header fields than this: 431.
  std::size_t max_headers = 100;
  // Declared or received body longer than this: 413, before the body is read when declared.
  uint64_t max_body_bytes = 1024 * 1024;

  // The read buffer must hold a whole request head: the largest target, the largest header
  // section and a request line's method, version and line ends.
  std::size_t input_buffer_bytes() const {
    const std::size_t head = max_target_bytes + max_header_bytes + 1024;
    return (head + 4095) & ~std::size_t{4095};
  }
};

}  // namespace green::http
