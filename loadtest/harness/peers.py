"""The servers compared, started and stopped by the harness, all on 127.0.0.1.

Each peer gets the same cores (`taskset -c`), the same number of server threads and the same
wrk flags: greenhttp `--threads N`, Go `GOMAXPROCS=N`, nginx `worker_processes N`.
A peer that cannot run here (not installed, not built, or build/greenhttp still being the
runtime demo that does not answer /plaintext) is skipped with a message saying why and how to
fix it, never with a stack of shell errors.
"""

import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time

from . import procfs

MAKE_DEPS_HINT = "run `make deps` (installs wrk, nginx-light, golang-go, gnuplot-nox, haproxy)"


# Issue 16: the files of the static scenarios, random bytes of fixed sizes, made at run time by
# make_static_files into ctx.static_dir, which every peer serves under /static/.
STATIC_FILES = {"4k.bin": 4096, "1m.bin": 1 << 20}


def make_static_files(tmp):
    """TMP/static with STATIC_FILES; readable by nginx's workers (nobody, when run as root)."""
    out = os.path.join(tmp, "static")
    os.makedirs(out, exist_ok=True)
    os.chmod(out, 0o755)
    for name, size in STATIC_FILES.items():
        path = os.path.join(out, name)
        with open(path, "wb") as f:
            f.write(os.urandom(size))
        os.chmod(path, 0o644)
    return out


class PeerUnavailable(Exception):
    """The peer cannot run on this machine; the message says why and what to do."""


def http_get(port, path, method="GET", body=None, timeout=5.0, tls=None):
    """One request on a fresh connection: (status, headers dict lower-cased, body bytes);
    over HTTPS when tls (an ssl.SSLContext) is given."""
    conn = (http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=tls)
            if tls else http.client.HTTPConnection("127.0.0.1", port, timeout=timeout))
    try:
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
    finally:
        conn.close()


