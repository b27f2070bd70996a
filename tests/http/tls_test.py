#!/usr/bin/env python3
"""HTTPS on the real binary: versions, ALPN, SNI, resumption, reload, hostile clients, metrics.

Usage: tls_test.py BINARY [--slow]

build/greenhttp runs with --listen-tls 127.0.0.1:0 and --tls-port-file, with a certificate made
at test time by config/tls/make-cert.sh in a temporary directory (no key material committed).
The clients are real ones: curl, Python's ssl module (which is OpenSSL too, but the client side
of it), and raw sockets for the hostile ones. --slow (the sanitizer trees) doubles the
handshake timeout under test and loosens the bounds on how fast things must happen.

Three servers:
  main   plain and TLS listeners, --tls-handshake-timeout 1s (2s with --slow), a static
         directory: versions, ALPN, SNI, resumption, reload, keep-alive and pipelining over TLS,
         /metrics, the hostile clients (plain HTTP, garbage, stalled and abandoned handshakes, a
         flood of 200 stalled ones), descriptors back to their baseline, and at the end the
         graceful shutdown with an idle TLS connection open.
  tls13  --listen off (TLS alone), --tls-min-version 1.3: a TLS-1.2-only client is refused.
  config the [tls] table of a TOML file, session_tickets = false: TLS 1.2 still resumes through
         the session cache (session IDs).
and the binary's refusals of bad TLS settings (exit 2, one line naming the flag).

Each case prints its name and "ok" or what went wrong; the script exits 1 if any failed. Every
wait is bounded and waits for something observable (a port file, a counter in /metrics, a
line on stderr, a closed socket); all traffic goes to 127.0.0.1.
"""

import hashlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

from binary_harness import Metrics, ServerProcess, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAKE_CERT = os.path.join(ROOT, "config", "tls", "make-cert.sh")

SLOW = "--slow" in sys.argv
HANDSHAKE_TIMEOUT = 2.0 if SLOW else 1.0
# How long something that should be prompt may take: a request on a quiet server, a close the
# server decided on. Generous, for a 2-core machine shared with builds; still far below the
# waits it guards against (a stalled client's handshake timeout, a test's own timeout).
PROMPT = 3.0 if SLOW else 1.5


class Failed(Exception):
    pass


def check(cond, message):
    if not cond:
        raise Failed(message)


# --- certificates -------------------------------------------------------------------------


def make_cert(directory, name, days=None):
    env = dict(os.environ)
    if days is not None:
        env["GREEN_CERT_DAYS"] = str(days)
    subprocess.run(["sh", MAKE_CERT, directory, name], check=True, env=env, timeout=60)
    return os.path.join(directory, name + ".pem"), os.path.join(directory, name + ".key")


def leaf_der(pem_path):
    """The DER bytes of the first certificate in a PEM chain (what getpeercert(True) returns)."""
    text = open(pem_path).read()
    end = text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    return ssl.PEM_cert_to_DER_cert(text[:end] + "\n")


def install(src, dst):
    """Replaces dst with a copy of src in one rename, as a deploy tool would."""
    shutil.copyfile(src, dst + ".tmp")
    os.replace(dst + ".tmp", dst)


# --- HTTP over any socket -----------------------------------------------------------------


class HttpConn:
    """HTTP/1.1 over a connected socket (plain or TLS), keeping what it read past a response."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def send(self, data):
        self.sock.sendall(data)

    def request(self, method, path, body=b"", extra=""):
        head = "%s %s HTTP/1.1\r\nHost: localhost\r\n%s" % (method, path, extra)
        if body or method == "POST":
            head += "Content-Length: %d\r\n" % len(body)
        self.send(head.encode() + b"\r\n" + body)

    def _fill(self):
        data = self.sock.recv(1 << 16)
        if not data:
            raise EOFError("the connection closed before the response ended")
        self.buf += data

    def _take(self, n):
        while len(self.buf) < n:
            self._fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        at = self.buf.index(b"\r\n")
        line = bytes(self.buf[:at])
        del self.buf[: at + 2]
        return line

    def read_response(self):
        """Returns (status, headers with lower-case names, body)."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        at = self.buf.index(b"\r\n\r\n")
        head = bytes(self.buf[:at]).decode("latin-1").split("\r\n")
        del self.buf[: at + 4]
        status = int(head[0].split()[1])
        headers = {}
        for line in head[1:]:
            k, v = line.split(":", 1)
            headers[k.strip().lower()] = v.strip()
        if "content-length" in headers:
            body = self._take(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body += self._take(size)
                self._take(2)
            body = bytes(body)
        else:
            while True:
                try:
                    self._fill()
                except EOFError:
                    break
            body, self.buf = bytes(self.buf), bytearray()
        return status, headers, body

    def get(self, path, extra=""):
        self.request("GET", path, extra=extra)
        return self.read_response()

    def closed_by_peer(self, limit):
        """Whether the peer closes within `limit` seconds (reads and drops anything before)."""
        self.sock.settimeout(limit)
        deadline = time.monotonic() + limit
        try:
            while time.monotonic() < deadline:
                if not self.sock.recv(4096):
                    return True
        except (ConnectionResetError, BrokenPipeError, ssl.SSLError):
            return True  # a reset, or a TLS alert (bad_record_mac, ...) before the close
        except (socket.timeout, TimeoutError):
            return False
        return False


# --- TLS clients ---------------------------------------------------------------------------


class Tls:
    """Client contexts trusting the test CA."""

    def __init__(self, ca):
        self.ca = ca

    def context(self, min_version=None, max_version=None, alpn=None, ciphers=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.ca)
        if min_version is not None:
            ctx.minimum_version = min_version
        if max_version is not None:
            ctx.maximum_version = max_version
        if alpn is not None:
            ctx.set_alpn_protocols(alpn)
        if ciphers is not None:
            ctx.set_ciphers(ciphers)
        return ctx


def tls_connect(port, ctx, server_hostname="localhost", session=None, timeout=10):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=server_hostname, session=session,
                               suppress_ragged_eofs=False)
    except BaseException:
        raw.close()
        raise


