#include "green/http/request.h"

#include <algorithm>

#include "green/context.h"
#include "green/net.h"
#include "server/connection.h"

namespace green::http {

namespace {
constexpr std::string_view kMethodNames[kMethodCount] = {
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE", "CONNECT", "OTHER"};

inline char lower(char c) { return (c >= 'A' && c <= 'Z') ? static_cast<char>(c + 32) : c; }
}  // namespace

std::string_view method_name(Method m) { return kMethodNames[static_cast<int>(m)]; }

Method method_from_name(std::string_view name) {
  for (int i = 0; i < kMethodCount - 1; ++i) {
    if (kMethodNames[i] == name) return static_cast<Method>(i);
  }
  return Method::kOther;
}

bool iequals(std::string_view a, std::string_view b) {
  if (a.size() != b.size()) return false;
  for (std::size_t i = 0; i < a.size(); ++i) {
    if (lower(a[i]) != lower(b[i])) return false;
  }
  return true;
}

std::optional<std::string_view> Request::query_param(std::string_view name) const {
  std::string_view q = query_;
  while (!q.empty()) {
    const std::size_t amp = q.find('&');
    std::string_view pair = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
    const std::size_t eq = pair.find('=');
    if (pair.substr(0, eq) == name) {
      return eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
    }
  }
  return std::nullopt;
}

int64_t Request::query_int(std::string_view name, int64_t fallback, int64_t max) const {
  std::optional<std::string_view> v = query_param(name);
  if (!v || v->empty() || v->size() > 18) return fallback;
  int64_t n = 0;
  for (char c : *v) {
    if (c < '0' || c > '9') return fallback;
    n = n * 10 + (c - '0');
  }
  return std::min(n, max);
}

std::string_view Request::header(std::string_view name) const {
  for (const Header& h : headers_) {
    if (iequals(h.name, name)) return h.value;
  }
  return {};
}

bool Request::has_header(std::string_view name) const {
  return std::any_of(headers_.begin(), headers_.end(),
                     [&](const Header& h) { return iequals(h.name, name); });
}

std::string_view Request::param(std::string_view name) const {
  for (int i = 0; i < param_count_; ++i) {
    if (params_[i].name == name) return params_[i].value;
  }
  return {};
}

void Request::set_params(std::span<const Param> params) {
  param_count_ = static_cast<int>(std::min<std::size_t>(params.size(), kMaxParams));
  std::copy_n(params.begin(), param_count_, params_);
}

void Request::set_request_id(std::string_view id) {
  request_id_length_ = static_cast<uint8_t>(std::min(id.size(), kMaxRequestIdLength));
  std::copy_n(id.data(), request_id_length_, request_id_);
}

bool Request::client_gone() const { return connection_ != nullptr && connection_->client_gone(); }

const green::Context& Request::context() const {
  if (context_ != nullptr) return *context_;
  if (connection_ == nullptr) {
    static const green::Context background = green::Context::background();
    return background;
  }
  context_ = &connection_->request_context();
  return *context_;
}

}  // namespace green::http
