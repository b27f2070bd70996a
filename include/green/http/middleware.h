// Middleware: a function from a handler to a handler (Go's func(http.Handler) http.Handler, as
// chi and alice compose them).
//
//   router.use(middleware::recover());            // global: every route, and the 404/405 answers
//   router.use(middleware::request_id());
//   router.handle(Method::kGet, "/report", report, {middleware::gzip()});   // this route only
//
// Order: the first registered is the outermost. `use(a); use(b); handle(m, p, h, {c, d})`
// serves a request through a(b(c(d(h)))): `a` runs first and sees the response last.
// Global middleware wraps every route whenever it is registered (before or after the route),
// and also the router's own 404 and 405 answers, as middleware wrapping a Go ServeMux sees its
// NotFound; `OPTIONS *` and the protocol errors the connection answers itself (400, 408, 413,
// 431, ...) never reach a handler, so no middleware sees them (the server's access log does).
//
// Composition happens at registration (Router::use, Router::handle), never per request: a
// request runs the composed std::function directly, and a router without middleware serves
// exactly as before.
//
// Every middleware runs on the request's green thread, inside the handler call: it may park,
// and the Request and ResponseWriter it sees are valid only until it returns.
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <string>
#include <vector>

#include "green/http/request.h"
#include "green/http/response.h"

namespace green::http {

class AccessLog;  // green/http/access_log.h

using Handler = std::function<void(Request&, ResponseWriter&)>;
using Middleware = std::function<Handler(Handler)>;

namespace middleware {

// An exception escaping the inner handler becomes a 500, logged once (spdlog, error level:
// method, path, request id when set, what()). When nothing has been sent yet, whatever the
// handler set or buffered is discarded and the client gets a clean "500 Internal Server
// Error" with Connection: close; when the head has already gone out (a streamed response),
// the response is aborted: no last chunk, and the connection closes, so the client sees a
// truncated response, never a complete wrong one. The exception does not propagate.
//
// The server does the same for an exception that escapes every middleware (Go's net/http
// recovers a handler's panic per connection and logs it), so the process never dies of one;
// recover() is for putting that answer inside a stack, where outer middleware (an access
// log, a request id) sees the 500.
Middleware recover();

// X-Request-Id (as Heroku, nginx's $request_id and chi's RequestID): the request's own header
// when it is sane (1 to Request::kMaxRequestIdLength = 64 bytes, each visible ASCII
// 0x21-0x7E), else a new id: 32 hex digits, a random 64-bit prefix per process and a counter
// (unique in the process, and across processes with high probability; no syscall, no lock per
// request). The id is set on the request (Request::request_id(), for the handler and the
// access log, which appends it to the line) and echoed on the response as X-Request-Id, also
// on the 500 of recover() or of the server. Put it outside recover() so the 500 carries it.
Middleware request_id();

// The server's access log (Combined Log Format, green/http/access_log.h) as a middleware, for a
// program that builds its own stack: it records each request that reaches it, after the inner
// handler returns, with the status and body bytes the handler produced (an escaping exception
// is recorded as 500 and rethrown). It sees only what reaches the router: protocol errors
// answered by the connection (400, 408, 413, 431, 503 over the connection cap) are not
// recorded. A Server given an AccessLog records every request, those included, at no extra
// cost (what greenhttp's binary does); use one or the other, not both, or requests are
// recorded twice. `log` must outlive the router.
Middleware access_log(AccessLog& log);

// Response compression with gzip (zlib), as nginx's gzip module and Go's gziphandler.
struct GzipOptions {
  // zlib level 1 (fastest) to 9. 1 as nginx's gzip_comp_level default: on HTML or JSON it
  // already gets most of the gain (about 4x on typical text) for a third of level 6's CPU,
  // and compression runs inline on the handler's thread.
  int level = 1;
  // Bodies known to be shorter than this are sent as they are. 1 KiB: below that, headers and
  // body fit one TCP segment either way, so compressing saves no packet and costs a deflate
  // state (Go's gziphandler uses 1400 for the same reason; nginx's default of 20 bytes
  // compresses nearly everything). A streamed body of unknown length is compressed whatever
  // its size.
  std::size_t min_length = 1024;
  // Compressible media types (the Content-Type without parameters, case-insensitive). An entry
  // ending in "/*" matches a whole top-level type; "+json" and "+xml" suffixed types always
  // match.
  std::vector<std::string> types = {"text/*",
                                    "application/json",
                                    "application/javascript",
                                    "application/x-javascript",
                                    "application/ecmascript",
                                    "application/xml",
                                    "application/wasm",
                                    "image/svg+xml",
                                    "image/x-icon",
                                    "font/ttf",
                                    "font/otf"};
};

// Compresses a response with gzip when all of these hold (decided when its head goes out):
//   - the request's Accept-Encoding accepts gzip ("gzip" or "x-gzip" or "*" with q > 0;
//     "gzip;q=0" refuses);
//   - the request is not HEAD, and the status is not 204, 206, 304 or 1xx;
//   - the handler set no Content-Encoding;
//   - the Content-Type is in `types`;
//   - the body is at least `min_length` long, or streams with no known length.
// A compressed response gets Content-Encoding: gzip, loses its Content-Length (a buffered one
// is sent with the compressed length; a streamed one is chunked), a strong ETag becomes weak
// and Accept-Ranges is dropped (nginx does both). Every response that could be compressed,
// accepted or not, gets Vary: Accept-Encoding, so caches keep the two forms apart.
// w.flush() flushes the compressor (Z_SYNC_FLUSH), so a streamed response decodes
// incrementally. Memory: one deflate state per compressed response, sized to the body when its
// length is known (at most 256 KiB + 6 KiB for a stream), freed when the response ends.
Middleware gzip(GzipOptions options = {});

// A deadline on a handler, answered on time (Go's http.TimeoutHandler):
//   router.handle(Method::kGet, "/report", report, {middleware::timeout(2s)});
// The wrapped handler runs in a green thread of its own, against a writer whose bytes are
// buffered, with a request context (r.context()) that has the deadline. If it returns in time
// its response goes out as usual. If the deadline passes first, the client gets 503 with the
// body "Timeout" and Connection: close at once, whether or not the handler honours its context;
// its context is cancelled, and what it wrote, before or after, is discarded. The wrapper then
// waits for the handler to return (the request refers to the connection's buffers until then),
// and the connection closes. If the request's context ends otherwise first (the client left,
// the drain deadline), the handler's context ends with it and its answer is discarded: 503 to
// a client that is still there, nothing (499 in the log) to one that left.
//
// Costs a green thread, a context with a deadline and a buffered copy of the response per
// request: for routes that need an answer on time, not for every route. --handler-timeout
// gives every route a deadline at no such cost, but answers only when the handler returns.
// The whole response is buffered until the handler returns (as Go's, which does not support
// Flush either), so streaming handlers are not for this wrapper.
Middleware timeout(std::chrono::nanoseconds d);

// Whether an Accept-Encoding value accepts gzip (RFC 9110 12.5.3). Exposed for tests.
bool accepts_gzip(std::string_view accept_encoding);
// The same for a request, over all its Accept-Encoding lines (the file server's FILE.gz).
bool accepts_gzip(const Request& r);

}  // namespace middleware

}  // namespace green::http
