// middleware::gzip: response compression with zlib (contract in green/http/middleware.h).
//
// The middleware installs a GzipFilter on the writer; the writer asks it, when the head is
// about to go out, whether to encode (BodyFilter::begin), and passes it every body byte after
// that (green/http/response.h). The decision needs the head (status, Content-Type,
// Content-Encoding) and, where known, the length, so it cannot be made earlier; a response the
// filter declines costs one small allocation and a few string compares.
//
// Memory: the deflate state is allocated only for a response that is compressed, in begin(),
// and freed with the filter, which the writer destroys at the end of the response. Its size
// follows the body, as nginx sizes gzip_window and gzip_memlevel to a known Content-Length: a
// 4 KiB body needs a 4 KiB window (about 32 KiB of state instead of 256 KiB).
#include <algorithm>
#include <memory>
#include <string>

#include <zlib.h>

#include "green/http/middleware.h"
#include "server/http_text.h"

namespace green::http::middleware {

namespace {

// RFC 9110 12.4.2 qvalue, in thousandths: "0", "0.5", "1", "1.000". Anything else is -1.
int parse_qvalue(std::string_view v) {
  if (v.empty() || (v[0] != '0' && v[0] != '1')) return -1;
  int q = (v[0] - '0') * 1000;
  if (v.size() == 1) return q;
  if (v[1] != '.' || v.size() > 5) return -1;
  int scale = 100;
  for (char c : v.substr(2)) {
    if (c < '0' || c > '9') return -1;
    q += (c - '0') * scale;
    scale /= 10;
  }
  return q > 1000 ? -1 : q;
}

// Folds one Accept-Encoding field value into the best q seen for gzip and for "*" (-1: not
// listed).
void scan_accept_encoding(std::string_view value, int* gzip_q, int* any_q) {
  while (!value.empty()) {
    const std::size_t comma = value.find(',');
    std::string_view element = value.substr(0, comma);
    value = comma == std::string_view::npos ? std::string_view{} : value.substr(comma + 1);
    const std::size_t semi = element.find(';');
    const std::string_view coding = trim(element.substr(0, semi));
    int q = 1000;
    std::string_view params =
        semi == std::string_view::npos ? std::string_view{} : element.substr(semi + 1);
    while (!params.empty()) {
      const std::size_t next = params.find(';');
      const std::string_view param = trim(params.substr(0, next));
      if (param.size() >= 2 && (param[0] == 'q' || param[0] == 'Q') && param[1] == '=') {
        q = std::max(parse_qvalue(param.substr(2)), 0);  // a malformed q refuses
      }
      params = next == std::string_view::npos ? std::string_view{} : params.substr(next + 1);
    }
    if (iequals(coding, "gzip") || iequals(coding, "x-gzip")) {
      *gzip_q = std::max(*gzip_q, q);
    } else if (coding == "*") {
      *any_q = std::max(*any_q, q);
    }
  }
}

bool request_accepts_gzip(const Request& r) {
  int gzip_q = -1;
  int any_q = -1;
  for (const Header& h : r.headers()) {
    if (iequals(h.name, "Accept-Encoding")) scan_accept_encoding(h.value, &gzip_q, &any_q);
  }
  return gzip_q >= 0 ? gzip_q > 0 : any_q > 0;
}

bool compressible(std::string_view content_type, const GzipOptions& o) {
  std::string_view type = trim(content_type.substr(0, content_type.find(';')));
  if (type.empty()) return false;
  const std::size_t slash = type.find('/');
  if (slash == std::string_view::npos) return false;
  const std::size_t plus = type.rfind('+');
  if (plus != std::string_view::npos && plus > slash) {
    const std::string_view suffix = type.substr(plus);
    if (iequals(suffix, "+json") || iequals(suffix, "+xml")) return true;
  }
  for (const std::string& t : o.types) {
    const std::string_view want = t;
    if (want.size() >= 2 && want.substr(want.size() - 2) == "/*") {
      if (iequals(type.substr(0, slash + 1), want.substr(0, want.size() - 1))) return true;
    } else if (iequals(type, want)) {
      return true;
    }
  }
  return false;
}

class GzipFilter final : public BodyFilter {
 public:
  GzipFilter(std::shared_ptr<const GzipOptions> options, bool accepted)
      : options_(std::move(options)), accepted_(accepted) {}
  ~GzipFilter() override {
    if (initialised_) deflateEnd(&stream_);
  }
  GzipFilter(const GzipFilter&) = delete;
  GzipFilter& operator=(const GzipFilter&) = delete;

