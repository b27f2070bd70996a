// Loading: CLI11 parses the flags into strings (so each value is validated by our own parsers
// and named in the error), toml++ parses the file, and both feed one apply() per setting.
#include "config/config.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstring>
#include <functional>
#include <map>
#include <sstream>
#include <vector>

#include <CLI/CLI.hpp>
#include <toml++/toml.h>

namespace green::config {

namespace {

bool is_log_level(std::string_view s) {
  return s == "trace" || s == "debug" || s == "info" || s == "warn" || s == "error" || s == "off";
}

// One setting: its flag, its TOML key ("section.key"), help, and how to apply a text value.
// Returns an error message (without the name) or empty on success.
struct Setting {
  std::string flag;  // without the leading "--"
  std::string key;   // in the TOML file
  std::string help;
  std::function<std::string(Config&, const std::string&)> apply;
  bool is_switch = false;  // a boolean: the bare flag means true, or it takes true/false
  // Checks the final value against the file system (run once, after the file and the flags
  // are applied, so an override of a bad value in the file is not an error). Empty: no check.
  std::function<std::string(const Config&)> check = nullptr;
};

// A value as an error message shows it: quoted, and cut short, so that the message stays one
// readable line whatever was passed (thousands of digits, say).
std::string quote(const std::string& v) {
  constexpr std::size_t kShown = 40;
  return "\"" + (v.size() <= kShown ? v : v.substr(0, kShown) + "...") + "\"";
}

std::string apply_duration(std::chrono::nanoseconds& out, const std::string& v) {
  std::string why;
  std::optional<std::chrono::nanoseconds> d = parse_duration(v, &why);
  if (!d) return "duration " + quote(v) + " " + why;
  out = *d;
  return {};
}

// The most --max-header-bytes and --max-target-bytes may be. Every active connection's read
// buffer holds a whole head (target + headers), allocated in full, and the parser keeps
// positions in it as 32-bit offsets: 1 MiB each (Go's default MaxHeaderBytes) keeps a busy
// connection's buffer near 2 MiB. More is a mistake, not a need.
constexpr uint64_t kMaxHeadPartBytes = 1 << 20;

std::string apply_size(uint64_t& out, const std::string& v, uint64_t min,
                       uint64_t max = UINT64_MAX) {
  std::string why;
  std::optional<uint64_t> n = parse_size(v, &why);
  if (!n) return "size " + quote(v) + " " + why;
  if (*n < min) return "size " + quote(v) + " is below the minimum " + std::to_string(min);
  if (*n > max) return "size " + quote(v) + " is above the maximum " + std::to_string(max);
  out = *n;
  return {};
}

std::string apply_int(int64_t& out, const std::string& v, int64_t min, int64_t max) {
  if (v.empty()) return "invalid number \"\"";
  // Saturates instead of overflowing: a long run of digits is out of range, not a wrapped
  // value that happens to fit.
  int64_t n = 0;
  for (char c : v) {
    if (c < '0' || c > '9') return "invalid number " + quote(v);
    n = n > (max - (c - '0')) / 10 ? max + 1 : n * 10 + (c - '0');
  }
  if (n < min || n > max) {
    return quote(v) + " is out of range " + std::to_string(min) + ".." + std::to_string(max);
  }
  out = n;
  return {};
}

// A path the server reads at startup: an existing directory (want_directory) or regular file
// that it may read (and, for a directory, enter). Empty: nothing to check.
std::string check_readable(const std::string& path, bool want_directory) {
  if (path.empty()) return {};
  struct stat st {};
  // NOLINTNEXTLINE(concurrency-mt-unsafe): thread-safe in glibc (.clang-tidy)
  if (stat(path.c_str(), &st) != 0) return "\"" + path + "\": " + std::strerror(errno);
  if (want_directory && !S_ISDIR(st.st_mode)) return "\"" + path + "\" is not a directory";
  if (!want_directory && !S_ISREG(st.st_mode)) return "\"" + path + "\" is not a regular file";
  const int mode = want_directory ? R_OK | X_OK : R_OK;
  // NOLINTNEXTLINE(concurrency-mt-unsafe): thread-safe in glibc (.clang-tidy)
  if (access(path.c_str(), mode) != 0) return "\"" + path + "\": " + std::strerror(errno);
  return {};
}

std::string check_directory(const std::string& path) { return check_readable(path, true); }

// A file read at startup (and again on SIGHUP): say now, in one line, when it cannot be.
std::string check_readable_file(const std::string& path) { return check_readable(path, false); }

// The port file is written as PATH.tmp.PID and renamed over PATH (server/main.cpp), so its
// directory must let us create a file: try it now, before anything starts, instead of failing
// once the server is listening.
std::string check_writable_file(const std::string& path) {
  if (path.empty()) return {};
  struct stat st {};
  if (stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return "\"" + path + "\" is a directory";
  }
  const std::string probe = path + ".tmp." + std::to_string(getpid());
  const int fd = open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  // NOLINTNEXTLINE(concurrency-mt-unsafe): thread-safe in glibc (.clang-tidy)
  if (fd < 0) return "cannot write \"" + path + "\": " + std::strerror(errno);
  close(fd);
  unlink(probe.c_str());
  return {};
}

std::string apply_path(std::string& out, const std::string& v) {
  if (v.empty()) return "empty path";
  out = v;
  return {};
}

std::string apply_bool(bool& out, const std::string& v) {
  if (v == "true" || v == "1") {
    out = true;
  } else if (v == "false" || v == "0") {
    out = false;
  } else {
    return "invalid boolean " + quote(v) + " (true or false)";
  }
  return {};
}

std::vector<Setting> settings() {
  using C = Config;
  return {
      {"listen", "listen",
       "HOST:PORT to listen on (default 0.0.0.0:8080); off: HTTPS only (--listen-tls)",
       [](C& c, const std::string& v) -> std::string {
         if (v == "off") {
           c.listen.clear();
           return {};
         }
         if (v.rfind(':') == std::string::npos) {
           return "invalid address " + quote(v) + " (HOST:PORT)";
         }
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
       },
       false, [](const C& c) { return check_directory(c.static_dir); }},
      {"static-prefix", "static.prefix",
       "URL prefix of --static-dir (default /static/); /: a static site on the public port",
       [](C& c, const std::string& v) -> std::string {
         if (v.empty() || v.front() != '/' || v.find_first_of("*?#% \t") != std::string::npos) {
           return "invalid prefix " + quote(v) + " (a path such as /static/ or /)";
         }
         c.static_prefix = v.back() == '/' ? v : v + "/";
         return {};
       }},
      {"static-index", "static.index", "a directory's index file (default index.html; empty: none)",
       [](C& c, const std::string& v) -> std::string {
         if (v.find('/') != std::string::npos || v == "." || v == "..") {
           return "invalid index file name " + quote(v);
         }
         c.static_index = v;
         return {};
       }},
      {"static-autoindex", "static.autoindex",
       "list a directory without an index file (nginx's autoindex; bare flag: true)",
       [](C& c, const std::string& v) {
         return apply_bool(c.static_autoindex, v.empty() ? "true" : v);
       },
       true},
      {"static-gzip", "static.gzip",
       "serve FILE.gz for FILE to clients that accept gzip (default true)",
       [](C& c, const std::string& v) { return apply_bool(c.static_gzip, v.empty() ? "true" : v); },
       true},
      {"static-symlinks", "static.symlinks",
       "inside: follow symlinks that stay under --static-dir (default); never: refuse all",
       [](C& c, const std::string& v) -> std::string {
         if (v != "inside" && v != "never")
           return "invalid symlink policy " + quote(v) + " (inside or never)";
         c.static_symlinks = v;
         return {};
       }},
      {"static-cache-control", "static.cache_control",
       "Cache-Control by path: 'PATTERN=VALUE;...', PATTERN *.EXT, /DIR/ or *",
       [](C& c, const std::string& v) -> std::string {
         c.static_cache_control = v;
         return {};
       }},
      {"static-cache-entries", "static.cache_entries",
       "open-file cache: descriptors kept open (default 1000; 0: none)",
       [](C& c, const std::string& v) {
         return apply_int(c.static_cache_entries, v, 0, 1'000'000);
       }},
      {"static-cache-valid", "static.cache_valid",
       "open-file cache: recheck a path after this long (default 10s)",
       [](C& c, const std::string& v) { return apply_duration(c.static_cache_valid, v); }},
      {"static-mime-types", "static.mime_types",
       "MIME types file (default /etc/mime.types when present)",
       [](C& c, const std::string& v) {
         c.static_mime_types = v;  // empty: the default
         return std::string();
       },
       false, [](const C& c) { return check_readable_file(c.static_mime_types); }},
      {"http2", "http2.enabled",
       "HTTP/2: ALPN h2 on --listen-tls, and h2c when --h2c (default true; false: none)",
       [](C& c, const std::string& v) { return apply_bool(c.http2, v.empty() ? "true" : v); },
       true},
      {"h2c", "http2.h2c",
       "cleartext HTTP/2 on --listen: prior knowledge and Upgrade: h2c (default true)",
       [](C& c, const std::string& v) { return apply_bool(c.h2c, v.empty() ? "true" : v); }, true},
      {"http2-max-concurrent-streams", "http2.max_concurrent_streams",
       "HTTP/2 streams (and running handlers) per connection (default 100)",
       [](C& c, const std::string& v) {
         return apply_int(c.http2_max_concurrent_streams, v, 1, 10'000);
       }},
      {"http2-stream-window", "http2.stream_window",
       "HTTP/2 request body bytes a stream may send ahead of its handler (default 256KiB)",
       [](C& c, const std::string& v) {
         return apply_size(c.http2_stream_window, v, 1024, (1ULL << 31) - 1);
       }},
      {"http2-header-table-size", "http2.header_table_size",
       "HTTP/2 HPACK dynamic table size (default 4096)",
       [](C& c, const std::string& v) {
         return apply_size(c.http2_header_table_size, v, 0, 1 << 20);
       }},
      {"http2-reset-rate", "http2.reset_rate",
       "client stream resets per second (burst twice that) before GOAWAY (default 100; 0: no "
       "limit)",
       [](C& c, const std::string& v) { return apply_int(c.http2_reset_rate, v, 0, 1'000'000); }},
      {"http2-control-rate", "http2.control_rate",
       "HTTP/2 SETTINGS, PING, PRIORITY and empty DATA frames per second (burst twice that) "
       "before GOAWAY (default 100; 0: no limit)",
       [](C& c, const std::string& v) { return apply_int(c.http2_control_rate, v, 0, 1'000'000); }},
      {"access-log", "access_log", "access log: PATH, stdout or off (default stdout)",
       [](C& c, const std::string& v) -> std::string {
         if (v.empty()) return "empty access log target (PATH, stdout or off)";
         c.access_log = v;
         return {};
       }},
      {"log-level", "log_level", "trace, debug, info, warn, error or off (default info)",
       [](C& c, const std::string& v) -> std::string {
         if (!is_log_level(v)) return "invalid log level " + quote(v);
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
       },
       false, [](const C& c) { return check_writable_file(c.port_file); }},
      {"read-header-timeout", "timeouts.read_header",
       "time to receive a request's headers, then 408 (default 10s)",
       [](C& c, const std::string& v) { return apply_duration(c.read_header_timeout, v); }},
      {"idle-timeout", "timeouts.idle", "keep-alive wait for the next request (default 60s)",
       [](C& c, const std::string& v) { return apply_duration(c.idle_timeout, v); }},
      {"write-timeout", "timeouts.write", "time to send a response batch (default 30s)",
       [](C& c, const std::string& v) { return apply_duration(c.write_timeout, v); }},
      {"shutdown-timeout", "timeouts.shutdown", "drain deadline after SIGTERM/SIGINT (default 30s)",
       [](C& c, const std::string& v) { return apply_duration(c.shutdown_timeout, v); }},
      {"max-body", "limits.max_body", "largest request body, then 413 (default 1MiB)",
       [](C& c, const std::string& v) { return apply_size(c.max_body_bytes, v, 0); }},
      {"max-header-bytes", "limits.max_header_bytes",
       "largest header section, then 431 (default 16KiB, at most 1MiB)",
       [](C& c, const std::string& v) {
         return apply_size(c.max_header_bytes, v, 256, kMaxHeadPartBytes);
       }},
      {"max-target-bytes", "limits.max_target_bytes",
       "longest request target, then 414 (default 8KiB, at most 1MiB)",
       [](C& c, const std::string& v) {
         return apply_size(c.max_target_bytes, v, 16, kMaxHeadPartBytes);
       }},
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
      // Per-request context (issue 12).
      {"handler-timeout", "timeouts.handler",
       "a handler's deadline (its request context's): 503 if nothing was sent yet (default 0: "
       "none)",
       [](C& c, const std::string& v) { return apply_duration(c.handler_timeout, v); }},
      // HTTPS (issue 15).
      {"listen-tls", "tls.listen", "HOST:PORT for HTTPS (needs --tls-cert, --tls-key); empty: none",
       [](C& c, const std::string& v) -> std::string {
         if (!v.empty() && v.rfind(':') == std::string::npos) {
           return "invalid address " + quote(v) + " (HOST:PORT)";
         }
         c.listen_tls = v;
         return {};
       }},
      {"tls-cert", "tls.cert", "PEM file: the certificate, then its chain",
       [](C& c, const std::string& v) { return apply_path(c.tls_cert, v); }, false,
       [](const C& c) { return check_readable_file(c.tls_cert); }},
      {"tls-key", "tls.key", "PEM file: the certificate's private key",
       [](C& c, const std::string& v) { return apply_path(c.tls_key, v); }, false,
       [](const C& c) { return check_readable_file(c.tls_key); }},
      {"tls-min-version", "tls.min_version",
       "oldest TLS version accepted: 1.2 or 1.3 (default 1.2)",
       [](C& c, const std::string& v) -> std::string {
         if (v != "1.2" && v != "1.3") return "invalid TLS version " + quote(v) + " (1.2 or 1.3)";
         c.tls_min_version = v;
         return {};
       }},
      {"tls-handshake-timeout", "tls.handshake_timeout",
       "time from accept to the end of the TLS handshake (default 10s)",
       [](C& c, const std::string& v) -> std::string {
         std::string e = apply_duration(c.tls_handshake_timeout, v);
         if (e.empty() && c.tls_handshake_timeout.count() == 0) return "must not be 0";
         return e;
       }},
      {"tls-ciphers", "tls.ciphers",
       "TLS 1.2 cipher list (OpenSSL syntax; empty: OpenSSL's default)",
       [](C& c, const std::string& v) {
         c.tls_ciphers = v;
         return std::string();
       }},
      {"tls-ciphersuites", "tls.ciphersuites",
       "TLS 1.3 cipher suites (OpenSSL syntax; empty: OpenSSL's default)",
       [](C& c, const std::string& v) {
         c.tls_ciphersuites = v;
         return std::string();
       }},
      {"tls-session-tickets", "tls.session_tickets",
       "resumption by session tickets, under rotating keys (default true)",
       [](C& c, const std::string& v) {
         return apply_bool(c.tls_session_tickets, v.empty() ? "true" : v);
       },
       true},
      {"tls-session-cache", "tls.session_cache",
       "TLS 1.2 sessions cached for resumption by session id (default 20480; 0: none)",
       [](C& c, const std::string& v) { return apply_int(c.tls_session_cache, v, 0, 10'000'000); }},
      {"tls-ticket-key-rotation", "tls.ticket_key_rotation",
       "how often a new session-ticket key is made; 7 are kept (default 24h)",
       [](C& c, const std::string& v) -> std::string {
         std::string e = apply_duration(c.tls_ticket_key_rotation, v);
         if (e.empty() && c.tls_ticket_key_rotation < std::chrono::seconds(1)) {
           return "must be at least 1s";
         }
         return e;
       }},
      {"tls-max-handshakes", "tls.max_handshakes",
       "TLS handshakes computing at once; more wait their turn (default 0: no cap)",
       [](C& c, const std::string& v) { return apply_int(c.tls_max_handshakes, v, 0, 1'000'000); }},
      {"tls-port-file", "tls.port_file", "write the bound HTTPS port to this file once listening",
       [](C& c, const std::string& v) {
         c.tls_port_file = v;
         return std::string();
       },
       false, [](const C& c) { return check_writable_file(c.tls_port_file); }},
  };
}

// A TOML value as the text a flag would carry; nullopt for tables and arrays.
std::optional<std::string> toml_text(const toml::node& n) {
  if (auto s = n.value_exact<std::string>()) return *s;
  if (auto i = n.value_exact<int64_t>()) return std::to_string(*i);
  if (auto b = n.value_exact<bool>()) return *b ? "true" : "false";
  return std::nullopt;
}

// The file must be a readable regular file: toml++ reads a directory or /dev/zero as an empty
// document, and a FIFO would block the start.
std::string check_config_file(const std::string& path) {
  struct stat st {};
  // NOLINTNEXTLINE(concurrency-mt-unsafe): thread-safe in glibc (.clang-tidy)
  if (stat(path.c_str(), &st) != 0) return std::strerror(errno);
  if (!S_ISREG(st.st_mode)) return "not a regular file";
  const int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  // NOLINTNEXTLINE(concurrency-mt-unsafe): thread-safe in glibc (.clang-tidy)
  if (fd < 0) return std::strerror(errno);
  close(fd);
  return {};
}

// Applies the file's settings; records in origin[i] where setting i came from.
std::string load_file(Config& c, const std::string& path, const std::vector<Setting>& all,
                      std::vector<std::string>& origin) {
  if (std::string e = check_config_file(path); !e.empty()) return "--config " + path + ": " + e;
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& e) {
    std::ostringstream msg;
    msg << "--config " << path << ": " << e.description() << " (line " << e.source().begin.line
        << ")";
    return msg.str();
  }
  std::map<std::string, std::size_t> by_key;
  for (std::size_t i = 0; i < all.size(); ++i) by_key[all[i].key] = i;
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
    origin[it->second] = "--config " + path + ": " + key;
    std::string e = all[it->second].apply(c, *text);
    if (!e.empty()) error = origin[it->second] + ": " + e;
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

namespace {
bool is_digit(char c) { return c >= '0' && c <= '9'; }
void set_why(std::string* why, const char* text) {
  if (why != nullptr) *why = text;
}
}  // namespace

std::optional<std::chrono::nanoseconds> parse_duration(std::string_view text, std::string* why) {
  set_why(why, "is invalid (use e.g. 500ms, 2s, 1m30s, or 0 for none)");
  if (text == "0") return std::chrono::nanoseconds(0);
  if (text.empty()) return std::nullopt;
  // Exact integer arithmetic, as Go's time.ParseDuration: no floating-point rounding, and no
  // overflow whatever the number of digits. Past 18 decimals a fraction's digits can no longer
  // change the result (a unit is at most 3.6e12 ns) and are only checked for being non-zero.
  constexpr unsigned __int128 kMax = kMaxDuration.count();
  unsigned __int128 total = 0;
  bool any_nonzero_digit = false;
  std::size_t i = 0;
  while (i < text.size()) {
    unsigned __int128 whole = 0;
    uint64_t fraction = 0, scale = 1;
    const std::size_t start = i;
    for (; i < text.size() && is_digit(text[i]); ++i) {
      const int d = text[i] - '0';
      any_nonzero_digit |= d != 0;
      whole = whole > kMax ? whole : whole * 10 + static_cast<unsigned>(d);  // saturates
    }
    bool digits = i > start;
    if (i < text.size() && text[i] == '.') {
      ++i;
      for (; i < text.size() && is_digit(text[i]); ++i, digits = true) {
        const int d = text[i] - '0';
        any_nonzero_digit |= d != 0;
        if (scale < 1'000'000'000'000'000'000ULL) {
          fraction = fraction * 10 + static_cast<uint64_t>(d);
          scale *= 10;
        }
      }
    }
    if (!digits) return std::nullopt;
    const std::size_t unit_start = i;
    // Letters, and the UTF-8 bytes of "µ".
    while (i < text.size() &&
           (std::isalpha(static_cast<unsigned char>(text[i])) || (text[i] & 0x80) != 0)) {
      ++i;
    }
    const std::string_view unit = text.substr(unit_start, i - unit_start);
    uint64_t ns;
    if (unit == "ns") ns = 1;
    else if (unit == "us" || unit == "µs" || unit == "μs") ns = 1'000;
    else if (unit == "ms") ns = 1'000'000;
    else if (unit == "s") ns = 1'000'000'000;
    else if (unit == "m") ns = 60'000'000'000;
    else if (unit == "h") ns = 3'600'000'000'000;
    else return std::nullopt;
    if (whole > kMax) {
      set_why(why, "is too large (the most is 277777h)");
      return std::nullopt;
    }
    total += whole * ns + static_cast<unsigned __int128>(fraction) * ns / scale;
    if (total > kMax) {
      set_why(why, "is too large (the most is 277777h)");
      return std::nullopt;
    }
  }
  if (total == 0 && any_nonzero_digit) {
    // "0.1ns" is not "off": a timeout that silently disappears is worse than an error.
    set_why(why, "rounds to zero (the resolution is 1ns; 0 turns it off)");
    return std::nullopt;
  }
  return std::chrono::nanoseconds(static_cast<int64_t>(total));
}

std::optional<uint64_t> parse_size(std::string_view text, std::string* why) {
  set_why(why, "is invalid (use e.g. 1048576, 64KiB, 1MiB)");
  std::size_t i = 0;
  uint64_t n = 0;
  bool too_large;
  for (; i < text.size() && is_digit(text[i]); ++i) {
    // Saturates: n stays below 2^54, so no run of digits can wrap it around.
    if (n <= kMaxSize) n = n * 10 + static_cast<uint64_t>(text[i] - '0');
  }
  too_large = n > kMaxSize;
  if (i == 0) return std::nullopt;
  std::string unit(text.substr(i));
  for (char& c : unit) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  uint64_t scale;
  if (unit.empty() || unit == "b") scale = 1;
  else if (unit == "k" || unit == "kb" || unit == "kib") scale = uint64_t{1} << 10;
  else if (unit == "m" || unit == "mb" || unit == "mib") scale = uint64_t{1} << 20;
  else if (unit == "g" || unit == "gb" || unit == "gib") scale = uint64_t{1} << 30;
  else return std::nullopt;
  if (too_large || n > kMaxSize / scale) {
    // 17179869184g used to wrap around to 0.
    set_why(why, "is too large (the most is 1048576GiB)");
    return std::nullopt;
  }
  return n * scale;
}

// After the flags in --help: what each signal does (server/main.cpp handles them).
constexpr const char* kSignalsHelp =
    "Signals:\n"
    "  SIGTERM, SIGINT  graceful shutdown: /readyz turns 503, the listener closes, requests\n"
    "                   that have arrived are answered with Connection: close, idle\n"
    "                   connections close; after --shutdown-timeout the rest are cut off\n"
    "  SIGHUP, SIGUSR1  reopen the --access-log file (after logrotate renamed it); SIGHUP\n"
    "                   also reloads --tls-cert and --tls-key for new connections (a pair\n"
    "                   that does not load is reported and the old one kept)\n"
    "  SIGUSR2          ignored\n"
    "  SIGQUIT          dump every green thread's stack to stderr, and keep running";

LoadResult load(int argc, const char* const* argv) {
  const std::vector<Setting> all = settings();
  CLI::App app{"greenhttp: an HTTP/1.1 server with one green thread per connection", "greenhttp"};
  app.get_formatter()->column_width(28);
  app.footer(kSignalsHelp);
  // A repeated flag takes its last value, as with Go's flag package, instead of CLI11's error.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  std::string config_path;
  app.add_option("--config", config_path, "TOML file with settings (see config/greenhttp.toml)");
  std::vector<std::string> values(all.size());
  std::vector<CLI::Option*> options(all.size());
  for (std::size_t i = 0; i < all.size(); ++i) {
    options[i] = app.add_option("--" + all[i].flag, values[i], all[i].help);
    if (all[i].is_switch) options[i]->expected(0, 1)->type_name("[true|false]");
  }
  LoadResult result;
  auto fail = [&result](const std::string& message) {
    result.exit_code = 2;
    result.message = "greenhttp: " + message;
    return result;
  };
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    result.exit_code = 0;
    result.message = app.help();
    return result;
  } catch (const CLI::ParseError& e) {
    return fail(e.what());
  }
  Config c;
  std::vector<std::string> origin(all.size());  // who set each setting, for error messages
  if (!config_path.empty()) {
    std::string e = load_file(c, config_path, all, origin);
    if (!e.empty()) return fail(e);
  }
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (options[i]->count() == 0) continue;
    origin[i] = "--" + all[i].flag;
    std::string e = all[i].apply(c, values[i]);
    if (!e.empty()) return fail(origin[i] + ": " + e);
  }
  for (std::size_t i = 0; i < all.size(); ++i) {
    if (origin[i].empty() || !all[i].check) continue;  // defaults need no check
    std::string e = all[i].check(c);
    if (!e.empty()) return fail(origin[i] + ": " + e);
  }
  // Settings that only make sense together.
  if (c.listen.empty() && c.listen_tls.empty()) {
    return fail("--listen: off needs --listen-tls (nothing to listen on)");
  }
  if (!c.listen_tls.empty() && (c.tls_cert.empty() || c.tls_key.empty())) {
    return fail(std::string("--listen-tls: needs ") +
                (c.tls_cert.empty() ? "--tls-cert" : "--tls-key"));
  }
  result.config = std::move(c);
  return result;
}

}  // namespace green::config