def client_hello(ctx):
    """The bytes of a real ClientHello from ctx (a handshake over memory, stopped after it)."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    check(len(hello) > 100 and hello[0] == 0x16, "no ClientHello from the memory handshake")
    return hello


# --- the server ----------------------------------------------------------------------------


class Server(ServerProcess):
    """build/greenhttp in a child process with its TLS port (and plain port, if any) known; the
    TLS listener comes from `args` (--listen-tls and the certificate, or a config file)."""

    def __init__(self, binary, tmp, name, args, plain=True, tls_ctx=None):
        self.name = name
        self.tls_ctx = tls_ctx  # for /metrics over TLS when there is no plain listener
        try:
            super().__init__(binary, os.path.join(tmp, name), args, plain=plain, tls=True)
        except AssertionError as e:
            raise Failed("%s: %s" % (name, e))

    def metrics(self):
        if self.port is not None:
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        else:
            sock = tls_connect(self.tls_port, self.tls_ctx)
        with sock:
            status, _, body = HttpConn(sock).get("/metrics", "Connection: close\r\n")
        check(status == 200, "%s: /metrics answered %d" % (self.name, status))
        return Metrics(body.decode())

    def wait_metric(self, name, want, limit=None, **labels):
        """Waits until the sum of the samples is `want`; returns the last value seen."""
        seen = [None]

        def reached():
            seen[0] = self.metrics().sum(name, **labels)
            return seen[0] == want

        wait_until(reached, limit or PROMPT * 3)
        return seen[0]


def failures_by_reason(server):
    m = server.metrics()
    return {l.get("reason"): v for l, v in m.find("greenhttp_tls_handshake_failures_total")}


def reason_delta(before, after, reason):
    return after.get(reason, 0) - before.get(reason, 0)


# --- the cases -----------------------------------------------------------------------------


class Suite:
    def __init__(self, binary, tmp):
        self.binary = binary
        self.tmp = tmp
        self.certs = os.path.join(tmp, "certs")
        self.server_pem, self.server_key = make_cert(self.certs, "server")
        # Another key and a shorter life, so that the reload shows in the expiry metric too.
        self.second_pem, self.second_key = make_cert(self.certs, "second", days=10)
        self.ca = os.path.join(self.certs, "ca.pem")
        self.tls = Tls(self.ca)
        # The files the main server is pointed at, replaced by the reload case.
        self.cert = os.path.join(self.certs, "current.pem")
        self.key = os.path.join(self.certs, "current.key")
        install(self.server_pem, self.cert)
        install(self.server_key, self.key)
        self.static = os.path.join(tmp, "static")
        os.mkdir(self.static)
        self.big = os.urandom(5 << 20)
        with open(os.path.join(self.static, "big.bin"), "wb") as f:
            f.write(self.big)
        self.main = None
        self.baseline_fds = None

    def https_get(self, port, path="/plaintext", ctx=None, **kw):
        with tls_connect(port, ctx or self.tls.context(), **kw) as s:
            return HttpConn(s).get(path, "Connection: close\r\n")

    def start_main(self):
        self.main = Server(self.binary, self.tmp, "main", [
            "--listen-tls", "127.0.0.1:0", "--tls-cert", self.cert, "--tls-key", self.key,
            "--tls-handshake-timeout", "%gs" % HANDSHAKE_TIMEOUT, "--static-dir", self.static,
            "--max-body", "16MiB"])
        # The baseline of descriptors: after one TLS and one plain connection came and went
        # (whatever the first ones open lazily is open now).
        self.https_get(self.main.tls_port)
        self.main.metrics()
        check(wait_until(lambda: self.main.metrics().sum("greenhttp_tls_connections") == 0,
                         PROMPT), "the warm-up connection is still counted open")
        self.baseline_fds = self.main.fds()

    # versions ------------------------------------------------------------------------------

    def curl(self, port, *args):
        r = subprocess.run(["curl", "-sS", "-v", "--cacert", self.ca, "--max-time", "10",
                            "--resolve", "localhost:%d:127.0.0.1" % port]
                           + list(args) + ["https://localhost:%d/plaintext" % port],
                           capture_output=True, timeout=30)
        return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")

    def case_curl_tls12_and_tls13(self):
        before = self.main.metrics().sum("greenhttp_tls_handshakes_total", result="full")
        for flags, version in ((["--tlsv1.2", "--tls-max", "1.2"], "TLSv1.2"),
                               (["--tlsv1.3"], "TLSv1.3")):
            rc, out, err = self.curl(self.main.tls_port, *flags)
            check(rc == 0, "curl %s: exit %d: %s" % (flags, rc, err[-500:]))
            check(out == "Hello, World!", "curl %s: body %r" % (flags, out[:100]))
            check("SSL connection using %s" % version in err,
                  "curl %s did not use %s: %s" % (flags, version,
                                                  [l for l in err.splitlines() if "SSL" in l]))
            # curl offers h2 and http/1.1; the server prefers h2 (tests/http/http2_test.py).
            check("ALPN: server accepted h2" in err,
                  "curl %s: ALPN was not h2: %s" % (
                      flags, [l for l in err.splitlines() if "ALPN" in l]))
        after = self.main.metrics().sum("greenhttp_tls_handshakes_total", result="full")
        check(after - before == 2, "full handshakes counted %g, want 2" % (after - before))

    def case_min_version_13_refuses_tls12_client(self):
        s = Server(self.binary, self.tmp, "tls13", [
            "--listen-tls", "127.0.0.1:0", "--tls-cert", self.server_pem, "--tls-key",
            self.server_key, "--tls-min-version", "1.3"], plain=False,
            tls_ctx=self.tls.context())
        stalled = None
        try:
            before = failures_by_reason(s)
            try:
                with tls_connect(s.tls_port, self.tls.context(
                        max_version=ssl.TLSVersion.TLSv1_2)) as c:
                    raise Failed("a TLS-1.2-only client got through (%s)" % c.version())
            except ssl.SSLError as e:
                refusal = str(e)
            after = failures_by_reason(s)
            check(reason_delta(before, after, "version") == 1,
                  "version failures %s -> %s (client saw %s)" % (before, after, refusal))
            status, _, body = self.https_get(s.tls_port)  # a TLS 1.3 client is served
            check(status == 200 and body == b"Hello, World!", "TLS 1.3: %d %r" % (status, body))
            rc, out, err = self.curl(s.tls_port, "--tlsv1.2", "--tls-max", "1.2")
            check(rc != 0, "curl limited to TLS 1.2 got %r from a 1.3-only server" % out)
            # A handshake that stalls (this server's timeout is the default 10 s) holds no
            # request: SIGTERM's drain closes it at once rather than waiting it out.
            stalled = socket.create_connection(("127.0.0.1", s.tls_port), timeout=10)
            hello = client_hello(self.tls.context())
            stalled.sendall(hello[: len(hello) // 2])
            s.metrics()  # a later connection answered: the stalled one was accepted before it
        finally:
            start = time.monotonic()
            rc = s.stop()
            took = time.monotonic() - start
            check(rc == 0, "tls13 server: exit %s after SIGTERM: %s" % (rc, s.stderr()[-800:]))
            if stalled is not None:
                stalled.close()
            check(took < PROMPT * 3, "SIGTERM with a stalled handshake took %.1fs" % took)
            report = s.sanitizer_report()
            check(report is None, "tls13 server: %s" % report)

    # ALPN and SNI ---------------------------------------------------------------------------

    def case_alpn(self):
        with tls_connect(self.main.tls_port, self.tls.context(alpn=["h2", "http/1.1"])) as s:
            check(s.selected_alpn_protocol() == "h2",
                  "h2,http/1.1 chose %r" % s.selected_alpn_protocol())
        with tls_connect(self.main.tls_port, self.tls.context(alpn=["http/1.1", "h2"])) as s:
            check(s.selected_alpn_protocol() == "h2",
                  "http/1.1,h2 chose %r (the server's preference is h2)" %
                  s.selected_alpn_protocol())
        with tls_connect(self.main.tls_port, self.tls.context(alpn=["http/1.1"])) as s:
            check(s.selected_alpn_protocol() == "http/1.1",
                  "http/1.1 chose %r" % s.selected_alpn_protocol())
            check(HttpConn(s).get("/plaintext")[0] == 200, "no 200 after ALPN http/1.1")
        with tls_connect(self.main.tls_port, self.tls.context()) as s:
            check(s.selected_alpn_protocol() is None,
                  "no ALPN offered, %r chosen" % s.selected_alpn_protocol())
            check(HttpConn(s).get("/plaintext")[0] == 200, "no 200 without ALPN")
        before = failures_by_reason(self.main)
        try:
            with tls_connect(self.main.tls_port, self.tls.context(alpn=["spdy/3.1"])) as s:
                # TLS 1.3: the client's handshake can end before it reads the server's alert.
                HttpConn(s).get("/plaintext")
                raise Failed("a client offering only spdy/3.1 was served (ALPN %r)" %
                             s.selected_alpn_protocol())
        except (ssl.SSLError, EOFError, ConnectionResetError) as e:
            refusal = e
        check(wait_until(lambda: reason_delta(before, failures_by_reason(self.main), "alpn")
                         == 1, PROMPT),
              "a spdy-only client was refused (%s) but alpn failures went %s -> %s" % (
                  refusal, before, failures_by_reason(self.main)))
        check("NO_APPLICATION_PROTOCOL" in str(refusal) or "no application protocol" in
              str(refusal), "the refusal was not no_application_protocol: %s" % refusal)

    def case_no_sni(self):
        ctx = self.tls.context()
        ctx.check_hostname = False  # no name to check against without SNI
        with tls_connect(self.main.tls_port, ctx, server_hostname=None) as s:
            check(s.getpeercert(binary_form=True) == leaf_der(self.cert),
                  "without SNI the server sent another certificate")
            status, _, body = HttpConn(s).get("/plaintext")
            check(status == 200 and body == b"Hello, World!", "no SNI: %d %r" % (status, body))

    # resumption -----------------------------------------------------------------------------

    def resume(self, port, version, read_first=True):
        """Two connections with one client context, the second offering the first's session.
        Returns whether the second resumed."""
        ctx = self.tls.context(min_version=version, max_version=version)
        with tls_connect(port, ctx) as s:
            check(s.version() == {ssl.TLSVersion.TLSv1_2: "TLSv1.2",
                                  ssl.TLSVersion.TLSv1_3: "TLSv1.3"}[version],
                  "wanted %s, got %s" % (version, s.version()))
            if read_first:
                # TLS 1.3 sends its tickets after the handshake: reading a response lets them in.
                check(HttpConn(s).get("/plaintext")[0] == 200, "first connection: no 200")
            session = s.session
            check(not s.session_reused, "the first connection claims to be resumed")
        with tls_connect(port, ctx, session=session) as s:
            reused = s.session_reused
            check(HttpConn(s).get("/plaintext")[0] == 200, "resumed connection: no 200")
        return reused

    def case_resumption(self):
        before = self.main.metrics().sum("greenhttp_tls_handshakes_total", result="resumed")
        check(self.resume(self.main.tls_port, ssl.TLSVersion.TLSv1_2),
              "TLS 1.2 session (ticket) not resumed")
        check(self.resume(self.main.tls_port, ssl.TLSVersion.TLSv1_3),
              "TLS 1.3 session (PSK ticket) not resumed")
        after = self.main.metrics().sum("greenhttp_tls_handshakes_total", result="resumed")
        check(after - before == 2, "resumed handshakes counted %g, want 2" % (after - before))

    def case_resumption_by_session_id_without_tickets(self):
        cfg = os.path.join(self.tmp, "tickets-off.toml")
        with open(cfg, "w") as f:
            f.write('[tls]\nlisten = "127.0.0.1:0"\ncert = "%s"\nkey = "%s"\n'
                    'session_tickets = false\nsession_cache = 64\nhandshake_timeout = "5s"\n'
                    % (self.server_pem, self.server_key))
        s = Server(self.binary, self.tmp, "config", ["--config", cfg], plain=False,
                   tls_ctx=self.tls.context())
        try:
            ctx = self.tls.context(max_version=ssl.TLSVersion.TLSv1_2)
            with tls_connect(s.tls_port, ctx) as c:
                HttpConn(c).get("/plaintext")
                session = c.session
                check(not session.has_ticket, "a ticket was issued with session_tickets = false")
                check(len(session.id) > 0, "no session ID to resume by")
            with tls_connect(s.tls_port, ctx, session=session) as c:
                check(c.session_reused, "TLS 1.2 not resumed by session ID (cache on, no tickets)")
            m = s.metrics()
            check(m.sum("greenhttp_tls_handshakes_total", result="resumed") == 1,
                  "resumed handshakes: %s" % m.find("greenhttp_tls_handshakes_total"))
        finally:
            rc = s.stop()
            check(rc == 0, "config server: exit %s after SIGTERM: %s" % (rc, s.stderr()[-800:]))
            report = s.sanitizer_report()
            check(report is None, "config server: %s" % report)

    # reload ---------------------------------------------------------------------------------

    def peer_der(self):
        with tls_connect(self.main.tls_port, self.tls.context()) as s:
            der = s.getpeercert(binary_form=True)
            check(HttpConn(s).get("/plaintext")[0] == 200, "no 200 from a new connection")
            return der

    def reload(self, cert, key, outcome):
        """Installs the pair, SIGHUPs, and waits for the reload to be counted as `outcome`."""
        before = self.main.metrics().sum("greenhttp_tls_certificate_reloads_total",
                                         result=outcome)
        install(cert, self.cert)
        install(key, self.key)
        self.main.signal(signal.SIGHUP)
        got = self.main.wait_metric("greenhttp_tls_certificate_reloads_total", before + 1,
                                    result=outcome)
        check(got == before + 1, "SIGHUP: reloads{result=%s} %s -> %s: %s" % (
            outcome, before, got, self.main.stderr()[-800:]))
        check(self.main.alive(), "the server died on SIGHUP")

    def expiry(self):
        return self.main.metrics().sum("greenhttp_tls_certificate_expiry_timestamp_seconds")

    def case_reload(self):
        first, second = leaf_der(self.server_pem), leaf_der(self.second_pem)
        check(first != second, "make-cert.sh made the same certificate twice")
        check(self.peer_der() == first, "before the reload the server has another certificate")
        now = time.time()
        check(abs(self.expiry() - (now + 30 * 86400)) < 86400,
              "expiry metric %g, want about now + 30 days (%g)" % (self.expiry(), now))
        # A keep-alive connection made before the reload.
        kept = tls_connect(self.main.tls_port, self.tls.context())
        try:
            conn = HttpConn(kept)
            check(conn.get("/plaintext")[0] == 200, "kept connection: no 200")

            self.reload(self.second_pem, self.second_key, "ok")
            check("TLS certificate reloaded" in self.main.stderr(),
                  "no 'TLS certificate reloaded' on stderr: %s" % self.main.stderr()[-800:])
            check(self.peer_der() == second, "after SIGHUP new connections get the old cert")
            check(abs(self.expiry() - (now + 10 * 86400)) < 86400,
                  "expiry metric %g after reload, want about now + 10 days" % self.expiry())
            status, _, body = conn.get("/plaintext")
            check(status == 200 and body == b"Hello, World!",
                  "the connection from before the reload: %d %r" % (status, body))
            check(kept.getpeercert(binary_form=True) == first, "the kept connection changed")

            # Bad pairs: a file that is no certificate, then a key that is not the cert's.
            garbage = os.path.join(self.certs, "garbage.pem")
            with open(garbage, "w") as f:
                f.write("-----BEGIN CERTIFICATE-----\nnot base64 at all\n"
                        "-----END CERTIFICATE-----\n")
            for cert, key, what in ((garbage, self.second_key, "a garbage certificate"),
                                    (self.server_pem, self.second_key, "a mismatched key")):
                errors = self.main.stderr().count("TLS certificate not reloaded")
                self.reload(cert, key, "failed")
                check(self.main.stderr().count("TLS certificate not reloaded") == errors + 1,
                      "%s: no 'TLS certificate not reloaded' line: %s" % (
                          what, self.main.stderr()[-800:]))
                check(self.peer_der() == second, "%s replaced the good certificate" % what)
                check(conn.get("/plaintext")[0] == 200, "%s: kept connection broke" % what)
        finally:
            kept.close()
            # The good pair back in the files, for anything that reads them later.
            install(self.second_pem, self.cert)
            install(self.second_key, self.key)

    def case_session_survives_reload(self):
        # The header's promise: ticket keys outlive reload(), so resumption survives it.
        ctx = self.tls.context(max_version=ssl.TLSVersion.TLSv1_2)
        with tls_connect(self.main.tls_port, ctx) as s:
            HttpConn(s).get("/plaintext")
            session = s.session
        self.reload(self.second_pem, self.second_key, "ok")
        with tls_connect(self.main.tls_port, ctx, session=session) as s:
            check(s.session_reused, "a TLS 1.2 ticket from before a reload did not resume")

    # hostile clients ------------------------------------------------------------------------

    def case_plain_http_to_tls_port(self):
        before = failures_by_reason(self.main)
        with socket.create_connection(("127.0.0.1", self.main.tls_port), timeout=10) as s:
            conn = HttpConn(s)
            conn.request("GET", "/plaintext")
            status, headers, body = conn.read_response()
            check(status == 400, "plain HTTP on the TLS port: %d" % status)
            check(b"The plain HTTP request was sent to HTTPS port" in body,
                  "400 body: %r" % body[:300])
            check(conn.closed_by_peer(PROMPT), "the connection stayed open after the 400")
        after = failures_by_reason(self.main)
        check(reason_delta(before, after, "plain_http") == 1,
              "plain_http failures %s -> %s" % (before, after))

    def case_garbage_instead_of_client_hello(self):
        before = failures_by_reason(self.main)
        for junk, reason in ((b"\x00\xff\x13garbage that is not TLS\r\n\r\n", "not_tls"),
                             # A handshake record header, then nonsense.
                             (b"\x16\x03\x01\x00\x20" + b"\xee" * 32, "protocol")):
            with socket.create_connection(("127.0.0.1", self.main.tls_port), timeout=10) as s:
                start = time.monotonic()
                s.sendall(junk)
                check(HttpConn(s).closed_by_peer(PROMPT),
                      "%r: not closed within %gs" % (junk[:8], PROMPT))
                took = time.monotonic() - start
                check(took < HANDSHAKE_TIMEOUT * 0.9 or reason != "not_tls",
                      "garbage was held %.2fs: until the handshake timeout?" % took)
            check(wait_until(lambda: reason_delta(before, failures_by_reason(self.main), reason)
                             == 1, PROMPT),
                  "%r: failures %s -> %s, want %s + 1" % (junk[:8], before,
                                                          failures_by_reason(self.main), reason))
            before = failures_by_reason(self.main)

    def case_garbage_after_the_handshake(self):
        with tls_connect(self.main.tls_port, self.tls.context()) as s:
            conn = HttpConn(s)
            check(conn.get("/plaintext")[0] == 200, "no 200 before the garbage")
            # A record the session cannot decrypt, written under the TLS layer.
            raw = socket.socket(fileno=os.dup(s.fileno()))
            with raw:
                raw.sendall(b"\x17\x03\x03\x00\x40" + b"\x5a" * 64)
            check(conn.closed_by_peer(PROMPT), "a bad record did not end the connection")
        self.served_promptly()

    def cpu_seconds(self):
        fields = open("/proc/%d/stat" % self.main.proc.pid).read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def case_partial_record_does_not_spin(self):
        # A slowloris below TLS: the first bytes of a record, then nothing. The connection is
        # waiting for its next request; it must park, not loop between "readable" and "no
        # whole record yet".
        with tls_connect(self.main.tls_port, self.tls.context()) as s:
            conn = HttpConn(s)
            check(conn.get("/plaintext")[0] == 200, "no 200 before the partial record")
            raw = socket.socket(fileno=os.dup(s.fileno()))
            with raw:
                raw.sendall(b"\x17\x03\x03")
                before = self.cpu_seconds()
                window = 1.0
                time.sleep(window)  # a measurement window, not a wait for an event
                used = self.cpu_seconds() - before
            check(used < window * 0.4,
                  "the server used %.2fs of CPU in %.1fs with one partial record pending" % (
                      used, window))
            self.served_promptly()

    class SClient:
        """openssl s_client on a pipe: its interactive commands (R renegotiates, K updates the
        keys and asks the peer to update its own), and its output as it comes."""

        def __init__(self, port, ca, version):
            self.proc = subprocess.Popen(
                ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, version, "-CAfile",
                 ca, "-servername", "localhost"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            self.lines = []
            self.reader = threading.Thread(target=lambda: self.lines.extend(self.proc.stdout))
            self.reader.start()

        def wait_for(self, text, limit, count=1):
            return wait_until(lambda: sum(text in l for l in self.lines) >= count, limit)

        def send(self, data):
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

        def text(self):
            return b"".join(self.lines).decode(errors="replace")

        def close(self):
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.reader.join(10)

    def case_client_renegotiation_refused(self):
        # Client-initiated renegotiation costs the server a full handshake per request of the
        # client's (the THC-SSL-DoS attack); nginx refuses it, as OpenSSL 3 does by default.
        c = self.SClient(self.main.tls_port, self.ca, "-tls1_2")
        try:
            check(c.wait_for(b"Verify return code", PROMPT * 2),
                  "s_client did not connect: %r" % c.text()[-500:])
            c.send(b"R\n")  # s_client's command: renegotiate
            refused = c.wait_for(b"no renegotiation", PROMPT)
        finally:
            c.close()
        check("RENEGOTIATING" in c.text(), "s_client did not try: %r" % c.text()[-500:])
        check(refused, "client-initiated renegotiation was not refused: %r" % c.text()[-500:])
        check(self.main.alive(), "the server died")
        self.served_promptly()

    def case_key_updates_mid_connection(self):
        # TLS 1.3 KeyUpdate with update_requested: the server must answer with its own, a
        # write in the middle of its read, and go on serving the connection.
        c = self.SClient(self.main.tls_port, self.ca, "-tls1_3")
        try:
            check(c.wait_for(b"Verify return code", PROMPT * 2),
                  "s_client did not connect: %r" % c.text()[-500:])
            for n in (1, 2, 3):
                c.send(b"K\n")
                check(c.wait_for(b"KEYUPDATE", PROMPT, count=n), "no key update %d" % n)
            c.send(b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n")
            answered = c.wait_for(b"HTTP/1.1 200 OK", PROMPT)  # a whole line: the body ends none
        finally:
            c.close()
        check(answered, "no answer after three key updates: %r" % c.text()[-600:])

    def stalled(self, hello, n):
        """n connections that sent the first half of a ClientHello and then nothing."""
        socks = []
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", self.main.tls_port), timeout=10)
            s.sendall(hello[: len(hello) // 2])
            socks.append(s)
        return socks

    def served_promptly(self):
        start = time.monotonic()
        status, _, body = self.https_get(self.main.tls_port)
        took = time.monotonic() - start
        check(status == 200 and body == b"Hello, World!", "meanwhile: %d %r" % (status, body))
        return took

    def case_stalled_handshake_times_out(self):
        hello = client_hello(self.tls.context())
        before = failures_by_reason(self.main)
        (s,) = self.stalled(hello, 1)
        with s:
            start = time.monotonic()
            took = self.served_promptly()
            s.setblocking(False)
            try:
                data = s.recv(1)
                check(False, "the stalled client was answered or closed at once (%r)" % data)
            except BlockingIOError:
                pass  # still open, waiting: the other client was served meanwhile
            check(took < PROMPT, "another client took %.2fs beside a stalled one" % took)
            s.setblocking(True)
            check(HttpConn(s).closed_by_peer(HANDSHAKE_TIMEOUT + PROMPT),
                  "a stalled handshake was not closed within %gs" % (HANDSHAKE_TIMEOUT + PROMPT))
            held = time.monotonic() - start
            check(held >= HANDSHAKE_TIMEOUT * 0.9,
                  "the stalled handshake was closed after %.2fs, before the timeout" % held)
        check(wait_until(lambda: reason_delta(before, failures_by_reason(self.main), "timeout")
                         == 1, PROMPT), "timeout failures %s -> %s" % (
                             before, failures_by_reason(self.main)))

    def case_disconnects_mid_handshake(self):
        hello = client_hello(self.tls.context(min_version=ssl.TLSVersion.TLSv1_3))
        before = failures_by_reason(self.main)
        # FIN after half a ClientHello: end of stream inside the handshake.
        with socket.create_connection(("127.0.0.1", self.main.tls_port), timeout=10) as s:
            s.sendall(hello[:40])
        check(wait_until(lambda: reason_delta(before, failures_by_reason(self.main), "eof")
                         == 1, PROMPT),
              "eof failures %s -> %s" % (before, failures_by_reason(self.main)))
        before = failures_by_reason(self.main)
        # RST once the server has answered the whole ClientHello and waits for our Finished.
        s = socket.create_connection(("127.0.0.1", self.main.tls_port), timeout=10)
        s.sendall(hello)
        check(len(s.recv(4096)) > 0, "no ServerHello")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
        check(wait_until(lambda: reason_delta(before, failures_by_reason(self.main), "reset")
                         == 1, PROMPT),
              "reset failures %s -> %s" % (before, failures_by_reason(self.main)))
        self.served_promptly()

    def case_flood_of_stalled_handshakes(self):
        hello = client_hello(self.tls.context())
        before = failures_by_reason(self.main)
        socks = self.stalled(hello, 200)
        try:
            opened = time.monotonic()
            took = self.served_promptly()
            check(took < PROMPT, "with 200 stalled handshakes a client took %.2fs" % took)
            # Meaningful only if the flood was still there: served before the stalls timed out.
            check(time.monotonic() - opened < HANDSHAKE_TIMEOUT,
                  "too slow to tell: the stalled handshakes may have timed out first")
            check(wait_until(lambda: reason_delta(before, failures_by_reason(self.main),
                                                  "timeout") == 200,
                             HANDSHAKE_TIMEOUT + PROMPT * 2),
                  "timeout failures %s -> %s, want +200" % (before,
                                                            failures_by_reason(self.main)))
            for i, s in enumerate(socks):
                check(HttpConn(s).closed_by_peer(PROMPT),
                      "stalled connection %d of 200 is still open after its timeout" % i)
        finally:
            for s in socks:
                s.close()

    def case_descriptors_back_to_baseline(self):
        check(wait_until(lambda: self.main.fds() <= self.baseline_fds + 2, PROMPT * 2),
              "server descriptors %d, baseline %d" % (self.main.fds(), self.baseline_fds))
        m = self.main.metrics()
        check(m.sum("greenhttp_tls_connections") == 0,
              "open TLS connections counted: %s" % m.find("greenhttp_tls_connections"))
        check(m.sum("greenhttp_tls_handshakes_waiting") == 0, "handshakes still waiting")

    # traffic over TLS -----------------------------------------------------------------------

    def case_keep_alive_many_requests(self):
        with tls_connect(self.main.tls_port, self.tls.context()) as s:
            conn = HttpConn(s)
            for i in range(300):
                status, headers, body = conn.get("/plaintext")
                check(status == 200 and body == b"Hello, World!",
                      "request %d on one connection: %d %r" % (i, status, body))
                check(headers.get("connection", "").lower() != "close",
                      "request %d: the server closes a keep-alive connection" % i)

    def case_large_response_and_bodies(self):
        with tls_connect(self.main.tls_port, self.tls.context()) as s:
            conn = HttpConn(s)
            status, _, body = conn.get("/static/big.bin")
            check(status == 200 and len(body) == len(self.big),
                  "5 MiB file: %d, %d bytes" % (status, len(body)))
            check(hashlib.sha256(body).digest() == hashlib.sha256(self.big).digest(),
                  "5 MiB file: the bytes differ")
            payload = os.urandom(900 << 10)
            conn.request("POST", "/echo", payload, "Content-Type: application/x-test\r\n")
            status, _, body = conn.read_response()
            check(status == 200 and body == payload, "/echo 900 KiB: %d, %d bytes, equal %s" % (
                status, len(body), body == payload))
            upload = self.big * 2
            conn.request("POST", "/upload", upload)
            status, _, body = conn.read_response()
            check(status == 200 and body.startswith(b"bytes=%d " % len(upload)),
                  "/upload 10 MiB: %d %r" % (status, body))
            check(conn.get("/plaintext")[0] == 200, "the connection after the large exchanges")

    def case_pipelined_requests(self):
        with tls_connect(self.main.tls_port, self.tls.context()) as s:
            conn = HttpConn(s)
            batch = b""
            for i in range(20):
                if i % 5 == 4:
                    body = b"piece %d" % i
                    batch += (b"POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: %d\r\n"
                              b"\r\n%s" % (len(body), body))
                else:
                    batch += b"GET /plaintext HTTP/1.1\r\nHost: localhost\r\n\r\n"
            conn.send(batch)  # one write: the server finds many requests in one TLS record
            for i in range(20):
                status, _, body = conn.read_response()
                want = b"piece %d" % i if i % 5 == 4 else b"Hello, World!"
                check(status == 200 and body == want,
                      "pipelined response %d: %d %r" % (i, status, body))

    def case_concurrent_clients(self):
        errors = []
        before = self.main.metrics().sum("greenhttp_tls_handshakes_total", result="full")

        def client():
            try:
                for _ in range(4):
                    status, _, body = self.https_get(self.main.tls_port)
                    if status != 200 or body != b"Hello, World!":
                        errors.append("%d %r" % (status, body))
            except Exception as e:  # reported below, with the others
                errors.append(repr(e))

        threads = [threading.Thread(target=client) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        check(not errors, "concurrent clients: %s" % errors[:5])
        after = self.main.metrics().sum("greenhttp_tls_handshakes_total", result="full")
        check(after - before == 64, "full handshakes counted %g, want 64" % (after - before))

    # /metrics -------------------------------------------------------------------------------

    def case_metrics_connections_by_version_and_cipher(self):
        m = self.main.metrics()
        for name in ("greenhttp_tls_handshakes_total", "greenhttp_tls_handshake_failures_total",
                     "greenhttp_tls_handshakes_waiting",
                     "greenhttp_tls_certificate_reloads_total",
                     "greenhttp_tls_certificate_expiry_timestamp_seconds"):
            check(m.has(name), "/metrics has no %s" % name)
        c13 = tls_connect(self.main.tls_port, self.tls.context(min_version=ssl.TLSVersion.TLSv1_3))
        c12 = tls_connect(self.main.tls_port, self.tls.context(
            max_version=ssl.TLSVersion.TLSv1_2, ciphers="ECDHE-ECDSA-AES128-GCM-SHA256"))
        try:
            for c in (c13, c12):
                check(HttpConn(c).get("/plaintext")[0] == 200, "no 200")
            m = self.main.metrics()
            for c in (c13, c12):
                version, cipher = c.version(), c.cipher()[0]
                n = m.sum("greenhttp_tls_connections", version=version, cipher=cipher)
                check(n >= 1, "greenhttp_tls_connections{version=%s,cipher=%s} is %g: %s" % (
                    version, cipher, n, m.find("greenhttp_tls_connections")))
        finally:
            c13.close()
            c12.close()
        check(wait_until(lambda: self.main.metrics().sum("greenhttp_tls_connections") == 0,
                         PROMPT), "closed connections still counted: %s" % (
                             self.main.metrics().find("greenhttp_tls_connections")))

    # configuration errors -------------------------------------------------------------------

    def case_config_errors(self):
        garbage = os.path.join(self.tmp, "not-a-cert.pem")
        with open(garbage, "w") as f:
            f.write("hello\n")
        tls = ["--listen", "127.0.0.1:0", "--listen-tls", "127.0.0.1:0"]
        pair = ["--tls-cert", self.server_pem, "--tls-key", self.server_key]
        cases = [
            ("--listen-tls without --tls-cert", tls, ("--tls-cert",)),
            ("--listen-tls without --tls-key", tls + ["--tls-cert", self.server_pem],
             ("--tls-key",)),
            ("a missing certificate file", tls + ["--tls-cert", "/nonexistent/cert.pem",
                                                  "--tls-key", self.server_key],
             ("--tls-cert",)),
            ("a certificate file that is none", tls + ["--tls-cert", garbage,
                                                       "--tls-key", self.server_key],
             ("--tls-cert",)),
            ("a key that does not match", tls + ["--tls-cert", self.server_pem,
                                                 "--tls-key", self.second_key],
             ("--tls-cert", "--tls-key")),
            ("--tls-min-version 1.1", tls + pair + ["--tls-min-version", "1.1"],
             ("--tls-min-version",)),
            ("--tls-handshake-timeout soon", tls + pair + ["--tls-handshake-timeout", "soon"],
             ("--tls-handshake-timeout",)),
            ("--tls-session-tickets maybe", tls + pair + ["--tls-session-tickets", "maybe"],
             ("--tls-session-tickets",)),
            ("--tls-ciphers NOPE", tls + pair + ["--tls-ciphers", "NOPE"], ("--tls-ciphers",)),
            ("--tls-ciphersuites NOPE", tls + pair + ["--tls-ciphersuites", "NOPE"],
             ("--tls-ciphersuites",)),
        ]
        problems = []
        for what, argv, names in cases:
            try:
                r = subprocess.run([self.binary, "--access-log", "off"] + argv,
                                   capture_output=True, timeout=10)
            except subprocess.TimeoutExpired:
                problems.append("%s: still running after 10 s (it started?)" % what)
                continue
            err = r.stderr.decode(errors="replace")
            lines = [l for l in err.splitlines() if l.strip()]
            if r.returncode != 2:
                problems.append("%s: exit %d, want 2: %r" % (what, r.returncode, err[-300:]))
            elif len(lines) != 1:
                problems.append("%s: %d lines on stderr, want one: %r" % (what, len(lines),
                                                                          err[-300:]))
            elif not any(n in lines[0] for n in names):
                problems.append("%s: the error names none of %s: %r" % (what, names, lines[0]))
        check(not problems, "\n    ".join(problems))

    # shutdown -------------------------------------------------------------------------------

    def case_sigterm_with_idle_tls_connection(self):
        idle = tls_connect(self.main.tls_port, self.tls.context())
        with idle:
            conn = HttpConn(idle)
            check(conn.get("/plaintext")[0] == 200, "no 200 before SIGTERM")
            start = time.monotonic()
            self.main.signal(signal.SIGTERM)
            idle.settimeout(10)
            try:
                data = idle.recv(4096)
                how = "close_notify" if data == b"" else "data %r" % data[:100]
            except ssl.SSLEOFError as e:
                how = "a TCP close without close_notify (%s)" % e
            except (ConnectionResetError, ssl.SSLError, OSError) as e:
                how = repr(e)
            closed_after = time.monotonic() - start
            rc = self.main.stop(limit=15)
            exited_after = time.monotonic() - start
        check(how == "close_notify", "the idle TLS connection saw %s" % how)
        check(closed_after < PROMPT * 2, "the idle connection was closed after %.2fs" %
              closed_after)
        check(rc == 0, "exit %s after SIGTERM" % rc)
        check(exited_after < PROMPT * 3, "the server took %.2fs to exit" % exited_after)


def main():
    binary = os.path.abspath(sys.argv[1])
    results = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="greenhttp-tls-") as tmp:
        suite = Suite(binary, tmp)

        def run(name):
            t = time.monotonic()
            try:
                getattr(suite, name)()
                outcome = "ok"
            except Failed as e:
                outcome = "FAIL: %s" % e
            except Exception as e:  # an unexpected error is a failure of this case, not all
                outcome = "FAIL: %r" % e
            results.append((name, outcome))
            print("%-50s %5.2fs  %s" % (name[5:], time.monotonic() - t, outcome), flush=True)

        try:
            suite.start_main()
        except Failed as e:
            print("FAIL: %s" % e)
            return 1
        try:
            for name in ["case_config_errors", "case_curl_tls12_and_tls13",
                         "case_min_version_13_refuses_tls12_client", "case_alpn", "case_no_sni",
                         "case_resumption", "case_resumption_by_session_id_without_tickets",
                         "case_keep_alive_many_requests", "case_large_response_and_bodies",
                         "case_pipelined_requests", "case_concurrent_clients",
                         "case_metrics_connections_by_version_and_cipher", "case_reload",
                         "case_session_survives_reload", "case_plain_http_to_tls_port",
                         "case_garbage_instead_of_client_hello",
                         "case_garbage_after_the_handshake", "case_partial_record_does_not_spin", "case_client_renegotiation_refused",
                         "case_key_updates_mid_connection",
                         "case_stalled_handshake_times_out", "case_disconnects_mid_handshake",
                         "case_flood_of_stalled_handshakes", "case_descriptors_back_to_baseline",
                         "case_sigterm_with_idle_tls_connection"]:
                run(name)
        finally:
            suite.main.kill()
            report = suite.main.sanitizer_report()
            if report:
                results.append(("sanitizer", "FAIL"))
                print("FAIL: the main server's stderr has a sanitizer report:\n%s" % report)
            if any(o != "ok" for _, o in results):
                print("--- main server stderr (last 3000 chars) ---\n%s" %
                      suite.main.stderr()[-3000:])
    failed = [n for n, o in results if o != "ok"]
    print("%d cases, %d failed, %.1fs" % (len(results), len(failed), time.monotonic() - started))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