  bool begin(ResponseWriter& w, int64_t length) override {
    const int status = w.status();
    // 206: the bytes of a range of the identity form; 204/304/1xx: no body.
    if (w.method() == Method::kHead || status < 200 || status == 204 || status == 206 ||
        status == 304) {
      return false;
    }
    if (w.header("Content-Encoding").data() != nullptr) return false;  // already encoded
    if (!compressible(w.content_type(), *options_)) return false;
    if (length >= 0 && static_cast<uint64_t>(length) < options_->min_length) return false;
    // From here the representation depends on Accept-Encoding, whether this client gets gzip
    // or not: say so to caches.
    const std::string_view vary = w.header("Vary");
    if (vary != "*" && !has_token(vary, "Accept-Encoding")) w.set_header("Vary", "Accept-Encoding");
    if (!accepted_) return false;
    if (!start_deflate(length)) return false;  // out of memory: send it as it is
    w.set_header("Content-Encoding", "gzip");
    // The encoded bytes are another representation: a strong validator would claim they are
    // byte-identical to the identity form, and byte ranges of it are not served (nginx weakens
    // the ETag and drops Accept-Ranges alike).
    const std::string_view etag = w.header("ETag");
    if (!etag.empty() && etag.substr(0, 2) != "W/") {
      const std::string weak = "W/" + std::string(etag);
      w.remove_header("ETag");
      w.set_header("ETag", weak);
    }
    w.remove_header("Accept-Ranges");
    return true;
  }

  std::string_view transform(std::string_view in, Flush flush) override {
    out_.clear();
    if (finished_) return {};
    const int mode = flush == Flush::kNone   ? Z_NO_FLUSH
                     : flush == Flush::kSync ? Z_SYNC_FLUSH
                                             : Z_FINISH;
    stream_.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
    stream_.avail_in = static_cast<uInt>(in.size());
    // zlib holds input back until it has a block's worth, so a Z_NO_FLUSH call often produces
    // nothing (the writer then sends nothing).
    constexpr std::size_t kStep = 64 * 1024;
    int rc = Z_OK;
    do {
      const std::size_t old = out_.size();
      // Room for all of it at once when small (deflateBound: the worst case of this input,
      // wrapper included), so a 2 KiB body does not allocate 64 KiB; a pass at a time else.
      const std::size_t room =
          std::clamp<std::size_t>(deflateBound(&stream_, stream_.avail_in) + 64, 256, kStep);
      out_.resize(old + room);
      stream_.next_out = reinterpret_cast<Bytef*>(out_.data() + old);
      stream_.avail_out = static_cast<uInt>(room);
      rc = deflate(&stream_, mode);
      out_.resize(old + room - stream_.avail_out);
    } while (stream_.avail_out == 0 && rc != Z_STREAM_ERROR);
    if (mode == Z_FINISH) finished_ = true;
    return out_;
  }

 private:
  bool start_deflate(int64_t length) {
    int window_bits = 15;
    if (length >= 0) {
      while (window_bits > 9 && (int64_t{1} << (window_bits - 1)) >= length) --window_bits;
    }
    const int mem_level = std::max(1, window_bits - 7);
    const int level = std::clamp(options_->level, 1, 9);
    // 16 + window bits: a gzip wrapper (header and CRC-32 trailer), not zlib's.
    initialised_ = deflateInit2(&stream_, level, Z_DEFLATED, 16 + window_bits, mem_level,
                                Z_DEFAULT_STRATEGY) == Z_OK;
    return initialised_;
  }

  std::shared_ptr<const GzipOptions> options_;
  bool accepted_;
  bool initialised_ = false;
  bool finished_ = false;
  z_stream stream_{};
  std::string out_;
};

}  // namespace

bool accepts_gzip(const Request& r) { return request_accepts_gzip(r); }

bool accepts_gzip(std::string_view accept_encoding) {
  int gzip_q = -1;
  int any_q = -1;
  scan_accept_encoding(accept_encoding, &gzip_q, &any_q);
  return gzip_q >= 0 ? gzip_q > 0 : any_q > 0;
}

Middleware gzip(GzipOptions options) {
  auto shared = std::make_shared<const GzipOptions>(std::move(options));
  return [shared](Handler next) -> Handler {
    return [shared, next = std::move(next)](Request& r, ResponseWriter& w) {
      // HEAD is never compressed (its Content-Length is the identity one): no filter at all.
      if (r.method() != Method::kHead) {
        w.set_body_filter(std::make_unique<GzipFilter>(shared, request_accepts_gzip(r)));
      }
      next(r, w);
    };
  };
}

}  // namespace green::http::middleware