class Peer:
    """A server under test. Subclasses say how to build and start it."""

    name = "?"
    # Routes the scenarios may need; smoke() checks each, and a scenario runs only against
    # peers whose routes it needs passed.
    routes = ("plaintext", "json", "echo", "sleep")
    exit_hint = ""
    # start() waits until GET ready_path answers 200 with this body (None: any body).
    ready_path = "/plaintext"
    ready_body = b"Hello, World!"
    tls = None  # an ssl.SSLContext trusting the run's CA when the peer serves HTTPS (TlsPeer)
    # Serves ctx.static_dir under /static/ when the run has one (the static scenarios); the
    # fronts, the backend and the HTTPS twins do not.
    static = True
    # static-304's validator: "etag" (If-None-Match with the ETag of a 200), or "last-modified"
    # (If-Modified-Since with its Last-Modified) for a server that sends no ETag by design.
    validator = "etag"

    def __init__(self, ctx):
        self.ctx = ctx  # repo, build dir, temp dir, threads, server cpus
        self.proc = None
        self.log_path = os.path.join(ctx.tmp, f"{self.name}.log")

    # -- what subclasses provide
    def prepare(self):
        """Build or locate the server; raise PeerUnavailable with a hint when it cannot run."""

    def argv(self, port):
        raise NotImplementedError

    def env(self):
        return dict(os.environ)

    def version(self):
        return "?"

    # -- shared behaviour
    def command_line(self, port):
        return ["taskset", "-c", self.ctx.server_cpus] + self.argv(port)

    def display(self):
        """The command line for the report, with PORT for the port and TMP for the run's
        temporary directory."""
        return " ".join(self.command_line("PORT")).replace(self.ctx.tmp, "TMP")

    def serves_static(self):
        return self.static and getattr(self.ctx, "static_dir", None) is not None

    def start(self, port):
        """Start the server and wait until it answers /plaintext; raise PeerUnavailable if not."""
        self.port = port
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command_line(port), env=self.env(), stdout=log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + 10
        last_error = "no answer"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PeerUnavailable(f"{self.name} exited with status {self.proc.returncode} "
                                      f"before answering {self.ready_path}{self.exit_hint} "
                                      f"({self._log_tail()})")
            try:
                status, body = self.probe(port)
                if status == 200 and (self.ready_body is None or body == self.ready_body):
                    return
                last_error = f"{self.ready_path} answered {status} {body[:40]!r}"
            except OSError as e:
                last_error = str(e)
            time.sleep(0.1)  # polling a child process under the deadline above
        self.stop()
        raise PeerUnavailable(f"{self.name} did not answer GET {self.ready_path} with 200 "
                              f"{self.ready_body!r} within 10 s ({last_error})")

    def probe(self, port):
        """(status, body) of one GET ready_path: start() polls it until the server answers."""
        status, _, body = http_get(port, self.ready_path, timeout=1, tls=self.tls)
        return status, body

    def get(self, path, method="GET", body=None, timeout=5.0):
        return http_get(self.port, path, method, body, timeout, tls=self.tls)

    def pids(self):
        return procfs.tree(self.proc.pid)

    def stop(self):
        """SIGTERM (a graceful drain), SIGKILL after 10 s; the process is ours, by its id."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def smoke(self):
        """Check every route the scenarios use: {route: "ok" or what went wrong}."""
        results = {}
        for route in self.routes + (("static",) if self.serves_static() else ()):
            try:
                results[route] = getattr(self, f"_check_{route}")()
            except (OSError, http.client.HTTPException, ValueError) as e:
                results[route] = f"error: {e}"
        return results

    def _check_plaintext(self):
        status, headers, body = self.get("/plaintext")
        missing = [h for h in ("server", "date", "content-type", "content-length")
                   if h not in headers]
        if status != 200 or body != b"Hello, World!" or missing:
            return f"status {status}, body {body[:30]!r}, missing headers {missing}"
        return "ok"

    def _check_json(self):
        status, headers, body = self.get("/json")
        if status != 200 or json.loads(body) != {"message": "Hello, World!"}:
            return f"status {status}, body {body[:40]!r}"
        if not headers.get("content-type", "").startswith("application/json"):
            return f"Content-Type {headers.get('content-type')!r}"
        return "ok"

    def _check_echo(self):
        for size in (64, 1024, 4096, 65536):
            body = bytes(range(256)) * (size // 256) if size >= 256 else b"e" * size
            status, _, got = self.get("/echo", "POST", body)
            if status != 200 or got != body:
                return f"{size}-byte body: status {status}, {len(got)} bytes back"
        return "ok"

    def _check_sleep(self):
        t0 = time.monotonic()
        status, _, body = self.get("/sleep?ms=50")
        took = time.monotonic() - t0
        if status != 200:
            return f"status {status} (no /sleep route)"
        if took < 0.045:
            return f"answered after {took * 1000:.0f} ms, not 50"
        return "ok"

    def _check_static(self):
        for name in STATIC_FILES:
            with open(os.path.join(self.ctx.static_dir, name), "rb") as f:
                want = f.read()
            status, _, got = self.get(f"/static/{name}")
            if status != 200 or got != want:
                return (f"GET /static/{name}: status {status}, {len(got)} of {len(want)} "
                        f"bytes{'' if got == want else ', not the file'}")
        return "ok"

    def _log_tail(self):
        try:
            with open(self.log_path, "rb") as f:
                lines = f.read().decode(errors="replace").strip().splitlines()
            return "log: " + " | ".join(lines[-3:]) if lines else "empty log"
        except OSError:
            return "no log"


def _tool_version(argv, stream="stdout"):
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    out = (p.stdout if stream == "stdout" else p.stderr).strip().splitlines()
    return out[0] if out else "?"


class GreenHttp(Peer):
    name = "greenhttp"
    exit_hint = " — build/greenhttp is not the HTTP server yet (still the runtime demo?)"

    def binary(self):
        return os.path.join(self.ctx.build, "greenhttp")

    def prepare(self):
        if not os.access(self.binary(), os.X_OK):
            raise PeerUnavailable(f"{self.binary()} is not built: run `make build`")

    def argv(self, port):
        return [self.binary(), "--listen", f"127.0.0.1:{port}", "--threads",
                str(self.ctx.threads), "--access-log", "off",
                *(["--static-dir", self.ctx.static_dir] if self.serves_static() else [])]

    def env(self):
        env = dict(os.environ)
        env["GREEN_MAXPROCS"] = str(self.ctx.threads)
        return env

    def version(self):
        rev = _tool_version(["git", "-C", self.ctx.repo, "describe", "--always", "--dirty"])
        return f"greenhttp {rev} (Release build, {self.binary()})"


class GreenHttpBase(GreenHttp):
    """An earlier greenhttp, for a before/after measured in the same interleaved run: a second
    build tree of the base commit, $LOADTEST_BASE_BUILD (default build-base), e.g.
      git worktree add /tmp/base <commit> && cmake -S /tmp/base -B build-base && make -C ...
    then LOADTEST_PEERS=greenhttp-base,greenhttp,nginx."""

    name = "greenhttp-base"
    exit_hint = ""

    def binary(self):
        base = os.environ.get("LOADTEST_BASE_BUILD", "build-base")
        return os.path.join(self.ctx.repo, base, "greenhttp") if not os.path.isabs(base) \
            else os.path.join(base, "greenhttp")

    def prepare(self):
        if not os.access(self.binary(), os.X_OK):
            raise PeerUnavailable(f"{self.binary()} is not built: set LOADTEST_BASE_BUILD to "
                                  "the build tree of the commit to compare against")

    def version(self):
        return f"greenhttp base build ({self.binary()})"


def build_go(ctx, source, binary):
    """go build loadtest/peers/<source> into binary, offline (standard library only)."""
    if shutil.which("go") is None:
        raise PeerUnavailable(f"`go` is not installed: {MAKE_DEPS_HINT}")
    os.makedirs(os.path.dirname(binary), exist_ok=True)
    env = dict(os.environ, GOPROXY="off", GOFLAGS="-mod=mod", CGO_ENABLED="0")
    src = os.path.join(ctx.repo, "loadtest", "peers", source)
    p = subprocess.run(["go", "build", "-o", binary, "."], cwd=src, env=env,
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise PeerUnavailable(f"go build in {src} failed: {p.stderr.strip()}")


class GoNetHttp(Peer):
    name = "go"
    source = "go"  # loadtest/peers/<source>/
    # http.FileServer sets no ETag (ServeContent honours If-None-Match only for one the
    # handler sets): static-304 revalidates it with If-Modified-Since, its own validator.
    validator = "last-modified"

    def binary(self):
        return os.path.join(self.ctx.build, "loadtest", "gopeer")

    def prepare(self):
        build_go(self.ctx, self.source, self.binary())

    def argv(self, port):
        return [self.binary(), "--listen", f"127.0.0.1:{port}", "--threads",
                str(self.ctx.threads),
                *(["--static-dir", self.ctx.static_dir] if self.serves_static() else [])]

    def env(self):
        env = dict(os.environ)
        env["GOMAXPROCS"] = str(self.ctx.threads)
        return env

    def version(self):
        return f"Go net/http, {_tool_version(['go', 'version'])}"


class Nginx(Peer):
    name = "nginx"

    def prepare(self):
        if shutil.which("nginx") is None and not os.access("/usr/sbin/nginx", os.X_OK):
            raise PeerUnavailable(f"nginx is not installed: {MAKE_DEPS_HINT}")
        self.prefix = os.path.join(self.ctx.tmp, "nginx")
        os.makedirs(os.path.join(self.prefix, "empty"), exist_ok=True)
        # Run as root, nginx's workers become `nobody`: let them reach the prefix.
        for d in (self.ctx.tmp, self.prefix, os.path.join(self.prefix, "empty")):
            os.chmod(d, 0o755)

    def nginx(self):
        return shutil.which("nginx") or "/usr/sbin/nginx"

    template = "nginx.conf.in"

    def fill(self, conf):
        """Fills in the template's placeholders beyond @PORT@, @WORKERS@ and @PREFIX@."""
        return conf

    def argv(self, port):
        template = os.path.join(self.ctx.repo, "loadtest", "peers", "nginx", self.template)
        with open(template) as f:
            conf = self.fill(f.read().replace("@PORT@", str(port))
                             .replace("@WORKERS@", str(self.ctx.threads))
                             .replace("@PREFIX@", self.prefix)
                             .replace("@STATIC@", self.ctx.static_dir if self.serves_static()
                                      else os.path.join(self.prefix, "empty")))
        path = os.path.join(self.prefix, "nginx.conf")
        with open(path, "w") as f:
            f.write(conf)
        return [self.nginx(), "-p", self.prefix, "-e", os.path.join(self.prefix, "error.log"),
                "-c", path]

    def display(self):
        return (f"taskset -c {self.ctx.server_cpus} nginx -p TMP -e TMP/error.log -c "
                "TMP/nginx.conf (loadtest/peers/nginx/nginx.conf.in with PORT, workers, TMP)")

    def version(self):
        return _tool_version([self.nginx(), "-v"], stream="stderr").replace("nginx version: ", "")


