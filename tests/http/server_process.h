// build/greenhttp in a child process, for the tests that run the binary as users do (flags,
// exit codes, signals): it listens on an ephemeral port read back from --port-file.
#pragma once

#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iterator>
#include <optional>
#include <sstream>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "tests/http/http_test_util.h"

namespace green::http::testing {

inline std::string read_file(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// One unlabelled or labelled sample of the binary's /metrics ("greenhttp_read_timeouts_total",
// "greenhttp_requests_total{code=\"499\"}"); -1 when the server does not answer or has no
// such sample.
inline int64_t metric(uint16_t port, std::string_view sample) {
  Client c(port);
  if (!c.send(get(port, "/metrics", "Connection: close\r\n"))) return -1;
  const std::optional<Client::Response> r = c.read_response();
  if (!r || r->status != 200) return -1;
  const std::string key = "\n" + std::string(sample) + " ";
  const std::size_t at = r->body.find(key);
  if (at == std::string::npos) return -1;
  return std::stoll(r->body.substr(at + key.size()));
}

// The binary's /debug/greenthreads (its green-thread dump), or "" when it does not answer.
inline std::string green_threads(uint16_t port) {
  Client c(port);
  if (!c.send(get(port, "/debug/greenthreads", "Connection: close\r\n"))) return "";
  const std::optional<Client::Response> r = c.read_response();
  return r && r->status == 200 ? r->body : "";
}

// How many green threads of the binary are parked for `reason` ("netpoll write", ...).
inline int waiting(uint16_t port, std::string_view reason) {
  const std::string dump = green_threads(port);
  const std::string key = "[waiting: " + std::string(reason) + ",";
  int n = 0;
  for (std::size_t at = dump.find(key); at != std::string::npos; at = dump.find(key, at + 1)) ++n;
  return n;
}

// Waits until at least `n` requests of the binary are asleep inside their handlers
// (asleep_in_handlers on /debug/greenthreads), 10 s at most.
inline bool wait_for_handlers(uint16_t port, int n) {
  return wait_until([&] { return asleep_in_handlers(green_threads(port)) >= n; },
                    std::chrono::seconds(10));
}

// Its stderr goes to dir()/stderr; the directory is removed with it.
class ServerProcess {
 public:
  // `args` follow --listen and --port-file; `env` ("NAME=value") is added to the child's.
  explicit ServerProcess(std::vector<std::string> args, std::vector<std::string> env = {}) {
    char dir[] = "/tmp/greenhttp-bin-XXXXXX";
    dir_ = mkdtemp(dir);
    port_file_ = dir_ + "/port";
    args.insert(args.begin(),
                {GREENHTTP_BINARY, "--listen", "127.0.0.1:0", "--port-file", port_file_});
    pid_ = fork();
    if (pid_ == 0) {
      for (std::string& e : env) putenv(e.data());
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      freopen((dir_ + "/stderr").c_str(), "w", stderr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    // The file is renamed into place whole: a number read from it is the port.
    wait_until(
        [this] {
          std::ifstream in(port_file_);
          in >> port_;
          return port_ != 0;
        },
        std::chrono::seconds(5));
  }
  ~ServerProcess() {
    if (alive()) {
      ::kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    run_command("rm -rf '" + dir_ + "'");
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  uint16_t port() const { return port_; }
  // The child's pid, positive, even after it exited (never pass it to kill(2) then: use
  // signal(), which checks; a pid of -1 would signal every process we may signal).
  pid_t pid() const { return pid_; }
  // Whether the process is still running (false once it exited or was killed).
  bool alive() {
    if (pid_ <= 0 || exited_) return false;
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) != pid_) return true;
    exited_ = true;
    exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return false;
  }
  // Sends `sig` if the process is still running; returns whether it was sent.
  bool signal(int sig) { return alive() && ::kill(pid_, sig) == 0; }
  // Waits up to `limit` for the exit; returns the exit code (128 + N after signal N), or -1
  // if it is still running.
  int wait_exit(std::chrono::milliseconds limit) {
    wait_until([this] { return !alive(); }, limit);
    return exited_ ? exit_code_ : -1;
  }
  // Sends `sig` and waits up to `limit` for the exit, as wait_exit.
  int signal_and_wait(int sig, std::chrono::milliseconds limit) {
    signal(sig);
    return wait_exit(limit);
  }
  int64_t rss_kb() const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
    }
    return 0;
  }
  // OS threads of the server now (/proc/PID/task).
  int threads() const {
    int n = 0;
    if (DIR* d = opendir(("/proc/" + std::to_string(pid_) + "/task").c_str())) {
      while (dirent* e = readdir(d)) {
        if (e->d_name[0] != '.') ++n;
      }
      closedir(d);
    }
    return n;
  }
  // CPU time used so far, user + system (/proc/PID/stat fields 14 and 15), in seconds.
  double cpu_seconds() const {
    const std::string all = read_file("/proc/" + std::to_string(pid_) + "/stat");
    std::istringstream rest(all.substr(all.rfind(')') + 2));  // from field 3 on
    std::string field;
    double ticks = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
      if (i >= 14) ticks += std::stod(field);
    }
    return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
  }
  std::string stderr_text() const { return read_file(dir_ + "/stderr"); }
  std::string dir() const { return dir_; }

 private:
  std::string dir_;
  std::string port_file_;
  pid_t pid_ = -1;
  bool exited_ = false;
  int exit_code_ = -1;
  uint16_t port_ = 0;
};

}  // namespace green::http::testing
