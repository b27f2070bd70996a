// EventStream (green/http/sse.h): Server-Sent Events framing over ResponseWriter's streaming.
#include "green/http/sse.h"

namespace green::http {

EventStream::EventStream(ResponseWriter& w) : w_(w) {
  w_.set_content_type("text/event-stream");
  // no-cache: an event stream is live, a cached copy is wrong. (No Content-Length: the
  // response is chunked, or for HTTP/1.0 runs until close.)
  w_.set_header("Cache-Control", "no-cache");
  ok_ = w_.flush();
}

void EventStream::write_field(std::string_view name, std::string_view value) {
  w_.write(name);
  w_.write(": ");
  // Replace, byte by byte, what could end the line (and NUL, which voids an id): written in
  // runs so that a clean value costs one write.
  while (!value.empty()) {
    const std::size_t bad = value.find_first_of(std::string_view("\r\n\0", 3));
    w_.write(value.substr(0, bad));
    if (bad == std::string_view::npos) break;
    w_.write(" ");
    value.remove_prefix(bad + 1);
  }
  w_.write("\n");
}

void EventStream::write_lines(std::string_view prefix, std::string_view text) {
  // The browser ends a line at CRLF, LF or CR: split the same way, so that a data line is
  // never cut differently by the client than here.
  for (;;) {
    const std::size_t end = text.find_first_of("\r\n");
    w_.write(prefix);
    w_.write(text.substr(0, end));
    w_.write("\n");
    if (end == std::string_view::npos) return;
    const std::size_t skip = text[end] == '\r' && end + 1 < text.size() && text[end + 1] == '\n' ? 2 : 1;
    text.remove_prefix(end + skip);
    if (text.empty()) {
      // "a\n" is two lines, the second empty: keep it (the client joins data lines with LF).
      w_.write(prefix);
      w_.write("\n");
      return;
    }
  }
}

bool EventStream::send(std::string_view data, std::string_view event, std::string_view id) {
  if (!ok_) return false;
  if (!event.empty()) write_field("event", event);
  if (!id.empty()) write_field("id", id);
  write_lines("data: ", data);
  w_.write("\n");
  ok_ = w_.flush();
  return ok_;
}

bool EventStream::comment(std::string_view text) {
  if (!ok_) return false;
  write_lines(": ", text);
  ok_ = w_.flush();
  return ok_;
}

}  // namespace green::http
