// The Date header, formatted at most once a second per OS thread.
//
// Formatting an IMF-fixdate costs a gmtime_r and a strftime (~300 ns); every response needs
// one, and within a second they are all the same. Each OS thread keeps its own copy, so no
// response ever waits on another thread or races with an update; the cost is one coarse clock
// read per response.
#pragma once

#include <ctime>
#include <string>
#include <string_view>

#include "green/http/response.h"
#include "server/byte_buffer.h"

namespace green::http {

// Appends "Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n" for the current second.
void append_date_header(ByteBuffer& out);
// The same date alone ("Sun, 06 Nov 1994 08:49:37 GMT", as HTTP/2's date field carries it): a
// view of this OS thread's copy, to be copied before the caller parks.
std::string_view current_http_date();

// format_http_date() is public: include/green/http/response.h.

}  // namespace green::http
