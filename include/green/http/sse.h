// EventStream: Server-Sent Events on a streamed response (the WHATWG HTML "text/event-stream"
// format), for a handler that pushes events as they happen.
//
//   green::http::EventStream es(w);          // 200, text/event-stream, head sent now
//   while (es.send(next_price(), "price")) green::sleep_for(1s);   // false: client gone
//
// Each event is written and flushed at once (no batching: an event that waits in a buffer is
// late). Framing: `event:` and `id:` lines when given, one `data:` line per line of `data`
// (split at LF, CRLF or CR, as the browser's parser splits them), then the empty line that
// ends the event. An event name or id cannot carry a line break: CR, LF (and NUL, which makes
// a browser ignore an id) are replaced by spaces, so a caller passing client input there cannot
// inject fields or events. comment() sends ":" lines the browser ignores: a keep-alive ping
// that also makes a departed client show up as a failed write.
//
// A send after the client left fails only once the kernel reports it (the first write after a
// close may still be accepted): a producer learns it within a send or two. A handler that
// waits long between events should also watch r.client_gone() (or its request context).
//
// Lifetime and threads: as the ResponseWriter it wraps (the handler's green thread, during the
// handler). Every call may park the green thread while the socket is full (--write-timeout).
#pragma once

#include <string>
#include <string_view>

#include "green/http/response.h"

namespace green::http {

class EventStream {
 public:
  // Sets status 200 (unless the handler set another before), Content-Type: text/event-stream
  // and Cache-Control: no-cache, and sends the head. Call before anything of the response was
  // sent.
  explicit EventStream(ResponseWriter& w);
  EventStream(const EventStream&) = delete;
  EventStream& operator=(const EventStream&) = delete;

  // One event. `event` empty: the browser's default ("message"); `id` empty: no id line (the
  // client keeps its last event id). False once the connection has failed (client gone,
  // write timeout); the event was then not delivered, and every later call returns false.
  bool send(std::string_view data, std::string_view event = {}, std::string_view id = {});
  // A comment line per line of `text` (": text"), then a blank line: ignored by clients,
  // keeps proxies and the connection awake. False as send().
  bool comment(std::string_view text = {});
  // Whether every write so far succeeded.
  bool ok() const { return ok_; }

 private:
  // Into event_: one line, CR/LF/NUL replaced; a line per line of text.
  void write_field(std::string_view name, std::string_view value);
  void write_lines(std::string_view prefix, std::string_view text);
  bool write_event();  // event_ as one chunk, flushed

  ResponseWriter& w_;
  std::string event_;  // the event being framed (reused: its capacity stays)
  bool ok_;
};

}  // namespace green::http
