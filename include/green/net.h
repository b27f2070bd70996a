// greenrt's sockets: TCP listeners and streams whose operations park the calling green thread
// (never its OS thread) when the socket would block, as Go's net package does.
//
// Every operation first tries the system call; on EAGAIN it parks the green thread on the
// socket's poll descriptor until the netpoller (one edge-triggered epoll instance, see
// runtime/netpoll.cpp) reports the socket ready, then tries again.
//
// Errors are returned as negative errno values, never thrown:
//   -ETIMEDOUT  the operation's deadline passed (the socket stays usable);
//   -ECANCELED  the socket was closed (by another green thread) while the operation waited,
//               or is already closed;
//   others      what the system call said (-ECONNRESET, -EPIPE, ...).
// A read returning 0 means end of stream.
//
// Streams and listeners are movable, not copyable, and close their socket when destroyed.
// One green thread may read while another writes; two concurrent readers (or writers) of one
// stream are allowed but their data interleaves unpredictably, as with any socket. From a plain
// OS thread (outside any green thread) the same calls work and block that thread.
#pragma once

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace green {
class Context;  // green/context.h
}
namespace green::detail {
struct PollDesc;
}

namespace green::net {

// An IPv4 or IPv6 socket address.
class Address {
 public:
  Address() = default;
  // Parses "HOST:PORT" where HOST is a numeric IPv4 address, "[IPv6]", "localhost" or empty
  // (all IPv4 interfaces); PORT is 0..65535. Returns nullopt on anything else.
  static std::optional<Address> parse(std::string_view host_port);
  static Address from_sockaddr(const sockaddr* sa, socklen_t len);

  const sockaddr* sockaddr_ptr() const { return reinterpret_cast<const sockaddr*>(&storage_); }
  socklen_t length() const { return length_; }
  int family() const { return storage_.ss_family; }
  uint16_t port() const;
  // "127.0.0.1:8080" or "[::1]:8080".
  std::string to_string() const;
  // Just the host part, without brackets: "127.0.0.1", "::1".
  std::string host() const;

 private:
  sockaddr_storage storage_{};
  socklen_t length_ = 0;
};

// Deadlines are absolute times on the steady (CLOCK_MONOTONIC) clock; kNoDeadline disables.
using Deadline = std::chrono::steady_clock::time_point;
inline constexpr Deadline kNoDeadline = Deadline::max();
inline Deadline deadline_after(std::chrono::nanoseconds d) {
  return std::chrono::steady_clock::now() + d;
}

// What a stream and a listener share: a poll descriptor, the sequence it had when opened, and
// whether close() was called. pd_ and seq_ stay set after close(): operations then fail on
// the descriptor's sequence or closing mark, so close() never races with a concurrent
// operation reading pd_.
class SocketHandle {
 public:
  bool is_open() const { return pd_ != nullptr && !closed_.load(std::memory_order_relaxed); }
  int fd() const;
  // Closes the socket; green threads parked on it wake with -ECANCELED. Safe to call while
  // other green threads use the socket (Go's Conn.Close), and more than once.
  void close();

 protected:
  SocketHandle() = default;
  ~SocketHandle() { close(); }
  SocketHandle(const SocketHandle&) = delete;
  SocketHandle& operator=(const SocketHandle&) = delete;
  void take(SocketHandle& other) noexcept;  // close ours, move other's in
  void open(green::detail::PollDesc* pd);

  green::detail::PollDesc* pd_ = nullptr;
  uint32_t seq_ = 0;
  std::atomic<bool> closed_{false};
};

class TcpStream : public SocketHandle {
 public:
  TcpStream();
  ~TcpStream();
  TcpStream(TcpStream&& other) noexcept;
  TcpStream& operator=(TcpStream&& other) noexcept;

  // Connects to `to`, parking until the connection is established or `deadline` passes.
  // Returns 0 and fills *out, or a negative errno.
  static int connect(const Address& to, TcpStream* out, Deadline deadline = kNoDeadline);
  // As connect(), but gives up with -ECANCELED when ctx is cancelled (Go's DialContext).
  static int connect(const Address& to, TcpStream* out, const Context& ctx,
                     Deadline deadline = kNoDeadline);