ALL = {"greenhttp": GreenHttp, "greenhttp-base": GreenHttpBase, "go": GoNetHttp,
       "nginx": Nginx}


# -- The `proxy` and `fanout` scenarios (issue 14): the server under test is a front (a
# reverse proxy, or the fan-out example) that calls one greenhttp backend. The backend is the
# same build/greenhttp for every front, started once per scenario on ctx.backend_cpus (beside
# wrk, not on the front's CPUs: see compare.py's pick_cpus), so the figures differ only by the
# front; the CPU per request is the front's process tree alone (the backend is not its child).
# A front keeps its base peer's name ("greenhttp", "nginx", "go"), so the report's columns,
# ratios and charts line up with the other scenarios.

class Backend(GreenHttp):
    """build/greenhttp as the upstream of the fronts, on its own CPUs and thread count."""

    name = "backend"
    static = False

    def command_line(self, port):
        return ["taskset", "-c", self.ctx.backend_cpus] + self.argv(port)

    def argv(self, port):
        return [self.binary(), "--listen", f"127.0.0.1:{port}", "--threads",
                str(self.ctx.backend_threads), "--access-log", "off"]

    def env(self):
        return dict(os.environ, GREEN_MAXPROCS=str(self.ctx.backend_threads))


class Front:
    """Mixin of a front: `upstream` (the backend's port) is set before start(); its log is
    kept apart from the base peer's."""

    upstream = None
    static = False

    def __init__(self, ctx):
        super().__init__(ctx)
        self.log_path = os.path.join(ctx.tmp, f"{self.name}-{self.kind}.log")

    def _check_proxy(self):
        status, headers, body = self.get("/plaintext")
        if status != 200 or body != b"Hello, World!":
            return f"GET /plaintext through it: status {status}, body {body[:40]!r}"
        return "ok"


