// How the server reports a handler's exception: one log line, from one place, whether
// middleware::recover() caught it or the connection's own catch did (server-internal).
#pragma once

#include "green/http/request.h"

namespace green::http {

// Logs the exception being handled (call only inside a catch block) at error level, naming the
// request: method, path, request id when set, and what() (or the type when it is not a
// std::exception). As Go's "http: panic serving ADDR: VALUE".
void log_handler_exception(const Request& r);

}  // namespace green::http
