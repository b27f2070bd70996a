// ServerProcess: build/greenhttp (GREENHTTP_BINARY) in a child process on an ephemeral port,
// for the integration tests that exercise the binary as users run it.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/http/http_test_util.h"

namespace green::http::testing {

// The server binary in a child process, on an ephemeral port (read from --port-file).
class ServerProcess {
 public:
  explicit ServerProcess(std::vector<std::string> args) {
    char dir[] = "/tmp/greenhttp-bin-XXXXXX";
    dir_ = mkdtemp(dir);
    port_file_ = dir_ + "/port";
    args.insert(args.begin(),
                {GREENHTTP_BINARY, "--listen", "127.0.0.1:0", "--port-file", port_file_});
    pid_ = fork();
    if (pid_ == 0) {
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      freopen((dir_ + "/stderr").c_str(), "w", stderr);
      execv(argv[0], argv.data());
      _exit(127);
    }
    for (int i = 0; i < 500 && port_ == 0; ++i) {
      std::ifstream in(port_file_);
      in >> port_;
      if (port_ == 0) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    run_command("rm -rf '" + dir_ + "'");
  }
  uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }
  // Sends `sig` and waits up to `limit` for the exit; returns the exit code (-1: still running).
  int signal_and_wait(int sig, std::chrono::milliseconds limit) {
    kill(pid_, sig);
    const auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    return -1;
  }
  int64_t rss_kb() const {
    std::ifstream in("/proc/" + std::to_string(pid_) + "/status");
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("VmRSS:", 0) == 0) return std::stoll(line.substr(6));
    }
    return 0;
  }
  std::string stderr_text() const {
    std::ifstream in(dir_ + "/stderr");
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  std::string dir() const { return dir_; }

 private:
  std::string dir_;
  std::string port_file_;
  pid_t pid_ = -1;
  uint16_t port_ = 0;
};

}  // namespace green::http::testing
