#include "green/http/access_log.h"

#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "green/channel.h"
#include "green/green.h"
#include "green/http/request.h"
#include "green/sync.h"
#include "server/byte_buffer.h"

namespace green::http {

namespace {
void append_escaped(ByteBuffer& out, std::string_view s) {
  if (s.empty()) {
    out.push_back('-');
    return;
  }
  static constexpr char kHex[] = "0123456789ABCDEF";
  for (char ch : s) {
    const auto c = static_cast<unsigned char>(ch);
    if (c < 0x20 || c == '"' || c == '\\' || c >= 0x7f) {
      out.append("\\x");
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    } else {
      out.push_back(ch);
    }
  }
}
}  // namespace

void format_combined(const AccessRecord& r, ByteBuffer& out) {
  out.append(r.remote.length != 0 ? r.remote.view() : std::string_view("-"));
  out.append(" - - [");
  std::tm tm{};
  gmtime_r(&r.time, &tm);
  char when[40];
  const std::size_t n = std::strftime(when, sizeof when, "%d/%b/%Y:%H:%M:%S +0000", &tm);
  out.append({when, n});
  out.append("] \"");
  append_escaped(out, r.request.view());
  out.append("\" ");
  out.append_decimal(static_cast<uint64_t>(r.status));
  out.push_back(' ');
  out.append_decimal(r.bytes);
  out.append(" \"");
  append_escaped(out, r.referer.view());
  out.append("\" \"");
  append_escaped(out, r.user_agent.view());
  if (r.request_id.length != 0) {
    out.append("\" \"");
    append_escaped(out, r.request_id.view());
  }
  out.append("\"\n");
}

void fill_access_record(AccessRecord& rec, const Request* r, std::string_view remote, int status,
                        uint64_t bytes) {
  rec.time = std::time(nullptr);
  rec.status = status;
  rec.bytes = bytes;
  rec.remote.set(remote);
  if (r == nullptr) return;
  char line[sizeof rec.request.text];
  std::size_t n = 0;
  auto put = [&](std::string_view s) {
    const std::size_t k = std::min(s.size(), sizeof line - n);
    // An empty view may have no data (an HTTP/2 request refused before its :method or :path
    // was read): memcpy's pointers must not be null even for 0 bytes.
    if (k != 0) std::memcpy(line + n, s.data(), k);
    n += k;
  };
  put(r->method_name());
  put(" ");
  put(r->target());
  put(r->version_major() == 2 ? " HTTP/2.0" : r->version_minor() == 0 ? " HTTP/1.0" : " HTTP/1.1");
  rec.request.set({line, n});
  rec.referer.set(r->header("Referer"));
  rec.user_agent.set(r->header("User-Agent"));
  rec.request_id.set(r->request_id());
}

namespace {
// O_NONBLOCK for the open only: a FIFO nobody reads would otherwise block the open for good
// (at start-up, or in the signal thread on SIGHUP); now it fails at once with ENXIO. A FIFO or
// pipe with a reader (/dev/stdout under a supervisor) is still a valid target, and its writes
// block as a file's do, hence the flag is cleared again.
int open_log_file(const std::string& path, std::string* error) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NONBLOCK, 0644);
  if (fd < 0) {
    *error = "cannot open \"" + path + "\": " +
             // NOLINTNEXTLINE(concurrency-mt-unsafe): thread-safe in glibc (.clang-tidy)
             (errno == ENXIO ? std::string("a FIFO with no reader") : std::strerror(errno));
    return -1;
  }
  const int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0) {
    // NOLINTNEXTLINE(concurrency-mt-unsafe): thread-safe in glibc (.clang-tidy)
    *error = "cannot set up \"" + path + "\": " + std::strerror(errno);
    ::close(fd);
    return -1;
  }
  return fd;
}
}  // namespace

std::unique_ptr<AccessLog> AccessLog::open(std::string_view target, std::string* error,
                                           std::size_t capacity) {
  if (target == "off") return std::unique_ptr<AccessLog>(new AccessLog(-1, false, {}, 1));
  if (target == "stdout") {
    return std::unique_ptr<AccessLog>(new AccessLog(STDOUT_FILENO, false, {}, capacity));
  }
  std::string path(target);
  const int fd = open_log_file(path, error);
  if (fd < 0) return nullptr;
  return std::unique_ptr<AccessLog>(new AccessLog(fd, true, std::move(path), capacity));
}

struct AccessLog::Queue {
  explicit Queue(std::size_t capacity) : queue(capacity) {}
  Channel<AccessRecord> queue;
  WaitGroup writer_done;
};

AccessLog::AccessLog(int fd, bool owns_fd, std::string path, std::size_t capacity)
    : fd_(fd), owns_fd_(owns_fd), path_(std::move(path)), q_(std::make_unique<Queue>(capacity)) {}

AccessLog::~AccessLog() {
  if (owns_fd_) ::close(fd_);
}

bool AccessLog::reopen(std::string* error) {
  if (path_.empty()) return true;
  const int fd = open_log_file(path_, error);
  if (fd < 0) return false;
  // Atomic: a batch being written goes whole to the old file or whole to the new.
  const int rc = ::dup2(fd, fd_);
  // NOLINTNEXTLINE(concurrency-mt-unsafe): thread-safe in glibc (.clang-tidy)
  if (rc < 0) *error = std::string("dup2: ") + std::strerror(errno);
  ::close(fd);
  if (rc >= 0) reopens_.fetch_add(1, std::memory_order_relaxed);
  return rc >= 0;
}

void AccessLog::start() {
  // acq_rel: start() and stop() come from the owner; the flag only makes start() idempotent.
  if (!enabled() || started_.exchange(true, std::memory_order_acq_rel)) return;
  q_->writer_done.add(1);
  green::go([this] {
    write_loop();
    q_->writer_done.done();
  });
}

void AccessLog::stop() {
  if (!started_.load(std::memory_order_acquire)) return;
  q_->queue.close();
  q_->writer_done.wait();
}

void AccessLog::submit(const AccessRecord& r) {
  if (!enabled()) return;
  if (q_->queue.try_send(r) != ChanStatus::kOk) dropped_.fetch_add(1, std::memory_order_relaxed);
}

void AccessLog::write_loop() {
  ByteBuffer batch;
  AccessRecord next;
  for (;;) {
    std::optional<AccessRecord> first = q_->queue.recv();
    if (!first) break;  // closed and drained
    batch.clear();
    format_combined(*first, batch);
    uint64_t count = 1;
    // Take whatever else is queued (bounded, so a flood cannot starve the write).
    while (count < 1024 && q_->queue.try_recv(next) == ChanStatus::kOk) {
      format_combined(next, batch);
      ++count;
    }
    const bool ok = green::may_block([&] { return write_batch(batch.view()); });
    (ok ? written_ : dropped_).fetch_add(count, std::memory_order_relaxed);
  }
}

bool AccessLog::write_batch(std::string_view text) {
  while (!text.empty()) {
    const ssize_t n = ::write(fd_, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    // A full disk, a closed stdout: the log cannot do better than count the loss and move on.
    if (n <= 0) return false;
    text.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

}  // namespace green::http