class GreenHttpProxy(Front, GreenHttp):
    kind = "proxy"
    routes = ("proxy",)
    exit_hint = ""

    def binary(self):
        return os.path.join(self.ctx.build, "examples", "proxy")

    def prepare(self):
        if not os.access(self.binary(), os.X_OK):
            raise PeerUnavailable(f"{self.binary()} is not built: run `make build`")

    def argv(self, port):
        return [self.binary(), "--listen", f"127.0.0.1:{port}", "--upstream",
                f"http://127.0.0.1:{self.upstream}"]


class GreenHttpFanout(Front, GreenHttp):
    """examples/fanout calling the backend's /plaintext three times per request (three
    upstream URLs, one backend: the client pools them as one host)."""

    kind = "fanout"
    routes = ("fanout",)
    exit_hint = ""
    ready_path, ready_body = "/", None
    calls = 3

    def binary(self):
        return os.path.join(self.ctx.build, "examples", "fanout")

    prepare = GreenHttpProxy.prepare

    def argv(self, port):
        argv = [self.binary(), "--listen", f"127.0.0.1:{port}", "--deadline", "1s"]
        for _ in range(self.calls):
            argv += ["--upstream", f"http://127.0.0.1:{self.upstream}/plaintext"]
        return argv

    def _check_fanout(self):
        status, _, body = self.get("/")
        doc = json.loads(body) if status == 200 else {}
        ups = doc.get("upstreams", [])
        if len(ups) != self.calls or doc.get("late") != 0 or \
                any(u.get("body") != "Hello, World!" for u in ups):
            return f"GET /: status {status}, body {body[:80]!r}"
        return "ok"


