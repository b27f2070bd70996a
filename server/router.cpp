#include "green/http/router.h"

#include <algorithm>
#include <memory>

namespace green::http {

Router::Route& Router::route_for(std::string_view pattern) {
  const bool prefix = pattern.size() >= 2 && pattern.substr(pattern.size() - 2) == "/*";
  const bool params = pattern.find("/:") != std::string_view::npos;
  const std::string key(prefix ? pattern.substr(0, pattern.size() - 1) : pattern);
  auto same = [&](Route* r) { return r->pattern == key; };
  if (prefix) {
    auto it = std::find_if(prefixes_.begin(), prefixes_.end(), same);
    if (it != prefixes_.end()) return **it;
  } else if (params) {
    auto it = std::find_if(parameterised_.begin(), parameterised_.end(), same);
    if (it != parameterised_.end()) return **it;
  } else if (auto it = exact_.find(key); it != exact_.end()) {
    return *it->second;
  }

  auto route = std::make_unique<Route>();
  route->pattern = key;
  Route* r = route.get();
  routes_.push_back(std::move(route));
  if (prefix) {
    prefixes_.push_back(r);
    std::stable_sort(prefixes_.begin(), prefixes_.end(),
                     [](Route* a, Route* b) { return a->pattern.size() > b->pattern.size(); });
  } else if (params) {
    std::string_view rest = std::string_view(key).substr(1);
    for (;;) {
      const std::size_t slash = rest.find('/');
      r->segments.emplace_back(rest.substr(0, slash));
      if (slash == std::string_view::npos) break;
      rest = rest.substr(slash + 1);
    }
    parameterised_.push_back(r);
  } else {
    exact_.emplace(key, r);
  }
  return *r;
}

void Router::handle(Method method, std::string_view pattern, Handler handler) {
  handle(method, pattern, std::move(handler), {});
}

void Router::handle(Method method, std::string_view pattern, Handler handler,
                    std::initializer_list<Middleware> middleware) {
  Route& r = route_for(pattern);
  r.endpoints[static_cast<int>(method)] = {std::move(handler), std::vector<Middleware>(middleware)};
  r.allow.clear();
  for (int m = 0; m < kMethodCount; ++m) {
    const bool has = static_cast<bool>(r.endpoints[m].handler) ||
                     (m == static_cast<int>(Method::kHead) &&
                      r.endpoints[static_cast<int>(Method::kGet)].handler);
    if (!has || m == static_cast<int>(Method::kOther)) continue;
    if (!r.allow.empty()) r.allow += ", ";
    r.allow += method_name(static_cast<Method>(m));
  }
  compose(r);
}

void Router::use(Middleware middleware) {
  global_.push_back(std::move(middleware));
  // Global middleware wraps everything, whenever registered (as a Go middleware wrapping the
  // whole mux would): compose every route again. Startup cost only, routes x middleware.
  for (const auto& route : routes_) compose(*route);
  not_found_ = wrap_global([](Request&, ResponseWriter& w) { w.send_status(404); });
}

Handler Router::wrap_global(Handler handler) const {
  for (auto it = global_.rbegin(); it != global_.rend(); ++it) handler = (*it)(std::move(handler));
  return handler;
}

void Router::compose(Route& route) const {
  for (int m = 0; m < kMethodCount; ++m) {
    const Endpoint& e = route.endpoints[m];
    if (!e.handler) {
      route.handlers[m] = nullptr;
      continue;
    }
    Handler h = e.handler;
    for (auto it = e.middleware.rbegin(); it != e.middleware.rend(); ++it) h = (*it)(std::move(h));
    route.handlers[m] = wrap_global(std::move(h));
  }
  if (global_.empty()) return;  // the connection answers 405 itself: no std::function call
  route.method_not_allowed = wrap_global([allow = route.allow](Request&, ResponseWriter& w) {
    w.set_header("Allow", allow);
    w.send_status(405);
  });
}

bool Router::match_params(const Route& route, std::string_view path, Request& r) {
  Request::Param params[Request::kMaxParams];
  int count = 0;
  std::string_view rest = path.substr(1);
  for (std::size_t i = 0; i < route.segments.size(); ++i) {
    const std::size_t slash = rest.find('/');
    const bool last = i + 1 == route.segments.size();
    if (last != (slash == std::string_view::npos)) return false;
    const std::string_view segment = rest.substr(0, slash);
    const std::string& want = route.segments[i];
    if (!want.empty() && want.front() == ':') {
      if (segment.empty()) return false;
      if (count < Request::kMaxParams)
        params[count++] = {std::string_view(want).substr(1), segment};
    } else if (segment != want) {
      return false;
    }
    if (!last) rest = rest.substr(slash + 1);
  }
  r.set_params({params, static_cast<std::size_t>(count)});
  return true;
}

Router::Match Router::dispatch(const Route& route, Request& r) const {
  int m = static_cast<int>(r.method());
  if (!route.handlers[m] && r.method() == Method::kHead) m = static_cast<int>(Method::kGet);
  if (r.method() != Method::kOther && route.handlers[m]) return {&route.handlers[m], 0, {}};
  if (route.method_not_allowed) return {&route.method_not_allowed, 405, route.allow};
  return {nullptr, 405, route.allow};
}

Router::Match Router::route(Request& r) const {
  const std::string_view path = r.path();
  if (auto it = exact_.find(path); it != exact_.end()) return dispatch(*it->second, r);
  if (!path.empty() && path.front() == '/') {
    for (const Route* route : parameterised_) {
      if (match_params(*route, path, r)) return dispatch(*route, r);
    }
  }
  for (const Route* route : prefixes_) {
    if (path.substr(0, route->pattern.size()) == route->pattern) {
      const Request::Param rest{"*", path.substr(route->pattern.size())};
      r.set_params({&rest, 1});
      return dispatch(*route, r);
    }
  }
  if (not_found_) return {&not_found_, 404, {}};
  return {nullptr, 404, {}};
}

}  // namespace green::http
