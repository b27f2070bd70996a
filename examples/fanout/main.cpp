// Fan-out: each request to GET / calls N upstream services at once and answers, within a
// deadline, with whatever came back, naming the upstreams that were too late.
//
//                      ┌── green thread: client.get(ctx, upstream 1) ──┐
//   GET / ── handler ──┼── green thread: client.get(ctx, upstream 2) ──┼──> results (Channel)
//   (its own green     └── green thread: client.get(ctx, upstream 3) ──┘        │
//    thread)   <── select: a result, or ctx done (deadline) ────────────────────┘
//
// This is the reason to want one green thread per request: the handler is plain sequential
// code (start the calls, wait for results or the deadline, answer), every wait parks only a
// green thread (a few KiB), and the calls are N more green threads, not callbacks. Go writes
// it the same way: goroutines, a buffered channel, select on ctx.Done().
//
// The deadline is a child of the request's context: it ends at the deadline, and also when
// the client hangs up (r.context() is cancelled then). Every call is made under it, so when
// the handler stops waiting, cancel() aborts the calls still in flight (their connections are
// closed, so the slow upstream sees the hang-up) instead of leaving them to run on unseen.
//
// Run: fanout --listen 127.0.0.1:8080 --upstream http://127.0.0.1:9001/
//             --upstream http://127.0.0.1:9002/ [--deadline 100ms]
//      curl 127.0.0.1:8080/
//   {"deadline_ms":100,"upstreams":[{"url":"http://127.0.0.1:9001/","status":200,"bytes":5,
//    "body":"hello"},{"url":"http://127.0.0.1:9002/","late":true}],"late":1}
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "green/channel.h"
#include "green/context.h"
#include "green/green.h"
#include "green/http/client.h"
#include "green/http/server.h"
#include "green/select.h"
#include "green/sync.h"

using namespace green::http;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kMaxBodyBytes = 64 * 1024;  // per upstream: an answer, not a download

// What one upstream call gave.
struct Result {
  std::size_t index = 0;  // which upstream
  int status = 0;         // 0: the call failed, `error` says why
  std::string body;
  std::string error;
};

// One call, on its own green thread: plain sequential code that parks while it waits.
Result call_upstream(Client& client, const green::Context& ctx, std::size_t index,
                     const std::string& url) {
  Result result;
  result.index = index;
  ClientResponse response = client.get(ctx, url);
  std::optional<std::string> body;
  if (response.ok()) body = response.read_all(kMaxBodyBytes);  // same ctx: same deadline
  if (!body) {
    result.error = response.error_message();
    return result;
  }
  result.status = response.status();
  result.body = std::move(*body);
  return result;
}

// `s` as a JSON string (bytes >= 0x80 are passed as they are: the upstreams here send UTF-8).
std::string quoted(std::string_view s) {
  std::string out = "\"";
  for (const char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char escape[8];
      std::snprintf(escape, sizeof escape, "\\u%04x", static_cast<unsigned>(c));
      out += escape;
    } else {
      out += c;
    }
  }
  return out + "\"";
}

