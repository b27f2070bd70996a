// TCP listeners and streams on the netpoller. See net.h.
#include "green/net.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>

#include "green/context.h"
#include "green/green.h"
#include "runtime/netpoll.h"

namespace green::net {

using green::detail::PollDesc;
using green::detail::PollMode;

namespace {

// One "no deadline" in two types (see kNoDeadlineNs): the same instant, so no special case.
static_assert(std::is_same_v<Deadline::duration, std::chrono::nanoseconds>);
static_assert(kNoDeadline.time_since_epoch().count() == green::detail::kNoDeadlineNs);

int64_t to_ns(Deadline d) { return d.time_since_epoch().count(); }

// Holds a reference on a descriptor for the duration of one operation.
class OpGuard {
 public:
  OpGuard(PollDesc* pd, uint32_t seq)
      : pd_(pd != nullptr && green::detail::poll_acquire(pd, seq) ? pd : nullptr) {}
  ~OpGuard() {
    if (pd_ != nullptr) green::detail::poll_release(pd_);
  }
  OpGuard(const OpGuard&) = delete;
  OpGuard& operator=(const OpGuard&) = delete;
  explicit operator bool() const { return pd_ != nullptr; }
  int fd() const { return pd_->fd; }

 private:
  PollDesc* pd_;
};

// Registers a non-blocking fd; closes it on failure.
PollDesc* open_desc(int fd, uint32_t* seq, int* err) {
  PollDesc* pd = green::detail::poll_open(fd, err);
  if (pd == nullptr) {
    ::close(fd);
    return nullptr;
  }
  *seq = pd->seq.load(std::memory_order_acquire);
  return pd;
}

void set_nodelay_fd(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

Address sock_name(PollDesc* pd, uint32_t seq, bool peer) {
  OpGuard op(pd, seq);
  if (!op) return {};
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  auto* sa = reinterpret_cast<sockaddr*>(&ss);
  const int rc = peer ? getpeername(op.fd(), sa, &len) : getsockname(op.fd(), sa, &len);
  if (rc != 0) return {};
  return Address::from_sockaddr(sa, len);
}

}  // namespace

// ---- Address ----

std::optional<Address> Address::parse(std::string_view host_port) {
  const std::size_t colon = host_port.rfind(':');
  if (colon == std::string_view::npos) return std::nullopt;
  std::string_view host = host_port.substr(0, colon);
  std::string_view port_text = host_port.substr(colon + 1);
  unsigned port = 0;
  if (port_text.empty()) return std::nullopt;
  auto [end, ec] = std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc() || end != port_text.data() + port_text.size() || port > 65535) {
    return std::nullopt;
  }
  Address a;
  if (!host.empty() && host.front() == '[') {
    if (host.size() < 2 || host.back() != ']') return std::nullopt;
    std::string h(host.substr(1, host.size() - 2));
    auto* sin6 = reinterpret_cast<sockaddr_in6*>(&a.storage_);
    if (inet_pton(AF_INET6, h.c_str(), &sin6->sin6_addr) != 1) return std::nullopt;
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(static_cast<uint16_t>(port));
    a.length_ = sizeof(sockaddr_in6);
    return a;
  }
  std::string h = host.empty() ? "0.0.0.0" : host == "localhost" ? "127.0.0.1" : std::string(host);
  auto* sin = reinterpret_cast<sockaddr_in*>(&a.storage_);
  if (inet_pton(AF_INET, h.c_str(), &sin->sin_addr) != 1) return std::nullopt;
  sin->sin_family = AF_INET;
  sin->sin_port = htons(static_cast<uint16_t>(port));
  a.length_ = sizeof(sockaddr_in);
  return a;
}

Address Address::from_sockaddr(const sockaddr* sa, socklen_t len) {
  Address a;
  len = std::min<socklen_t>(len, sizeof a.storage_);
  std::memcpy(&a.storage_, sa, len);
  a.length_ = len;
  return a;
}

uint16_t Address::port() const {
  if (family() == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&storage_)->sin_port);
  if (family() == AF_INET6) {
    return ntohs(reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_port);
  }
  return 0;
}

