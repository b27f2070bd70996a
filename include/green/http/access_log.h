// AccessLog: the documents' `go logRequest(r)`. Connections hand each request's record to a
// background green thread that formats it in Combined Log Format and writes it to a file or
// stdout.
//
// The hand-off never parks and never allocates: submit() copies the record into a bounded
// channel with try_send, and when the writer has fallen behind (a slow disk, a blocked stdout
// pipe) the record is dropped and counted instead. A connection never waits on the log, and
// the log's memory is the channel's fixed capacity, whatever the load.
//
// The writer batches: it takes every record queued, formats them into one buffer and writes
// the batch with write(2) inside green::may_block (file writes can block the thread).
//
// Log rotation (logrotate's convention, as nginx and Apache): the file is renamed, then
// reopen() (on SIGHUP, server/main.cpp) opens a new file at the path and dup2()s it over the
// descriptor the writer uses. dup2 replaces it atomically, so the writer needs no lock: each
// batch goes whole to the old file or whole to the new one.
#pragma once

#include <atomic>
#include <cstdint>
#include <ctime>
#include <memory>
#include <string>
#include <string_view>

namespace green::http {

class ByteBuffer;  // server/byte_buffer.h

// One request as the log needs it: fixed-size fields (long values are cut), so a record is
// a plain copy.
struct AccessRecord {
  std::time_t time = 0;
  int status = 0;
  uint64_t bytes = 0;  // body bytes sent
  template <std::size_t N>
  struct Field {
    uint16_t length = 0;
    char text[N];
    void set(std::string_view s) {
      length = static_cast<uint16_t>(s.size() < N ? s.size() : N);
      for (std::size_t i = 0; i < length; ++i) text[i] = s[i];
    }
    std::string_view view() const { return {text, length}; }
  };
  Field<46> remote;    // "127.0.0.1", "::1"
  Field<600> request;  // "GET /path HTTP/1.1"; empty when the request could not be parsed
  Field<200> referer;
  Field<200> user_agent;
  Field<64> request_id;  // Request::request_id(); empty unless middleware::request_id() ran
};

class Request;  // green/http/request.h

// Fills `rec` for one answered request: the time now, `remote`, `status`, `bytes`, and from `r`
// (null: a request that could not be parsed) the request line, Referer, User-Agent and request
// id. The connection and middleware::access_log() both record through it.
void fill_access_record(AccessRecord& rec, const Request* r, std::string_view remote, int status,
                        uint64_t bytes);

// Appends one Combined Log Format line (with "\n") to `out`:
//   127.0.0.1 - - [10/Oct/2000:13:55:36 +0000] "GET / HTTP/1.1" 200 13 "-" "curl/7.88.1"
// Quotes, backslashes and control bytes in the quoted fields are escaped as \xHH (as nginx
// does), so a client cannot forge log lines. A record with a request id gets it as one more
// quoted field at the end (nginx's `"$request_id"` appended to its combined format); without
// one the line is exactly Combined.
void format_combined(const AccessRecord& r, ByteBuffer& out);

class AccessLog {
 public:
  static constexpr std::size_t kDefaultCapacity = 4096;

  // target: "off", "stdout" or a file path (appended to). Returns null and sets *error when the
  // file cannot be opened.
  static std::unique_ptr<AccessLog> open(std::string_view target, std::string* error,
                                         std::size_t capacity = kDefaultCapacity);
  ~AccessLog();

  bool enabled() const { return fd_ >= 0; }
  // Whether the target is a file (what reopen() acts on), not stdout or off.
  bool is_file() const { return !path_.empty(); }

  // For a file target: opens the path anew (creating it) and makes later batches go there.
  // True on success or when there is no file to reopen (stdout, off); false with *error set
  // when the path cannot be opened, and the log keeps writing to the file it had. Any thread,
  // any time between open() and destruction.
  bool reopen(std::string* error);

  // Starts the writer green thread. Call from inside green::run.
  void start();
  // Writes what is queued and stops the writer; parks until it has. Later submits are dropped.
  void stop();

  // Queues r for the writer, or drops and counts it. Never parks. Any green or plain thread.
  void submit(const AccessRecord& r);

  uint64_t dropped() const { return dropped_.load(std::memory_order_relaxed); }
  uint64_t written() const { return written_.load(std::memory_order_relaxed); }
  uint64_t reopens() const { return reopens_.load(std::memory_order_relaxed); }

 private:
  AccessLog(int fd, bool owns_fd, std::string path, std::size_t capacity);
  void write_loop();
  bool write_batch(std::string_view text);  // false: the write failed

  int fd_;  // -1: off. Its number never changes; reopen() swaps the file behind it.
  bool owns_fd_;
  std::string path_;  // empty unless a file
  // The bounded channel and the writer's WaitGroup (server/access_log.cpp): behind a pointer,
  // so this header pulls in none of the runtime's channel machinery.
  struct Queue;
  std::unique_ptr<Queue> q_;
  std::atomic<bool> started_{false};
  std::atomic<uint64_t> dropped_{0};
  std::atomic<uint64_t> written_{0};
  std::atomic<uint64_t> reopens_{0};
};

}  // namespace green::http
