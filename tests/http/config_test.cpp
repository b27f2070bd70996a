// Flags and the TOML file: defaults, overrides, and one-line errors with exit code 2.
#include "config/config.h"

#include <unistd.h>

#include <fstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace green::config {
namespace {

using namespace std::chrono_literals;

LoadResult load_args(std::vector<std::string> args) {
  args.insert(args.begin(), "greenhttp");
  std::vector<const char*> argv;
  for (const std::string& a : args) argv.push_back(a.c_str());
  return load(static_cast<int>(argv.size()), argv.data());
}

std::string temp_file(const std::string& text) {
  char name[] = "/tmp/greenhttp-config-XXXXXX";
  const int fd = mkstemp(name);
  close(fd);
  std::ofstream(name) << text;
  return name;
}

// Each case must be refused with exit code 2 and one short line that contains must_say.
struct BadCase {
  std::vector<std::string> args;
  std::string must_say;
};
void expect_one_line_errors(const std::vector<BadCase>& cases) {
  for (const BadCase& c : cases) {
    LoadResult r = load_args(c.args);
    EXPECT_FALSE(r.config.has_value()) << c.must_say;
    EXPECT_EQ(r.exit_code, 2) << c.must_say;
    EXPECT_NE(r.message.find(c.must_say), std::string::npos) << r.message;
    EXPECT_EQ(r.message.find('\n'), std::string::npos) << "one line: " << r.message;
    EXPECT_LT(r.message.size(), 200u) << "a short line, whatever the value's length";
  }
}

TEST(Config, DefaultsMatchTheIssue) {
  LoadResult r = load_args({});
  ASSERT_TRUE(r.config.has_value()) << r.message;
  EXPECT_EQ(r.config->listen, "0.0.0.0:8080");
  EXPECT_EQ(r.config->read_header_timeout, 10s);
  EXPECT_EQ(r.config->idle_timeout, 60s);
  EXPECT_EQ(r.config->shutdown_timeout, 30s);
  EXPECT_EQ(r.config->max_body_bytes, 1u << 20);
  EXPECT_EQ(r.config->max_header_bytes, 16u << 10);
}

TEST(Config, FlagsSetEverySetting) {
  LoadResult r = load_args({"--listen",
                            "127.0.0.1:9000",
                            "--threads",
                            "3",
                            "--static-dir",
                            "/srv",
                            "--read-header-timeout",
                            "2s",
                            "--idle-timeout",
                            "1m30s",
                            "--write-timeout",
                            "500ms",
                            "--shutdown-timeout",
                            "5s",
                            "--max-body",
                            "64KiB",
                            "--access-log",
                            "off",
                            "--log-level",
                            "warn",
                            "--max-connections",
                            "10",
                            "--max-headers",
                            "50"});
  ASSERT_TRUE(r.config.has_value()) << r.message;
  const Config& c = *r.config;
  EXPECT_EQ(c.listen, "127.0.0.1:9000");
  EXPECT_EQ(c.threads, 3);
  EXPECT_EQ(c.static_dir, "/srv");
  EXPECT_EQ(c.read_header_timeout, 2s);
  EXPECT_EQ(c.idle_timeout, 90s);
  EXPECT_EQ(c.write_timeout, 500ms);
  EXPECT_EQ(c.shutdown_timeout, 5s);
  EXPECT_EQ(c.max_body_bytes, 64u * 1024);
  EXPECT_EQ(c.access_log, "off");
  EXPECT_EQ(c.log_level, "warn");
  EXPECT_EQ(c.max_connections, 10);
  EXPECT_EQ(c.max_headers, 50);
}

TEST(Config, ReusePortIsASwitch) {
  LoadResult bare = load_args({"--reuse-port", "--threads", "2"});
  ASSERT_TRUE(bare.config.has_value()) << bare.message;
  EXPECT_TRUE(bare.config->reuse_port);
  EXPECT_EQ(bare.config->threads, 2);
  LoadResult last = load_args({"--reuse-port"});
  ASSERT_TRUE(last.config.has_value()) << last.message;
  EXPECT_TRUE(last.config->reuse_port);
  LoadResult off = load_args({"--reuse-port", "false"});
  ASSERT_TRUE(off.config.has_value()) << off.message;
  EXPECT_FALSE(off.config->reuse_port);
  EXPECT_FALSE(load_args({}).config->reuse_port);
  LoadResult bad = load_args({"--reuse-port", "maybe"});
  EXPECT_EQ(bad.exit_code, 2);
  EXPECT_NE(bad.message.find("--reuse-port"), std::string::npos) << bad.message;
}

TEST(Config, FileIsLoadedAndFlagsOverrideIt) {
  const std::string path = temp_file(
      "listen = \"127.0.0.1:7000\"\nthreads = 2\n[timeouts]\nidle = \"5s\"\n"
      "[limits]\nmax_body = 2048\n");
  LoadResult r = load_args({"--config", path, "--threads", "4"});
  unlink(path.c_str());
  ASSERT_TRUE(r.config.has_value()) << r.message;
  EXPECT_EQ(r.config->listen, "127.0.0.1:7000");
  EXPECT_EQ(r.config->threads, 4);
  EXPECT_EQ(r.config->idle_timeout, 5s);
  EXPECT_EQ(r.config->max_body_bytes, 2048u);
}

TEST(Config, TheShippedFileLoadsAndHoldsTheDefaults) {
  LoadResult shipped = load_args({"--config", GREENHTTP_SOURCE_DIR "/config/greenhttp.toml"});
  ASSERT_TRUE(shipped.config.has_value()) << shipped.message;
  LoadResult defaults = load_args({});
  const Config& a = *shipped.config;
  const Config& b = *defaults.config;
  EXPECT_EQ(a.listen, b.listen);
  EXPECT_EQ(a.threads, b.threads);
  EXPECT_EQ(a.access_log, b.access_log);
  EXPECT_EQ(a.read_header_timeout, b.read_header_timeout);
  EXPECT_EQ(a.idle_timeout, b.idle_timeout);
  EXPECT_EQ(a.write_timeout, b.write_timeout);
  EXPECT_EQ(a.shutdown_timeout, b.shutdown_timeout);
  EXPECT_EQ(a.max_body_bytes, b.max_body_bytes);
  EXPECT_EQ(a.max_header_bytes, b.max_header_bytes);
  EXPECT_EQ(a.max_target_bytes, b.max_target_bytes);
  EXPECT_EQ(a.max_headers, b.max_headers);
}

TEST(Config, HelpListsTheFlagsAndExitsZero) {
  LoadResult r = load_args({"--help"});
  EXPECT_FALSE(r.config.has_value());
  EXPECT_EQ(r.exit_code, 0);
  for (const char* flag :
       {"--listen", "--threads", "--static-dir", "--read-header-timeout", "--idle-timeout",
        "--max-body", "--access-log", "--log-level", "--config"}) {
    EXPECT_NE(r.message.find(flag), std::string::npos) << flag;
  }
}

TEST(Config, BadInputIsOneLineNamingItWithExitCode2) {
  const std::string bad_toml = temp_file("listen = \n");
  const std::string unknown_key = temp_file("[timeouts]\nidel = \"5s\"\n");
  const std::string wrong_type = temp_file("[limits]\nmax_headers = [1, 2]\n");
  const std::string bad_value = temp_file("[timeouts]\nidle = \"soon\"\n");
  expect_one_line_errors({
      {{"--no-such-flag"}, "--no-such-flag"},
      {{"--idle-timeout", "abc"}, "--idle-timeout"},
      {{"--idle-timeout", "10"}, "--idle-timeout"},
      {{"--read-header-timeout", "-1s"}, "--read-header-timeout"},
      {{"--max-body", "lots"}, "--max-body"},
      {{"--max-body", "12XB"}, "--max-body"},
      {{"--threads", "many"}, "--threads"},
      {{"--threads", "1000"}, "--threads"},
      {{"--log-level", "loud"}, "--log-level"},
      {{"--listen", "nowhere"}, "--listen"},
      {{"--max-headers", "0"}, "--max-headers"},
      {{"--config", "/nonexistent/greenhttp.toml"}, "/nonexistent/greenhttp.toml"},
      {{"--config", bad_toml}, bad_toml},
      {{"--config", unknown_key}, "timeouts.idel"},
      {{"--config", wrong_type}, "limits.max_headers"},
      {{"--config", bad_value}, "timeouts.idle"},
  });
  for (const std::string& p : {bad_toml, unknown_key, wrong_type, bad_value}) unlink(p.c_str());
}

TEST(Config, ValuesThatOverflowOrRoundToNothingAreOneLineErrors) {
  expect_one_line_errors({
      // 2^34 GiB is 2^64 bytes: it used to wrap around to 0.
      {{"--max-body", "17179869184g"}, "--max-body: size \"17179869184g\" is too large"},
      {{"--max-header-bytes", "99999999999999999999999k"}, "--max-header-bytes"},
      {{"--max-target-bytes", "18446744073709551616"}, "--max-target-bytes"},
      // Each busy connection's read buffer holds target + headers: above 1 MiB each is refused
      // (4GiB took a GB of RSS per connection, and overflows the parser's 32-bit offsets).
      {{"--max-header-bytes", "4GiB"}, "--max-header-bytes: size \"4GiB\" is above the maximum"},
      {{"--max-target-bytes", "1025KiB"},
       "--max-target-bytes: size \"1025KiB\" is above the maximum"},
      // Rounded to 0, which used to turn the timeout off.
      {{"--idle-timeout", "0.1ns"}, "--idle-timeout: duration \"0.1ns\" rounds to zero"},
      {{"--read-header-timeout", "0.0000000000000000000001s"}, "--read-header-timeout"},
      {{"--write-timeout", "99999999999999999999999999h"}, "--write-timeout: duration"},
      {{"--shutdown-timeout", "300000h"}, "too large"},
      {{"--idle-timeout", "1" + std::string(6000, '0') + "s"}, "--idle-timeout"},
      {{"--idle-timeout", "0." + std::string(6000, '0') + "1s"}, "rounds to zero"},
      {{"--max-connections", "999999999999"}, "--max-connections"},  // 12 digits
      {{"--max-connections", "99999999999999999999999999"}, "out of range"},
      {{"--max-headers", "18446744073709551617"}, "--max-headers"},
      {{"--threads", "4294967297"}, "--threads"},  // 2^32 + 1: not 1 after a narrowing
  });
  // The same limits in the file name the key.
  const std::string file = temp_file("[timeouts]\nidle = \"0.5ns\"\n");
  LoadResult r = load_args({"--config", file});
  unlink(file.c_str());
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.message.find("timeouts.idle: duration \"0.5ns\" rounds to zero"), std::string::npos)
      << r.message;
  // Zero, however written, is "off"; the largest values are accepted.
  for (const char* zero : {"0", "0s", "0.0ms", "0h0m"}) {
    LoadResult z = load_args({"--idle-timeout", zero});
    ASSERT_TRUE(z.config.has_value()) << zero << ": " << z.message;
    EXPECT_EQ(z.config->idle_timeout, 0ns) << zero;
  }
  LoadResult big = load_args(
      {"--idle-timeout", "277777h", "--max-body", "1048576GiB", "--max-connections", "100000000"});
  ASSERT_TRUE(big.config.has_value()) << big.message;
  EXPECT_EQ(big.config->idle_timeout, 277777h);
  EXPECT_EQ(big.config->max_body_bytes, kMaxSize);
}