class GoProxy(Front, GoNetHttp):
    """Go's httputil.ReverseProxy (loadtest/peers/go-proxy/)."""

    kind = "proxy"
    routes = ("proxy",)
    source = "go-proxy"

    def binary(self):
        return os.path.join(self.ctx.build, "loadtest", "goproxy")

    def argv(self, port):
        return [self.binary(), "--listen", f"127.0.0.1:{port}", "--upstream",
                f"http://127.0.0.1:{self.upstream}"]

    def version(self):
        return f"Go httputil.ReverseProxy, {_tool_version(['go', 'version'])}"


class NginxProxy(Front, Nginx):
    """nginx proxy_pass with upstream keepalive (loadtest/peers/nginx/nginx-proxy.conf.in)."""

    kind = "proxy"
    routes = ("proxy",)
    template = "nginx-proxy.conf.in"

    def fill(self, conf):
        return conf.replace("@UPSTREAM@", f"127.0.0.1:{self.upstream}")

    def display(self):
        return super().display().replace("nginx.conf.in", self.template)


# FRONTS[kind][peer name]: the front that stands for that peer in that scenario; a peer with
# none sits the scenario out.
FRONTS = {"proxy": {"greenhttp": GreenHttpProxy, "nginx": NginxProxy, "go": GoProxy},
          "fanout": {"greenhttp": GreenHttpFanout}}


# -- The HTTPS scenarios (issue 15): each peer serves HTTPS alone on one certificate, made once
# per run by config/tls/make-cert.sh into ctx.tls_dir (ECDSA P-256, a throwaway CA), with its
# defaults for protocols and ciphers. A TLS peer keeps its base peer's name, so the report's
# columns and ratios line up with the plain scenarios.

class TlsPeer:
    """Mixin: the peer serves HTTPS on the run's certificate; checks go through a client that
    trusts the run's CA."""

    routes = ("plaintext", "resume")
    kind = "tls"
    static = False

    def __init__(self, ctx):
        super().__init__(ctx)
        self.log_path = os.path.join(ctx.tmp, f"{self.name}-tls.log")
        self.tls = ssl.create_default_context(cafile=os.path.join(ctx.tls_dir, "ca.pem"))

    def cert(self):
        return os.path.join(self.ctx.tls_dir, "server.pem")

    def key(self):
        return os.path.join(self.ctx.tls_dir, "server.key")

    def _handshake(self, session=None):
        """One GET /plaintext on a new TLS connection: (SSLSocket facts, session after it)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw:
            with self.tls.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as s:
                s.sendall(b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Connection: close\r\n\r\n")
                while s.recv(4096):  # to the end: TLS 1.3 tickets arrive after the handshake
                    pass
                return (s.version(), s.cipher()[0], s.session_reused), s.session

    def _check_resume(self):
        """The session-resumption scenario assumes the server resumes: check that it does."""
        (version, cipher, _), session = self._handshake()
        self.negotiated = f"{version} {cipher}"
        (_, _, reused), _ = self._handshake(session)
        return "ok" if reused else f"a {version} session was not resumed"


class GreenHttpTls(TlsPeer, GreenHttp):
    # --tls-max-handshakes left at its default (no cap) unless `extra` says otherwise.
    extra = ()

    def argv(self, port):
        return [self.binary(), "--listen", "off", "--listen-tls", f"127.0.0.1:{port}",
                "--tls-cert", self.cert(), "--tls-key", self.key(), "--threads",
                str(self.ctx.threads), "--access-log", "off", *self.extra]


class GreenHttpTlsCapped(GreenHttpTls):
    """The handshake-flood scenario's comparison: handshakes capped at twice the threads."""

    name = "greenhttp-capped"

    @property
    def extra(self):
        return ("--tls-max-handshakes", str(2 * self.ctx.threads))


