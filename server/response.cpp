#include "green/http/response.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

#include "green/green.h"
#include "green/http/status.h"
#include "server/date_cache.h"
#include "server/file_pieces.h"

namespace green::http {

namespace {
constexpr std::string_view kServerHeader = "Server: greenhttp\r\n";

// A plain loop, not find_first_of: that calls memchr over the set once per byte (~20
// instructions a byte, a third of a small response's cost with a 32-byte X-Request-Id).
bool breaks_header(std::string_view s, bool is_name) {
  for (const char c : s) {
    if (c == '\r' || c == '\n' || (is_name && c == ':')) return true;
  }
  return false;
}
}  // namespace

bool ResponseSink::write_direct(std::string_view head, std::string_view data,
                                std::string_view tail) {
  ByteBuffer& out = output();
  out.append(head);
  out.append(data);
  out.append(tail);
  return flush_output();
}

int64_t ResponseSink::send_file(int fd, uint64_t offset, uint64_t count) {
  return for_each_file_piece(fd, offset, count,
                             [&](std::string_view piece) { return write_direct({}, piece, {}); });
}

void ResponseSink::begin_message(int /*status*/, std::string_view /*content_type*/,
                                 std::string_view /*header_lines*/, int64_t /*content_length*/) {}

void ResponseSink::complete_message(std::string_view serialised) { output().append(serialised); }

ResponseWriter::ResponseWriter(ResponseSink& sink, ByteBuffer& body, ByteBuffer& headers,
                               Method method, int version_minor, bool keep_alive)
    : sink_(sink),
      out_(sink.output()),
      body_(body),
      headers_(headers),
      method_(method),
      version_minor_(static_cast<uint8_t>(version_minor)),
      keep_alive_(keep_alive),
      framed_(sink.framed()) {
  body_.clear();
  headers_.clear();
}

void ResponseWriter::set_status(int status) {
  if (mode_ == Mode::kBuffering) status_ = (status >= 100 && status <= 599) ? status : 500;
}

void ResponseWriter::set_content_type(std::string_view type) {
  if (mode_ != Mode::kBuffering) return;
  const std::size_t n = std::min(type.size(), sizeof content_type_);
  std::memcpy(content_type_, type.data(), n);
  content_type_length_ = static_cast<uint8_t>(n);
}

void ResponseWriter::set_header(std::string_view name, std::string_view value) {
  if (mode_ != Mode::kBuffering) return;
  // A CR or LF in either would let a handler's input split the response (header injection).
  if (breaks_header(name, true) || breaks_header(value, false)) return;
  headers_.append(name);
  headers_.append(": ");
  headers_.append(value);
  headers_.append("\r\n");
}

std::string_view ResponseWriter::header(std::string_view name) const {
  std::string_view rest = headers_.view();
  while (!rest.empty()) {
    const std::size_t eol = rest.find("\r\n");
    const std::string_view line = rest.substr(0, eol);
    rest.remove_prefix(eol + 2);
    const std::size_t colon = line.find(':');
    if (iequals(line.substr(0, colon), name)) return line.substr(colon + 2);
  }
  return {};
}

void ResponseWriter::remove_header(std::string_view name) {
  if (mode_ != Mode::kBuffering || header(name).data() == nullptr) return;
  std::string kept;
  std::string_view rest = headers_.view();
  while (!rest.empty()) {
    const std::size_t eol = rest.find("\r\n");
    const std::string_view line = rest.substr(0, eol + 2);
    rest.remove_prefix(eol + 2);
    if (!iequals(line.substr(0, line.find(':')), name)) kept.append(line);
  }
  headers_.clear();
  headers_.append(kept);
}

void ResponseWriter::set_body_filter(std::unique_ptr<BodyFilter> filter) {
  if (mode_ == Mode::kBuffering) filter_ = std::move(filter);
}

bool ResponseWriter::reset() {
  if (mode_ != Mode::kBuffering) return false;
  status_ = 200;
  content_type_length_ = 0;
  headers_.clear();
  body_.clear();
  has_declared_length_ = false;
  declared_length_ = 0;
  body_bytes_ = 0;
  return true;
}

void ResponseWriter::begin_filter(int64_t length) {
  // The writer, not only the filter, keeps HEAD and bodiless statuses unencoded: there are no
  // body bytes to encode, and an encoder's trailer would be sent as a body.
  filtering_ =
      filter_->begin(*this, length) && method_ != Method::kHead && !status_forbids_body(status_);
  if (filtering_) has_declared_length_ = false;  // the encoded length is not the declared one
}

void ResponseWriter::set_content_length(uint64_t length) {
  if (mode_ != Mode::kBuffering) return;
  has_declared_length_ = true;
  declared_length_ = length;
}

void ResponseWriter::emit_head(uint64_t content_length, bool has_length, bool chunked) {
  if (framed_) {
    sink_.begin_message(
        status_, {content_type_, content_type_length_}, headers_.view(),
        has_length && !status_forbids_body(status_) ? static_cast<int64_t>(content_length) : -1);
    return;
  }
  out_.append(status_line(status_));
  out_.append(kServerHeader);
  append_date_header(out_);
  if (content_type_length_ != 0) {
    out_.append("Content-Type: ");
    out_.append({content_type_, content_type_length_});
    out_.append("\r\n");
  }
  if (!status_forbids_body(status_)) {
    if (has_length) {
      out_.append("Content-Length: ");
      out_.append_decimal(content_length);
      out_.append("\r\n");
    } else if (chunked) {
      out_.append("Transfer-Encoding: chunked\r\n");
    }
  }
  out_.append(headers_.view());
  if (!keep_alive_ || broken_) {
    out_.append("Connection: close\r\n");
  } else if (version_minor_ == 0) {
    out_.append("Connection: keep-alive\r\n");
  }
  out_.append("\r\n");
}

void ResponseWriter::start_streaming() {
  if (filter_ != nullptr) {
    begin_filter(has_declared_length_ ? static_cast<int64_t>(declared_length_) : -1);
  }
  const bool no_body = status_forbids_body(status_);
  if (has_declared_length_) {
    emit_head(declared_length_, true, false);
    mode_ = Mode::kFixedLength;
  } else if (no_body) {
    emit_head(0, false, false);
    mode_ = Mode::kFixedLength;
  } else if (framed_) {
    // HTTP/2 frames the body: it ends with the stream, and the connection stays.
    emit_head(0, false, false);
    mode_ = Mode::kUntilClose;
  } else if (version_minor_ >= 1) {
    emit_head(0, false, true);
    mode_ = Mode::kChunked;
  } else {
    // HTTP/1.0 has no chunked coding: the end of the body is the end of the connection.
    keep_alive_ = false;
    emit_head(0, false, false);
    mode_ = Mode::kUntilClose;
  }
  const std::string_view buffered = body_.view();
  body_.clear();
  // body_bytes_ already counts the buffered bytes; append_body adds nothing to it.
  if (!buffered.empty()) append_body(buffered);
}

void ResponseWriter::append_body(std::string_view data) {
  if (method_ == Method::kHead || status_forbids_body(status_)) return;
  if (filtering_) data = filter_->transform(data, BodyFilter::Flush::kNone);
  append_encoded(data);
}

void ResponseWriter::append_encoded(std::string_view data) {
  // Empty: an encoder holding its input back; as a chunk it would end the body.
  if (data.empty()) return;
  char chunk_head[24];  // hex length and CRLF
  std::size_t chunk_head_length = 0;
  switch (mode_) {
    case Mode::kFixedLength: {
      const uint64_t already = body_bytes_ - data.size();
      if (already + data.size() > declared_length_) {
        // More than declared: send what fits, then the connection must close.
        broken_ = true;
        data = data.substr(0, declared_length_ > already ? declared_length_ - already : 0);
      }
      break;
    }
    case Mode::kChunked: {
      static constexpr char kHex[] = "0123456789abcdef";
      char digits[16];
      std::size_t n = 0;
      for (std::size_t v = data.size(); v != 0; v >>= 4) digits[n++] = kHex[v & 15];
      while (n != 0) chunk_head[chunk_head_length++] = digits[--n];
      chunk_head[chunk_head_length++] = '\r';
      chunk_head[chunk_head_length++] = '\n';
      break;
    }
    case Mode::kUntilClose:
      break;
    case Mode::kBuffering:
    case Mode::kDone:
      return;
  }
  const std::string_view head{chunk_head, chunk_head_length};
  const std::string_view tail = mode_ == Mode::kChunked ? "\r\n" : "";
  if (out_.size() + data.size() >= kStreamThreshold) {
    // Large: the pending output, the chunk head, the data and its CRLF go out as one writev
    // straight from the caller's memory. Copying it here would hold a second copy of every
    // large body (a third, with the handler's own) until the flush.
    sink_.write_direct(head, data, tail);
    return;
  }
  out_.append(head);
  out_.append(data);
  out_.append(tail);
}

void ResponseWriter::write(std::string_view data) {
  if (data.empty() || mode_ == Mode::kDone) return;
  if (mode_ == Mode::kBuffering) {
    if (method_ == Method::kHead) {
      body_bytes_ += data.size();  // counted for Content-Length, never sent
      return;
    }
    if (!has_declared_length_ && body_.size() + data.size() <= kStreamThreshold) {
      body_bytes_ += data.size();
      body_.append(data);
      return;
    }
    // Past the threshold (or a declared length: no reason to hold the body back): the head
    // and the buffered bytes go out, then this write, never copied into body_ (a large write
    // would be held whole twice).
    start_streaming();
  }
  body_bytes_ += data.size();
  append_body(data);
}

bool ResponseWriter::flush() {
  if (mode_ == Mode::kBuffering) start_streaming();
  if (filtering_ && mode_ != Mode::kDone) {
    append_encoded(filter_->transform({}, BodyFilter::Flush::kSync));
  }
  return sink_.flush_output();
}

void ResponseWriter::complete_from(std::string_view serialised, int status, uint64_t body_bytes,
                                   bool keep_alive) {
  if (mode_ != Mode::kBuffering) return;
  sink_.complete_message(serialised);
  status_ = status;
  body_bytes_ = body_bytes;
  if (!keep_alive) keep_alive_ = false;
  mode_ = Mode::kDone;
}

bool ResponseWriter::send_file(int fd, uint64_t offset, uint64_t length) {
  if (mode_ != Mode::kBuffering || body_bytes_ != 0) return false;  // misuse: see the header
  set_content_length(length);
  if (method_ == Method::kHead || status_forbids_body(status_)) {
    body_bytes_ = length;  // counted, never sent (as write() does for HEAD)
    return true;
  }
  if (length <= kFileCopyMax && filter_ == nullptr) {
    // Small: into the body buffer, sent with the head (and the batch) when the handler returns.
    char* at = body_.extend(static_cast<std::size_t>(length));
    std::size_t got = 0;
    while (got < length) {
      const ssize_t n = green::may_block([&] {
        return ::pread(fd, at + got, static_cast<std::size_t>(length) - got,
                       static_cast<off_t>(offset + got));
      });
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      got += static_cast<std::size_t>(n);
    }
    body_.truncate(got);
    body_bytes_ = got;
    return got == length;  // short: finish() sees the shortfall and closes the connection
  }
  if (filter_ != nullptr) {
    // An encoder sees every byte: through write(), a piece at a time.
    const int64_t read = for_each_file_piece(fd, offset, length, [&](std::string_view piece) {
      write(piece);
      return true;
    });
    return read == static_cast<int64_t>(length) && keep_alive();
  }
  start_streaming();  // the head into the output buffer, which send_file sends first
  const int64_t sent = sink_.send_file(fd, offset, length);
  if (sent > 0) body_bytes_ += static_cast<uint64_t>(sent);
  if (sent != static_cast<int64_t>(length)) {
    broken_ = true;
    return false;
  }
  return true;
}

void ResponseWriter::send(int status, std::string_view content_type, std::string_view body) {
  set_status(status);
  set_content_type(content_type);
  write(body);
}

void ResponseWriter::send_status(int status) {
  set_status(status);
  set_content_type("text/plain; charset=utf-8");
  write(status_line(status).substr(9, status_line(status).size() - 11));
  write("\n");
}

void ResponseWriter::finish() {
  switch (mode_) {
    case Mode::kBuffering: {
      uint64_t length = has_declared_length_ ? declared_length_ : body_bytes_;
      if (has_declared_length_ && body_bytes_ != declared_length_ && method_ != Method::kHead &&
          !status_forbids_body(status_)) {
        broken_ = true;  // declared, then not written: the client would wait for the rest
      }
      std::string_view body = body_.view();
      if (filter_ != nullptr && !broken_) {
        begin_filter(static_cast<int64_t>(length));
        if (filtering_) {
          body = filter_->transform(body, BodyFilter::Flush::kEnd);
          length = body.size();
        }
      }
      emit_head(length, true, false);
      if (method_ != Method::kHead && !status_forbids_body(status_)) out_.append(body);
      body_.clear();
      break;
    }
    case Mode::kFixedLength:
      if (body_bytes_ != declared_length_ && method_ != Method::kHead &&
          !status_forbids_body(status_)) {
        broken_ = true;  // fewer bytes than declared: the client would wait for the rest
      }
      break;
    case Mode::kChunked:
      if (filtering_) append_encoded(filter_->transform({}, BodyFilter::Flush::kEnd));
      if (method_ != Method::kHead) out_.append("0\r\n\r\n");
      break;
    case Mode::kUntilClose:
      if (filtering_) append_encoded(filter_->transform({}, BodyFilter::Flush::kEnd));
      break;
    case Mode::kDone:
      break;
  }
  mode_ = Mode::kDone;
}

void append_error_response(ByteBuffer& out, int status, std::string_view text,
                           std::string_view extra_headers) {
  out.append(status_line(status));
  out.append(kServerHeader);
  append_date_header(out);
  out.append(extra_headers);
  out.append("Content-Type: text/plain; charset=utf-8\r\nContent-Length: ");
  out.append_decimal(text.size() + 1);
  out.append("\r\nConnection: close\r\n\r\n");
  out.append(text);
  out.push_back('\n');
}

}  // namespace green::http
