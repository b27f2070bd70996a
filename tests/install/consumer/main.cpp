// An out-of-tree program built against an installed greenhttp (tests/install/install_test.sh):
// it includes only <green/...> headers and links only greenhttp::http. It listens on
// 127.0.0.1:0, prints "listening on PORT", answers GET /hello/:name, and shuts down
// gracefully on GET /quit.
#include <cstdio>
#include <string>

#include <green/green.h>
#include <green/http/server.h>

int main() {
  int rc = 1;
  green::run({}, [&] {
    green::http::Router router;
    green::http::Server* server_ptr = nullptr;
    router.handle(green::http::Method::kGet, "/hello/:name",
                  [](green::http::Request& r, green::http::ResponseWriter& w) {
                    w.send(200, "text/plain", "hello " + std::string(r.param("name")) + "\n");
                  });
    router.handle(green::http::Method::kGet, "/quit",
                  [&](green::http::Request&, green::http::ResponseWriter& w) {
                    w.send(200, "text/plain", "bye\n");
                    server_ptr->shutdown();
                  });
    green::http::ServerOptions options;
    options.listen = "127.0.0.1:0";
    green::http::Server server(options, router, nullptr);
    server_ptr = &server;
    if (server.listen() != 0) return;
    std::printf("listening on %u\n", server.local_address().port());
    std::fflush(stdout);
    rc = server.serve() == 0 ? 0 : 1;
  });
  return rc;
}
