// middleware::timeout(d): a deadline on a handler, answered on time (Go's http.TimeoutHandler).
//
//   router.handle(Method::kGet, "/report", green::http::middleware::timeout(2s)(report));
//
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
#pragma once

#include <chrono>
#include <functional>

#include "green/http/router.h"

namespace green::http::middleware {

std::function<Handler(Handler)> timeout(std::chrono::nanoseconds d);

}  // namespace green::http::middleware
