// A chat room over Server-Sent Events: GET /events listens, POST /send talks, GET /stats counts.
//
//   POST /send ──> inbox (Channel, 64) ──> broadcaster ──> one Channel (16) per subscriber
//                                           green thread    ──> its GET /events green thread
//                                                               ──> its socket
//
// Every connection has its own green thread (the library's design), so a subscriber's
// GET /events handler simply runs for as long as the subscription lasts: it parks on its own
// channel and writes each message as an event. Parked, it costs a few KiB, not an OS thread.
// One more green thread, the broadcaster, takes the messages POSTed to /send from the inbox and
// fans each out to every subscriber's channel.
//
// A slow subscriber must not hold up the room, nor make the server buffer without bound: the
// broadcaster never waits for a subscriber (try_send), and a subscriber whose channel is full
// (16 messages behind) is DISCONNECTED, not silently skipped: its channel is closed, its
// handler ends the response, and a browser's EventSource reconnects. A subscriber thus holds
// at most 16 messages of at most 1000 bytes, plus its socket buffers.
//
// A subscriber that goes away leaves the room at once: its request context is cancelled when
// the netpoller sees the hang-up.
//
// Run: chat [HOST:PORT]    Listen: curl -N 127.0.0.1:8080/events
//                           Talk:   curl -d 'hello' 127.0.0.1:8080/send
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "green/channel.h"
#include "green/context.h"
#include "green/green.h"
#include "green/http/server.h"
#include "green/http/sse.h"
#include "green/select.h"
#include "green/sync.h"

using namespace green::http;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kMaxMessageBytes = 1000;
constexpr std::size_t kSubscriberQueue = 16;  // messages a subscriber may fall behind

// One message, shared by every subscriber's queue: fanned out as one allocation, not N copies.
using Message = std::shared_ptr<const std::string>;
using Queue = green::Channel<Message>;

// Who is listening. Shared by every connection's green thread (they run on several OS threads
// at once), so guarded by a green::Mutex: a std::mutex would block the whole OS thread, and the
// P it runs green threads on, while it waits.
class Room {
 public:
  struct Subscription {
    uint64_t id;
    std::shared_ptr<Queue> queue;  // shared: the broadcaster may still hold it as we leave
  };

  Subscription join() {
    std::lock_guard lock(mutex_);
    Subscription s{next_id_++, std::make_shared<Queue>(kSubscriberQueue)};
    subscribers_.emplace(s.id, s.queue);
    return s;
  }

  void leave(uint64_t id) {
    std::lock_guard lock(mutex_);
    subscribers_.erase(id);
  }

  // Never parks on a subscriber: a full queue means that subscriber is too slow (see the top).
  void broadcast(const Message& message) {
    std::lock_guard lock(mutex_);
    for (auto it = subscribers_.begin(); it != subscribers_.end();) {
      if (it->second->try_send(message) == green::ChanStatus::kWouldBlock) {
        it->second->close();  // its handler sees the end of its queue and hangs up
        it = subscribers_.erase(it);
        ++slow_disconnected_;
      } else {
        ++it;
      }
    }
  }

  std::string stats() {
    std::lock_guard lock(mutex_);
    return "{\"subscribers\":" + std::to_string(subscribers_.size()) +
           ",\"slow_disconnected\":" + std::to_string(slow_disconnected_) + "}\n";
  }

 private:
  green::Mutex mutex_;
  std::map<uint64_t, std::shared_ptr<Queue>> subscribers_;  // guarded by mutex_
  uint64_t next_id_ = 1;                                    // guarded by mutex_
  uint64_t slow_disconnected_ = 0;                          // guarded by mutex_
};

// GET /events: this connection's green thread becomes a subscriber until the client leaves.
void subscribe(Room& room, Request& r, ResponseWriter& w) {
  const Room::Subscription me = room.join();
  // text/event-stream, head sent; then an SSE comment, flushed: the client knows it is in the room.
  green::http::EventStream es(w);
  bool open = es.comment("joined");
  while (open) {
    std::optional<Message> message;
    bool queue_closed = false;
    // Park until a message comes or the request's context ends: the client disconnected (the
    // netpoller saw the hang-up) or the server is draining. No polling.
    bool gone = false;
    auto on_message = [&](std::optional<Message> m) {
      queue_closed = !m;  // nullopt: the room closed our queue
      message = std::move(m);
    };
    green::select(green::recv_case(*me.queue, on_message),
                  green::done_case(r.context(), [&] { gone = true; }));
    if (gone) break;
    if (queue_closed) break;  // the room dropped us: we were too slow
    // One event ("data:" line, blank line), flushed: parks while the client's socket is full.
    open = es.send(**message);
  }
  room.leave(me.id);
}

// POST /send: one line of text, queued for the broadcaster.
void post_message(green::Channel<Message>& inbox, Request& r, ResponseWriter& w) {
  // nullopt: the body failed to arrive; the server answers that itself (413, 408, ...).
  const std::optional<std::string_view> body = r.body().read_all();
  if (!body) return;
  const std::string_view text = *body;
  if (text.empty() || text.size() > kMaxMessageBytes) {
    return w.send(400, "text/plain", "a message is 1 to 1000 bytes\n");
  }
  // A line break would end the "data:" line and let a sender forge events of its own.
  if (text.find_first_of("\r\n") != std::string_view::npos) {
    return w.send(400, "text/plain", "a message is one line\n");
  }
  // Copied: r's memory is the connection's, valid only until this handler returns. send()
  // parks while the inbox is full, which slows down senders, not listeners.
  if (!inbox.send(std::make_shared<const std::string>(text))) return w.send_status(503);
  w.set_status(202);
}

}  // namespace

int main(int argc, char** argv) {
  ServerOptions options;
  options.listen = argc > 1 ? argv[1] : "127.0.0.1:8080";
  // Subscribers never finish a response on their own: on SIGTERM the drain waits this long,
  // then cancels their request contexts (their loops end) and the process exits.
  options.shutdown_timeout = 2s;
  int rc = 0;
  green::run({}, [&] {
    Room room;
    green::Channel<Message> inbox(64);
    green::WaitGroup broadcaster_done;
    broadcaster_done.add(1);
    green::go([&] {  // the broadcaster: until the inbox is closed
      while (std::optional<Message> message = inbox.recv()) room.broadcast(*message);
      broadcaster_done.done();
    });

    Router router;
    router.handle(Method::kGet, "/events",
                  [&](Request& r, ResponseWriter& w) { subscribe(room, r, w); });
    router.handle(Method::kPost, "/send",
                  [&](Request& r, ResponseWriter& w) { post_message(inbox, r, w); });
    router.handle(Method::kGet, "/stats", [&](Request&, ResponseWriter& w) {
      w.send(200, "application/json", room.stats());
    });
    rc = listen_and_serve(options, router);
    inbox.close();
    broadcaster_done.wait();  // it uses `room` and `inbox`: they must outlive it
  });
  return rc == 0 ? 0 : 1;
}
