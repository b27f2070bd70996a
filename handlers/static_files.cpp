// The files of --static-dir, under --static-prefix (default /static/), through http::FileServer
// (green/http/file_server.h: sendfile, the open-file cache, conditional and range requests,
// index files, precompressed .gz, the symlink policy).
#include "handlers/handlers.h"

namespace green::handlers {

void register_static(http::Router& router, AppState& app) {
  const std::string pattern = app.static_prefix + "*";
  if (!app.files) {
    // No --static-dir: the prefix answers 404, as any unknown path would.
    router.handle(http::Method::kGet, pattern,
                  [](http::Request&, http::ResponseWriter& w) { w.send_status(404); });
    return;
  }
  router.handle(http::Method::kGet, pattern, app.files->handler(app.static_prefix));
}

}  // namespace green::handlers
