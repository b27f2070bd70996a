// HTTP status codes: reason phrases and the preformatted status lines responses start with.
#pragma once

#include <string_view>

namespace green::http {

// "OK", "Not Found", ...; "Unknown" for codes without a registered phrase.
std::string_view reason_phrase(int status);

// "HTTP/1.1 200 OK\r\n" for 100..599, built once: a response's first line is one memcpy.
// Codes outside 100..599 are answered as 500.
std::string_view status_line(int status);

// True for statuses that never carry a body (1xx, 204, 304): no Content-Length either.
inline bool status_forbids_body(int status) {
  return status < 200 || status == 204 || status == 304;
}

}  // namespace green::http