class GoTls(TlsPeer, GoNetHttp):
    def argv(self, port):
        return super().argv(port) + ["--tls-cert", self.cert(), "--tls-key", self.key()]

    def version(self):
        return f"Go net/http + crypto/tls, {_tool_version(['go', 'version'])}"


class NginxTls(TlsPeer, Nginx):
    template = "nginx-tls.conf.in"

    def fill(self, conf):
        return conf.replace("@CERT@", self.cert()).replace("@KEY@", self.key())

    def display(self):
        return super().display().replace("nginx.conf.in", self.template)


TLS_PEERS = {"greenhttp": GreenHttpTls, "go": GoTls, "nginx": NginxTls,
             "greenhttp-capped": GreenHttpTlsCapped}


# -- The HTTP/2 scenarios (issue 17): each peer's HTTP/2 twin, h2 over TLS (ALPN h2, the run's
# certificate, as the HTTPS twins) or h2c (cleartext, prior knowledge), serving /plaintext and
# the run's static files. Checked with curl (Debian's is built with nghttp2): every answer
# must come over HTTP/2. A twin keeps its base peer's name, so the report's columns line up.

H2_INSTALL_HINT = "install curl (built with HTTP/2, as Debian's is)"


def curl_h2(port, path, mode, cafile=None, timeout=5, tmp=None):
    """One GET with curl over HTTP/2: mode "tls" (`--http2`: ALPN, which falls back to
    HTTP/1.1 when the server offers no h2) or "h2c" (`--http2-prior-knowledge`). Returns
    (curl's HTTP version: "2" or "1.1", status, {header: value} lower-cased, body bytes);
    raises OSError when curl fails (no connection, an HTTP/2 protocol error)."""
    with tempfile.TemporaryDirectory(dir=tmp) as d:
        body_path, head_path = os.path.join(d, "body"), os.path.join(d, "head")
        argv = ["curl", "-sS", "--max-time", str(timeout), "-o", body_path, "-D", head_path,
                "-w", "%{http_version} %{http_code}"]
        if mode == "tls":
            argv += ["--http2", "--cacert", cafile, f"https://127.0.0.1:{port}{path}"]
        else:
            argv += ["--http2-prior-knowledge", f"http://127.0.0.1:{port}{path}"]
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout + 5)
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"curl did not finish within {timeout + 5} s")
        if p.returncode != 0:
            raise ConnectionError(f"curl exited {p.returncode}: {p.stderr.strip()[:200]}")
        version, _, code = p.stdout.strip().partition(" ")
        headers = {}
        with open(head_path, "rb") as f:
            for line in f.read().decode(errors="replace").splitlines()[1:]:
                name, sep, value = line.partition(":")
                if sep:
                    headers[name.strip().lower()] = value.strip()
        with open(body_path, "rb") as f:
            return version, int(code), headers, f.read()


_HTTP2_FLAG = {}


def require_http2(binary):
    """build/greenhttp speaks HTTP/2 once its --help lists --http2 (issue 17); before that
    the HTTP/2 scenarios skip it with this reason rather than measure its HTTP/1.1."""
    if binary not in _HTTP2_FLAG:
        try:
            p = subprocess.run([binary, "--help"], capture_output=True, text=True, timeout=10)
            _HTTP2_FLAG[binary] = "--http2" in p.stdout + p.stderr
        except (OSError, subprocess.TimeoutExpired):
            _HTTP2_FLAG[binary] = False
    if not _HTTP2_FLAG[binary]:
        raise PeerUnavailable(f"{binary} has no HTTP/2 yet (its --help lists no --http2)")