TEST(Config, ConfigMustBeAReadableRegularFile) {
  char dir[] = "/tmp/greenhttp-config-dir-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  for (const std::string& path : {std::string(dir), std::string("/dev/zero")}) {
    LoadResult r = load_args({"--config", path});
    EXPECT_FALSE(r.config.has_value()) << path << " was read as an empty config";
    EXPECT_EQ(r.exit_code, 2);
    EXPECT_EQ(r.message, "greenhttp: --config " + path + ": not a regular file");
  }
  rmdir(dir);
}

TEST(Config, StaticDirMustBeADirectoryAndPortFileWritable) {
  char dir[] = "/tmp/greenhttp-config-dir-XXXXXX";
  ASSERT_NE(mkdtemp(dir), nullptr);
  const std::string file = temp_file("x");
  expect_one_line_errors({
      {{"--static-dir", "/nonexistent/static"}, "--static-dir: \"/nonexistent/static\": No such"},
      {{"--static-dir", file}, "is not a directory"},
      {{"--port-file", "/nonexistent/dir/port"}, "--port-file: cannot write"},
      {{"--port-file", "/sys/greenhttp-port"}, "--port-file: cannot write"},  // even for root
      {{"--port-file", dir}, "is a directory"},
  });
  // Valid ones pass, and the check leaves nothing behind in the port file's directory.
  const std::string port_file = std::string(dir) + "/port";
  LoadResult ok = load_args({"--static-dir", dir, "--port-file", port_file});
  ASSERT_TRUE(ok.config.has_value()) << ok.message;
  EXPECT_EQ(rmdir(dir), 0) << "the port file's probe was not removed";
  // The check is on the final value: a flag may override a bad one from the file.
  const std::string bad = temp_file("static_dir = \"/nonexistent/static\"\n");
  EXPECT_EQ(load_args({"--config", bad}).exit_code, 2);
  EXPECT_NE(load_args({"--config", bad}).message.find("--config " + bad + ": static_dir"),
            std::string::npos);
  EXPECT_TRUE(load_args({"--config", bad, "--static-dir", "/tmp"}).config.has_value());
  unlink(bad.c_str());
  unlink(file.c_str());
}

