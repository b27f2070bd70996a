// A small JSON API: an in-memory todo list with path parameters and request validation.
//
//   GET    /items        200 [{"id":1,"title":"milk","done":false}, ...]
//   POST   /items        {"title":"milk","done":false} ("done" optional) -> 201 + Location
//   GET    /items/:id    200 {"id":1,...}, or 404
//   DELETE /items/:id    204, or 404
//
// Every error the handlers give is JSON, {"error":"..."}: 400 for a body that is not JSON, not
// an object, misses "title" or has a field of the wrong type, or for an id that is not a
// positive integer; 404 for an id that does not exist. Two more come from the library before
// any handler runs: the router answers 405 with an Allow header (PUT /items), and the server
// answers 413 to a body over max_body_bytes (64 KiB here).
//
// Run: rest [HOST:PORT]    Try: curl -d '{"title":"milk"}' 127.0.0.1:8080/items
#include <charconv>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "green/green.h"
#include "green/http/server.h"
#include "green/sync.h"

using namespace green::http;
using json = nlohmann::json;

namespace {

constexpr std::size_t kMaxItems = 10'000;  // a client that POSTs forever gets 503, not all RAM
constexpr std::size_t kMaxTitleBytes = 200;

struct Item {
  int64_t id = 0;
  std::string title;
  bool done = false;
};

json to_json(const Item& item) {
  return {{"id", item.id}, {"title", item.title}, {"done", item.done}};
}

// The items, shared by every connection. Each connection is served by its own green thread,
// and green threads run on several OS threads at once, so the map needs a lock.
//
// green::Mutex, not std::mutex: a green thread that waits for a std::mutex blocks its whole OS
// thread, and with it the P (logical processor) that thread runs green threads for, so every
// green thread queued on that P waits too. Worse, a holder that parks (on a socket, say) while
// every OS thread blocks on the lock would never be run again to release it. green::Mutex
// parks only the waiting green thread; its OS thread goes on running the others.
class Store {
 public:
  std::vector<Item> list() {
    std::lock_guard lock(mutex_);
    std::vector<Item> out;
    for (const auto& [id, item] : items_) out.push_back(item);
    return out;  // a copy: the lock is not held while the response is written
  }
  std::optional<Item> get(int64_t id) {
    std::lock_guard lock(mutex_);
    auto it = items_.find(id);
    if (it == items_.end()) return std::nullopt;
    return it->second;
  }
  // nullopt when the store is full.
  std::optional<Item> add(std::string title, bool done) {
    std::lock_guard lock(mutex_);
    if (items_.size() >= kMaxItems) return std::nullopt;
    Item item{next_id_++, std::move(title), done};
    items_.emplace(item.id, item);
    return item;
  }
  bool remove(int64_t id) {
    std::lock_guard lock(mutex_);
    return items_.erase(id) > 0;
  }

 private:
  green::Mutex mutex_;
  std::map<int64_t, Item> items_;  // guarded by mutex_
  int64_t next_id_ = 1;            // guarded by mutex_
};

void send_json(ResponseWriter& w, int status, const json& body) {
  // error_handler_t::replace: dump() never throws, whatever bytes a string holds.
  w.send(status, "application/json",
         body.dump(-1, ' ', false, json::error_handler_t::replace) + "\n");
}

void send_error(ResponseWriter& w, int status, std::string_view message) {
  send_json(w, status, {{"error", message}});
}

// The ":id" path parameter as a positive integer; answers 400 and returns nullopt otherwise.
std::optional<int64_t> item_id(const Request& r, ResponseWriter& w) {
  const std::string_view text = r.param("id");
  int64_t id = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc() || end != text.data() + text.size() || id <= 0) {
    send_error(w, 400, "id must be a positive integer");
    return std::nullopt;
  }
  return id;
}

void create_item(Store& store, Request& r, ResponseWriter& w) {
  // The whole body, under max_body_bytes. nullopt: it failed to arrive (too large, too slow,
  // the client left), and the server answers that itself (413, 408, ...): just return.
  const std::optional<std::string_view> body = r.body().read_all();
  if (!body) return;
  // allow_exceptions = false: bad JSON gives a "discarded" value instead of throwing.
  const json in = json::parse(*body, nullptr, /*allow_exceptions=*/false);
  if (in.is_discarded()) return send_error(w, 400, "body is not valid JSON");
  if (!in.is_object()) return send_error(w, 400, "body must be a JSON object");
  const auto title = in.find("title");
  if (title == in.end()) return send_error(w, 400, "missing field: title");
  if (!title->is_string()) return send_error(w, 400, "title must be a string");
  const std::string& text = title->get_ref<const std::string&>();
  if (text.empty() || text.size() > kMaxTitleBytes) {
    return send_error(w, 400, "title must be 1 to 200 bytes long");
  }
  bool done = false;
  if (const auto d = in.find("done"); d != in.end()) {
    if (!d->is_boolean()) return send_error(w, 400, "done must be a boolean");
    done = d->get<bool>();
  }
  const std::optional<Item> item = store.add(text, done);
  if (!item) return send_error(w, 503, "the store is full");
  w.set_header("Location", "/items/" + std::to_string(item->id));
  send_json(w, 201, to_json(*item));
}

}  // namespace

int main(int argc, char** argv) {
  ServerOptions options;
  options.listen = argc > 1 ? argv[1] : "127.0.0.1:8080";
  options.limits.max_body_bytes = 64 * 1024;  // a larger body: 413 before any handler runs
  int rc = 0;
  green::run({}, [&] {
    Store store;  // lives until listen_and_serve has drained every connection
    Router router;
    router.handle(Method::kGet, "/items", [&](Request&, ResponseWriter& w) {
      json out = json::array();
      for (const Item& item : store.list()) out.push_back(to_json(item));
      send_json(w, 200, out);
    });
    router.handle(Method::kPost, "/items",
                  [&](Request& r, ResponseWriter& w) { create_item(store, r, w); });
    router.handle(Method::kGet, "/items/:id", [&](Request& r, ResponseWriter& w) {
      const std::optional<int64_t> id = item_id(r, w);
      if (!id) return;
      const std::optional<Item> item = store.get(*id);
      if (!item) return send_error(w, 404, "no such item");
      send_json(w, 200, to_json(*item));
    });
    router.handle(Method::kDelete, "/items/:id", [&](Request& r, ResponseWriter& w) {
      const std::optional<int64_t> id = item_id(r, w);
      if (!id) return;
      if (!store.remove(*id)) return send_error(w, 404, "no such item");
      w.set_status(204);
    });
    rc = listen_and_serve(options, router);
  });
  return rc == 0 ? 0 : 1;
}