std::string Address::host() const {
  char buf[INET6_ADDRSTRLEN] = {};
  if (family() == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&storage_)->sin_addr, buf, sizeof buf);
  } else if (family() == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&storage_)->sin6_addr, buf,
              sizeof buf);
  }
  return buf;
}

std::string Address::to_string() const {
  std::string out;
  if (family() == AF_INET6) {
    out.push_back('[');
    out.append(host());
    out.push_back(']');
  } else if (family() == AF_INET) {
    out.append(host());
  } else {
    return "?";
  }
  out.push_back(':');
  out.append(std::to_string(port()));
  return out;
}

// ---- TcpStream ----

// ---- SocketHandle ----

void SocketHandle::open(PollDesc* pd) {
  pd_ = pd;
  seq_ = pd->seq.load(std::memory_order_acquire);
  closed_.store(false, std::memory_order_relaxed);
}

void SocketHandle::take(SocketHandle& other) noexcept {
  if (this == &other) return;
  close();
  pd_ = std::exchange(other.pd_, nullptr);
  seq_ = other.seq_;
  closed_.store(other.closed_.exchange(false, std::memory_order_relaxed),
                std::memory_order_relaxed);
}

int SocketHandle::fd() const { return is_open() ? pd_->fd : -1; }

void SocketHandle::close() {
  if (pd_ == nullptr || closed_.exchange(true, std::memory_order_relaxed)) return;
  green::detail::poll_close(pd_, seq_);
}

struct TcpStream::Binding {
  Context ctx = Context::background();
  std::function<bool()> stop;  // after_func's; empty when not bound
  bool bound = false;
};

TcpStream::TcpStream() = default;
TcpStream::TcpStream(PollDesc* pd) { open(pd); }
TcpStream::~TcpStream() { unbind_context(); }

TcpStream::TcpStream(TcpStream&& other) noexcept { *this = std::move(other); }

TcpStream& TcpStream::operator=(TcpStream&& other) noexcept {
  if (this != &other) {
    take(other);
    drained_ = std::exchange(other.drained_, false);
    read_deadline_ = std::exchange(other.read_deadline_, kNoDeadline);
    write_deadline_ = std::exchange(other.write_deadline_, kNoDeadline);
    // The hook of a bound context names the descriptor, not the stream object, so the binding
    // moves with the descriptor.
    unbind_context();
    binding_ = std::move(other.binding_);
  }
  return *this;
}

void TcpStream::bind_context(const Context& ctx) {
  unbind_context();
  if (pd_ == nullptr) return;
  if (binding_ == nullptr) binding_ = std::make_unique<Binding>();
  binding_->ctx = ctx;
  binding_->bound = true;
  PollDesc* pd = pd_;
  const uint32_t seq = seq_;
  // As for the per-call overloads: the hook names the descriptor by (pointer, sequence), which
  // are type-stable, so a late hook on a closed or recycled descriptor is a no-op. It wakes both
  // directions: whichever is parked retries, finds EAGAIN, then sees the cancellation.
  binding_->stop = green::after_func(ctx, [pd, seq] {
    green::detail::poll_wake_reader(pd, seq);
    green::detail::poll_wake_writer(pd, seq);
  });
}

void TcpStream::unbind_context() {
  if (binding_ == nullptr || !binding_->bound) return;
  if (binding_->stop) binding_->stop();
  binding_->stop = nullptr;
  binding_->ctx = Context::background();
  binding_->bound = false;
}

bool TcpStream::context_bound() const { return binding_ != nullptr && binding_->bound; }

bool TcpStream::bound_cancelled() const {
  return binding_ != nullptr && binding_->bound && binding_->ctx.cancelled();
}

