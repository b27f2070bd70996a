#include "green/http/server.h"

#include <fcntl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "green/green.h"
#include "green/http/response.h"
#include "green/sync.h"
#include "server/connection.h"
#include "server/handler_exception.h"
#include "server/server_state.h"

namespace green::http {

namespace {
using Clock = std::chrono::steady_clock;

// Descriptors kept back from the connection cap for the listener, log files, static files.
constexpr int64_t kReservedDescriptors = 64;

int64_t default_max_connections(int64_t reserved) {
  rlimit r{};
  if (getrlimit(RLIMIT_NOFILE, &r) != 0 || r.rlim_cur == RLIM_INFINITY) return 1'000'000;
  const int64_t n = static_cast<int64_t>(r.rlim_cur) - kReservedDescriptors - reserved;
  return n > 16 ? n : 16;
}
}  // namespace

Server::Server(ServerOptions options, const Router& router, AccessLog* access_log)
    : options_(std::move(options)),
      router_(router),
      access_log_(access_log),
      state_(std::make_unique<ServerState>(options_.limits, options_.max_buffered_body_bytes)) {
  state_->shutdown_done.add(1);  // done by the first shutdown(); serve() waits for it
  max_connections_ = options_.max_connections > 0
                         ? options_.max_connections
                         : default_max_connections(options_.reserved_descriptors);
  spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
}

Server::~Server() {
  listener_.close();
  tls_listener_.close();
  state_->base.second();  // handlers that honour their request's context end
  wait_for_connections(Clock::time_point::max());
  if (spare_fd_ >= 0) ::close(spare_fd_);
}

bool Server::wait_for_connections(Clock::time_point until) {
  // Each connection's decrement of the count is its last touch of *this (see serve()).
  // Acquire: pairs with run_connection's release decrement.
  while (metrics_.open_connections.load(std::memory_order_acquire) > 0) {
    if (Clock::now() >= until) return false;
    green::sleep_for(std::chrono::milliseconds(5));
  }
  return true;
}

int Server::listen() {
  net::ListenOptions lo;
  lo.reuse_port = options_.reuse_port;
  if (options_.listen.empty() && options_.listen_tls.empty()) return -EINVAL;
  if (!options_.listen.empty()) {
    std::optional<net::Address> at = net::Address::parse(options_.listen);
    if (!at) return -EINVAL;
    if (const int rc = net::TcpListener::listen(*at, &listener_, lo); rc != 0) return rc;
  }
  if (!options_.listen_tls.empty()) {
    std::optional<net::Address> at = net::Address::parse(options_.listen_tls);
    int rc = at && options_.tls ? 0 : -EINVAL;
    if (rc == 0) rc = net::TcpListener::listen(*at, &tls_listener_, lo);
    if (rc != 0) {
      listener_.close();
      return rc;
    }
  }
  ready_.store(true, std::memory_order_relaxed);  // a health flag, read relaxed
  return 0;
}

net::Address Server::tls_local_address() const {
  return tls_listener_.is_open() ? tls_listener_.local_address() : net::Address();
}

void Server::reject(net::TcpStream& stream, bool tls) {
  // Over the cap: a short answer the client can act on (retry elsewhere), then close. The
  // socket is fresh, so the write goes straight into its empty send buffer. A TLS client
  // cannot read a plain answer, and a handshake costs what the cap is there to save: it is
  // only closed (nginx drops connections over worker_connections without a word, too).
  metrics_.rejected_connections.fetch_add(1, std::memory_order_relaxed);
  if (tls) {
    stream.close();
    return;
  }
  ByteBuffer out;
  append_error_response(out, 503, "Service Unavailable: too many open connections",
                        kRetryAfterLine);
  stream.set_write_deadline(Clock::now() + std::chrono::milliseconds(100));
  stream.write(out.data(), out.size());
  stream.shutdown(SHUT_WR);
  stream.close();
}

void Server::accept_loop(net::TcpListener& listener, bool tls) {
  auto backoff = std::chrono::milliseconds(5);
  for (;;) {
    net::TcpStream stream;
    net::Address peer;
    const int rc = listener.accept(&stream, &peer);
    if (rc == -ECANCELED) break;  // shutdown closed the listener
    // A spare lost to another thread's open (below) is taken back once a descriptor is free.
    if ((rc == -EMFILE || rc == -ENFILE) && spare_fd_ < 0) {
      spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
    }
    if ((rc == -EMFILE || rc == -ENFILE) && spare_fd_ >= 0) {
      // Out of descriptors with clients waiting in the backlog: give the spare descriptor up,
      // take one client and answer it 503 (rather than leave it unanswered until it gives up),
      // then take the spare back (libev's and libuv's EMFILE trick). Best effort: another
      // thread may take the freed descriptor first, and then the backoff below applies. The
      // client is accepted raw, never registered with the netpoller: a TcpStream's close is
      // deferred while the netpoller holds its descriptor (runtime/netpoll.h), and the spare's
      // reopen then failed and left every later client unanswered (the flake of
      // Endpoints.OutOfDescriptorsIs503AndTheServerRecovers).
      ::close(spare_fd_);
      spare_fd_ = -1;
      const int refused = ::accept4(listener.fd(), nullptr, nullptr, SOCK_CLOEXEC);
      if (refused >= 0) {
        metrics_.rejected_connections.fetch_add(1, std::memory_order_relaxed);
        if (!tls) {
          ByteBuffer out;
          append_error_response(out, 503, "Service Unavailable: too many open connections",
                                kRetryAfterLine);
          (void)::send(refused, out.data(), out.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
          ::shutdown(refused, SHUT_WR);
        }
        ::close(refused);
      }
      spare_fd_ = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
      green::sleep_for(std::chrono::milliseconds(1));  // let connections go away meanwhile
      continue;
    }
    if (rc == -EMFILE || rc == -ENFILE || rc == -ENOBUFS || rc == -ENOMEM) {
      // Out of descriptors or memory: wait for connections to go away, as Go's Accept loop
      // does, instead of spinning on the error.
      green::sleep_for(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(1000));
      continue;
    }
    if (rc != 0) continue;  // ECONNABORTED and friends: that one client's problem
    backoff = std::chrono::milliseconds(5);
    admit(std::move(stream), peer, tls);
  }
}

std::size_t Server::serve() {
  serving_.store(true, std::memory_order_seq_cst);  // paired with shutdown(): see there
  state_->reclaimer.start();
  // One accept loop per listener; with both, the HTTPS one in a green thread of its own.
  green::WaitGroup tls_loop;
  if (listener_.is_open() && tls_listener_.is_open()) {
    tls_loop.add(1);
    green::go([this, &tls_loop] {
      accept_loop(tls_listener_, true);
      tls_loop.done();
    });
  }
  if (listener_.is_open()) {
    accept_loop(listener_, false);
  } else if (tls_listener_.is_open()) {
    accept_loop(tls_listener_, true);
  }
  tls_loop.wait();

  // shutdown() may still be running on another thread: the Server must outlive it, so wait
  // before draining (and before the caller can destroy us).
  state_->shutdown_done.wait();

  // The drain begins only now, when the listening socket is closed for good: the accept that
  // just returned was the last user of its descriptor, and closing is deferred until the last
  // user is gone (runtime/netpoll.h). Had responses said Connection: close any earlier, their
  // clients could reconnect into the accept queue of a socket about to close, and be reset.
  start_drain();

  // Drain: in-flight requests finish (their connections close after answering), idle
  // connections were woken above to answer what had arrived and close; whatever is left at the
  // deadline is cut off.
  // The forced close comes a little before the deadline (a quarter of it, at most a second),
  // so that the green threads that see it have ended by the deadline itself: shutdown_timeout
  // bounds the whole drain, as Go's Shutdown(ctx) deadline does.
  const Clock::time_point deadline = Clock::now() + options_.shutdown_timeout;
  const Clock::time_point force_at =
      deadline -
      std::min<std::chrono::nanoseconds>(std::chrono::seconds(1), options_.shutdown_timeout / 4);
  // The count is read with acquire (pairs with run_connection's release decrement): when it
  // reaches zero, the Server may go away.
  while (metrics_.open_connections.load(std::memory_order_acquire) > 0 && Clock::now() < force_at) {
    stop_connections(false);  // cheap, and a safety net: connections see the drain themselves
    green::sleep_for(std::chrono::milliseconds(10));
  }
  if (metrics_.open_connections.load(std::memory_order_acquire) > 0) {
    // Every request still in flight has its context cancelled (Request::context()): handlers
    // that honour it end now and may still answer (with Connection: close) in the first half
    // of what is left; then the rest are cut off from their sockets.
    state_->base.second();
    const Clock::time_point grace_end = force_at + (deadline - force_at) / 2;
    while (metrics_.open_connections.load(std::memory_order_acquire) > 0 &&
           Clock::now() < grace_end) {
      stop_connections(false);
      green::sleep_for(std::chrono::milliseconds(5));
    }
  }
  if (metrics_.open_connections.load(std::memory_order_acquire) > 0) {
    stop_connections(true);
    wait_for_connections(deadline);
  }
  state_->reclaimer.stop();
  return static_cast<std::size_t>(
      std::max<int64_t>(0, metrics_.open_connections.load(std::memory_order_acquire)));
}

void Server::run_connection(net::TcpStream stream, const net::Address& peer, bool tls) {
  {
    Connection c(*this, std::move(stream), peer, tls);
    c.run();
  }
  // The last touch of *this. Release: the drain and ~Server read this count and then the
  // Server (its buffer pool) may be destroyed, so everything this connection did must
  // happen-before that read.
  metrics_.open_connections.fetch_sub(1, std::memory_order_release);
}

bool Server::count_in(net::TcpStream& stream, bool tls) {
  metrics_.accepted_connections.fetch_add(1, std::memory_order_relaxed);
  if (metrics_.open_connections.load(std::memory_order_relaxed) >= max_connections_) {
    reject(stream, tls);
    return false;
  }
  metrics_.open_connections.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void Server::admit(net::TcpStream stream, const net::Address& peer, bool tls) {
  if (!count_in(stream, tls)) return;
  green::go([this, s = std::move(stream), peer, tls]() mutable {
    run_connection(std::move(s), peer, tls);
  });
}

void Server::serve_connection(net::TcpStream stream, const net::Address& peer) {
  if (!stream.is_open()) return;
  if (draining()) {
    stream.close();
    return;
  }
  // The same admission as serve()'s accept loop: counted before the connection registers, so
  // a drain that starts now waits for it (and wakes it to close itself).
  if (count_in(stream, false)) run_connection(std::move(stream), peer, false);
}

void Server::shutdown() {
  // acq_rel: only one caller goes on; nothing else rides on the flag.
  if (shutting_down_.exchange(true, std::memory_order_acq_rel)) return;
  ready_.store(false, std::memory_order_relaxed);
  // Connections the kernel has completed but nobody accepted yet may hold a request already:
  // closing the listener resets them (Go's Shutdown and nginx close it at once, and do).
  // Accept what is queued first, without waiting (a deadline of now), then close. The drain
  // (and its Connection: close responses, which send clients off to reconnect) starts in
  // serve() once the socket is really closed, so only a new client's handshake that completes
  // in the moment between the last accept and the close is still refused with a reset.
  accept_queued(listener_, false);
  accept_queued(tls_listener_, true);
  listener_.close();  // serve()'s accept returns, and serve() starts the drain
  tls_listener_.close();
  // Without serve() (no accept holds the descriptor, so it is closed already), or should it
  // have started just now: start it here. Twice is harmless. seq_cst, kept: serve() stores
  // serving_ and then accepts (finding the listener closed starts the drain); we close the
  // listener and then read serving_. Either side starting the drain is enough, and the
  // listener's close is ordered by netpoll's locks, not by atomics, so the strongest order
  // costs nothing here (once per shutdown).
  if (!serving_.load(std::memory_order_seq_cst)) start_drain();
  state_->shutdown_done.done();
}

void Server::accept_queued(net::TcpListener& listener, bool tls) {
  if (!listener.is_open()) return;
  for (;;) {
    net::TcpStream stream;
    net::Address peer;
    if (listener.accept(&stream, &peer, Clock::now()) != 0) break;  // -ETIMEDOUT: empty
    admit(std::move(stream), peer, tls);
  }
}

void Server::start_drain() {
  // seq_cst: paired with Connection::wait_for_request (see Connection::stop()).
  draining_.store(true, std::memory_order_seq_cst);
  stop_connections(false);
}

void Server::register_connection(Connection* c) {
  green::MutexGuard guard(state_->registry_lock);
  c->next_ = state_->registry_head;
  if (state_->registry_head != nullptr) state_->registry_head->prev_ = c;
  state_->registry_head = c;
}

void Server::unregister_connection(Connection* c) {
  green::MutexGuard guard(state_->registry_lock);
  if (c->prev_ != nullptr) c->prev_->next_ = c->next_;
  if (c->next_ != nullptr) c->next_->prev_ = c->prev_;
  if (state_->registry_head == c) state_->registry_head = c->next_;
  c->prev_ = c->next_ = nullptr;
}

void Server::stop_connections(bool force) {
  green::MutexGuard guard(state_->registry_lock);
  for (Connection* c = state_->registry_head; c != nullptr; c = c->next_) c->stop(force);
}

bool Server::dispatch(Request& r, ResponseWriter& w) const {
  bool failed = false;
  if (r.path() == "*") {
    // OPTIONS * (the only method the parser lets use the asterisk form, RFC 9112 3.2.4) asks
    // about the server, not a resource: 200 with an empty body, as Go's globalOptionsHandler.
    w.set_status(200);
  } else if (const Router::Match m = router_.route(r); m.handler != nullptr) {
    // A handler's exception is that request's 500 (and the connection's end: its state is
    // unknown), not the process's end, and one log line (here, unless a
    // middleware::recover() inside caught it first): the default recovery, as Go's net/http
    // recovers and logs a handler's panic per connection (Go then sends nothing; we answer
    // 500 when the head has not gone out, and truncate the response when it has).
    try {
      (*m.handler)(r, w);
    } catch (...) {
      log_handler_exception(r);
      failed = true;
    }
  } else {
    if (m.status == 405) w.set_header("Allow", m.allow);
    w.send_status(m.status);
  }
  return failed;
}

}  // namespace green::http

namespace green::http {

ServerMemoryStats Server::memory_stats() const {
  ServerMemoryStats m;
  m.pooled_buffer_sets = state_->pool.idle_sets();
  m.buffered_body_bytes = state_->body_budget.in_use();
  m.buffered_body_limit = state_->body_budget.limit();
  m.body_budget_rejections = state_->body_budget.rejections();
  m.malloc_trims = state_->reclaimer.malloc_trims();
  return m;
}

}  // namespace green::http