class H2Peer:
    """Mixin: the peer speaks HTTP/2, mode "tls" or "h2c"; smoke results go under
    "h2:<route>" (tls) or "h2c:<route>"."""

    mode = "tls"
    routes = ("plaintext",)
    kind = "h2"
    static = True

    def __init__(self, ctx):
        super().__init__(ctx)
        self.log_path = os.path.join(ctx.tmp, f"{self.name}-{self.mode}.log")

    @property
    def smoke_prefix(self):
        return "h2" if self.mode == "tls" else "h2c"

    def cafile(self):
        return os.path.join(self.ctx.tls_dir, "ca.pem") if self.mode == "tls" else None

    def h2_get(self, path, timeout=5):
        """(status, headers, body) of one GET over HTTP/2; ValueError if it came over
        HTTP/1.1."""
        version, status, headers, body = curl_h2(self.port, path, self.mode, self.cafile(),
                                                 timeout, self.ctx.tmp)
        if version != "2":
            raise ValueError(f"GET {path} was answered over HTTP/{version}, not HTTP/2")
        return status, headers, body

    def probe(self, port):
        """Ready once it answers, over HTTP/2 or else HTTP/1.1 (an HTTP/1.1-only server is
        then reported by the smoke check, not as one that never started)."""
        try:
            _, status, _, body = curl_h2(port, self.ready_path, self.mode, self.cafile(), 1,
                                         self.ctx.tmp)
            return status, body
        except OSError:
            try:
                return super().probe(port)
            except http.client.HTTPException as e:  # an h2c-only port answering HTTP/1.1
                raise ConnectionError(f"not HTTP/2, and HTTP/1.1 answered with {e!r}")

    def _check_plaintext(self):
        status, headers, body = self.h2_get("/plaintext")
        missing = [h for h in ("content-type", "content-length") if h not in headers]
        banned = [h for h in ("connection", "transfer-encoding", "keep-alive") if h in headers]
        if status != 200 or body != b"Hello, World!" or missing or banned:
            return (f"status {status}, body {body[:30]!r}, missing headers {missing}, "
                    f"connection-specific headers {banned}")
        return "ok"

    def _check_static(self):
        for name in STATIC_FILES:
            with open(os.path.join(self.ctx.static_dir, name), "rb") as f:
                want = f.read()
            status, _, got = self.h2_get(f"/static/{name}")
            if status != 200 or got != want:
                return (f"GET /static/{name}: status {status}, {len(got)} of {len(want)} "
                        f"bytes{'' if got == want else ', not the file'}")
        return "ok"


class GreenHttpH2Tls(H2Peer, GreenHttpTls):
    """build/greenhttp --listen off --listen-tls: ALPN offers h2 then http/1.1."""

    def prepare(self):
        super().prepare()
        require_http2(self.binary())

    def argv(self, port):
        return super().argv(port) + (["--static-dir", self.ctx.static_dir]
                                     if self.serves_static() else [])


class GreenHttpH2c(H2Peer, GreenHttp):
    """build/greenhttp's plain --listen: h2c with prior knowledge (the preface), HTTP/1.1
    otherwise, on one port; --h2c is on by default."""

    mode = "h2c"

    def prepare(self):
        super().prepare()
        require_http2(self.binary())


class GoH2Tls(H2Peer, GoTls):
    """gopeer --tls-cert --tls-key --http2: ServeTLS with net/http's bundled HTTP/2 at its
    defaults (250 concurrent streams per connection)."""

    def argv(self, port):
        return super().argv(port) + ["--http2"]

    def version(self):
        return f"Go net/http + crypto/tls, HTTP/2 built in, {_tool_version(['go', 'version'])}"


