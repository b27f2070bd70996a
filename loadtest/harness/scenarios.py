"""The wrk scenarios: one definition each, so the report, the charts and the commands it prints
all come from the same place. Every run is `wrk -t1 -c<conns> -d<secs>s --latency` (anchors.md),
with a Lua script from loadtest/wrk/ where the shape needs one."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    path: str
    conns: int = 100
    script: str = ""          # loadtest/wrk/<script>; report.lua is appended to it
    args: tuple = ()          # passed to the script after `--`
    needs: tuple = ("plaintext",)  # routes a peer must pass in its smoke test
    note: str = ""
    min_seconds: int = 0      # floor on the run length, even with LOADTEST_QUICK
    # "proxy" / "fanout": wrk loads each peer's front (peers.FRONTS), which calls a greenhttp
    # backend started for the scenario; the CPU per request is the front's.
    front: str = ""
    # Issue 15. tls: every peer serves HTTPS on one certificate (peers.TLS_PEERS) and wrk
    # loads https://. headers: wrk -H. client "tlsload": loadtest/peers/tlsload (a new TLS
    # connection per request, resumption off) instead of wrk. kind "idle": memory per idle
    # connection (harness/idle.py) instead of a load; "flood": wrk keep-alive beside a
    # handshake flood (compare.py's run_flood).
    tls: bool = False
    headers: tuple = ()
    client: str = "wrk"
    kind: str = "load"
    # Issue 16. static: the file (harness/peers.py STATIC_FILES, made at run time) that `path`
    # names under /static/; revalidate: every request carries the peer's own validator for it
    # (If-None-Match: its ETag) and must be answered 304; check_script: the warm-up runs with
    # loadtest/wrk/<check_script> instead, which counts every status (wrk's response() hook
    # costs wrk ~15% of its requests/s, so the measured runs go without it); rss_trace: keep
    # the RSS samples taken during the run.
    static: str = ""
    revalidate: bool = False
    check_script: str = ""
    rss_trace: bool = False
    # Issue 17. h2: the scenario speaks HTTP/2 to each peer's HTTP/2 twin (peers.H2_PEERS):
    # "tls" (ALPN h2 on the run's certificate; tls is True as well) or "h2c" (cleartext, prior
    # knowledge). client "h2load": nghttp2's h2load, -c conns -m streams (streams per
    # connection), instead of wrk. kind "idle" with h2 "h2c": memory per idle HTTP/2 connection
    # beside HTTP/1.1's (compare.py's run_h2_idle).
    h2: str = ""
    streams: int = 1
    # `make loadtest` without LOADTEST_SCENARIOS runs the scenarios whose default is True.
    default: bool = True

    def seconds(self, requested):
        return max(requested, self.min_seconds)


SCENARIOS = [
    Scenario("plaintext", "plaintext, keep-alive, c=100", "/plaintext",
             note="TechEmpower plaintext, one request per write"),
    Scenario("json", "json, keep-alive, c=100", "/json", needs=("json",),
             note="TechEmpower json: a new object serialised per request"),
    Scenario("pipelined", "plaintext pipelined x16, c=100", "/plaintext", script="pipeline.lua",
             args=("16",), note="16 requests per write, as TechEmpower's plaintext depth"),
    Scenario("echo", "POST /echo 64 B/1 KiB/4 KiB, c=100", "/echo", script="echo.lua",
             needs=("echo",), note="bodies read and written back; nginx echoes through `mirror`"),
    Scenario("mix", "mix with /sleep?ms=10, c=100", "/", script="mix.lua", args=("10",),
             needs=("plaintext", "json", "sleep"),
             note="1 request in 8 parks 10 ms on a timer; nginx has no /sleep"),
    Scenario("c1000", "plaintext, c=1000", "/plaintext", conns=1000),
    # wrk opens all 10,000 connections at once, inside the timed window; past the listen
    # backlog (somaxconn) the kernel drops handshakes and clients retry after 1 s, 3 s... In a
    # 2 s run that storm is the whole figure (Go often answers nothing at all), hence 5 s.
    Scenario("c10000", "plaintext, c=10000", "/plaintext", conns=10000, min_seconds=5,
             note="wrk opens all 10,000 connections at the start of each run, inside the "
                  "timed window: the accept storm weighs on the figure"),
    # Issue 14. The fronts: greenhttp's examples/proxy, nginx proxy_pass with upstream
    # keepalive 64 (peers/nginx/nginx-proxy.conf.in), Go's httputil.ReverseProxy with 64 idle
    # connections per host (peers/go-proxy/); the backend is build/greenhttp for all three.
    Scenario("proxy", "reverse proxy to a greenhttp backend, c=100", "/plaintext",
             needs=("proxy",), front="proxy",
             note="each proxy in front of the same greenhttp backend (/plaintext), keep-alive "
                  "both sides; CPU/req and RSS are the proxy's alone"),
    Scenario("fanout", "fan-out, 3 upstream calls per request, c=100", "/", needs=("fanout",),
             front="fanout",
             note="examples/fanout: GET / calls the backend's /plaintext three times at once "
                  "(deadline 1 s) and answers JSON; greenhttp only"),
]

SCENARIOS += [
    Scenario("https", "HTTPS plaintext, keep-alive, c=100", "/plaintext", tls=True,
             note="the same certificate (ECDSA P-256) for all; each peer's default protocols "
                  "and ciphers (the negotiated ones are in the HTTPS section)"),
    # wrk resumes: it SSL_clear()s and reuses one SSL object per connection slot, which keeps
    # the session (wrk's src/ssl.c); each peer's smoke check "resume" makes sure the server
    # does resume.
    Scenario("https-handshake", "HTTPS, new connection per request, resumed, c=100",
             "/plaintext", tls=True, headers=("Connection: close",),
             needs=("plaintext", "resume"),
             note="`Connection: close`: one TLS handshake per request; wrk resumes the session "
                  "(an abbreviated handshake: no certificate, no signature); latency is the "
                  "request alone, without connect and handshake"),
    Scenario("https-handshake-full", "HTTPS, new connection per request, full handshakes, c=100",
             "/plaintext", tls=True, client="tlsload",
             note="loadtest/peers/tlsload: resumption off, every handshake full (ECDHE and the "
                  "server's ECDSA signature); latency is the whole connection"),
    Scenario("https-idle", "memory per idle keep-alive TLS connection", "/plaintext", tls=True,
             conns=10000, kind="idle",
             note="idle_holder.py --tls: N connections, one request each, held idle"),
    # The measured side is tlsload -keepalive, not wrk: wrk opens its connections inside its
    # run, which would queue its own handshakes behind the flood's.
    Scenario("https-flood", "HTTPS keep-alive c=50 beside a full-handshake flood (c=200)",
             "/plaintext", tls=True, conns=50, kind="flood", client="tlsload",
             note="p99 of 50 established keep-alive connections while tlsload opens new ones; "
                  "greenhttp without a handshake cap (its default) and with one"),
]

# Issue 16: files from a directory the harness fills with random bytes at run time, served by
# greenhttp --static-dir, nginx (sendfile, open_file_cache; peers/nginx/nginx.conf.in) and Go's
# http.FileServer, each under /static/.
SCENARIOS += [
    Scenario("static-4k", "static file 4 KiB, keep-alive, c=100", "/static/4k.bin",
             static="4k.bin", needs=("static",),
             note="a 4 KiB file of random bytes under /static/"),
    Scenario("static-1m", "static file 1 MiB, keep-alive, c=50", "/static/1m.bin", conns=50,
             static="1m.bin", needs=("static",), rss_trace=True,
             note="a 1 MiB file: bytes/s, server CPU per MiB sent, and the server's RSS "
                  "through the run"),
    Scenario("static-304", "static file 4 KiB revalidated (304), c=100", "/static/4k.bin",
             static="4k.bin", needs=("static",), revalidate=True, check_script="status.lua",
             note="every request carries `If-None-Match:` the server's own ETag for the "
                  "file; the warm-up counts every status (status.lua), the measured runs' "
                  "byte counts say how many answers carried the file"),
]

# Issue 17: HTTP/2. h2load (Debian nghttp2-client) drives the load: -c connections, each with
# -m concurrent streams, one thread (-t1, as wrk runs), for the run's seconds (-D). It is
# told to speak h2 and nothing else (--npn-list=h2 over TLS; prior knowledge on http://), and
# its summary is checked: every request done must have succeeded, no status but 2xx, the
# negotiated protocol h2 (TLS) or h2c. Each peer's HTTP/2 twin (peers.H2_PEERS): greenhttp
# --listen-tls (ALPN h2) or its plain --listen (h2c prior knowledge), nginx `listen ... ssl
# http2` or `listen ... http2` (peers/nginx/nginx-h2.conf.in), Go ServeTLS with its built-in
# HTTP/2 (--http2); Go 1.19's standard library has no h2c, so Go sits h2c and h2-idle out.
SCENARIOS += [
    Scenario("h2-tls", "HTTP/2 over TLS plaintext, c=100 × 10 streams", "/plaintext",
             conns=100, streams=10, tls=True, h2="tls", client="h2load",
             note="h2load: 100 connections, 10 concurrent streams each, ALPN h2 only"),
    Scenario("h2c", "HTTP/2 cleartext (prior knowledge) plaintext, c=100 × 10 streams",
             "/plaintext", conns=100, streams=10, h2="h2c", client="h2load",
             note="h2load on http://: the connection preface first, no Upgrade; Go has no "
                  "h2c in its standard library"),
    Scenario("h2-1m", "HTTP/2 over TLS, 1 MiB file per stream, c=10 × 10 streams",
             "/static/1m.bin", conns=10, streams=10, tls=True, h2="tls", client="h2load",
             static="1m.bin", needs=("static",), rss_trace=True,
             note="h2load over TLS (ALPN h2): 100 concurrent 1 MiB downloads; bytes/s, CPU "
                  "per MiB and the server's RSS through the run"),
    Scenario("h2-idle", "memory per idle HTTP/2 (h2c) connection beside HTTP/1.1's",
             "/plaintext", conns=10000, kind="idle", h2="h2c",
             note="idle_holder.py --h2c: the connection preface and SETTINGS, the server's "
                  "SETTINGS and ACK awaited, then held idle; beside idle_holder.py's HTTP/1.1 "
                  "connections (one request each) on the same server's plain port"),
]

BY_NAME = {s.name: s for s in SCENARIOS}
# LOADTEST_SCENARIOS names that stand for several scenarios.
GROUPS = {"https-all": [s.name for s in SCENARIOS if s.tls and not s.h2],
          "static-all": [s.name for s in SCENARIOS if s.static and not s.h2],
          "h2-all": [s.name for s in SCENARIOS if s.h2]}
