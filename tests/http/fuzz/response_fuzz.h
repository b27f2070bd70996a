// The response fuzzer's entry point as a function (tests/http/fuzz/response_fuzz.cpp), for the
// replay test, which also checks what each seed did.
#pragma once

#include <cstdint>
#include <string_view>

#include "green/http/client.h"

namespace green::http::testing {

// What the first call of one input did, after every invariant held (a broken one aborts).
struct ResponseFuzzOutcome {
  bool ok = false;                         // ClientResponse::ok() of the first call
  ClientError error = ClientError::kNone;  // after the body was read
  int status = 0;
  int64_t content_length = -1;
  uint64_t body_bytes = 0;
  long last_read = 0;    // what the read loop ended with: 0 (end) or -1 (error)
  bool pooled = false;   // the connection went back to the pool when the response closed
  bool reused = false;   // the second GET was sent on a pooled connection (of either call)
  bool retried = false;  // the second GET was sent again after a keep-alive race
};

// Runs one input (format: the top of response_fuzz.cpp) and checks the invariants.
ResponseFuzzOutcome run_response_fuzz_input(std::string_view input);

}  // namespace green::http::testing