TEST(Config, AFlagGivenTwiceTakesTheLastValue) {
  LoadResult r =
      load_args({"--threads", "3", "--idle-timeout", "5s", "--threads", "4", "--idle-timeout", "7s",
                 "--access-log", "stdout", "--access-log", "off"});
  ASSERT_TRUE(r.config.has_value()) << r.message;
  EXPECT_EQ(r.config->threads, 4);
  EXPECT_EQ(r.config->idle_timeout, 7s);
  EXPECT_EQ(r.config->access_log, "off");
  // Only the last value is checked: an earlier bad one is overridden, a later one is not.
  EXPECT_TRUE(load_args({"--threads", "1000", "--threads", "2"}).config.has_value());
  EXPECT_EQ(load_args({"--threads", "2", "--threads", "1000"}).exit_code, 2);
  // The switch, both ways round.
  LoadResult on = load_args({"--reuse-port", "false", "--reuse-port"});
  ASSERT_TRUE(on.config.has_value()) << on.message;
  EXPECT_TRUE(on.config->reuse_port);
  LoadResult off = load_args({"--reuse-port", "--reuse-port", "false"});
  ASSERT_TRUE(off.config.has_value()) << off.message;
  EXPECT_FALSE(off.config->reuse_port);
  // --config too.
  const std::string first = temp_file("threads = 5\n");
  const std::string second = temp_file("threads = 6\n");
  LoadResult files = load_args({"--config", first, "--config", second});
  ASSERT_TRUE(files.config.has_value()) << files.message;
  EXPECT_EQ(files.config->threads, 6);
  unlink(first.c_str());
  unlink(second.c_str());
}