TcpStream TcpStream::adopt(int fd) {
  const int flags = fcntl(fd, F_GETFL);
  if (flags >= 0 && (flags & O_NONBLOCK) == 0) fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  int err = 0;
  uint32_t seq = 0;
  PollDesc* pd = open_desc(fd, &seq, &err);
  if (pd == nullptr) return {};
  return TcpStream(pd);
}

int TcpStream::connect(const Address& to, TcpStream* out, Deadline deadline) {
  return connect_impl(to, out, deadline, nullptr);
}

int TcpStream::connect(const Address& to, TcpStream* out, const Context& ctx, Deadline deadline) {
  return connect_impl(to, out, deadline, &ctx);
}

int TcpStream::connect_impl(const Address& to, TcpStream* out, Deadline deadline,
                            const Context* ctx) {
  if (ctx != nullptr && ctx->cancelled()) return -ECANCELED;
  const int fd = ::socket(to.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  set_nodelay_fd(fd);
  green::checkpoint();
  // connect(2) before registering with epoll, as Go does: a socket that is not yet connecting
  // reports EPOLLHUP, which would read as the peer having hung up.
  const int rc = ::connect(fd, to.sockaddr_ptr(), to.length());
  if (rc != 0 && errno != EINPROGRESS && errno != EINTR) {
    const int e = errno;
    ::close(fd);
    return -e;
  }
  int err = 0;
  uint32_t seq = 0;
  PollDesc* pd = open_desc(fd, &seq, &err);
  if (pd == nullptr) return err;
  TcpStream s(pd);
  if (rc != 0) {
    OpGuard op(pd, seq);
    if (!op) return -ECANCELED;
    // A cancellation wakes the parked connect as readiness would; the loop then sees it.
    std::function<bool()> stop;
    if (ctx != nullptr) {
      stop = green::after_func(*ctx, [pd, seq] { green::detail::poll_wake_writer(pd, seq); });
    }
    struct StopGuard {
      std::function<bool()>& f;
      ~StopGuard() {
        if (f) f();
      }
    } stop_guard{stop};
    for (;;) {
      if (ctx != nullptr && ctx->cancelled()) return -ECANCELED;
      const int w = green::detail::poll_wait(pd, PollMode::kWrite, to_ns(deadline));
      if (w != 0) return w;
      int so_error = 0;
      socklen_t len = sizeof so_error;
      if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) != 0) return -errno;
      if (so_error == 0) {
        // Readiness may be stale (an unconnected socket reports writable when registered):
        // connected only if there is a peer.
        sockaddr_storage peer{};
        socklen_t plen = sizeof peer;
        if (getpeername(fd, reinterpret_cast<sockaddr*>(&peer), &plen) == 0) break;
        if (errno != ENOTCONN) return -errno;
        continue;
      }
      if (so_error != EINPROGRESS && so_error != EALREADY && so_error != EINTR) return -so_error;
    }
  }
  *out = std::move(s);
  return 0;
}

ssize_t TcpStream::try_read(void* buf, std::size_t n) {
  green::checkpoint();
  OpGuard op(pd_, seq_);
  if (!op) return -ECANCELED;
  for (;;) {
    const ssize_t r = ::read(op.fd(), buf, n);
    if (r >= 0) return r;
    if (errno != EINTR) return -errno;
  }
}

