#include "server/date_cache.h"

#include <time.h>

#include <cstring>

namespace green::http {

namespace {
std::size_t format_imf(std::time_t t, char* out, std::size_t size) {
  std::tm tm{};
  gmtime_r(&t, &tm);
  return std::strftime(out, size, "%a, %d %b %Y %H:%M:%S GMT", &tm);
}

struct DateLine {
  std::time_t second = -1;
  std::size_t length = 0;
  char text[64];
};
}  // namespace

// noinline: the thread_local's address is computed on each call, never cached across a
// green-thread switch in the caller (which may resume on another OS thread).
namespace {
// This OS thread's "Date: ...\r\n" line for the current second.
const DateLine& current_date_line() {
  thread_local DateLine line;
  timespec now{};
  clock_gettime(CLOCK_REALTIME_COARSE, &now);
  if (now.tv_sec != line.second) {
    std::memcpy(line.text, "Date: ", 6);
    std::size_t n = format_imf(now.tv_sec, line.text + 6, sizeof line.text - 8);
    line.text[6 + n] = '\r';
    line.text[7 + n] = '\n';
    line.length = n + 8;
    line.second = now.tv_sec;
  }
  return line;
}
}  // namespace

__attribute__((noinline)) void append_date_header(ByteBuffer& out) {
  const DateLine& line = current_date_line();
  out.append({line.text, line.length});
}

// noinline as append_date_header: the thread_local's address must not be reused after a switch.
__attribute__((noinline)) std::string_view current_http_date() {
  const DateLine& line = current_date_line();
  return {line.text + 6, line.length - 8};
}

std::string format_http_date(std::time_t t) {
  char buf[64];
  const std::size_t n = format_imf(t, buf, sizeof buf);
  return std::string(buf, n);
}

}  // namespace green::http
