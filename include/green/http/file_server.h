// FileServer: a directory served over HTTP, at nginx's level (Go's http.FileServer, with
// nginx's open_file_cache, gzip_static, autoindex and disable_symlinks as settings).
//
//   http::FileServerOptions o;
//   o.root = "./public";
//   std::string error;
//   auto files = http::FileServer::create(o, &error);   // null, and error, when root is bad
//   router.handle(Method::kGet, "/static/*", files->handler());   // serves r.param("*")
//
// What a request gets (RFC 9110; nginx where the RFC leaves the choice):
//   * GET and HEAD of regular files only (a FIFO, socket or device is a 404), with
//     Content-Type (from /etc/mime.types, as Go reads it; text/* with charset=utf-8),
//     Last-Modified, a strong ETag (size, modification time and inode), Accept-Ranges and the
//     Cache-Control of the first matching rule.
//   * Conditional requests in RFC 9110 §13.2.2's order: If-Match, If-Unmodified-Since (412),
//     If-None-Match, If-Modified-Since (304).
//   * One byte range (206, or 416 with "bytes */size" when unsatisfiable); several ranges get
//     the whole file (200), as nginx answers when they would not fit one part. If-Range.
//   * A directory: "/dir" is redirected (301) to "/dir/", which serves its index file, else a
//     listing when autoindex is on, else 403 (nginx).
//   * FILE.gz in place of FILE when the client accepts gzip (nginx's gzip_static), with
//     Content-Encoding and Vary.
// Bodies go from the file to the socket with sendfile(2) (ResponseWriter::send_file): a file
// of any size costs the server no memory of its size.
//
// No escape from the root: the path is percent-decoded once (by the request parser), "." and
// ".." segments and NUL are refused, and every open is an openat2(RESOLVE_BENEATH) relative to
// the root, so the kernel refuses absolute paths and symlinks leading out; with
// Symlinks::kNever every symlink is refused (RESOLVE_NO_SYMLINKS). Files are opened with
// O_NONBLOCK (a FIFO never blocks the open) inside green::may_block.
//
// The open-file cache (nginx's open_file_cache) keeps descriptors and metadata of the
// `cache_entries` most recently used paths, so a hot file costs no open(). A path that failed
// to open is tried again on its next request (nginx's open_file_cache_errors off), except the
// FILE.gz probe, whose absence is cached like a file (it is looked for on every request that
// accepts gzip);
// an entry is checked against the file system again (reopened by path) once `cache_valid` has
// passed, so a replaced file is seen within that time. A file rewritten in place is seen at
// once: each request fstat()s the cached descriptor.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "green/http/middleware.h"  // Handler
#include "green/http/request.h"
#include "green/http/response.h"

namespace green::http {

struct FileServerOptions {
  std::string root;                  // the directory served
  std::string index = "index.html";  // a directory's index file; empty: none
  bool autoindex = false;            // list directories without an index (nginx's autoindex)
  bool gzip_static = true;           // FILE.gz for FILE when the client accepts gzip
  enum class Symlinks : uint8_t {
    kInsideRoot,  // followed when the target stays under root (the kernel checks)
    kNever,       // any symlink in the path is a 404 (nginx's disable_symlinks on)
  };
  Symlinks symlinks = Symlinks::kInsideRoot;
  // "PATTERN=VALUE;PATTERN=VALUE": PATTERN is "*.ext", a directory under the root written
  // "/dir/", or "*". Directory rules (the longest matching) win over extension rules, which
  // win over "*". No matching rule: no Cache-Control.
  std::string cache_control;
  std::size_t cache_entries = 1000;  // open-file cache size; 0: no cache
  std::chrono::nanoseconds cache_valid = std::chrono::seconds(10);
  std::string mime_types = "/etc/mime.types";  // absent: the built-in table
  bool mime_types_required = false;            // the file must exist (it was asked for by name)
};

class FileServer {
 public:
  // Null, with a one-line reason in *error, when root is not a directory we can open, a
  // cache-control rule does not parse, or a required MIME types file cannot be read.
  static std::shared_ptr<FileServer> create(const FileServerOptions& options, std::string* error);
  ~FileServer();
  FileServer(const FileServer&) = delete;
  FileServer& operator=(const FileServer&) = delete;

  // Serves the file at `path` (relative to the root, as decoded from the URL: "css/a.css",
  // "" for the root directory) for r. `url_prefix` is what precedes it in the URL ("/static/"),
  // for the redirect of a directory without its slash.
  void serve(Request& r, ResponseWriter& w, std::string_view path, std::string_view url_prefix);
  // A handler for a prefix route registered as PREFIX "*" (r.param("*") is the path).
  Handler handler(std::string url_prefix);

  // The Content-Type for a file name, from the MIME table ("application/octet-stream" when
  // unknown).
  std::string_view content_type(std::string_view name) const;

  struct Stats {
    uint64_t cache_hits = 0;             // lookups answered by the open-file cache
    uint64_t cache_misses = 0;           // lookups that opened (or failed to open) the path
    uint64_t cache_entries = 0;          // entries now
    uint64_t opens = 0;                  // files opened (misses and revalidations)
    uint64_t sendfile_bytes = 0;         // body bytes sent from files
    uint64_t ok = 0;                     // 200
    uint64_t partial = 0;                // 206
    uint64_t not_modified = 0;           // 304
    uint64_t precondition_failed = 0;    // 412
    uint64_t range_not_satisfiable = 0;  // 416
    uint64_t not_found = 0;              // 404 (and 403)
    uint64_t redirects = 0;              // 301 to the directory's slash
    uint64_t listings = 0;               // autoindex pages
    uint64_t gzip = 0;                   // FILE.gz served for FILE
  };
  Stats stats() const;

  struct Impl;

 private:
  explicit FileServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Parses an HTTP date in any of RFC 9110's three formats (IMF-fixdate, RFC 850, asctime) into
// seconds since the epoch; -1 when it is none of them.
int64_t parse_http_date(std::string_view text);

}  // namespace green::http