TEST(Config, HelpDocumentsEachSignal) {
  LoadResult r = load_args({"--help"});
  EXPECT_EQ(r.exit_code, 0);
  for (const char* sig : {"SIGTERM", "SIGINT", "SIGHUP", "SIGUSR1", "SIGUSR2", "SIGQUIT"}) {
    EXPECT_NE(r.message.find(sig), std::string::npos) << sig;
  }
}

TEST(Config, DurationsAndSizes) {
  EXPECT_EQ(parse_duration("500ms"), std::chrono::nanoseconds(500ms));
  EXPECT_EQ(parse_duration("1.5s"), std::chrono::nanoseconds(1500ms));
  EXPECT_EQ(parse_duration("1h2m3s"), std::chrono::nanoseconds(3723s));
  EXPECT_EQ(parse_duration("0"), std::chrono::nanoseconds(0));
  EXPECT_FALSE(parse_duration("").has_value());
  EXPECT_FALSE(parse_duration("5").has_value());
  EXPECT_FALSE(parse_duration("5 s").has_value());
  EXPECT_FALSE(parse_duration("1.2.3s").has_value());
  EXPECT_FALSE(parse_duration(".s").has_value());
  EXPECT_EQ(parse_duration(".5s"), std::chrono::nanoseconds(500ms));
  EXPECT_EQ(parse_duration("1.5ns"), 1ns);  // truncated, as Go does, but not to nothing
  EXPECT_EQ(parse_duration("0.000000001s"), 1ns);
  EXPECT_FALSE(parse_duration("0.9ns").has_value());
  EXPECT_EQ(parse_duration("3us"), std::chrono::nanoseconds(3us));
  EXPECT_EQ(parse_duration("3µs"), std::chrono::nanoseconds(3us));
  EXPECT_EQ(parse_duration("277777h"), std::chrono::nanoseconds(277777h));
  EXPECT_FALSE(parse_duration("277778h").has_value());
  EXPECT_FALSE(parse_duration("9223372036854775808ns").has_value());
  EXPECT_EQ(parse_size("1MiB"), 1u << 20);
  EXPECT_EQ(parse_size("64k"), 64u << 10);
  EXPECT_EQ(parse_size("123"), 123u);
  EXPECT_FALSE(parse_size("").has_value());
  EXPECT_FALSE(parse_size("MiB").has_value());
  EXPECT_FALSE(parse_size("99999999999999999999").has_value());
  EXPECT_FALSE(parse_size("17179869184g").has_value());  // 2^64: used to be 0
  EXPECT_FALSE(parse_size("18446744073709551615").has_value());
  EXPECT_EQ(parse_size("1048576GiB"), kMaxSize);
  EXPECT_FALSE(parse_size("1048577GiB").has_value());
  std::string why;
  EXPECT_FALSE(parse_size("1" + std::string(100, '0'), &why).has_value());
  EXPECT_NE(why.find("too large"), std::string::npos) << why;
}

}  // namespace
}  // namespace green::config