  // Adopts a connected socket (made non-blocking here). Used by TcpListener::accept.
  static TcpStream adopt(int fd);

  // Reads up to n bytes: returns the count (>0), 0 at end of stream, or a negative errno.
  ssize_t read(void* buf, std::size_t n);
  ssize_t readv(const iovec* iov, int iovcnt);
  // As read(), but returns -EAGAIN instead of parking when no data is there yet. With
  // wait_readable() this lets a connection hold its buffer only while data is flowing.
  ssize_t try_read(void* buf, std::size_t n);
  // Writes all n bytes unless an error or the write deadline intervenes: returns n, or a
  // negative errno (bytes already written before an error are not reported: the stream's
  // state is then unknown and it should be closed, as with Go's partial writes).
  ssize_t write(const void* buf, std::size_t n);
  // As write(), for all of iov[0..iovcnt) (the array itself may be modified).
  ssize_t writev(iovec* iov, int iovcnt);

  // Sends `count` bytes of the open file `file_fd` from `offset` with sendfile(2), the bytes
  // going from the page cache to the socket without a copy through user space; first, when
  // given, `head` (an HTTP response's head), sent with MSG_MORE so that it shares a segment
  // with the file's first bytes. Parks while the socket is full, under the write deadline and
  // a bound context, as write() does. A read of the file that misses the page cache blocks
  // the thread: each sendfile call runs inside green::may_block_patiently (its P is handed to
  // another thread once the call has run for 1 ms). Returns the file bytes sent
  // (count, or fewer when the file ends early: it shrank), or a negative errno; on an error
  // an unknown part has been sent, as with write().
  // With `stall_timeout` > 0, the write deadline is moved to now + stall_timeout each time
  // the call parks: the call ends only when the peer takes nothing for that long (nginx's
  // send_timeout), however long a slow but moving transfer takes.
  ssize_t send_file(std::string_view head, int file_fd, uint64_t offset, std::size_t count,
                    std::chrono::nanoseconds stall_timeout = std::chrono::nanoseconds{0});

  // As read() and write(), but an operation parked for readiness ends with -ECANCELED when
  // ctx is cancelled (at once, without a syscall, when it already is). The socket stays
  // usable (ctx.cancelled() tells this -ECANCELED from a closed socket's); a write cancelled
  // midway has sent an unknown part, as with any failed write. Registering with ctx costs an
  // allocation per call: for a request's handler, not for a server's hot loop.
  ssize_t read(void* buf, std::size_t n, const Context& ctx);
  ssize_t write(const void* buf, std::size_t n, const Context& ctx);

  // Ties every later read(), readv(), write(), writev() and wait_readable() of this stream to
  // ctx until unbind_context() (or the next bind_context): an operation that would park ends with
  // -ECANCELED once ctx is cancelled, and one already parked is woken at once. One registration
  // with ctx (one allocation) serves any number of operations: what an HTTP client calling out
  // under a request's context wants, where the per-call overloads above would register on every
  // read. The socket stays usable; ctx.cancelled() tells this -ECANCELED from a closed socket's.
  // A try_read() never parks and is not affected. Call from the green thread that uses the
  // stream, not while another operation on it is parked.
  void bind_context(const Context& ctx);
  void unbind_context();
  bool context_bound() const;

  // Parks until the socket is readable (data, end of stream or error) without reading: lets an
  // idle connection wait without holding a buffer. Returns 0, or a negative errno.
  int wait_readable();
  // Wakes a green thread parked in wait_readable() or read() on this stream as if data had
  // arrived (its read then finds nothing or what did arrive); without one parked, the next
  // wait returns at once. Any thread; a no-op once closed. Unlike close(), it leaves the
  // socket and whatever is buffered in it to the reader.
  void wake_reader();

