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

class Connection;

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

  // Every live connection, for the drain (Server::stop_connections), linked through
  // Connection::prev_/next_. A green::Mutex, not a std::mutex: green threads take it (each
  // connection registers and unregisters), and a contended std::mutex would block their OS
  // thread and its P; this one parks the green thread instead. Not a spin lock either: the
  // drain walks every connection under it, and Connection::stop takes poll descriptor locks
  // and may wake an M (sched.lock). Taken with no runtime lock held; see the lock-rank table
  // (include/green/detail/lock_rank.h).
  green::Mutex registry_lock;
  Connection* registry_head GREEN_GUARDED_BY(registry_lock) = nullptr;
};

}  // namespace green::http
