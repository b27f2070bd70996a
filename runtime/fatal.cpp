// fatal(): one line naming the function, the message and the G/P/M, then abort. See fatal.h.
#include "runtime/fatal.h"

#include <unistd.h>

#include <cerrno>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>

#include "runtime/green_thread.h"
#include "runtime/machine.h"
#include "runtime/processor.h"

namespace green::detail {
namespace {

// Set while this thread prints its fatal line: a fault while printing (a corrupted M, say)
// must not recurse.
thread_local bool in_fatal = false;

// A line built in place, silently truncated at its capacity (a fatal line must still go out).
struct Line {
  static constexpr std::size_t kCapacity = 1024;
  // Room kept for " (G <id> <status>, P <id>, M <id>)\n" after the message.
  static constexpr std::size_t kSuffixRoom = 96;
  char text[kCapacity];
  std::size_t len = 0;

  void add(const char* s) {
    while (*s != '\0' && len < kCapacity) text[len++] = *s++;
  }
  void add_number(unsigned long long v) {
    char digits[24];
    std::size_t n = 0;
    do {
      digits[n++] = static_cast<char>('0' + v % 10);
      v /= 10;
    } while (v != 0);
    while (n > 0 && len < kCapacity) text[len++] = digits[--n];
  }
  void add_formatted(const char* format, va_list args) {
    const std::size_t room = kCapacity - kSuffixRoom - len;
    const int n = std::vsnprintf(text + len, room, format, args);
    if (n > 0) len += static_cast<std::size_t>(n) < room ? static_cast<std::size_t>(n) : room - 1;
  }
};

void write_all(const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(STDERR_FILENO, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

}  // namespace

void fatal(const char* function, const char* format, ...) {
  if (in_fatal) std::abort();
  in_fatal = true;
  Line line;
  line.add("greenrt: fatal: ");
  line.add(function);
  line.add(": ");
  va_list args;
  va_start(args, format);
  line.add_formatted(format, args);
  va_end(args);

  Machine* m = current_machine();
  GreenThread* g = m != nullptr ? m->curg : nullptr;
  Processor* p = m != nullptr ? m->p : nullptr;
  line.add(" (G ");
  if (g != nullptr) {
    line.add_number(g->id);
    line.add(" ");
    line.add(status_name(g->status.load(std::memory_order_relaxed)));
  } else {
    line.add("none");
  }
  line.add(", P ");
  if (p != nullptr) {
    line.add_number(static_cast<unsigned long long>(p->id));
  } else {
    line.add("none");
  }
  line.add(", M ");
  if (m != nullptr) {
    line.add_number(static_cast<unsigned long long>(m->id));
  } else {
    line.add("none");
  }
  line.add(")\n");
  if (line.len == Line::kCapacity) line.text[Line::kCapacity - 1] = '\n';
  write_all(line.text, line.len);
  std::abort();
}

}  // namespace green::detail
