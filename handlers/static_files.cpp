// /static/*: files under --static-dir.
//
// No escape from the directory, whatever the encoding: the path is percent-decoded once by the
// parser (so %2e%2e is "..", and %252e stays the literal name "%2e"), any "." or ".." segment
// is refused, and the file is opened with openat2(RESOLVE_BENEATH) relative to the directory,
// so the kernel itself refuses absolute paths and symlinks that lead outside. Files stream in
// 64 KiB pieces with a declared Content-Length: a large file is never loaded whole. File I/O
// runs inside green::may_block (a read that misses the page cache blocks its thread).
//
// Only regular files are served. The open itself must not block: a FIFO opened for reading
// waits for a writer forever (60 requests for one pinned 60 OS threads), so the file is opened
// with O_NONBLOCK, as nginx's ngx_open_file does, and its type is checked with fstat on the
// opened descriptor (no window between check and use). Anything else (FIFO, socket, device,
// directory) is a 404, as nginx answers for "not a regular file" (ngx_http_static_module; it
// redirects directories, which have no index here). O_NONBLOCK changes nothing for reads of a
// regular file.
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <memory>
#include <string>

#include "green/green.h"
#include "handlers/handlers.h"

namespace green::handlers {

namespace {
using http::Method;
using http::Request;
using http::ResponseWriter;

constexpr std::size_t kPiece = 64 * 1024;

bool safe_relative_path(std::string_view p) {
  if (p.empty()) return false;
  std::size_t start = 0;
  while (start <= p.size()) {
    const std::size_t slash = p.find('/', start);
    const std::string_view seg =
        p.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (seg == "." || seg == "..") return false;
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return p.find('\0') == std::string_view::npos;
}

int open_beneath(int dir, const std::string& path) {
  open_how how{};
  how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
  const long fd = syscall(SYS_openat2, dir, path.c_str(), &how, sizeof how);
  return fd >= 0 ? static_cast<int>(fd) : -errno;  // errno read here, before any switch
}

struct StaticDir {
  int fd = -1;
  ~StaticDir() {
    if (fd >= 0) close(fd);
  }
};
}  // namespace

std::string_view content_type_for(std::string_view name) {
  const std::size_t dot = name.rfind('.');
  if (dot == std::string_view::npos) return "application/octet-stream";
  std::string ext(name.substr(dot + 1));
  for (char& c : ext) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  struct Type {
    const char* ext;
    const char* type;
  };
  static constexpr Type kTypes[] = {
      {"html", "text/html; charset=utf-8"},
      {"htm", "text/html; charset=utf-8"},
      {"css", "text/css; charset=utf-8"},
      {"js", "text/javascript; charset=utf-8"},
      {"mjs", "text/javascript; charset=utf-8"},
      {"json", "application/json"},
      {"txt", "text/plain; charset=utf-8"},
      {"md", "text/markdown; charset=utf-8"},
      {"xml", "application/xml"},
      {"svg", "image/svg+xml"},
      {"png", "image/png"},
      {"jpg", "image/jpeg"},
      {"jpeg", "image/jpeg"},
      {"gif", "image/gif"},
      {"webp", "image/webp"},
      {"ico", "image/x-icon"},
      {"wasm", "application/wasm"},
      {"pdf", "application/pdf"},
      {"zip", "application/zip"},
      {"gz", "application/gzip"},
      {"woff2", "font/woff2"},
      {"mp4", "video/mp4"},
  };
  for (const Type& t : kTypes) {
    if (ext == t.ext) return t.type;
  }
  return "application/octet-stream";
}

void register_static(http::Router& router, const std::string& dir) {
  auto root = std::make_shared<StaticDir>();
  if (!dir.empty()) root->fd = open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  auto serve = [root](Request& r, ResponseWriter& w) {
    const std::string_view rel = r.param("*");
    if (root->fd < 0 || !safe_relative_path(rel)) {
      w.send_status(404);
      return;
    }
    const std::string path(rel);
    const int fd = green::may_block([&] { return open_beneath(root->fd, path); });
    if (fd < 0) {
      // Out of descriptors or memory is the server's state, not the file's: 503 with
      // Retry-After, as for the other resource limits (nginx answers 500 here; a client
      // can act on 503). Everything else (missing, a symlink out of the root, ...) is a 404.
      if (fd == -EMFILE || fd == -ENFILE || fd == -ENOMEM) {
        w.set_header("Retry-After", "1");
        w.send_status(503);
        return;
      }
      w.send_status(fd == -EACCES ? 403 : 404);
      return;
    }
    struct Closer {
      int fd;
      ~Closer() { close(fd); }
    } closer{fd};
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      w.send_status(404);  // not a regular file (nginx: 404 too)
      return;
    }
    w.set_status(200);
    w.set_content_type(content_type_for(path));
    w.set_header("Last-Modified", http::format_http_date(st.st_mtime));
    w.set_content_length(static_cast<uint64_t>(st.st_size));
    if (r.method() == Method::kHead) return;
    std::unique_ptr<char[]> piece(new char[kPiece]);
    off_t offset = 0;
    while (offset < st.st_size) {
      const ssize_t n = green::may_block([&] { return pread(fd, piece.get(), kPiece, offset); });
      if (n <= 0) {
        // The file shrank or failed under us: the declared length cannot be honoured, and
        // the writer closes the connection after this response.
        break;
      }
      w.write({piece.get(), static_cast<std::size_t>(n)});
      offset += n;
    }
  };
  router.handle(Method::kGet, "/static/*", serve);
}

}  // namespace green::handlers
