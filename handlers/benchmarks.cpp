// TechEmpower's plaintext and JSON tests (https://github.com/TechEmpower/FrameworkBenchmarks
// wiki, "Test type" 1 and 6): exact bodies, Server and Date headers, Content-Length; the JSON
// body is serialised per request, as the rules ask, not served from a constant.
#include <optional>
#include <string_view>

#include "handlers/handlers.h"

namespace green::handlers {

namespace {
using http::Method;
using http::Request;
using http::ResponseWriter;

// Writes `s` as a JSON string literal, escaping as RFC 8259 requires. Runs of plain characters
// go out as one write; the writer buffers them, so this allocates nothing.
void write_json_string(ResponseWriter& w, std::string_view s) {
  w.write("\"");
  std::size_t plain = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    w.write(s.substr(plain, i - plain));
    static constexpr char kHex[] = "0123456789abcdef";
    const char escaped[6] = {'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 15]};
    if (c == '"') w.write("\\\"");
    else if (c == '\\') w.write("\\\\");
    else w.write({escaped, sizeof escaped});
    plain = i + 1;
  }
  w.write(s.substr(plain));
  w.write("\"");
}
}  // namespace

void register_benchmarks(http::Router& router) {
  router.handle(Method::kGet, "/plaintext",
                [](Request&, ResponseWriter& w) { w.send(200, "text/plain", "Hello, World!"); });
  router.handle(Method::kGet, "/json", [](Request&, ResponseWriter& w) {
    w.set_status(200);
    w.set_content_type("application/json");
    w.write("{");
    write_json_string(w, "message");
    w.write(":");
    write_json_string(w, "Hello, World!");
    w.write("}");
  });
  router.handle(Method::kPost, "/echo", [](Request& r, ResponseWriter& w) {
    std::string_view type = r.header("Content-Type");
    // The whole body in memory (read_all), under --max-body and the body budget; on a failed
    // read the server answers the failure (413, 408, 400, 503) itself.
    const std::optional<std::string_view> body = r.body().read_all();
    if (!body) return;
    w.send(200, type.empty() ? "application/octet-stream" : type, *body);
  });
}

}  // namespace green::handlers
