// Reading an open file a piece at a time, for the paths that cannot use sendfile(2): TLS (OpenSSL
// encrypts from memory), a body filter (gzip), a sink that buffers. One definition for the three.
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <memory>
#include <string_view>

#include "green/green.h"

namespace green::http {

// Reads `count` bytes of `fd` from `offset` into one 64 KiB buffer, a piece at a time (each
// pread inside green::may_block: a page-cache miss blocks the thread), and hands each piece to
// `take`, which returns false to stop. Returns the bytes handed over (fewer than `count` when
// the file ended early: it shrank, or a read failed), or -1 when `take` stopped.
template <typename Take>
int64_t for_each_file_piece(int fd, uint64_t offset, uint64_t count, Take&& take) {
  constexpr std::size_t kPiece = 64 * 1024;
  std::unique_ptr<char[]> piece(new char[std::min<uint64_t>(count, kPiece) + 1]);
  uint64_t done = 0;
  while (done < count) {
    const auto want = static_cast<std::size_t>(std::min<uint64_t>(count - done, kPiece));
    const ssize_t n = green::may_block(
        [&] { return ::pread(fd, piece.get(), want, static_cast<off_t>(offset + done)); });
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    if (!take(std::string_view(piece.get(), static_cast<std::size_t>(n)))) return -1;
    done += static_cast<uint64_t>(n);
  }
  return static_cast<int64_t>(done);
}

}  // namespace green::http
