// FileServer (see green/http/file_server.h): path checks, the open-file cache, the MIME table,
// and RFC 9110's validators, conditionals and ranges.
#include "green/http/file_server.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <fstream>
#include <functional>
#include <list>
#include <mutex>
#include <sstream>
#include <unordered_map>
#include <utility>

#include "green/detail/park.h"
#include "green/green.h"
#include "green/http/middleware.h"
#include "server/http_text.h"

namespace green::http {

namespace {

// No "." or ".." segment, no NUL (serve() has merged away leading slashes): the kernel's
// RESOLVE_BENEATH would refuse them too; refusing them here keeps their answer a plain 404
// whatever the file system holds.
bool safe_relative_path(std::string_view p) {
  if (p.find('\0') != std::string_view::npos) return false;
  std::size_t start = 0;
  while (start <= p.size()) {
    const std::size_t slash = p.find('/', start);
    const std::string_view seg =
        p.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (seg == "." || seg == "..") return false;
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return true;
}

// One cached open: the descriptor and the file's identity, or the errno of a failed open.
// Shared by the cache and the requests using it, through FileRef: an intrusive count, not a
// shared_ptr, because UBSan's check of a shared_ptr's (polymorphic) control block probes its
// vtable's memory through a pipe, and with the process out of descriptors that probe fails
// and UBSan reports "invalid vptr" (Endpoints.OutOfDescriptorsIs503AndTheServerRecovers).
struct OpenFile {
  std::atomic<int> refs{1};
  int fd = -1;
  int error = 0;
  dev_t dev = 0;
  ino_t ino = 0;
  // The validators as of the open, reused while fstat finds the same size and mtime (a 304
  // then formats nothing).
  bool regular = false;
  off_t size = 0;
  struct timespec mtime {};
  std::string etag;
  std::string last_modified;
  bool same_version(const struct stat& st) const {
    return st.st_size == size && st.st_mtim.tv_sec == mtime.tv_sec &&
           st.st_mtim.tv_nsec == mtime.tv_nsec && st.st_ino == ino;
  }
  OpenFile() = default;
  OpenFile(const OpenFile&) = delete;
  OpenFile& operator=(const OpenFile&) = delete;
  ~OpenFile() {
    if (fd >= 0) ::close(fd);
  }
};

class FileRef {
 public:
  FileRef() = default;
  explicit FileRef(OpenFile* adopted) : f_(adopted) {}  // takes over the reference it holds
  FileRef(const FileRef& other) : f_(other.f_) {
    if (f_ != nullptr) f_->refs.fetch_add(1, std::memory_order_relaxed);
  }
  FileRef(FileRef&& other) noexcept : f_(std::exchange(other.f_, nullptr)) {}
  FileRef& operator=(FileRef other) noexcept {
    std::swap(f_, other.f_);
    return *this;
  }
  ~FileRef() {
    // acq_rel: the last owner's delete sees every other owner's use of the file.
    if (f_ != nullptr && f_->refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete f_;
  }
  const OpenFile* operator->() const { return f_; }
  explicit operator bool() const { return f_ != nullptr; }
  bool operator==(const FileRef& other) const { return f_ == other.f_; }

 private:
  OpenFile* f_ = nullptr;
};

std::string make_etag(const struct stat& st);

// openat2 beneath the root. O_NONBLOCK: opening a FIFO for reading would otherwise wait for a
// writer forever (nginx's ngx_open_file does the same); it changes nothing for regular files.
FileRef open_beneath(int root, const std::string& path, bool no_symlinks) {
  auto* f = new OpenFile;
  open_how how{};
  how.flags = O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS | (no_symlinks ? RESOLVE_NO_SYMLINKS : 0);
  green::may_block([&] {
    const long fd = ::syscall(SYS_openat2, root, path.c_str(), &how, sizeof how);
    if (fd < 0) {
      f->error = errno;
      return;
    }
    f->fd = static_cast<int>(fd);
    struct stat st {};
    if (::fstat(f->fd, &st) != 0) {
      f->error = errno;
      return;
    }
    f->dev = st.st_dev;
    f->ino = st.st_ino;
    if (S_ISREG(st.st_mode)) {
      f->regular = true;
      f->size = st.st_size;
      f->mtime = st.st_mtim;
      f->etag = make_etag(st);
      f->last_modified = format_http_date(st.st_mtim.tv_sec);
    }
  });
  return FileRef(f);
}

bool transient(int error) { return error == EMFILE || error == ENFILE || error == ENOMEM; }

// nginx's open_file_cache: sharded so that Ps rarely meet on one lock; each shard an LRU
// list and a map. Lookups hold the shard's lock for a hash probe and a list splice, never
// across an open (that may block).
class FileCache {
 public:
  FileCache(std::size_t capacity, std::chrono::nanoseconds valid)
      : shards_(std::clamp<std::size_t>(capacity, 1, kMaxShards)),
        per_shard_(capacity == 0 ? 0 : std::max<std::size_t>(1, capacity / shards_.size())),
        valid_ns_(valid.count()) {}

  // `cache_errors`: keep a failed open (a missing FILE.gz, probed on every request that
  // accepts gzip) like a file; otherwise a failure is retried on the next request, as nginx's
  // open_file_cache_errors off does, so a file created after a 404 is served at once.
  FileRef get(int root, const std::string& path, bool no_symlinks, bool cache_errors,
              std::atomic<uint64_t>& hits, std::atomic<uint64_t>& misses,
              std::atomic<uint64_t>& opens) {
    if (per_shard_ == 0) {
      misses.fetch_add(1, std::memory_order_relaxed);
      opens.fetch_add(1, std::memory_order_relaxed);
      return open_beneath(root, path, no_symlinks);
    }
    Shard& s = shards_[std::hash<std::string>{}(path) % shards_.size()];
    const int64_t now = green::detail::now_ns();
    FileRef stale;
    {
      std::lock_guard<std::mutex> lock(s.mu);
      auto it = s.map.find(path);
      if (it != s.map.end()) {
        s.lru.splice(s.lru.begin(), s.lru, it->second.lru);
        if (now - it->second.checked_ns < valid_ns_) {
          hits.fetch_add(1, std::memory_order_relaxed);
          return it->second.file;
        }
        stale = it->second.file;
      }
    }
    misses.fetch_add(1, std::memory_order_relaxed);
    opens.fetch_add(1, std::memory_order_relaxed);
    FileRef fresh = open_beneath(root, path, no_symlinks);
    // Revalidated: the same file (device and inode) keeps its descriptor; the new one closes.
    if (stale && stale->error == 0 && fresh->error == 0 && stale->dev == fresh->dev &&
        stale->ino == fresh->ino) {
      fresh = stale;
    }
    // Out of descriptors is not the file's state; other failures only when asked.
    if (fresh->error != 0 && (transient(fresh->error) || !cache_errors)) {
      if (stale) {
        std::lock_guard<std::mutex> lock(s.mu);
        auto it = s.map.find(path);
        if (it != s.map.end() && it->second.file == stale) {
          s.lru.erase(it->second.lru);
          s.map.erase(it);
        }
      }
      return fresh;
    }
    std::lock_guard<std::mutex> lock(s.mu);
    auto it = s.map.find(path);
    if (it != s.map.end()) {
      it->second.file = fresh;
      it->second.checked_ns = now;
      s.lru.splice(s.lru.begin(), s.lru, it->second.lru);
    } else {
      s.lru.push_front(path);
      s.map.emplace(path, Entry{fresh, now, s.lru.begin()});
      while (s.map.size() > per_shard_) {
        s.map.erase(s.lru.back());  // the descriptor closes with its last user
        s.lru.pop_back();
      }
    }
    return fresh;
  }

  uint64_t size() {
    uint64_t n = 0;
    for (Shard& s : shards_) {
      std::lock_guard<std::mutex> lock(s.mu);
      n += s.map.size();
    }
    return n;
  }

 private:
  static constexpr std::size_t kMaxShards = 16;
  struct Entry {
    FileRef file;
    int64_t checked_ns;
    std::list<std::string>::iterator lru;
  };
  struct Shard {
    std::mutex mu;
    std::unordered_map<std::string, Entry> map;
    std::list<std::string> lru;  // most recently used first
  };
  std::vector<Shard> shards_;
  std::size_t per_shard_;
  int64_t valid_ns_;
};

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::string_view extension(std::string_view name) {
  const std::size_t slash = name.rfind('/');
  const std::size_t dot = name.rfind('.');
  if (dot == std::string_view::npos || (slash != std::string_view::npos && dot < slash)) return {};
  return name.substr(dot + 1);
}

// Go's mime package: a built-in table, then the system's mime.types over it; text/* types get
// charset=utf-8 (Go adds it to every text type it learns).
std::string with_charset(std::string type) {
  if (type.starts_with("text/") && type.find(';') == std::string::npos) type += "; charset=utf-8";
  return type;
}

std::unordered_map<std::string, std::string> builtin_types() {
  static constexpr const char* kTypes[][2] = {
      {"html", "text/html"},      {"htm", "text/html"},       {"css", "text/css"},
      {"js", "text/javascript"},  {"mjs", "text/javascript"}, {"json", "application/json"},
      {"txt", "text/plain"},      {"md", "text/markdown"},    {"xml", "application/xml"},
      {"svg", "image/svg+xml"},   {"png", "image/png"},       {"jpg", "image/jpeg"},
      {"jpeg", "image/jpeg"},     {"gif", "image/gif"},       {"webp", "image/webp"},
      {"avif", "image/avif"},     {"ico", "image/x-icon"},    {"wasm", "application/wasm"},
      {"pdf", "application/pdf"}, {"zip", "application/zip"}, {"gz", "application/gzip"},
      {"woff", "font/woff"},      {"woff2", "font/woff2"},    {"mp4", "video/mp4"},
      {"webm", "video/webm"},     {"mp3", "audio/mpeg"},
  };
  std::unordered_map<std::string, std::string> m;
  for (const auto& t : kTypes) m[t[0]] = with_charset(t[1]);
  return m;
}

// "type ext ext ..." lines, '#' comments (the format of Debian's /etc/mime.types).
bool load_mime_types(const std::string& path, std::unordered_map<std::string, std::string>* m) {
  std::ifstream in(path);
  if (!in) return false;
  std::string line;
  while (std::getline(in, line)) {
    if (const std::size_t hash = line.find('#'); hash != std::string::npos) line.resize(hash);
    std::istringstream words(line);
    std::string type;
    if (!(words >> type) || type.find('/') == std::string::npos) continue;
    std::string ext;
    while (words >> ext) (*m)[lower(ext)] = with_charset(type);
  }
  return true;
}

struct CacheRule {
  enum Kind : uint8_t { kDir, kExt, kAny } kind;
  std::string pattern;  // "/dir/" or "ext" (lower case)
  std::string value;
};

bool parse_rules(std::string_view text, std::vector<CacheRule>* rules, std::string* error) {
  while (!text.empty()) {
    const std::size_t semi = text.find(';');
    const std::string_view item = trim(text.substr(0, semi));
    text = semi == std::string_view::npos ? std::string_view{} : text.substr(semi + 1);
    if (item.empty()) continue;
    const std::size_t eq = item.find('=');
    if (eq == std::string_view::npos) {
      *error = "cache-control rule \"" + std::string(item) + "\" is not PATTERN=VALUE";
      return false;
    }
    const std::string_view pattern = trim(item.substr(0, eq));
    const std::string_view value = trim(item.substr(eq + 1));
    if (value.empty() || value.find_first_of("\r\n") != std::string_view::npos) {
      *error = "cache-control rule \"" + std::string(item) + "\" has no value";
      return false;
    }
    CacheRule rule{CacheRule::kAny, {}, std::string(value)};
    if (pattern == "*") {
      rule.kind = CacheRule::kAny;
    } else if (pattern.size() > 2 && pattern.starts_with("*.") &&
               pattern.find('/') == std::string_view::npos) {
      rule.kind = CacheRule::kExt;
      rule.pattern = lower(pattern.substr(2));
    } else if (pattern.size() >= 2 && pattern.front() == '/' && pattern.back() == '/') {
      rule.kind = CacheRule::kDir;
      rule.pattern = std::string(pattern);
    } else {
      *error =
          "cache-control pattern \"" + std::string(pattern) + "\" is none of *.EXT, /DIR/ and *";
      return false;
    }
    rules->push_back(std::move(rule));
  }
  return true;
}

// An entity-tag list (If-Match, If-None-Match): calls fn(tag, weak) for each, tag with its
// quotes; "*" is passed as is. Stops early when fn returns true; returns whether one did.
template <typename F>
bool any_etag(std::string_view list, F fn) {
  while (!list.empty()) {
    while (!list.empty() && (list.front() == ' ' || list.front() == ',' || list.front() == '\t'))
      list.remove_prefix(1);
    if (list.empty()) break;
    if (list.front() == '*') {
      if (fn(std::string_view("*"), false)) return true;
      list.remove_prefix(1);
      continue;
    }
    bool weak = false;
    if (list.starts_with("W/")) {
      weak = true;
      list.remove_prefix(2);
    }
    if (list.empty() || list.front() != '"') return false;  // malformed: nothing more matches
    const std::size_t close = list.find('"', 1);
    if (close == std::string_view::npos) return false;
    if (fn(list.substr(0, close + 1), weak)) return true;
    list.remove_prefix(close + 1);
  }
  return false;
}

// Every field line of `name`, joined with ", " (RFC 9110 §5.3: several lines of a list field
// mean one line of their values in order). A view of the one line when there is one.
std::string_view list_field(const Request& r, std::string_view name, std::string* storage) {
  std::string_view first;
  bool several = false;
  for (const Header& h : r.headers()) {
    if (!iequals(h.name, name)) continue;
    if (first.data() == nullptr) {
      first = h.value;
      continue;
    }
    if (!several) {
      storage->assign(first);
      several = true;
    }
    storage->append(", ");
    storage->append(h.value);
  }
  return several ? std::string_view(*storage) : first;
}

void append_hex(std::string& out, uint64_t v) {
  char buf[17];
  const int n = std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(v));
  out.append(buf, static_cast<std::size_t>(n));
}

std::string make_etag(const struct stat& st) {
  std::string tag = "\"";
  append_hex(tag, static_cast<uint64_t>(st.st_mtim.tv_sec) * 1'000'000'000ULL +
                      static_cast<uint64_t>(st.st_mtim.tv_nsec));
  tag += '-';
  append_hex(tag, static_cast<uint64_t>(st.st_size));
  tag += '-';
  append_hex(tag, static_cast<uint64_t>(st.st_ino));
  tag += '"';
  return tag;
}

// Percent-encodes a path for a Location header or a listing's href: '/' and unreserved
// characters stay.
std::string encode_path(std::string_view path) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (const char ch : path) {
    const auto c = static_cast<unsigned char>(ch);
    if (std::isalnum(c) != 0 || c == '/' || c == '-' || c == '.' || c == '_' || c == '~') {
      out += ch;
    } else {
      out += '%';
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

std::string escape_html(std::string_view s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

// A single range of RFC 9110 §14.1.2 against `size`: start and length, or why not.
struct RangeResult {
  enum Kind : uint8_t { kNone, kOne, kUnsatisfiable } kind = kNone;
  uint64_t start = 0;
  uint64_t length = 0;
};

bool parse_u64(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 19) return false;
  uint64_t v = 0;
  for (const char c : s) {
    if (c < '0' || c > '9') return false;
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  *out = v;
  return true;
}

RangeResult parse_range(std::string_view header, uint64_t size) {
  RangeResult none;
  const std::size_t eq = header.find('=');
  if (eq == std::string_view::npos) return none;
  if (!iequals(trim(header.substr(0, eq)), "bytes"))
    return none;  // another unit: ignored (RFC 9110 §14.2)
  const std::string_view set = trim(header.substr(eq + 1));
  // Several ranges: the whole file (allowed by §14.2; nginx answers so when they overlap).
  if (set.find(',') != std::string_view::npos) return none;
  const std::size_t dash = set.find('-');
  if (dash == std::string_view::npos) return none;
  const std::string_view first = set.substr(0, dash);
  const std::string_view last = set.substr(dash + 1);
  if (first.empty()) {  // suffix: the last N bytes
    uint64_t n = 0;
    if (!parse_u64(last, &n)) return none;
    if (n == 0 || size == 0) return {RangeResult::kUnsatisfiable, 0, 0};
    n = std::min(n, size);
    return {RangeResult::kOne, size - n, n};
  }
  uint64_t a = 0;
  if (!parse_u64(first, &a)) return none;
  uint64_t b = UINT64_MAX;
  if (!last.empty() && !parse_u64(last, &b)) return none;
  if (b < a) return none;  // invalid: ignored
  if (a >= size) return {RangeResult::kUnsatisfiable, 0, 0};
  b = std::min(b, size - 1);
  return {RangeResult::kOne, a, b - a + 1};
}

int month_index(std::string_view m) {
  static constexpr std::string_view kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                                 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  for (int i = 0; i < 12; ++i) {
    if (m == kMonths[i]) return i;
  }
  return -1;
}

bool digits(std::string_view s, int n, int* out) {
  if (static_cast<int>(s.size()) < n) return false;
  int v = 0;
  for (int i = 0; i < n; ++i) {
    if (s[static_cast<std::size_t>(i)] < '0' || s[static_cast<std::size_t>(i)] > '9') return false;
    v = v * 10 + (s[static_cast<std::size_t>(i)] - '0');
  }
  *out = v;
  return true;
}

// "08:49:37"
bool parse_time(std::string_view s, struct tm* tm) {
  return s.size() == 8 && s[2] == ':' && s[5] == ':' && digits(s, 2, &tm->tm_hour) &&
         digits(s.substr(3), 2, &tm->tm_min) && digits(s.substr(6), 2, &tm->tm_sec) &&
         tm->tm_hour < 24 && tm->tm_min < 60 && tm->tm_sec < 61;
}

}  // namespace

int64_t parse_http_date(std::string_view s) {
  s = trim(s);
  struct tm tm {};
  const std::size_t comma = s.find(',');
  if (comma == 3 && s.size() == 29) {
    // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT"
    if (s[4] != ' ' || s[7] != ' ' || s[11] != ' ' || s[16] != ' ' || s.substr(25) != " GMT" ||
        !digits(s.substr(5), 2, &tm.tm_mday) || (tm.tm_mon = month_index(s.substr(8, 3))) < 0 ||
        !digits(s.substr(12), 4, &tm.tm_year) || !parse_time(s.substr(17, 8), &tm)) {
      return -1;
    }
    tm.tm_year -= 1900;
  } else if (comma != std::string_view::npos && comma >= 6) {
    // RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT"
    const std::string_view r = s.substr(comma + 1);
    if (r.size() != 23 || r[0] != ' ' || r[3] != '-' || r[7] != '-' || r[10] != ' ' ||
        r.substr(19) != " GMT" || !digits(r.substr(1), 2, &tm.tm_mday) ||
        (tm.tm_mon = month_index(r.substr(4, 3))) < 0 || !digits(r.substr(8), 2, &tm.tm_year) ||
        !parse_time(r.substr(11, 8), &tm)) {
      return -1;
    }
    if (tm.tm_year < 70) tm.tm_year += 100;  // two digits: 1970..2069
  } else if (comma == std::string_view::npos && s.size() == 24) {
    // asctime: "Sun Nov  6 08:49:37 1994"
    if (s[3] != ' ' || s[7] != ' ' || s[10] != ' ' || s[19] != ' ' ||
        (tm.tm_mon = month_index(s.substr(4, 3))) < 0 || !parse_time(s.substr(11, 8), &tm) ||
        !digits(s.substr(20), 4, &tm.tm_year)) {
      return -1;
    }
    if (s[8] == ' ') {
      if (!digits(s.substr(9), 1, &tm.tm_mday)) return -1;
    } else if (!digits(s.substr(8), 2, &tm.tm_mday)) {
      return -1;
    }
    tm.tm_year -= 1900;
  } else {
    return -1;
  }
  // A day past its month's end ("31 Apr") is not a date (timegm would make it 1 May): nginx
  // refuses it too.
  static constexpr int kDays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  const int year = tm.tm_year + 1900;
  const bool leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
  const int days = kDays[tm.tm_mon] + (tm.tm_mon == 1 && leap ? 1 : 0);
  if (tm.tm_mday < 1 || tm.tm_mday > days || tm.tm_sec > 59) return -1;
  return static_cast<int64_t>(timegm(&tm));
}

struct FileServer::Impl {
  FileServerOptions options;
  int root = -1;
  std::unordered_map<std::string, std::string> types;
  std::vector<CacheRule> rules;
  std::unique_ptr<FileCache> cache;

  std::atomic<uint64_t> hits{0}, misses{0}, opens{0}, sendfile_bytes{0};
  std::atomic<uint64_t> ok{0}, partial{0}, not_modified{0}, precondition_failed{0},
      unsatisfiable{0}, not_found{0}, redirects{0}, listings{0}, gzip{0};
  std::atomic<int> listings_in_flight{0};

  ~Impl() {
    if (root >= 0) ::close(root);
  }

  FileRef lookup(const std::string& path, bool cache_errors = false) {
    return cache->get(root, path, options.symlinks == FileServerOptions::Symlinks::kNever,
                      cache_errors, hits, misses, opens);
  }

  std::string_view type_for(std::string_view name) const {
    auto it = types.find(lower(extension(name)));
    return it != types.end() ? std::string_view(it->second)
                             : std::string_view("application/octet-stream");
  }

  std::string_view cache_control(std::string_view path) const {
    const CacheRule* best_dir = nullptr;
    const CacheRule* ext_rule = nullptr;
    const CacheRule* any_rule = nullptr;
    if (rules.empty()) return {};
    const std::string ext = lower(extension(path));
    for (const CacheRule& rule : rules) {
      switch (rule.kind) {
        case CacheRule::kDir:
          // "/dir/" against "dir/a.css": the path has no leading slash.
          if (path.starts_with(std::string_view(rule.pattern).substr(1)) &&
              (best_dir == nullptr || rule.pattern.size() > best_dir->pattern.size())) {
            best_dir = &rule;
          }
          break;
        case CacheRule::kExt:
          if (ext_rule == nullptr && !ext.empty() && ext == rule.pattern) ext_rule = &rule;
          break;
        case CacheRule::kAny:
          if (any_rule == nullptr) any_rule = &rule;
          break;
      }
    }
    const CacheRule* r = best_dir != nullptr ? best_dir : ext_rule != nullptr ? ext_rule : any_rule;
    return r != nullptr ? std::string_view(r->value) : std::string_view{};
  }

  void fail(ResponseWriter& w, int error) {
    if (transient(error)) {
      w.set_header("Retry-After", "1");  // the server's state, not the file's (503, not 500)
      w.send_status(503);
      return;
    }
    not_found.fetch_add(1, std::memory_order_relaxed);
    w.send_status(error == EACCES || error == EPERM ? 403 : 404);
  }

  void serve(Request& r, ResponseWriter& w, std::string_view path, std::string_view prefix);
  void serve_file(Request& r, ResponseWriter& w, const std::string& path, const FileRef& file,
                  const struct stat& st);
  void list_directory(ResponseWriter& w, std::string_view path, std::string_view prefix,
                      const FileRef& dir);
};

void FileServer::Impl::serve(Request& r, ResponseWriter& w, std::string_view path,
                             std::string_view prefix) {
  if (r.method() != Method::kGet && r.method() != Method::kHead) {
    w.set_header("Allow", "GET, HEAD");
    w.send_status(405);
    return;
  }
  // Repeated slashes count as one, and leading ones as none (nginx's merge_slashes): "a//b"
  // is "a/b" for the file, the Cache-Control rules and the open-file cache alike, so a
  // doubled slash neither changes the rules nor multiplies cache entries.
  std::string merged;
  if (path.find("//") != std::string_view::npos || (!path.empty() && path.front() == '/')) {
    for (const char c : path) {
      if (c == '/' && (merged.empty() || merged.back() == '/')) continue;
      merged += c;
    }
    if (!merged.empty() && path.back() == '/' && merged.back() != '/') merged += '/';
    path = merged;
  }
  if (!safe_relative_path(path)) {
    fail(w, ENOENT);
    return;
  }
  const bool want_dir = path.empty() || path.back() == '/';
  // With its trailing slash: the kernel then refuses a regular file ("a.txt/" is ENOTDIR).
  const std::string key = path.empty() ? std::string(".") : std::string(path);
  FileRef file = lookup(key);
  if (file->error != 0) {
    fail(w, file->error);
    return;
  }
  struct stat st {};
  if (green::may_block([&] { return ::fstat(file->fd, &st); }) != 0) {
    fail(w, errno);
    return;
  }
  if (S_ISDIR(st.st_mode)) {
    if (!want_dir) {
      // nginx and Go both redirect, so that the directory's relative links resolve inside it.
      std::string location = std::string(prefix) + encode_path(path) + "/";
      if (!r.query().empty()) {
        location += '?';
        location += r.query();
      }
      redirects.fetch_add(1, std::memory_order_relaxed);
      w.set_header("Location", location);
      w.send_status(301);
      return;
    }
    if (!options.index.empty()) {
      const std::string index_path = std::string(path) + options.index;
      FileRef index = lookup(index_path);
      struct stat ist {};
      if (index->error == 0 && green::may_block([&] { return ::fstat(index->fd, &ist); }) == 0 &&
          S_ISREG(ist.st_mode)) {
        serve_file(r, w, index_path, index, ist);
        return;
      }
      if (index->error != 0 && transient(index->error)) {
        fail(w, index->error);
        return;
      }
    }
    if (options.autoindex) {
      list_directory(w, path, prefix, file);
      return;
    }
    fail(w, EACCES);  // a directory without an index: 403, as nginx answers
    return;
  }
  if (!S_ISREG(st.st_mode)) {
    fail(w, ENOENT);  // a FIFO, socket or device: not a file we serve (nginx: 404 too)
    return;
  }
  serve_file(r, w, key, file, st);
}

void FileServer::Impl::serve_file(Request& r, ResponseWriter& w, const std::string& path,
                                  const FileRef& file, const struct stat& st) {
  const FileRef* body = &file;
  struct stat bst = st;
  bool vary = false;
  bool gzipped = false;
  FileRef gz;
  if (options.gzip_static && !iequals(extension(path), "gz")) {
    gz = lookup(path + ".gz", true);
    // Its existence (as of the cached open) is enough for Vary; its current size and mtime
    // only for the client that gets it.
    if (gz->error == 0 && gz->regular) {
      vary = true;
      struct stat gst {};
      if (middleware::accepts_gzip(r) &&
          green::may_block([&] { return ::fstat(gz->fd, &gst); }) == 0 && S_ISREG(gst.st_mode)) {
        body = &gz;
        bst = gst;
        gzipped = true;
      }
    }
  }
  std::string fresh_etag;
  std::string fresh_last_modified;
  const bool cached = (*body)->same_version(bst);
  if (!cached) {  // changed in place since the open: this request's own validators
    fresh_etag = make_etag(bst);
    fresh_last_modified = format_http_date(bst.st_mtim.tv_sec);
  }
  const std::string& etag = cached ? (*body)->etag : fresh_etag;
  const std::string& last_modified = cached ? (*body)->last_modified : fresh_last_modified;
  const std::string_view cache_control_value = cache_control(path);
  auto validators = [&] {
    w.set_header("ETag", etag);
    w.set_header("Last-Modified", last_modified);
    if (!cache_control_value.empty()) w.set_header("Cache-Control", cache_control_value);
    if (vary) w.set_header("Vary", "Accept-Encoding");
  };
  const int64_t mtime = bst.st_mtim.tv_sec;

  // RFC 9110 §13.2.2: If-Match, else If-Unmodified-Since; If-None-Match, else
  // If-Modified-Since; then the range.
  std::string joined_match;
  std::string joined_none_match;
  if (const std::string_view im = list_field(r, "If-Match", &joined_match); !im.empty()) {
    if (!any_etag(im, [&](std::string_view tag, bool weak) {
          return tag == "*" || (!weak && tag == etag);  // strong comparison
        })) {
      precondition_failed.fetch_add(1, std::memory_order_relaxed);
      w.send_status(412);
      return;
    }
  } else if (const std::string_view ius = r.header("If-Unmodified-Since"); !ius.empty()) {
    const int64_t date = parse_http_date(ius);
    if (date >= 0 && mtime > date) {
      precondition_failed.fetch_add(1, std::memory_order_relaxed);
      w.send_status(412);
      return;
    }
  }
  bool not_modified_now = false;
  if (const std::string_view inm = list_field(r, "If-None-Match", &joined_none_match);
      !inm.empty()) {
    not_modified_now = any_etag(inm, [&](std::string_view tag, bool) {
      return tag == "*" || tag == etag;  // weak comparison
    });
  } else if (const std::string_view ims = r.header("If-Modified-Since"); !ims.empty()) {
    const int64_t date = parse_http_date(ims);
    not_modified_now = date >= 0 && mtime <= date;
  }
  if (not_modified_now) {
    not_modified.fetch_add(1, std::memory_order_relaxed);
    w.set_status(304);
    validators();
    return;
  }

  const uint64_t size = static_cast<uint64_t>(bst.st_size);
  RangeResult range;
  if (r.method() == Method::kGet) {
    if (const std::string_view rh = r.header("Range"); !rh.empty()) {
      bool use = true;
      if (const std::string_view ir = r.header("If-Range"); !ir.empty()) {
        if (ir.front() == '"' || ir.starts_with("W/")) {
          use = ir == etag;  // strong comparison: a weak tag never matches
        } else {
          const int64_t date = parse_http_date(ir);
          use = date >= 0 && date == mtime;  // an exact match of Last-Modified
        }
      }
      if (use) range = parse_range(rh, size);
    }
  }
  w.set_content_type(type_for(path));  // FILE's type for FILE.gz too (with Content-Encoding)
  validators();
  w.set_header("Accept-Ranges", "bytes");
  if (gzipped) {
    w.set_header("Content-Encoding", "gzip");
    gzip.fetch_add(1, std::memory_order_relaxed);
  }
  uint64_t offset = 0;
  uint64_t length = size;
  if (range.kind == RangeResult::kUnsatisfiable) {
    unsatisfiable.fetch_add(1, std::memory_order_relaxed);
    w.set_header("Content-Range", "bytes */" + std::to_string(size));
    w.send_status(416);
    return;
  }
  if (range.kind == RangeResult::kOne) {
    offset = range.start;
    length = range.length;
    w.set_status(206);
    w.set_header("Content-Range", "bytes " + std::to_string(offset) + "-" +
                                      std::to_string(offset + length - 1) + "/" +
                                      std::to_string(size));
    partial.fetch_add(1, std::memory_order_relaxed);
  } else {
    w.set_status(200);
    ok.fetch_add(1, std::memory_order_relaxed);
  }
  if (w.send_file((*body)->fd, offset, length) && r.method() == Method::kGet) {
    sendfile_bytes.fetch_add(length, std::memory_order_relaxed);
  }
}

void FileServer::Impl::list_directory(ResponseWriter& w, std::string_view path,
                                      std::string_view prefix, const FileRef& dir) {
  // Bounded: at most kMaxItems entries a page (nginx has no cap, but streams the page), and
  // kMaxListings pages being built or sent at once, beyond which a listing is 503 with
  // Retry-After; the page goes out in 32 KiB pieces. So listings hold at most about
  // kMaxListings x kMaxItems names, whatever clients do (300 stalled clients on a 50,000-file
  // directory took the server to 2.4 GB before these bounds).
  constexpr std::size_t kMaxItems = 10'000;
  constexpr int kMaxListings = 16;
  if (listings_in_flight.fetch_add(1, std::memory_order_acq_rel) >= kMaxListings) {
    listings_in_flight.fetch_sub(1, std::memory_order_acq_rel);
    w.set_header("Retry-After", "1");
    w.send_status(503);
    return;
  }
  struct InFlight {
    std::atomic<int>& n;
    ~InFlight() { n.fetch_sub(1, std::memory_order_acq_rel); }
  } in_flight{listings_in_flight};
  struct Item {
    std::string name;
    bool is_dir;
  };
  std::vector<Item> items;
  bool truncated = false;
  const bool readable = green::may_block([&] {
    // A descriptor of our own: readdir moves the position of the cached one otherwise.
    const int fd = ::openat(dir->fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return false;
    DIR* d = ::fdopendir(fd);
    if (d == nullptr) {
      ::close(fd);
      return false;
    }
    // NOLINTNEXTLINE(concurrency-mt-unsafe): readdir is safe on a DIR* of our own
    while (const dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;  // dotfiles hidden, as nginx's autoindex does
      if (items.size() == kMaxItems) {
        truncated = true;
        break;
      }
      // A symlink is listed as what it is, never followed: its target may be outside the root.
      bool is_dir = e->d_type == DT_DIR;
      if (e->d_type == DT_UNKNOWN) {
        struct stat st {};
        is_dir =
            ::fstatat(::dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode);
      }
      items.push_back({e->d_name, is_dir});
    }
    ::closedir(d);
    return true;
  });
  if (!readable) {
    fail(w, EACCES);
    return;
  }
  std::sort(items.begin(), items.end(), [](const Item& a, const Item& b) {
    return a.is_dir != b.is_dir ? a.is_dir : a.name < b.name;
  });
  listings.fetch_add(1, std::memory_order_relaxed);
  w.set_status(200);
  w.set_content_type("text/html; charset=utf-8");
  const std::string title = escape_html(std::string(prefix) + std::string(path));
  std::string piece = "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of " +
                      title + "</title></head>\n<body><h1>Index of " + title +
                      "</h1><hr><pre><a href=\"../\">../</a>\n";
  constexpr std::size_t kPiece = 32 * 1024;
  for (const Item& item : items) {
    const std::string shown = item.name + (item.is_dir ? "/" : "");
    piece += "<a href=\"" + escape_html(encode_path(shown)) + "\">" + escape_html(shown) + "</a>\n";
    if (piece.size() >= kPiece) {
      w.write(piece);
      piece.clear();
    }
  }
  if (truncated) piece += "(only the first " + std::to_string(kMaxItems) + " entries)\n";
  piece += "</pre><hr></body></html>\n";
  w.write(piece);
}

FileServer::FileServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
FileServer::~FileServer() = default;

std::shared_ptr<FileServer> FileServer::create(const FileServerOptions& options,
                                               std::string* error) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  if (!parse_rules(options.cache_control, &impl->rules, error)) return nullptr;
  impl->types = builtin_types();
  if (!options.mime_types.empty() && !load_mime_types(options.mime_types, &impl->types) &&
      options.mime_types_required) {
    *error = "cannot read MIME types from \"" + options.mime_types + "\"";
    return nullptr;
  }
  impl->root = ::open(options.root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (impl->root < 0) {
    // NOLINTNEXTLINE(concurrency-mt-unsafe): thread-safe in glibc (.clang-tidy)
    *error = "\"" + options.root + "\": " + std::strerror(errno);
    return nullptr;
  }
  impl->cache = std::make_unique<FileCache>(options.cache_entries, options.cache_valid);
  return std::shared_ptr<FileServer>(new FileServer(std::move(impl)));
}

void FileServer::serve(Request& r, ResponseWriter& w, std::string_view path,
                       std::string_view url_prefix) {
  impl_->serve(r, w, path, url_prefix);
}

Handler FileServer::handler(std::string url_prefix) {
  // The route's owner keeps this FileServer alive (a shared_ptr held by the program).
  return [this, prefix = std::move(url_prefix)](Request& r, ResponseWriter& w) {
    serve(r, w, r.param("*"), prefix);
  };
}

std::string_view FileServer::content_type(std::string_view name) const {
  return impl_->type_for(name);
}

FileServer::Stats FileServer::stats() const {
  const Impl& i = *impl_;
  Stats s;
  s.cache_hits = i.hits.load(std::memory_order_relaxed);
  s.cache_misses = i.misses.load(std::memory_order_relaxed);
  s.cache_entries = i.cache->size();
  s.opens = i.opens.load(std::memory_order_relaxed);
  s.sendfile_bytes = i.sendfile_bytes.load(std::memory_order_relaxed);
  s.ok = i.ok.load(std::memory_order_relaxed);
  s.partial = i.partial.load(std::memory_order_relaxed);
  s.not_modified = i.not_modified.load(std::memory_order_relaxed);
  s.precondition_failed = i.precondition_failed.load(std::memory_order_relaxed);
  s.range_not_satisfiable = i.unsatisfiable.load(std::memory_order_relaxed);
  s.not_found = i.not_found.load(std::memory_order_relaxed);
  s.redirects = i.redirects.load(std::memory_order_relaxed);
  s.listings = i.listings.load(std::memory_order_relaxed);
  s.gzip = i.gzip.load(std::memory_order_relaxed);
  return s;
}

}  // namespace green::http
