// greenhttp's settings: defaults, then a TOML file (--config FILE), then command-line flags,
// each overriding the one before. config/greenhttp.toml documents every setting.
//
// Any bad input (an unknown flag or key, a value of the wrong type, an unparseable duration or
// size, one that overflows or rounds to nothing, a --config that is not a readable regular
// file, a --static-dir that is not a directory, a --port-file that cannot be written) is
// refused with one line naming the flag or key, and exit code 2, before anything starts.
// A flag given twice takes its last value (Go's flag package does the same), so a script can
// append overrides.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace green::config {

struct Config {
  std::string listen = "0.0.0.0:8080";
  int threads = 0;         // Ps; 0: $GREEN_MAXPROCS, else the CPU count
  std::string static_dir;  // empty: /static/* answers 404
  // The file server (issue 16; [static] in the TOML file): http::FileServerOptions.
  std::string static_prefix = "/static/";  // "/": every path of the public port is a file
  std::string static_index = "index.html";
  bool static_autoindex = false;
  bool static_gzip = true;
  std::string static_symlinks = "inside";  // inside or never
  std::string static_cache_control;        // "PATTERN=VALUE;..." (validated by FileServer)
  int64_t static_cache_entries = 1000;
  std::chrono::nanoseconds static_cache_valid = std::chrono::seconds(10);
  std::string static_mime_types;      // empty: /etc/mime.types when present
  std::string access_log = "stdout";  // PATH, "stdout" or "off"
  std::string log_level = "info";     // trace, debug, info, warn, error, off
  bool reuse_port = false;
  int64_t max_connections = 0;  // 0: the open-files limit minus a reserve
  std::string port_file;        // written with the bound port once listening (for tests)

  std::chrono::nanoseconds read_header_timeout = std::chrono::seconds(10);
  std::chrono::nanoseconds idle_timeout = std::chrono::seconds(60);
  std::chrono::nanoseconds write_timeout = std::chrono::seconds(30);
  std::chrono::nanoseconds shutdown_timeout = std::chrono::seconds(30);
  // Per-request context (issue 12): a handler's deadline, then 503; 0: none (Go's default).
  std::chrono::nanoseconds handler_timeout{0};

  uint64_t max_body_bytes = 1024 * 1024;
  uint64_t max_header_bytes = 16 * 1024;
  uint64_t max_target_bytes = 8 * 1024;
  int64_t max_headers = 100;

  // Endpoints that cannot be turned against the server (issue 11, section 4).
  std::string debug_listen;          // HOST:PORT for /metrics, /debug/*, /; empty: the public port
  int64_t max_work_concurrency = 0;  // /work at once; 0: the number of Ps
  int64_t max_blocking_concurrency = 64;  // /blocking at once
  std::chrono::nanoseconds read_timeout = std::chrono::seconds(30);
  uint64_t max_buffered_body_bytes = 64 << 20;

  // HTTP/2 (issue 17; the [http2] table in the TOML file, `enabled` and `h2c` among its keys):
  // http::Http2Options.
  bool http2 = true;  // ALPN h2 on --listen-tls
  bool h2c = true;    // cleartext HTTP/2 on --listen: prior knowledge and Upgrade: h2c
  int64_t http2_max_concurrent_streams = 100;
  uint64_t http2_stream_window = 256 * 1024;
  uint64_t http2_header_table_size = 4096;
  int64_t http2_reset_rate = 100;
  int64_t http2_control_rate = 100;

  // HTTPS (issue 15); with listen_tls set, listen may be empty ("--listen off").
  std::string listen_tls;  // HOST:PORT; empty: no HTTPS listener
  std::string tls_cert;    // PEM chain
  std::string tls_key;     // PEM private key
  std::string tls_min_version = "1.2";
  std::chrono::nanoseconds tls_handshake_timeout = std::chrono::seconds(10);
  std::string tls_ciphers;       // TLS 1.2; empty: OpenSSL's default
  std::string tls_ciphersuites;  // TLS 1.3; empty: OpenSSL's default
  bool tls_session_tickets = true;
  int64_t tls_session_cache = 20480;
  std::chrono::nanoseconds tls_ticket_key_rotation = std::chrono::hours(24);
  int64_t tls_max_handshakes = 0;  // 0: twice the Ps
  std::string tls_port_file;
};

// What load() decided: run with `config`, or print `message` and exit with `exit_code`
// (0 after --help, 2 after bad input).
struct LoadResult {
  std::optional<Config> config;
  int exit_code = 0;
  std::string message;  // for stdout when exit_code is 0, stderr otherwise
};

LoadResult load(int argc, const char* const* argv);

// The largest duration and size accepted: far beyond any sensible setting, and small enough
// that a deadline (now + duration) or a sum of sizes cannot overflow.
inline constexpr std::chrono::nanoseconds kMaxDuration{1'000'000'000'000'000'000};  // ~31 years
inline constexpr uint64_t kMaxSize = uint64_t{1} << 50;                             // 1 PiB

// "1m30s", "500ms", "2s", "0" (Go's time.ParseDuration units: ns, us, ms, s, m, h). Only a
// literal zero ("0", "0s", "0.0ms") is zero: a non-zero value that rounds to nothing
// ("0.1ns") is an error, as is one over kMaxDuration. On nullopt, *why (when given) says why,
// as a phrase: "is too large (...)".
std::optional<std::chrono::nanoseconds> parse_duration(std::string_view text,
                                                       std::string* why = nullptr);
// "1048576", "64KiB", "1MiB", "1M", "16k" (binary multiples), at most kMaxSize; *why as above.
std::optional<uint64_t> parse_size(std::string_view text, std::string* why = nullptr);

}  // namespace green::config
