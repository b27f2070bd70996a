#include "server/access_log.h"

#include <spdlog/logger.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <time.h>

#include "runtime/green.h"

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
  out.append("\"\n");
}

std::unique_ptr<AccessLog> AccessLog::open(std::string_view target, std::string* error,
                                           std::size_t capacity) {
  std::shared_ptr<spdlog::logger> logger;
  try {
    if (target == "off") {
      // disabled: no logger, no writer
    } else if (target == "stdout") {
      logger = std::make_shared<spdlog::logger>(
          "access", std::make_shared<spdlog::sinks::stdout_sink_st>());
    } else {
      logger = std::make_shared<spdlog::logger>(
          "access", std::make_shared<spdlog::sinks::basic_file_sink_st>(std::string(target)));
    }
  } catch (const spdlog::spdlog_ex& e) {
    *error = e.what();
    return nullptr;
  }
  if (logger) {
    // The batch carries its own line ends: "%v" without spdlog's.
    logger->set_pattern("%v", spdlog::pattern_time_type::utc);
    logger->set_level(spdlog::level::info);
  }
  return std::unique_ptr<AccessLog>(new AccessLog(std::move(logger), logger ? capacity : 1));
}

AccessLog::AccessLog(std::shared_ptr<spdlog::logger> logger, std::size_t capacity)
    : logger_(std::move(logger)), queue_(capacity) {}

AccessLog::~AccessLog() = default;

void AccessLog::start() {
  if (!enabled() || started_.exchange(true)) return;
  writer_done_.add(1);
  green::go([this] {
    write_loop();
    writer_done_.done();
  });
}

void AccessLog::stop() {
  if (!started_.load()) return;
  queue_.close();
  writer_done_.wait();
}

void AccessLog::submit(const AccessRecord& r) {
  if (!enabled()) return;
  if (queue_.try_send(r) != ChanStatus::kOk) dropped_.fetch_add(1, std::memory_order_relaxed);
}

void AccessLog::write_loop() {
  ByteBuffer batch;
  AccessRecord next;
  for (;;) {
    std::optional<AccessRecord> first = queue_.recv();
    if (!first) break;  // closed and drained
    batch.clear();
    format_combined(*first, batch);
    uint64_t count = 1;
    // Take whatever else is queued (bounded, so a flood cannot starve the write).
    while (count < 1024 && queue_.try_recv(next) == ChanStatus::kOk) {
      format_combined(next, batch);
      ++count;
    }
    std::string_view text = batch.view();
    text.remove_suffix(1);  // spdlog's sink adds the last line end
    green::may_block([&] {
      logger_->log(spdlog::level::info, spdlog::string_view_t(text.data(), text.size()));
      logger_->flush();
    });
    written_.fetch_add(count, std::memory_order_relaxed);
  }
}

}  // namespace green::http