void fan_out(Client& client, const std::vector<std::string>& upstreams,
             std::chrono::milliseconds deadline, Request& r, ResponseWriter& w) {
  // The request's context, cut short at the deadline (and cancelled with it if the client
  // hangs up). Every call below runs under it.
  auto [ctx, cancel] = green::with_timeout(r.context(), deadline);

  // Room for every result: a call that finishes after we stopped listening sends without
  // parking (Go's buffered channel of len(upstreams), for the same reason).
  green::Channel<Result> results(upstreams.size());
  green::WaitGroup calls;
  for (std::size_t i = 0; i < upstreams.size(); ++i) {
    calls.add(1);
    // One green thread per call. ctx is copied (a cheap shared handle); the rest outlives
    // the thread, because the handler waits for it below.
    green::go([&client, &upstreams, &results, &calls, ctx = ctx, i] {
      (void)results.send(call_upstream(client, ctx, i, upstreams[i]));
      calls.done();
    });
  }

  // Gather: each result as it comes, until all are in or the deadline passes.
  std::vector<std::optional<Result>> got(upstreams.size());
  auto on_result = [&](std::optional<Result> v) {
    if (v) got[v->index] = std::move(*v);  // always a value: nobody closes `results`
  };
  for (std::size_t pending = upstreams.size(); pending > 0; --pending) {
    bool expired = false;
    green::select(green::recv_case(results, on_result),
                  green::done_case(ctx, [&] { expired = true; }));
    if (expired) break;
  }

  // The late calls are aborted now (their connections closed, never pooled), and waited for:
  // they use `client`, `upstreams` and `results`, so none may outlive this handler. Cancelling
  // ends their parked reads at once, so this wait is short.
  cancel();
  calls.wait();

  // Partial results: what arrived in time, and which upstreams did not answer within it.
  std::string out = "{\"deadline_ms\":" + std::to_string(deadline.count()) + ",\"upstreams\":[";
  int late = 0;
  for (std::size_t i = 0; i < upstreams.size(); ++i) {
    out += (i ? ",{\"url\":" : "{\"url\":") + quoted(upstreams[i]);
    if (!got[i]) {
      out += ",\"late\":true}";
      ++late;
    } else if (got[i]->status == 0) {
      out += ",\"error\":" + quoted(got[i]->error) + "}";
    } else {
      out += ",\"status\":" + std::to_string(got[i]->status) +
             ",\"bytes\":" + std::to_string(got[i]->body.size()) +
             ",\"body\":" + quoted(got[i]->body) + "}";
    }
  }
  out += "],\"late\":" + std::to_string(late) + "}\n";
  w.send(200, "application/json", out);
}

int usage(const char* why) {
  std::fprintf(stderr,
               "fanout: %s\nusage: fanout --listen HOST:PORT --upstream URL [--upstream URL ...] "
               "[--deadline 100ms]\n",
               why);
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  std::string listen = "127.0.0.1:8080";
  std::vector<std::string> upstreams;
  std::chrono::milliseconds deadline = 100ms;
  for (int i = 1; i < argc; ++i) {
    const std::string_view flag = argv[i];
    if (i + 1 >= argc) return usage("a flag without its value");
    const char* value = argv[++i];
    if (flag == "--listen") {
      listen = value;
    } else if (flag == "--upstream") {
      if (!parse_url(value)) return usage("--upstream takes http[s]://HOST[:PORT][/PATH]");
      upstreams.emplace_back(value);
    } else if (flag == "--deadline") {
      char* end = nullptr;
      const long n = std::strtol(value, &end, 10);
      const std::string_view unit = end;
      if (n <= 0 || (unit != "ms" && unit != "s")) return usage("--deadline takes 100ms or 2s");
      deadline = unit == "s" ? std::chrono::seconds(n) : std::chrono::milliseconds(n);
    } else {
      return usage("unknown flag");
    }
  }
  if (upstreams.empty()) return usage("at least one --upstream");

  int rc = 0;
  green::run({}, [&] {
    // One Client for the process: its pool keeps upstream connections alive between requests.
    // Every request makes one call per upstream at once, so a burst of requests wants as many
    // connections per upstream: keep that many idle (past the cap, each response would close
    // its connection and the next call dial again), and bound them, so that a flood of
    // requests waits for a connection (and turns late at its deadline) instead of opening
    // thousands of sockets to one upstream.
    ClientOptions client_options;
    client_options.max_conns_per_host = 512;
    client_options.max_idle_per_host = 512;
    Client client(client_options);
    Router router;
    router.handle(Method::kGet, "/", [&](Request& r, ResponseWriter& w) {
      fan_out(client, upstreams, deadline, r, w);
    });
    ServerOptions options;
    options.listen = listen;
    rc = listen_and_serve(options, router);  // every handler has returned when this does
  });
  return rc == 0 ? 0 : 1;
}
