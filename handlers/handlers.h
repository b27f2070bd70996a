// The built-in endpoints. They use only the server's public API (server/*.h): a handler is a
// function of (Request&, ResponseWriter&), registered on a Router.
//
//   /plaintext, /json          TechEmpower's plaintext and JSON tests, to the letter
//   /echo                      POST: the request body back
//   /sleep?ms=N                parks on a timer (the OS thread runs other green threads)
//   /blocking?ms=N             a real blocking nanosleep inside green::blocking
//   /work?ms=N                 a CPU-bound loop that calls green::checkpoint()
//   /spawn?n=N                 fans out N green threads joined by a WaitGroup
//   /static/*                  files under --static-dir
//   /healthz, /readyz          liveness; readiness (503 once shutdown begins)
//   /metrics                   Prometheus text format
//   /debug/greenthreads        the runtime's green-thread dump
//   /debug/vars                runtime and server figures as JSON (for the / page)
//   /                          a page that explains the design and shows live figures
#pragma once

#include <chrono>
#include <string>

#include "server/router.h"
#include "server/server.h"

namespace green::handlers {

struct Context {
  // Set before the server starts serving; /readyz, /metrics and /debug/vars read it.
  http::Server* server = nullptr;
  std::string static_dir;  // empty: /static/* is a 404
  std::chrono::steady_clock::time_point started = std::chrono::steady_clock::now();
};

// Registers every endpoint above. `context` must outlive the router's use.
void register_all(http::Router& router, Context& context);

// The pieces, for tests and for embedding a subset.
void register_benchmarks(http::Router& router);           // plaintext, json, echo
void register_runtime_demos(http::Router& router);        // sleep, blocking, work, spawn
void register_static(http::Router& router, const std::string& dir);
void register_observability(http::Router& router, Context& context);

// "text/html; charset=utf-8" for "index.html"; "application/octet-stream" when unknown.
std::string_view content_type_for(std::string_view filename);

}  // namespace green::handlers
