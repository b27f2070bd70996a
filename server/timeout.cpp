// middleware::timeout: see green/http/middleware.h.
//
// The wrapped handler runs in a child green thread against a ResponseWriter whose sink is a
// private buffer (flush() sends nothing). The wrapper parks on a select between the child's
// end and the derived context's end. Unlike Go's TimeoutHandler, the wrapper cannot return
// before the child has: the Request (and the connection buffers it views) must outlive every
// use, so after answering 503 it cancels the child's context and waits for it; a child parked
// on a streamed body's read is woken by shutting the socket's read side. The wrapper sends a
// streamed body's 100 Continue itself, before the child starts: the child's writes then all
// go to its private buffer, never to the connection's output, which the wrapper writes.
#include "green/http/middleware.h"
// (This file's own header first, on its own, though its name differs: it must compile alone.)

#include <exception>
#include <optional>

#include "green/context.h"
#include "green/green.h"
#include "green/select.h"
#include "server/body_reader.h"
#include "server/byte_buffer.h"

namespace green::http::middleware {

namespace {

constexpr std::string_view kTimeoutBody = "Timeout\n";  // Go's default body says "Timeout"

// The child's writer's destination: everything stays here until the wrapper decides.
class BufferSink final : public ResponseSink {
 public:
  ByteBuffer& output() override { return out_; }
  bool flush_output() override { return true; }  // buffered: sent (or not) when it returns

 private:
  ByteBuffer out_;
};

void serve_with_timeout(std::chrono::nanoseconds d, const Handler& next, Request& r,
                        ResponseWriter& w) {
  auto [ctx, cancel] = green::with_timeout(r.context(), d);
  const green::Context* previous = r.set_context(&ctx);
  BufferSink sink;
  ByteBuffer body;
  ByteBuffer headers;
  ResponseWriter inner(sink, body, headers, r.method(), r.version_minor(), w.keep_alive());
  // A streamed body's 100 Continue is the connection's output, which this thread may write
  // (the 503) while the child reads: it goes out here, before the child starts, so that the
  // child never writes to the connection. (The client then sends its body even when the
  // handler would have refused it unread; put refusing middleware outside timeout().)
  BodySource* const reader = r.body().reader();
  if (reader != nullptr) (void)reader->send_continue_now();
  std::exception_ptr error;
  green::Channel<bool> finished(1);
  green::go([&] {
    try {
      next(r, inner);
    } catch (...) {
      error = std::current_exception();
    }
    finished.close();
  });
  bool in_time = false;
  green::select(green::recv_case(finished, [&](std::optional<bool>) { in_time = true; }),
                green::done_case(ctx, [] {}));
  const green::ContextError why = ctx.err();
  if (!in_time && why == green::ContextError::kDeadlineExceeded) {
    // Answer now, whatever the child is doing; then wait for it (it sees its context end).
    w.close_connection();
    w.set_content_length(kTimeoutBody.size());
    w.send(503, "text/plain; charset=utf-8", kTimeoutBody);
    w.flush();
  }
  cancel();
  // A child parked reading a stalled body would hold the connection until the read timeout:
  // its read ends now (the connection closes after this answer anyway).
  if (!in_time && reader != nullptr) reader->interrupt();
  if (!in_time) (void)finished.recv();  // parks until the child has returned
  r.set_context(previous);
  if (in_time) {
    if (error) std::rethrow_exception(error);  // as if the handler had thrown here
    inner.finish();
    const std::string_view bytes{sink.output().data(), sink.output().size()};
    w.complete_from(bytes, inner.status(), inner.body_bytes(), inner.keep_alive());
    return;
  }
  if (why != green::ContextError::kDeadlineExceeded) {
    // The request's own context ended (client gone, drain): its answer is discarded. A client
    // that left gets nothing (the server logs 499); one still there gets 503, as from Go.
    if (!r.client_gone()) {
      w.close_connection();
      w.send_status(503);
    }
  }
}

}  // namespace

std::function<Handler(Handler)> timeout(std::chrono::nanoseconds d) {
  return [d](Handler next) -> Handler {
    return [d, next = std::move(next)](Request& r, ResponseWriter& w) {
      serve_with_timeout(d, next, r, w);
    };
  };
}

}  // namespace green::http::middleware
