// /stack?depth=N: the stack-growth demonstration, measured. The classic demonstration of
// goroutine stacks is deep recursion; here the request's own green thread recurses N frames of
// about 1 KiB and reports its stack's committed (resident) bytes before, at the deepest point,
// after returning, and after shrink_stack() hands the deep pages back:
//
//   {"depth":4096,"frame_bytes":1056,"max_depth":7870,"reserved_bytes":8388608,
//    "committed_before":8192,"committed_deepest":4337664,"committed_after_return":4337664,
//    "committed_after_trim":8192}
//
// Committed means resident, read with mincore(2) over the stack (this_green_thread::
// stack_usage()): the figure the kernel charges, not an estimate. A green thread's stack is a
// lazily committed reservation (8 MiB by default, green::Options::stack_size), so depth costs
// memory only while it is used. The handler does not park while deep (nothing in the descent
// waits), so at most one such stack per P is deep at a time. A depth whose frames would not fit in
// the reservation, less kHeadroom, is refused with 400 (and the most that fits): a request must not
// be able to overflow the stack, which would end the process.
#include <cstdint>
#include <cstdio>
#include <cstring>

#include "green/green.h"
#include "handlers/handlers.h"

namespace green::handlers {

namespace {
using http::Method;
using http::Request;
using http::ResponseWriter;
using Usage = green::this_green_thread::StackUsage;

constexpr std::size_t kFrameArray = 1024;
// Room kept below the deepest frame for what runs there (stack_usage and its mincore, far more
// with sanitizer instrumentation) and for a frame size measured a little short.
constexpr std::size_t kHeadroom = 128 * 1024;

struct Descent {
  Usage deepest;
  uintptr_t frame_at[2] = {};  // the frame arrays of the two shallowest levels (frame size)
};

// One ~1 KiB frame per level. The array is volatile and every byte is written, so the compiler
// can neither drop nor shrink it; the sum after the call keeps the call from being a tail call
// (which would reuse one frame).
[[gnu::noinline]] int descend(int64_t levels, int64_t level, Descent* d) {
  volatile char frame[kFrameArray];
  for (std::size_t i = 0; i < kFrameArray; ++i) frame[i] = static_cast<char>(level + i);
  if (level < 2) d->frame_at[level] = reinterpret_cast<uintptr_t>(&frame[0]);
  int below = 0;
  if (level + 1 < levels) {
    below = descend(levels, level + 1, d);
  } else {
    d->deepest = green::this_green_thread::stack_usage();
  }
  return below + frame[0] + frame[kFrameArray - 1];
}

// Bytes one level of descend() takes on this build (sanitizers add redzones): measured, once.
std::size_t frame_bytes() {
  static const std::size_t bytes = [] {
    Descent probe;
    descend(2, 0, &probe);
    return static_cast<std::size_t>(probe.frame_at[0] - probe.frame_at[1]);
  }();
  return bytes;
}

}  // namespace

void register_stack_growth(http::Router& router) {
  router.handle(Method::kGet, "/stack", [](Request& r, ResponseWriter& w) {
    if (!green::this_green_thread::is_green()) {
      w.send(500, "text/plain; charset=utf-8", "not on a green thread\n");
      return;
    }
    const Usage before = green::this_green_thread::stack_usage();
    const std::size_t frame = frame_bytes();
    const std::size_t room =
        before.reserved > before.depth + kHeadroom ? before.reserved - before.depth - kHeadroom : 0;
    const auto max_depth = static_cast<int64_t>(room / frame);
    const int64_t depth = r.query_int("depth", -1, INT64_MAX);
    char text[320];
    if (depth < 0 || depth > max_depth) {
      const int n =
          std::snprintf(text, sizeof text,
                        "depth must be a number from 0 to %lld: frames of %zu bytes "
                        "in a %zu-byte stack, less %zu bytes of headroom\n",
                        static_cast<long long>(max_depth), frame, before.reserved, kHeadroom);
      w.send(400, "text/plain; charset=utf-8", {text, static_cast<std::size_t>(n)});
      return;
    }
    Descent d;
    if (depth > 0) {
      descend(depth, 0, &d);
    } else {
      d.deepest = before;
    }
    const Usage after_return = green::this_green_thread::stack_usage();
    green::this_green_thread::shrink_stack();
    const Usage after_trim = green::this_green_thread::stack_usage();
    const int n = std::snprintf(
        text, sizeof text,
        "{\"depth\":%lld,\"frame_bytes\":%zu,\"max_depth\":%lld,\"reserved_bytes\":%zu,"
        "\"committed_before\":%zu,\"committed_deepest\":%zu,\"committed_after_return\":%zu,"
        "\"committed_after_trim\":%zu}\n",
        static_cast<long long>(depth), frame, static_cast<long long>(max_depth), before.reserved,
        before.committed, d.deepest.committed, after_return.committed, after_trim.committed);
    w.send(200, "application/json", {text, static_cast<std::size_t>(n)});
  });
}

}  // namespace green::handlers
