// The smallest greenhttp server: one route; Ctrl-C drains and exits. Run: hello [HOST:PORT]
#include "green/green.h"
#include "green/http/server.h"

using namespace green::http;

int main(int argc, char** argv) {
  const char* address = argc > 1 ? argv[1] : "127.0.0.1:8080";
  int rc = 0;
  green::run({}, [&] {  // starts the runtime; this lambda is its first green thread
    Router router;
    // Every connection gets its own green thread; handlers run on it and may park freely.
    router.handle(Method::kGet, "/", [](Request&, ResponseWriter& w) {
      w.send(200, "text/plain", "Hello, World!\n");
    });
    rc = listen_and_serve(address, router);  // serves until SIGINT/SIGTERM, then drains
  });
  return rc == 0 ? 0 : 1;
}
