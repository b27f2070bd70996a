// The streaming demos: a request body read as a stream (/upload) and a response pushed as
// Server-Sent Events (/events). Small on purpose: they show the two APIs (green/http/body.h,
// green/http/sse.h) and give the tests a route to stream through.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

#include "green/context.h"
#include "green/green.h"
#include "green/http/sse.h"
#include "handlers/handlers.h"

namespace green::handlers {

using http::Method;
using http::Request;
using http::ResponseWriter;

void register_streaming(http::Router& router) {
  // POST /upload: reads the body in 16 KiB pieces without keeping it, and answers its size and
  // FNV-1a hash ("bytes=N fnv1a=HEX\n"). A body of any size under --max-body costs the server
  // its read buffer only. On a failed read the server answers the failure (413, 408, 400).
  router.handle(Method::kPost, "/upload", [](Request& r, ResponseWriter& w) {
    char buf[16 * 1024];  // on the green thread's lazily committed stack
    uint64_t bytes = 0;
    uint64_t hash = 14695981039346656037ull;
    long n;
    while ((n = r.body().read(buf)) > 0) {
      bytes += static_cast<uint64_t>(n);
      for (long i = 0; i < n; ++i) {
        hash = (hash ^ static_cast<unsigned char>(buf[i])) * 1099511628211ull;
      }
    }
    if (n < 0) return;
    char text[64];
    const int len = std::snprintf(text, sizeof text, "bytes=%llu fnv1a=%016llx\n",
                                  static_cast<unsigned long long>(bytes),
                                  static_cast<unsigned long long>(hash));
    w.send(200, "text/plain", {text, static_cast<std::size_t>(len)});
  });

  // GET /events?n=N&ms=M: N events ("tick" with data and id i, 1..N; at most 10,000) M ms
  // apart (at most 10 s), then the stream ends. It stops as soon as the request's context ends
  // (the client left, --handler-timeout, the drain deadline), not at its next event.
  router.handle(Method::kGet, "/events", [](Request& r, ResponseWriter& w) {
    const int64_t n = r.query_int("n", 5, 10'000);
    const auto gap = std::chrono::milliseconds(r.query_int("ms", 100, 10'000));
    http::EventStream es(w);
    for (int64_t i = 1; i <= n; ++i) {
      if (i > 1 && !green::sleep_for(gap, r.context())) return;
      const std::string id = std::to_string(i);
      if (!es.send(id, "tick", id)) return;
    }
  });
}

}  // namespace green::handlers
