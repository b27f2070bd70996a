// The built-in middleware except gzip (server/gzip.cpp): recover, request id, access log.
// Contracts in green/http/middleware.h.
//
// Request ids: 16 hex digits of a random prefix drawn once per process, then 16 of a counter.
// The counter is handed out in blocks of kIdBlock per OS thread, so producing an id touches no
// shared cache line (one atomic add per 4096 ids); an id is made without parking, so the
// thread_local block cannot change threads under it.
#include "green/http/middleware.h"

#include <cxxabi.h>
#include <sys/random.h>

#include <array>
#include <atomic>
#include <cstring>
#include <exception>
#include <random>
#include <typeinfo>

#include <spdlog/spdlog.h>

#include "green/http/access_log.h"
#include "server/handler_exception.h"

namespace green::http {

void log_handler_exception(const Request& r) {
  std::string what;
  try {
    throw;
  } catch (const std::exception& e) {
    what = e.what();
  } catch (...) {
    const std::type_info* t = abi::__cxa_current_exception_type();
    what = t != nullptr ? std::string("exception of type ") + t->name() : "unknown exception";
  }
  const std::string_view id = r.request_id();
  spdlog::error("handler exception serving {} {}{}{}: {}", r.method_name(), r.path(),
                id.empty() ? "" : " request id ", id, what);
}

namespace middleware {

namespace {

constexpr uint64_t kIdBlock = 4096;

constexpr char kHexDigits[] = "0123456789abcdef";

void put_hex(uint64_t v, char* out) {
  for (int i = 15; i >= 0; --i, v >>= 4) out[i] = kHexDigits[v & 15];
}

// The random prefix, drawn and written out in hex once per process.
const char* process_id_prefix() {
  static const auto prefix = [] {
    uint64_t v = 0;
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) != static_cast<ssize_t>(sizeof v)) {
      v = (static_cast<uint64_t>(std::random_device{}()) << 32) ^ std::random_device{}();
    }
    std::array<char, 16> hex;
    put_hex(v, hex.data());
    return hex;
  }();
  return prefix.data();
}

std::atomic<uint64_t> next_id_block{0};

// 32 hex digits into out.
void new_request_id(char* out) {
  thread_local uint64_t next = 0;
  thread_local uint64_t end = 0;
  if (next == end) {
    next = next_id_block.fetch_add(kIdBlock, std::memory_order_relaxed);
    end = next + kIdBlock;
  }
  std::memcpy(out, process_id_prefix(), 16);
  put_hex(next++, out + 16);
}

// A client's id is kept only when it cannot hurt whoever reads it later: bounded (log fields,
// headers) and visible ASCII (no CR/LF to split our response, no spaces or control bytes to
// confuse a log parser).
bool sane_request_id(std::string_view id) {
  if (id.empty() || id.size() > Request::kMaxRequestIdLength) return false;
  for (char c : id) {
    if (c < 0x21 || c > 0x7e) return false;  // char is signed: bytes >= 0x80 are < 0x21 too
  }
  return true;
}

void record(AccessLog& log, const Request& r, int status, uint64_t bytes) {
  if (!log.enabled()) return;
  AccessRecord rec;
  fill_access_record(rec, &r, r.remote_addr(), status, bytes);
  log.submit(rec);
}

}  // namespace

Middleware recover() {
  return [](Handler next) -> Handler {
    return [next = std::move(next)](Request& r, ResponseWriter& w) {
      try {
        next(r, w);
      } catch (...) {
        log_handler_exception(r);
        if (w.reset()) {
          // The handler's state, and with it the connection's, is unknown: close after the
          // 500, as Go's net/http closes the connection of a handler that panicked.
          w.close_connection();
          if (!r.request_id().empty()) w.set_header("X-Request-Id", r.request_id());
          w.send_status(500);
        } else {
          w.abort();  // mid-stream: the client must see a truncated response
        }
      }
    };
  };
}

Middleware request_id() {
  return [](Handler next) -> Handler {
    return [next = std::move(next)](Request& r, ResponseWriter& w) {
      const std::string_view sent = r.header("X-Request-Id");
      if (sane_request_id(sent)) {
        r.set_request_id(sent);
      } else {
        char fresh[32];
        new_request_id(fresh);
        r.set_request_id({fresh, sizeof fresh});
      }
      w.set_header("X-Request-Id", r.request_id());
      next(r, w);
    };
  };
}

Middleware access_log(AccessLog& log) {
  return [&log](Handler next) -> Handler {
    return [&log, next = std::move(next)](Request& r, ResponseWriter& w) {
      try {
        next(r, w);
      } catch (...) {
        record(log, r, 500, w.body_bytes());
        throw;
      }
      record(log, r, w.status(), w.body_bytes());
    };
  };
}

}  // namespace middleware
}  // namespace green::http
