// Router: picks a handler by method and path (Go's ServeMux, plus path parameters).
//
//   router.handle(Method::kGet, "/plaintext", plaintext);        // exact
//   router.handle(Method::kGet, "/users/:id", show_user);        // r.param("id")
//   router.handle(Method::kGet, "/static/*", serve_file);        // prefix; r.param("*")
//
// Lookup order: exact patterns, then patterns with parameters (in registration order), then
// prefixes (longest first). A path that matches no pattern is a 404; a path that matches but
// has no handler for the method is a 405 with an Allow header listing the ones it has. A GET
// handler also answers HEAD (the writer drops the body).
//
// Middleware (green/http/middleware.h) wraps routes: use() for every route and the 404/405
// answers, the last argument of handle() for one route. Each route's chain is composed when
// it is registered (and again when use() adds a global one), never per request.
//
// Routes and middleware are registered before the server starts and never change afterwards,
// so lookups take no lock.
#pragma once

#include <array>
#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "green/http/middleware.h"  // Handler, Middleware
#include "green/http/request.h"
#include "green/http/response.h"

namespace green::http {

class Router {
 public:
  // Registers `handler` for `method` on `pattern` (must start with '/'), wrapped in the global
  // middleware and then in `middleware` (first listed outermost): use(a); use(b);
  // handle(m, p, h, {c, d}) serves through a(b(c(d(h)))). A second handler for the same method
  // and pattern replaces the first (and its middleware).
  void handle(Method method, std::string_view pattern, Handler handler);
  void handle(Method method, std::string_view pattern, Handler handler,
              std::initializer_list<Middleware> middleware);

  // Adds a global middleware, inside those added before: it wraps every route, registered
  // before or after this call, and the router's own 404 and 405 answers (the connection still
  // answers `OPTIONS *` and protocol errors itself). Each route is composed again here, so a
  // middleware may be called more than once for one route while routes are registered; the
  // handler it returns last is the one that serves.
  void use(Middleware middleware);

  struct Match {
    // Null: answer `status`. With global middleware, a 404 or 405 comes with the handler that
    // answers it through that middleware.
    const Handler* handler = nullptr;
    int status = 0;          // 0, or 404 or 405 (with or without a handler)
    std::string_view allow;  // for 405: "GET, HEAD, POST"
  };
  // Finds the handler for r's method and path and binds r's path parameters.
  Match route(Request& r) const;

 private:
  // A handler as registered, with its own middleware (outermost first).
  struct Endpoint {
    Handler handler;
    std::vector<Middleware> middleware;
  };
  struct Route {
    std::string pattern;
    std::vector<std::string> segments;  // for parameter patterns: ":name" or literal
    std::array<Endpoint, kMethodCount> endpoints;
    std::array<Handler, kMethodCount> handlers;  // composed: global(route(endpoint))
    std::string allow;
    Handler method_not_allowed;  // the 405 wrapped in the global middleware; empty without any
  };
  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  Route& route_for(std::string_view pattern);
  Handler wrap_global(Handler handler) const;
  void compose(Route& route) const;
  Match dispatch(const Route& route, Request& r) const;
  static bool match_params(const Route& route, std::string_view path, Request& r);

  std::vector<std::unique_ptr<Route>> routes_;
  std::unordered_map<std::string, Route*, StringHash, std::equal_to<>> exact_;
  std::vector<Route*> parameterised_;
  std::vector<Route*> prefixes_;    // longest first; pattern without the trailing '*'
  std::vector<Middleware> global_;  // outermost first
  Handler not_found_;               // the 404 wrapped in the global middleware; empty without any
};

}  // namespace green::http
