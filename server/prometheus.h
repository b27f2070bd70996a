// Prometheus text exposition for the library's own counters (the client's, the reverse proxy's):
// a metric is its HELP and TYPE lines, then its samples. handlers/observability.cpp writes the
// server's the same way into a stream.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace green::http {

// The HELP and TYPE lines of `prefix`_`name`; its samples follow.
inline void append_metric_head(std::string& out, std::string_view prefix, std::string_view name,
                               std::string_view type, std::string_view help) {
  out.append("# HELP ").append(prefix).append("_").append(name).append(" ").append(help);
  out.append("\n# TYPE ").append(prefix).append("_").append(name).append(" ").append(type);
  out.append("\n");
}

// One sample: `prefix`_`name``labels` value ("{kind=\"dns\"}" or empty labels).
inline void append_sample(std::string& out, std::string_view prefix, std::string_view name,
                          std::string_view labels, std::string_view value) {
  out.append(prefix).append("_").append(name).append(labels).append(" ").append(value);
  out.append("\n");
}

// A metric with one unlabelled sample.
template <typename T>
void append_metric(std::string& out, std::string_view prefix, std::string_view name,
                   std::string_view type, std::string_view help, T value) {
  append_metric_head(out, prefix, name, type, help);
  append_sample(out, prefix, name, {}, std::to_string(value));
}

}  // namespace green::http
