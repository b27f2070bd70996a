// EventStream (green/http/sse.h): Server-Sent Events framing over ResponseWriter's streaming.
#include "green/http/sse.h"

#include <string>

namespace green::http {

EventStream::EventStream(ResponseWriter& w) : w_(w) {
  w_.set_content_type("text/event-stream");
  // no-cache: an event stream is live, a cached copy is wrong. (No Content-Length: the
  // response is chunked, or for HTTP/1.0 runs until close.)
  w_.set_header("Cache-Control", "no-cache");
  ok_ = w_.flush();
}

void EventStream::write_field(std::string_view name, std::string_view value) {
  event_.append(name);
  event_.append(": ");
  // Replace what could end the line (and NUL, which voids an id) by a space.
  const std::size_t start = event_.size();
  event_.append(value);
  for (std::size_t i = start; i < event_.size(); ++i) {
    if (event_[i] == '\r' || event_[i] == '\n' || event_[i] == '\0') event_[i] = ' ';
  }
  event_.push_back('\n');
}

void EventStream::write_lines(std::string_view prefix, std::string_view text) {
  // The browser ends a line at CRLF, LF or CR: split the same way, so that a data line is
  // never cut differently by the client than here.
  for (;;) {
    const std::size_t end = text.find_first_of("\r\n");
    event_.append(prefix);
    event_.append(text.substr(0, end));
    event_.push_back('\n');
    if (end == std::string_view::npos) return;
    const std::size_t skip =
        text[end] == '\r' && end + 1 < text.size() && text[end + 1] == '\n' ? 2 : 1;
    text.remove_prefix(end + skip);
    if (text.empty()) {
      // "a\n" is two lines, the second empty: keep it (the client joins data lines with LF).
      event_.append(prefix);
      event_.push_back('\n');
      return;
    }
  }
}

bool EventStream::send(std::string_view data, std::string_view event, std::string_view id) {
  if (!ok_) return false;
  event_.clear();
  if (!event.empty()) write_field("event", event);
  if (!id.empty()) write_field("id", id);
  write_lines("data: ", data);
  event_.push_back('\n');
  return write_event();
}

bool EventStream::comment(std::string_view text) {
  if (!ok_) return false;
  event_.clear();
  write_lines(": ", text);
  // The blank line makes the comment a block of its own: an intermediary that passes events on
  // whole (at blank lines) forwards the ping at once. For the client it dispatches nothing.
  event_.push_back('\n');
  return write_event();
}

bool EventStream::write_event() {
  // One write, so one chunk on the wire per event, and flushed at once.
  w_.write(event_);
  ok_ = w_.flush();
  return ok_;
}

}  // namespace green::http
