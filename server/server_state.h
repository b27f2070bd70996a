// ServerState: the parts of a Server that user code never sees (include/green/http/server.h
// holds it through a pointer, so the public header pulls in no buffer pool or budget).
#pragma once

#include <utility>

#include "green/context.h"
#include "green/http/limits.h"
#include "green/sync.h"
#include "server/body_budget.h"
#include "server/buffer_pool.h"
#include "server/memory_reclaimer.h"

namespace green::http {

struct ServerState {
  ServerState(const Limits& limits, uint64_t max_buffered_body_bytes)
      : pool(limits, 1024), body_budget(max_buffered_body_bytes), reclaimer(pool, body_budget) {}

  BufferPool pool;
  BodyBudget body_budget;
  MemoryReclaimer reclaimer;  // runs while serve() does
  WaitGroup shutdown_done;    // done by the first shutdown(); serve() waits for it
  // The parent of every request's context (Request::context()): cancelled when the drain's
  // deadline passes, so that handlers that honour their context end (Go's BaseContext, whose
  // cancellation a Go program wires to its shutdown itself).
  std::pair<Context, CancelFn> base = with_cancel(Context::background());
};

}  // namespace green::http