  // Deadlines for all future and currently parked reads / writes. A parked operation whose
  // deadline is moved is not re-armed until it next parks.
  void set_read_deadline(Deadline d) { read_deadline_ = d; }
  void set_write_deadline(Deadline d) { write_deadline_ = d; }
  Deadline read_deadline() const { return read_deadline_; }
  Deadline write_deadline() const { return write_deadline_; }

  // Whether the peer has gone (closed or reset its side), as far as can be told without
  // consuming input: the netpoller saw its FIN or an error (sticky), or a one-byte
  // recv(MSG_PEEK | MSG_DONTWAIT) finds end of stream or an error. A FIN behind unread data
  // (a pipelined request) shows only through the netpoller's flag. A half-close (the peer shut
  // down its writing side but still reads) counts as gone, as in Go's net/http (a background
  // read's EOF cancels the request's context) and nginx (EPOLLRDHUP: "client prematurely
  // closed connection"). One syscall; never parks, so it may be called from inside
  // green::blocking(). True once the stream is closed.
  bool peer_gone() const;

  // Calls fn once, on whatever thread runs the netpoller, when the peer hangs up or the socket
  // fails (what peer_gone() reports, seen by the netpoller without anybody reading: new data,
  // such as a pipelined request, stays unread and does not call it). At once, on this thread,
  // if that has already been seen. fn must be short and must not park; it may run after
  // clear_hangup() returns, so it must only refer to what outlives that (a context's cancel
  // function does). Replaces an earlier fn; closing the stream drops it. The server cancels a
  // request's context with it (Go starts a background read for that).
  void on_hangup(std::function<void()> fn);
  void clear_hangup();

  // shutdown(2): SHUT_RD, SHUT_WR or SHUT_RDWR. Returns 0 or a negative errno.
  int shutdown(int how);
  // SO_LINGER {on, 0}: the next close() sends RST instead of FIN.
  void set_linger_zero();
  int set_nodelay(bool on);

  Address local_address() const;
  Address peer_address() const;

 private:
  friend class TcpListener;
  explicit TcpStream(green::detail::PollDesc* pd);
  static int connect_impl(const Address& to, TcpStream* out, Deadline deadline, const Context* ctx);
  ssize_t writev_impl(iovec* iov, int iovcnt, const Context* ctx);
  // The context of bind_context(), allocated on the first bind and kept for the next one.
  struct Binding;
  bool bound_cancelled() const;
  std::unique_ptr<Binding> binding_;
  bool drained_ = false;  // the last read() returned less than asked: the buffer was empty
  Deadline read_deadline_ = kNoDeadline;
  Deadline write_deadline_ = kNoDeadline;
};

struct ListenOptions {
  int backlog = 4096;
  bool reuse_port = false;  // SO_REUSEPORT: several listeners (processes) on one port
  bool ipv6_only = false;   // for "[::]:port": IPV6_V6ONLY
};

class TcpListener : public SocketHandle {
 public:
  TcpListener() = default;
  TcpListener(TcpListener&& other) noexcept { take(other); }
  TcpListener& operator=(TcpListener&& other) noexcept {
    take(other);
    return *this;
  }

  // Binds and listens (SO_REUSEADDR always). Returns 0 and fills *out, or a negative errno.
  static int listen(const Address& at, TcpListener* out, const ListenOptions& options = {});

  // Accepts one connection (TCP_NODELAY set, non-blocking), parking while none is pending.
  // Returns 0 and fills *out (and *peer when not null), or a negative errno: -ECANCELED once
  // the listener is closed, -EMFILE/-ENFILE when out of descriptors (the caller decides how
  // long to back off), -ETIMEDOUT past the deadline.
  int accept(TcpStream* out, Address* peer = nullptr, Deadline deadline = kNoDeadline);

  Address local_address() const;
};

// Counters of the netpoller, for stats() and /metrics.
struct NetpollStats {
  uint64_t polls = 0;    // epoll_wait calls that returned events
  uint64_t wakeups = 0;  // green threads made runnable by the netpoller
  uint64_t open_descriptors = 0;
};
NetpollStats netpoll_stats();

}  // namespace green::net
