// Loading: CLI11 parses the flags into strings (so each value is validated by our own parsers
// and named in the error), toml++ parses the file, and both feed one apply() per setting.
#include "config/config.h"

#include <CLI/CLI.hpp>
#include <toml++/toml.h>

#include <cctype>
#include <functional>
#include <map>
#include <sstream>
#include <vector>

namespace green::config {

namespace {

bool is_log_level(std::string_view s) {
  return s == "trace" || s == "debug" || s == "info" || s == "warn" || s == "error" ||
         s == "off";
}

// One setting: its flag, its TOML key ("section.key"), help, and how to apply a text value.
// Returns an error message (without the name) or empty on success.
struct Setting {
  std::string flag;  // without the leading "--"
  std::string key;   // in the TOML file
  std::string help;
  std::function<std::string(Config&, const std::string&)> apply;
  bool is_switch = false;  // a boolean: the bare flag means true, or it takes true/false
};

std::string apply_duration(std::chrono::nanoseconds& out, const std::string& v) {
  std::optional<std::chrono::nanoseconds> d = parse_duration(v);
  if (!d) return "invalid duration \"" + v + "\" (use e.g. 500ms, 2s, 1m)";
  out = *d;
  return {};
}

std::string apply_size(uint64_t& out, const std::string& v, uint64_t min) {
  std::optional<uint64_t> n = parse_size(v);
  if (!n) return "invalid size \"" + v + "\" (use e.g. 1048576, 64KiB, 1MiB)";
  if (*n < min) return "size \"" + v + "\" is below the minimum " + std::to_string(min);
  out = *n;
  return {};
}

std::string apply_int(int64_t& out, const std::string& v, int64_t min, int64_t max) {
  if (v.empty() || v.size() > 12) return "invalid number \"" + v + "\"";
  int64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return "invalid number \"" + v + "\"";
    n = n * 10 + (c - '0');
  }
  if (n < min || n > max) {
    return "\"" + v + "\" is out of range " + std::to_string(min) + ".." + std::to_string(max);
  }
  out = n;
  return {};
}

std::string apply_bool(bool& out, const std::string& v) {
  if (v == "true" || v == "1") {
    out = true;
  } else if (v == "false" || v == "0") {
    out = false;
  } else {
    return "invalid boolean \"" + v + "\" (true or false)";
  }
  return {};
}

std::vector<Setting> settings() {
  using C = Config;
  return {
      {"listen", "listen", "HOST:PORT to listen on (default 0.0.0.0:8080)",
       [](C& c, const std::string& v) -> std::string {
         if (v.rfind(':') == std::string::npos) return "invalid address \"" + v + "\" (HOST:PORT)";
         c.listen = v;
         return {};
       }},
      {"threads", "threads", "Ps (OS threads running green threads); 0: CPU count",
       [](C& c, const std::string& v) {
         int64_t n = 0;
         std::string e = apply_int(n, v, 0, 256);
         c.threads = static_cast<int>(n);
         return e;
       }},
      {"static-dir", "static_dir", "directory served under /static/ (empty: none)",
       [](C& c, const std::string& v) {
         c.static_dir = v;
         return std::string();
       }},
      {"access-log", "access_log", "access log: PATH, stdout or off (default stdout)",
       [](C& c, const std::string& v) -> std::string {
         if (v.empty()) return "empty access log target (PATH, stdout or off)";
         c.access_log = v;
         return {};
       }},
      {"log-level", "log_level", "trace, debug, info, warn, error or off (default info)",
       [](C& c, const std::string& v) -> std::string {
         if (!is_log_level(v)) return "invalid log level \"" + v + "\"";
         c.log_level = v;
         return {};
       }},
      {"reuse-port", "reuse_port",
       "SO_REUSEPORT, for several processes on one port (bare flag: true)",
       [](C& c, const std::string& v) { return apply_bool(c.reuse_port, v.empty() ? "true" : v); },
       true},
      {"max-connections", "max_connections",
       "open connections before new ones get 503; 0: open-files limit minus a reserve",
       [](C& c, const std::string& v) { return apply_int(c.max_connections, v, 0, 100'000'000); }},
      {"port-file", "port_file", "write the bound port to this file once listening",
       [](C& c, const std::string& v) {
         c.port_file = v;
         return std::string();
       }},
      {"read-header-timeout", "timeouts.read_header",
       "time to receive a request's headers, then 408 (default 10s)",
       [](C& c, const std::string& v) { return apply_duration(c.read_header_timeout, v); }},
      {"idle-timeout", "timeouts.idle", "keep-alive wait for the next request (default 60s)",
       [](C& c, const std::string& v) { return apply_duration(c.idle_timeout, v); }},
      {"write-timeout", "timeouts.write", "time to send a response batch (default 30s)",
       [](C& c, const std::string& v) { return apply_duration(c.write_timeout, v); }},
      {"shutdown-timeout", "timeouts.shutdown",
       "drain deadline after SIGTERM/SIGINT (default 30s)",
       [](C& c, const std::string& v) { return apply_duration(c.shutdown_timeout, v); }},
      {"max-body", "limits.max_body", "largest request body, then 413 (default 1MiB)",
       [](C& c, const std::string& v) { return apply_size(c.max_body_bytes, v, 0); }},
      {"max-header-bytes", "limits.max_header_bytes",
       "largest header section, then 431 (default 16KiB)",
       [](C& c, const std::string& v) { return apply_size(c.max_header_bytes, v, 256); }},
      {"max-target-bytes", "limits.max_target_bytes",
       "longest request target, then 414 (default 8KiB)",
       [](C& c, const std::string& v) { return apply_size(c.max_target_bytes, v, 16); }},
      {"max-headers", "limits.max_headers", "most header fields, then 431 (default 100)",
       [](C& c, const std::string& v) { return apply_int(c.max_headers, v, 1, 10'000); }},
      // Endpoints that cannot be turned against the server.
      {"debug-listen", "debug_listen",
       "serve /metrics, /debug/* and / only on this HOST:PORT (e.g. 127.0.0.1:6060); "
       "empty: on the public port",
       [](C& c, const std::string& v) -> std::string {
         if (!v.empty() && v.rfind(':') == std::string::npos) {
           return "invalid address \"" + v + "\" (HOST:PORT)";
         }
         c.debug_listen = v;
         return {};
       }},
      {"max-work-concurrency", "limits.max_work_concurrency",
       "/work requests at once, then 503; 0: the number of Ps (default 0)",
       [](C& c, const std::string& v) {
         return apply_int(c.max_work_concurrency, v, 0, 1'000'000);
       }},
      {"max-blocking-concurrency", "limits.max_blocking_concurrency",
       "/blocking requests at once (each holds an OS thread), then 503 (default 64)",
       [](C& c, const std::string& v) {
         return apply_int(c.max_blocking_concurrency, v, 1, 1'000'000);
       }},
      // Slow and partial bodies (issue 11): a whole-request deadline and a shared body budget.
      {"read-timeout", "timeouts.read",
       "time from a request's first byte until its body is in, then 408 (default 30s)",
       [](C& c, const std::string& v) { return apply_duration(c.read_timeout, v); }},
      {"max-buffered-body", "limits.max_buffered_body",
       "request-body bytes buffered by all connections together, then 503 (default 64MiB; 0: no "
       "limit)",
       [](C& c, const std::string& v) { return apply_size(c.max_buffered_body_bytes, v, 0); }},
  };
}

// A TOML value as the text a flag would carry; nullopt for tables and arrays.
std::optional<std::string> toml_text(const toml::node& n) {
  if (auto s = n.value_exact<std::string>()) return *s;
  if (auto i = n.value_exact<int64_t>()) return std::to_string(*i);
  if (auto b = n.value_exact<bool>()) return *b ? "true" : "false";
  return std::nullopt;
}

std::string load_file(Config& c, const std::string& path, const std::vector<Setting>& all) {
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    std::ostringstream msg;
    msg << "--config " << path << ": " << e.description() << " (line "
        << e.source().begin.line << ")";
    return msg.str();
  }
  std::map<std::string, const Setting*> by_key;
  for (const Setting& s : all) by_key[s.key] = &s;
  std::string error;
  auto visit = [&](const std::string& key, const toml::node& node) {
    if (!error.empty()) return;
    auto it = by_key.find(key);
    if (it == by_key.end()) {
      error = "--config " + path + ": unknown key \"" + key + "\"";
      return;
    }
    std::optional<std::string> text = toml_text(node);
    if (!text) {
      error = "--config " + path + ": " + key + ": expected a string, number or boolean";
      return;
    }
    std::string e = it->second->apply(c, *text);
    if (!e.empty()) error = "--config " + path + ": " + key + ": " + e;
  };
  for (auto&& [k, v] : table) {
    const std::string key(k.str());
    if (const toml::table* section = v.as_table()) {
      for (auto&& [k2, v2] : *section) visit(key + "." + std::string(k2.str()), v2);
    } else {
      visit(key, v);
    }
  }
  return error;
}

}  // namespace

std::optional<std::chrono::nanoseconds> parse_duration(std::string_view text) {
  if (text == "0") return std::chrono::nanoseconds(0);
  if (text.empty()) return std::nullopt;
  long double total = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    std::size_t start = i;
    while (i < text.size() && (std::isdigit(static_cast<unsigned char>(text[i])) || text[i] == '.')) ++i;
    if (i == start) return std::nullopt;
    const std::string number(text.substr(start, i - start));
    if (number.find('.') != number.rfind('.') || number == ".") return std::nullopt;
    const long double value = std::stold(number);
    start = i;
    while (i < text.size() && std::isalpha(static_cast<unsigned char>(text[i]))) ++i;
    const std::string_view unit = text.substr(start, i - start);
    long double scale;
    if (unit == "ns") scale = 1;
    else if (unit == "us" || unit == "µs") scale = 1e3;
    else if (unit == "ms") scale = 1e6;
    else if (unit == "s") scale = 1e9;
    else if (unit == "m") scale = 60e9;
    else if (unit == "h") scale = 3600e9;
    else return std::nullopt;
    total += value * scale;
  }
  if (total > 1e18) return std::nullopt;
  return std::chrono::nanoseconds(static_cast<int64_t>(total));
}

std::optional<uint64_t> parse_size(std::string_view text) {
  std::size_t i = 0;
  uint64_t n = 0;
  while (i < text.size() && text[i] >= '0' && text[i] <= '9') {
    if (n > (uint64_t{1} << 50)) return std::nullopt;
    n = n * 10 + static_cast<uint64_t>(text[i] - '0');
    ++i;
  }
  if (i == 0) return std::nullopt;
  std::string unit(text.substr(i));
  for (char& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  uint64_t scale;
  if (unit.empty() || unit == "b") scale = 1;
  else if (unit == "k" || unit == "kb" || unit == "kib") scale = uint64_t{1} << 10;
  else if (unit == "m" || unit == "mb" || unit == "mib") scale = uint64_t{1} << 20;
  else if (unit == "g" || unit == "gb" || unit == "gib") scale = uint64_t{1} << 30;
  else return std::nullopt;
  return n * scale;
}

LoadResult load(int argc, const char* const* argv) {
  const std::vector<Setting> all = settings();
  CLI::App app{"greenhttp: an HTTP/1.1 server with one green thread per connection", "greenhttp"};
  app.get_formatter()->column_width(28);
  std::string config_path;
  app.add_option("--config", config_path, "TOML file with settings (see config/greenhttp.toml)");
  std::vector<std::string> values(all.size());
  std::vector<CLI::Option*> options(all.size());
  for (std::size_t i = 0; i < all.size(); ++i) {
    options[i] = app.add_option("--" + all[i].flag, values[i], all[i].help);
    if (all[i].is_switch) options[i]->expected(0, 1)->type_name("[true|false]");
  }
  LoadResult result;
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    result.exit_code = 0;
    result.message = app.help();
    return result;
  } catch (const CLI::ParseError& e) {
    result.exit_code = 2;
    result.message = std::string("greenhttp: ") + e.what();
    return result;
  }
  Config c;
  if (!config_path.empty()) {
    std::string e = load_file(c, config_path, all);
    if (!e.empty()) {
      result.exit_code = 2;
      result.message = "greenhttp: " + e;
      return result;
    }
  }
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (options[i]->count() == 0) continue;
    std::string e = all[i].apply(c, values[i]);
    if (!e.empty()) {
      result.exit_code = 2;
      result.message = "greenhttp: --" + all[i].flag + ": " + e;
      return result;
    }
  }
  result.config = std::move(c);
  return result;
}

}  // namespace green::config
