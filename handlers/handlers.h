// The built-in endpoints. They use only the server's public API (server/*.h): a handler is a
// function of (Request&, ResponseWriter&), registered on a Router.
//
//   /plaintext, /json          TechEmpower's plaintext and JSON tests, to the letter
//   /echo                      POST: the request body back
//   /upload                    POST: the body streamed (never held whole); its size and hash
//   /events?n=N&ms=M           N Server-Sent Events ("tick"), M ms apart
//   /sleep?ms=N                parks on a timer (the OS thread runs other green threads)
//   /blocking?ms=N             a real blocking nanosleep inside green::blocking
//   /work?ms=N                 a CPU-bound loop that calls green::checkpoint()
//                              (/blocking and /work stop when their client goes away, and past
//                              their concurrency limit answer 503 with Retry-After: 1)
//   /spawn?n=N                 fans out N green threads joined by a WaitGroup
//   /stack?depth=N             recurses N frames of ~1 KiB on the request's green thread and
//                              reports its committed stack before, deepest, after trimming
//   /static/*                  files under --static-dir (http::FileServer; --static-prefix
//                              moves them, and "/" makes the whole port a static site)
//   /healthz, /readyz          liveness; readiness (503 once shutdown begins)
//   /metrics                   Prometheus text format
//   /debug/greenthreads        the runtime's green-thread dump (?limit=N, default 1000)
//   /debug/vars                runtime and server figures as JSON (for the / page)
//   /                          a page that explains the design and shows live figures
//                              (these four only on --debug-listen's port when it is set)
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "green/http/file_server.h"
#include "green/http/router.h"
#include "green/http/server.h"

namespace green::handlers {

// Concurrency limits of the endpoints that hold a scarce resource for as long as asked.
struct DemoLimits {
  int max_work = 0;       // /work at once (each keeps a P busy); 0: the number of Ps
  int max_blocking = 64;  // /blocking at once (each holds an OS thread)
};

// What the built-in endpoints share with the program that serves them (not a request's
// green::Context: the server, the options, the start time).
struct AppState {
  // Set before the server starts serving; /readyz, /metrics and /debug/vars read it.
  http::Server* server = nullptr;
  // The file server (null: no --static-dir, /static/* is a 404) and its URL prefix.
  std::shared_ptr<http::FileServer> files;
  std::string static_prefix = "/static/";
  DemoLimits limits;
  // Serve /metrics, /debug/* and / on a router of their own (register_debug), for a listener
  // off the public port (--debug-listen): register_all then leaves them out.
  bool separate_debug = false;
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
};

// Registers every endpoint above. `app` must outlive the router's use.
void register_all(http::Router& router, AppState& app);

// The pieces, for tests and for embedding a subset.
void register_benchmarks(http::Router& router);                             // plaintext, json, echo
void register_streaming(http::Router& router);                              // upload, events
void register_runtime_demos(http::Router& router, DemoLimits limits = {});  // sleep ... stack
void register_stack_growth(http::Router& router);  // stack (part of register_runtime_demos)
void register_static(http::Router& router, AppState& app);
// healthz and readyz, and unless app.separate_debug, what register_debug adds.
void register_observability(http::Router& router, AppState& app);
// /metrics, /debug/greenthreads, /debug/vars and the front page (/).
void register_debug(http::Router& router, AppState& app);

}  // namespace green::handlers