ssize_t TcpStream::read(void* buf, std::size_t n) {
  green::checkpoint();
  OpGuard op(pd_, seq_);
  if (!op) return -ECANCELED;
  if (drained_) {
    // The previous read emptied the socket buffer, so this one would almost surely fail with
    // EAGAIN: wait for readiness first and save that syscall (one in three per request on a
    // keep-alive connection). Safe with edge-triggered epoll: data that arrived after that read
    // raised an event of its own, which either wakes us or left rd_ready set; an end of stream
    // or error is sticky (hup), and poll_wait() returns at once for it.
    drained_ = false;
    if (bound_cancelled()) return -ECANCELED;
    const int w = green::detail::poll_wait(pd_, PollMode::kRead, to_ns(read_deadline_));
    if (w != 0) return w;
  }
  for (;;) {
    const ssize_t r = ::read(op.fd(), buf, n);
    if (r >= 0) {
      drained_ = r > 0 && static_cast<std::size_t>(r) < n;
      return r;
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return -errno;
    // Checked after EAGAIN and before parking: a cancellation from here on wakes the park.
    if (bound_cancelled()) return -ECANCELED;
    const int w = green::detail::poll_wait(pd_, PollMode::kRead, to_ns(read_deadline_));
    if (w != 0) return w;
  }
}

ssize_t TcpStream::readv(const iovec* iov, int iovcnt) {
  green::checkpoint();
  OpGuard op(pd_, seq_);
  if (!op) return -ECANCELED;
  for (;;) {
    const ssize_t r = ::readv(op.fd(), iov, iovcnt);
    if (r >= 0) return r;
    if (errno == EINTR) continue;
    if (errno != EAGAIN) return -errno;
    if (bound_cancelled()) return -ECANCELED;
    const int w = green::detail::poll_wait(pd_, PollMode::kRead, to_ns(read_deadline_));
    if (w != 0) return w;
  }
}

int TcpStream::wait_readable() {
  OpGuard op(pd_, seq_);
  if (!op) return -ECANCELED;
  // This wait consumes the readiness a drained_ read() would wait for: the next read() must
  // try the socket first.
  drained_ = false;
  if (bound_cancelled()) return -ECANCELED;
  return green::detail::poll_wait(pd_, PollMode::kRead, to_ns(read_deadline_));
}

bool TcpStream::peer_gone() const {
  OpGuard op(pd_, seq_);
  if (!op) return true;
  if (pd_->hup.load(std::memory_order_acquire)) return true;
  for (;;) {
    char c;
    const ssize_t r = ::recv(op.fd(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (r > 0) return false;  // data waiting: the peer is (or was) there
    if (r == 0) return true;  // end of stream
    if (errno == EINTR) continue;
    return errno != EAGAIN && errno != EWOULDBLOCK;  // a reset or another error
  }
}

ssize_t TcpStream::write(const void* buf, std::size_t n) {
  iovec iov{const_cast<void*>(buf), n};
  return writev_impl(&iov, 1, nullptr);
}

ssize_t TcpStream::writev(iovec* iov, int iovcnt) { return writev_impl(iov, iovcnt, nullptr); }

ssize_t TcpStream::write(const void* buf, std::size_t n, const Context& ctx) {
  if (ctx.cancelled()) return -ECANCELED;
  green::detail::PollDesc* pd = pd_;
  const uint32_t seq = seq_;
  // The hook only names the descriptor by (pointer, sequence): descriptors are type-stable
  // and a stale sequence makes the wake a no-op, so it is harmless if it runs late.
  std::function<bool()> stop =
      green::after_func(ctx, [pd, seq] { green::detail::poll_wake_writer(pd, seq); });
  iovec iov{const_cast<void*>(buf), n};
  const ssize_t r = writev_impl(&iov, 1, &ctx);
  stop();
  return r;
}

ssize_t TcpStream::read(void* buf, std::size_t n, const Context& ctx) {
  if (ctx.cancelled()) return -ECANCELED;
  green::checkpoint();
  OpGuard op(pd_, seq_);
  if (!op) return -ECANCELED;
  green::detail::PollDesc* pd = pd_;
  const uint32_t seq = seq_;
  std::function<bool()> stop =
      green::after_func(ctx, [pd, seq] { green::detail::poll_wake_reader(pd, seq); });
  drained_ = false;  // this loop always tries the socket first
  ssize_t r;
  for (;;) {
    r = ::read(op.fd(), buf, n);
    if (r >= 0) break;
    if (errno == EINTR) continue;
    if (errno != EAGAIN) {
      r = -errno;
      break;
    }
    // Checked after EAGAIN and before parking: a cancellation from here on wakes the park
    // (or leaves rd_ready set so it does not sleep), and the next round sees it.
    if (ctx.cancelled()) {
      r = -ECANCELED;
      break;
    }
    const int w = green::detail::poll_wait(pd_, PollMode::kRead, to_ns(read_deadline_));
    if (w != 0) {
      r = w;
      break;
    }
  }
  stop();
  return r;
}

ssize_t TcpStream::writev_impl(iovec* iov, int iovcnt, const Context* ctx) {
  green::checkpoint();
  OpGuard op(pd_, seq_);
  if (!op) return -ECANCELED;
  std::size_t total = 0;
  for (int i = 0; i < iovcnt; ++i) total += iov[i].iov_len;
  std::size_t done = 0;
  while (done < total) {
    // sendmsg with MSG_NOSIGNAL, not writev: a peer that has gone must give this call -EPIPE,
    // not kill the process with SIGPIPE. A library cannot count on its program ignoring the
    // signal (nginx and Go's runtime ignore it process-wide; a user's main() may not).
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = static_cast<std::size_t>(std::min(iovcnt, 1024));  // IOV_MAX
    const ssize_t r = ::sendmsg(op.fd(), &msg, MSG_NOSIGNAL);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) return -errno;
      if ((ctx != nullptr && ctx->cancelled()) || bound_cancelled()) return -ECANCELED;
      const int w = green::detail::poll_wait(pd_, PollMode::kWrite, to_ns(write_deadline_));
      if (w != 0) return w;
      continue;
    }
    done += static_cast<std::size_t>(r);
    // Skip what was written.
    std::size_t left = static_cast<std::size_t>(r);
    while (iovcnt > 0 && left >= iov->iov_len) {
      left -= iov->iov_len;
      ++iov;
      --iovcnt;
    }
    if (iovcnt > 0 && left > 0) {
      iov->iov_base = static_cast<char*>(iov->iov_base) + left;
      iov->iov_len -= left;
    }
  }
  return static_cast<ssize_t>(total);
}

ssize_t TcpStream::send_file(std::string_view head, int file_fd, uint64_t offset, std::size_t count,
                             std::chrono::nanoseconds stall_timeout) {
  // After EAGAIN: parks until the socket takes more, re-arming the deadline first when the
  // stall timeout asks for it. 0, or why the call must end.
  auto wait_writable = [&]() -> int {
    if (bound_cancelled()) return -ECANCELED;
    if (stall_timeout.count() > 0) write_deadline_ = deadline_after(stall_timeout);
    return green::detail::poll_wait(pd_, PollMode::kWrite, to_ns(write_deadline_));
  };
  green::checkpoint();
  OpGuard op(pd_, seq_);
  if (!op) return -ECANCELED;
  // The head: MSG_MORE holds it back (like TCP_CORK, for this call) until the file's bytes
  // follow, so a small file and its head leave in one segment.
  while (!head.empty()) {
    const ssize_t r =
        ::send(op.fd(), head.data(), head.size(), MSG_NOSIGNAL | (count != 0 ? MSG_MORE : 0));
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) return -errno;
      if (const int w = wait_writable(); w != 0) return w;
      continue;
    }
    head.remove_prefix(static_cast<std::size_t>(r));
  }
  std::size_t done = 0;
  while (done < count) {
    off_t at = static_cast<off_t>(offset + done);
    // One call moves at most ~2 GiB (the kernel's MAX_RW_COUNT); the loop does the rest.
    const std::size_t want = std::min<std::size_t>(count - done, std::size_t{1} << 30);
    // Patiently: from the page cache sendfile is ~300 us a MiB of kernel work, not a wait;
    // only a call still running after 1 ms (the disk) gives its P away (green.h).
    const ssize_t r =
        green::may_block_patiently([&] { return ::sendfile(op.fd(), file_fd, &at, want); });
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN) return -errno;
      if (const int w = wait_writable(); w != 0) return w;
      continue;
    }
    if (r == 0) break;  // the file ended before `count`: it shrank under us
    done += static_cast<std::size_t>(r);
  }
  return static_cast<ssize_t>(done);
}