class NginxH2Conf:
    """Mixin: peers/nginx/nginx-h2.conf.in, `listen ... ssl http2` with nginx-tls.conf.in's
    TLS settings, or `listen ... http2` (h2c, prior knowledge only: no HTTP/1.1 on that
    port)."""

    template = "nginx-h2.conf.in"

    def fill(self, conf):
        if self.mode == "tls":
            tls = (f"    ssl_certificate {self.cert()};\n"
                   f"    ssl_certificate_key {self.key()};\n"
                   "    ssl_protocols TLSv1.2 TLSv1.3;\n"
                   "    ssl_session_cache shared:SSL:10m;\n"
                   "    ssl_session_timeout 5m;\n"
                   "    ssl_session_tickets on;\n")
            return conf.replace("@LISTEN@", "ssl http2").replace("@TLS@", tls)
        return conf.replace("@LISTEN@", "http2").replace("@TLS@", "")

    def display(self):
        return (super().display().replace("nginx.conf.in", self.template)
                + (": `listen ... ssl http2`" if self.mode == "tls" else ": `listen ... http2`"))


class NginxH2Tls(H2Peer, NginxH2Conf, TlsPeer, Nginx):
    pass


class NginxH2c(H2Peer, NginxH2Conf, Nginx):
    mode = "h2c"


# H2_PEERS[mode][peer name]: the peer's HTTP/2 twin; a peer with none sits the mode out, for
# the reason in H2_MISSING.
H2_PEERS = {"tls": {"greenhttp": GreenHttpH2Tls, "nginx": NginxH2Tls, "go": GoH2Tls},
            "h2c": {"greenhttp": GreenHttpH2c, "nginx": NginxH2c}}
H2_MISSING = {"go": "Go 1.19's net/http has no h2c (cleartext HTTP/2 is "
                    "golang.org/x/net/http2/h2c, outside the standard library)"}


def make_cert(repo, tmp):
    """The run's certificate: config/tls/make-cert.sh into tmp/tls; returns the directory."""
    out = os.path.join(tmp, "tls")
    p = subprocess.run(["sh", os.path.join(repo, "config", "tls", "make-cert.sh"), out],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise PeerUnavailable(f"config/tls/make-cert.sh failed: {p.stderr.strip()}")
    # nginx's master reads the key as root before its workers become nobody; the others run
    # as the harness's user.
    return out


def response_size(port, path, header=None):
    """(status, bytes on the wire) of one answer to the request wrk sends: GET path HTTP/1.1,
    Host, and header if given."""
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               + (f"{header}\r\n" if header else "") + "\r\n")
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(request.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError("closed before the end of the headers")
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0 if status in (204, 304) else next(
            (int(v) for k, _, v in (line.partition(b":") for line in lines[1:])
             if k.strip().lower() == b"content-length"), None)
        if length is None:
            raise ValueError(f"status {status} without Content-Length")
        while len(body) < length:
            chunk = s.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed after {len(body)} of {length} body bytes")
            body += chunk
        return status, len(head) + 4 + length


def revalidation(peer, path):
    """static-304: the header that revalidates `path` on this peer, from one GET of it: its
    ETag (If-None-Match), or its Last-Modified (If-Modified-Since) for a peer whose validator
    is "last-modified"; then one request with that header, which must be answered 304.
    Returns {"header", "check", "size_304", "size_200"}: check is "ok" or what went wrong;
    the sizes (bytes on the wire of one answer with and without the header) let the report
    count from wrk's byte total how many answers carried the file. A peer that should send an
    ETag and does not gets a placeholder one, so the load still runs and its 200s show in the
    counts: a failure in the report, not a skipped peer."""
    field, name = (("etag", "If-None-Match") if peer.validator == "etag"
                   else ("last-modified", "If-Modified-Since"))
    header = f'{name}: "loadtest-no-{field}"'
    try:
        status, headers, _ = peer.get(path)
        value = headers.get(field)
        if status != 200 or not value:
            return {"header": header, "check": f"GET {path}: status {status} without "
                                               f"{field.title()} (placeholder sent)"}
        header = f"{name}: {value}"
        status_200, size_200 = response_size(peer.port, path)
        status, size_304 = response_size(peer.port, path, header)
    except (OSError, ValueError, http.client.HTTPException) as e:
        return {"header": header, "check": f"error: {e}"}
    sizes = {"size_304": size_304, "size_200": size_200}
    if status != 304 or status_200 != 200:
        return {"header": header, "check": f"answered {status}, not 304", **sizes}
    return {"header": header, "check": "ok", **sizes}
