// Field syntax the parser, the client, the reverse proxy and gzip share (RFC 9110 5.6): tokens,
// optional whitespace, comma-separated lists. One definition, so a fix reaches every reader.
#pragma once

#include <algorithm>
#include <cstring>
#include <string>
#include <string_view>

#include "green/http/request.h"  // iequals
#include "green/http/status.h"

namespace green::http {

// RFC 9110 5.6.2 tchar. Not std::isalnum: that follows the locale (and costs a call per byte).
inline bool is_tchar(unsigned char c) {
  if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) return true;
  return c != 0 && std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;  // strchr finds the NUL too
}

inline bool is_token(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(),
                                   [](char c) { return is_tchar(static_cast<unsigned char>(c)); });
}

// Without the optional whitespace (spaces and tabs) around it.
inline std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Whether the comma-separated `list` ("keep-alive, Upgrade") holds `token`, case-insensitively.
inline bool has_token(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    const std::size_t comma = list.find(',');
    if (iequals(trim(list.substr(0, comma)), token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

// The text of an error answer: "Request Header Fields Too Large: too many header fields" (the
// reason phrase alone when `reason` is empty). HTTP/1.1's error responses and HTTP/2's share it.
inline std::string error_text(int status, std::string_view reason) {
  const std::string_view line = status_line(status);  // "HTTP/1.1 431 Phrase\r\n"
  std::string text(line.substr(9, line.size() - 11));
  if (!reason.empty()) {
    text += ": ";
    text += reason;
  }
  return text;
}

}  // namespace green::http