void TcpStream::on_hangup(std::function<void()> fn) {
  if (pd_ == nullptr) return;
  green::detail::poll_on_hangup(pd_, seq_, std::move(fn));
}

void TcpStream::clear_hangup() {
  if (pd_ == nullptr) return;
  green::detail::poll_clear_hangup(pd_, seq_);
}

void TcpStream::wake_reader() {
  // pd_ and seq_ never change while the stream is shared (see SocketHandle); a stale or
  // recycled descriptor fails poll_acquire's sequence check.
  if (!is_open()) return;
  green::detail::poll_wake_reader(pd_, seq_);
}

int TcpStream::shutdown(int how) {
  OpGuard op(pd_, seq_);
  if (!op) return -ECANCELED;
  return ::shutdown(op.fd(), how) == 0 ? 0 : -errno;
}

void TcpStream::set_linger_zero() {
  OpGuard op(pd_, seq_);
  if (!op) return;
  linger l{1, 0};
  setsockopt(op.fd(), SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

int TcpStream::set_nodelay(bool on) {
  OpGuard op(pd_, seq_);
  if (!op) return -ECANCELED;
  int v = on ? 1 : 0;
  return setsockopt(op.fd(), IPPROTO_TCP, TCP_NODELAY, &v, sizeof v) == 0 ? 0 : -errno;
}

Address TcpStream::local_address() const { return sock_name(pd_, seq_, false); }
Address TcpStream::peer_address() const { return sock_name(pd_, seq_, true); }

// ---- TcpListener ----

int TcpListener::listen(const Address& at, TcpListener* out, const ListenOptions& options) {
  const int fd = ::socket(at.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (options.reuse_port && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
    const int e = errno;
    ::close(fd);
    return -e;
  }
  if (at.family() == AF_INET6) {
    int v6only = options.ipv6_only ? 1 : 0;
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
  }
  if (::bind(fd, at.sockaddr_ptr(), at.length()) != 0 || ::listen(fd, options.backlog) != 0) {
    const int e = errno;
    ::close(fd);
    return -e;
  }
  int err = 0;
  uint32_t seq = 0;
  PollDesc* pd = open_desc(fd, &seq, &err);
  if (pd == nullptr) return err;
  (void)seq;
  out->close();
  out->open(pd);
  return 0;
}

int TcpListener::accept(TcpStream* out, Address* peer, Deadline deadline) {
  green::checkpoint();
  OpGuard op(pd_, seq_);
  if (!op) return -ECANCELED;
  for (;;) {
    sockaddr_storage ss{};
    socklen_t len = sizeof ss;
    const int fd =
        ::accept4(op.fd(), reinterpret_cast<sockaddr*>(&ss), &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      set_nodelay_fd(fd);
      int err = 0;
      uint32_t seq = 0;
      PollDesc* pd = open_desc(fd, &seq, &err);
      if (pd == nullptr) return err;
      *out = TcpStream(pd);
      if (peer != nullptr) *peer = Address::from_sockaddr(reinterpret_cast<sockaddr*>(&ss), len);
      return 0;
    }
    const int e = errno;
    if (e == EINTR || e == ECONNABORTED) continue;
    if (e != EAGAIN) return -e;
    const int w = green::detail::poll_wait(pd_, PollMode::kRead, to_ns(deadline));
    if (w != 0) return w;
  }
}

Address TcpListener::local_address() const { return sock_name(pd_, seq_, false); }

NetpollStats netpoll_stats() {
  auto& c = green::detail::netpoll_counters;
  NetpollStats s;
  s.polls = c.polls.load(std::memory_order_relaxed);
  s.wakeups = c.wakeups.load(std::memory_order_relaxed);
  s.open_descriptors =
      static_cast<uint64_t>(std::max<int64_t>(0, c.open.load(std::memory_order_relaxed)));
  return s;
}

}  // namespace green::net
