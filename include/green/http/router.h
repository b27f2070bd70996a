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
// Routes are registered before the server starts and never change afterwards, so lookups take
// no lock.
#pragma once

#include <array>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "green/http/request.h"
#include "green/http/response.h"

namespace green::http {

using Handler = std::function<void(Request&, ResponseWriter&)>;

class Router {
 public:
  // Registers `handler` for `method` on `pattern` (must start with '/'). A second handler for
  // the same method and pattern replaces the first.
  void handle(Method method, std::string_view pattern, Handler handler);

  struct Match {
    const Handler* handler = nullptr;  // null: answer `status`
    int status = 0;                    // 404 or 405 when handler is null
    std::string_view allow;            // for 405: "GET, HEAD, POST"
  };
  // Finds the handler for r's method and path and binds r's path parameters.
  Match route(Request& r) const;

 private:
  struct Route {
    std::string pattern;
    std::vector<std::string> segments;  // for parameter patterns: ":name" or literal
    std::array<Handler, kMethodCount> handlers;
    std::string allow;
  };
  struct StringHash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  Route& route_for(std::string_view pattern);
  Match dispatch(const Route& route, Request& r) const;
  static bool match_params(const Route& route, std::string_view path, Request& r);

  std::vector<std::unique_ptr<Route>> routes_;
  std::unordered_map<std::string, Route*, StringHash, std::equal_to<>> exact_;
  std::vector<Route*> parameterised_;
  std::vector<Route*> prefixes_;  // longest first; pattern without the trailing '*'
};

}  // namespace green::http
