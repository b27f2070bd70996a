// build/greenhttp in a child process, for the tests that run the binary as users do: it listens
// on 127.0.0.1 on an ephemeral port (read back from --port-file), its stderr goes to a file in
// a temporary directory, and the destructor kills it. Every wait is bounded.
#pragma once

#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/http/http_test_util.h"

namespace green::http::testing {

class ServerProcess {
 public:
  // `args` follow --listen and --port-file; `env` ("NAME=value") is added to the child's.
  explicit ServerProcess(std::vector<std::string> args, std::vector<std::string> env = {}) {
    using namespace std::chrono_literals;
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
    for (int i = 0; i < 500 && port_ == 0; ++i) {
      std::ifstream in(port_file_);
      in >> port_;
      if (port_ == 0) std::this_thread::sleep_for(10ms);
    }
  }
  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    run_command("rm -rf '" + dir_ + "'");
  }
  ServerProcess(const ServerProcess&) = delete;
  ServerProcess& operator=(const ServerProcess&) = delete;

  uint16_t port() const { return port_; }
  pid_t pid() const { return pid_; }
  std::string dir() const { return dir_; }

  // Sends `sig` and waits up to `limit` for the exit; returns the exit code (-1: still running).
  int signal_and_wait(int sig, std::chrono::milliseconds limit) {
    using namespace std::chrono_literals;
    kill(pid_, sig);
    const auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(5ms);
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
    std::ifstream in("/proc/" + std::to_string(pid_) + "/stat");
    const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    std::istringstream rest(all.substr(all.rfind(')') + 2));  // from field 3 on
    std::string field;
    double ticks = 0;
    for (int i = 3; i <= 15 && rest >> field; ++i) {
      if (i >= 14) ticks += std::stod(field);
    }
    return ticks / static_cast<double>(sysconf(_SC_CLK_TCK));
  }
  std::string stderr_text() const {
    std::ifstream in(dir_ + "/stderr");
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }

 private:
  std::string dir_;
  std::string port_file_;
  pid_t pid_ = -1;
  uint16_t port_ = 0;
};

}  // namespace green::http::testing
