"""examples/proxy (green::http::ReverseProxy): headers and bodies pass through as RFC 9110 says a
proxy passes them, upstream failures become 502/504 or a truncated response, a client that
leaves cancels the upstream call, round robin skips an upstream that is down, and a chaos run
leaves no fds or memory behind. https:// upstreams (a Python ssl server, and greenhttp's own
--listen-tls) are verified against --upstream-ca, and one that does not verify is 502.

The upstreams are real servers on 127.0.0.1: greenhttp itself (build/greenhttp), and small
servers written here on raw sockets, each doing exactly what a test needs (record the request,
answer garbage, reset, stall, trickle). Usage: proxy_test.py BUILD/examples/proxy BUILD/greenhttp
"""
import hashlib
import http.client
import os
import random
import re
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from example_process import Example, wait_until

PROXY = None
GREENHTTP = None
MAKE_CERT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "config", "tls",
                         "make-cert.sh")


# --- processes ---------------------------------------------------------------------------------

class Proxy(Example):
    """examples/proxy on 127.0.0.1:0 in front of `upstreams` (URLs), with extra flags."""

    def __init__(self, upstreams, *flags, metrics=False, ready_timeout=10.0):
        args = [PROXY, "--listen", "127.0.0.1:0"]
        for u in upstreams:
            args += ["--upstream", u]
        if metrics:
            args += ["--metrics-listen", "127.0.0.1:0"]
        args += list(flags)
        self.metrics_port = None  # before the reader starts: on_stderr_line sets it
        super().__init__(PROXY, ready_timeout=ready_timeout, args=args[1:])

    def on_stderr_line(self, line):
        m = re.match(r"metrics listening on 127\.0\.0\.1:(\d+)$", line)
        if m:
            self.metrics_port = int(m.group(1))

    def metrics(self):
        c = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=10)
        try:
            c.request("GET", "/metrics")
            r = c.getresponse()
            assert r.status == 200, r.status
            text = r.read().decode()
        finally:
            c.close()
        values = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                values[name] = float(value)
        return values

    def fd_count(self):
        return len(os.listdir("/proc/%d/fd" % self.proc.pid))

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def sanitized(self):
        with open("/proc/%d/maps" % self.proc.pid) as f:
            maps = f.read()
        return "libasan" in maps or "libtsan" in maps


class Greenhttp:
    """build/greenhttp on 127.0.0.1:0 as the upstream, with a static dir and a large --max-body."""

    def __init__(self, static_dir):
        self.proc = subprocess.Popen(
            [GREENHTTP, "--listen", "127.0.0.1:0", "--access-log", "off", "--threads", "2",
             "--static-dir", static_dir, "--max-body", "64MiB", "--log-level", "info"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.port = None
        ready = threading.Event()

        def read():
            for line in self.proc.stderr:
                m = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
                if m and self.port is None:
                    self.port = int(m.group(1))
                    ready.set()
            ready.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        ready.wait(10)
        if self.port is None:
            self.close()
            raise RuntimeError("greenhttp did not start")
        self.url = "http://127.0.0.1:%d" % self.port

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._reader.join(timeout=5)
        self.proc.stderr.close()


# --- upstreams on raw sockets ----------------------------------------------------------------

def read_head(f):
    """(request or status line, [(name, value)]) from a binary file, or None at EOF."""
    line = f.readline()
    if not line:
        return None
    headers = []
    while True:
        h = f.readline()
        if h in (b"\r\n", b"\n", b""):
            break
        name, value = h.decode("latin-1").split(":", 1)
        headers.append((name, value.strip()))
    return line.decode("latin-1").rstrip("\r\n"), headers


def header(headers, name):
    values = [v for k, v in headers if k.lower() == name.lower()]
    return values[0] if values else None


def read_body(f, headers):
    if (header(headers, "transfer-encoding") or "").lower() == "chunked":
        body = b""
        while True:
            size = int(f.readline().split(b";")[0], 16)
            if size == 0:
                while f.readline() not in (b"\r\n", b""):
                    pass
                return body
            body += f.read(size)
            f.readline()
    n = int(header(headers, "content-length") or 0)
    return f.read(n)


class Upstream:
    """A server on 127.0.0.1 whose every request is handled by `behave(upstream, conn, f,
    request)`; request = (line, headers, body). behave returns True to keep the connection for
    the next request. Connections it saw end (EOF or error while the request was pending) are
    counted in `closed`, as the way a test observes cancellation."""

    def __init__(self, behave, read_request_body=True):
        self.behave = behave
        self.read_request_body = read_request_body
        self.requests = []  # (line, headers, body)
        self.closed = 0
        self.lock = threading.Lock()
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.url = "http://127.0.0.1:%d" % self.port
        self.conns = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.conns.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        f = conn.makefile("rb")
        try:
            while True:
                head = read_head(f)
                if head is None:
                    break
                body = read_body(f, head[1]) if self.read_request_body else None
                with self.lock:
                    self.requests.append((head[0], head[1], body))
                if not self.behave(self, conn, f, (head[0], head[1], body)):
                    break
        except (OSError, ValueError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def saw_closed(self):
        with self.lock:
            self.closed += 1

    def close(self):
        self.sock.close()
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def respond(conn, status, headers, body=b""):
    lines = ["HTTP/1.1 %s" % status] + ["%s: %s" % h for h in headers]
    conn.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)


def ok(upstream, conn, f, request):
    respond(conn, "200 OK", [("Content-Length", "2")], b"ok")
    return True


def wait_closed(upstream, conn, f=None, request=None):
    """Never answers: blocks until the peer closes `conn` (or resets it), then counts it."""
    conn.settimeout(30)
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass
    upstream.saw_closed()


def refused_url():
    """A URL nobody listens on: the port is bound (so no one else takes it) but not listening,
    so connecting to it is refused. The socket is returned to be kept open."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s, "http://127.0.0.1:%d" % s.getsockname()[1]


def raw_exchange(port, data, timeout=10):
    """Sends `data` on a new connection and reads until the proxy closes it."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return out


def get(port, path, method="GET", body=None, headers=None, timeout=10):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, r.getheaders(), r.read()
    finally:
        c.close()


# --- the tests -------------------------------------------------------------------------------

class Headers(unittest.TestCase):
    def test_request_headers_lose_hop_by_hop_and_gain_forwarded_and_via(self):
        up = Upstream(ok)
        try:
            with Proxy([up.url]) as px:
                request = (b"GET /a%20b/../c?x=1&y=%2F HTTP/1.1\r\n"
                           b"Host: front.example:8443\r\n"
                           b"Connection: keep-alive, X-Secret\r\n"
                           b"X-Secret: named by Connection\r\n"
                           b"Keep-Alive: timeout=5\r\n"
                           b"Proxy-Connection: keep-alive\r\n"
                           b"TE: trailers\r\n"
                           b"Proxy-Authorization: Basic eDp5\r\n"
                           b"Trailer: X-Checksum\r\n"
                           b"X-Forwarded-For: 10.0.0.1\r\n"
                           b"X-Forwarded-For: 10.0.0.2\r\n"
                           b"X-Forwarded-Proto: https\r\n"
                           b"X-Forwarded-Host: spoofed.example\r\n"
                           b"Via: 1.0 edge\r\n"
                           b"X-Custom: kept\r\n"
                           b"Cookie: a=1\r\n"
                           b"Connection: close\r\n\r\n")
                reply = raw_exchange(px.port, request)
                self.assertTrue(reply.startswith(b"HTTP/1.1 200"), reply)
            line, headers, _ = up.requests[0]
            self.assertEqual(line, "GET /a%20b/../c?x=1&y=%2F HTTP/1.1")  # the target as sent
            names = [k.lower() for k, _ in headers]
            for hop in ("connection", "x-secret", "keep-alive", "proxy-connection", "te",
                        "proxy-authorization", "trailer", "transfer-encoding", "upgrade"):
                self.assertNotIn(hop, names)
            self.assertEqual(header(headers, "host"), "front.example:8443")
            self.assertEqual(header(headers, "x-custom"), "kept")
            self.assertEqual(header(headers, "cookie"), "a=1")
            self.assertEqual(header(headers, "x-forwarded-for"), "10.0.0.1, 10.0.0.2, 127.0.0.1")
            self.assertEqual([v for k, v in headers if k.lower() == "x-forwarded-proto"], ["http"])
            self.assertEqual([v for k, v in headers if k.lower() == "x-forwarded-host"],
                             ["front.example:8443"])
            self.assertEqual(header(headers, "via"), "1.0 edge, 1.1 greenhttp")
        finally:
            up.close()

    def test_http10_client_is_named_in_via_and_upstream_host_on_request(self):
        up = Upstream(ok)
        try:
            with Proxy([up.url], "--rewrite-host") as px:
                reply = raw_exchange(px.port, b"GET /x HTTP/1.0\r\nHost: front\r\n\r\n")
                self.assertTrue(reply.startswith(b"HTTP/1.1 200"), reply)
            _, headers, _ = up.requests[0]
            self.assertEqual(header(headers, "host"), "127.0.0.1:%d" % up.port)  # --rewrite-host
            self.assertEqual(header(headers, "x-forwarded-host"), "front")
            self.assertEqual(header(headers, "via"), "1.0 greenhttp")
        finally:
            up.close()

    def test_response_headers_lose_hop_by_hop_and_gain_via(self):
        def answer(upstream, conn, f, request):
            respond(conn, "201 Created", [
                ("Connection", "close, X-Internal"), ("X-Internal", "secret"),
                ("Keep-Alive", "timeout=5"), ("Proxy-Authenticate", "Basic"),
                ("Upgrade", "h2c"), ("Trailer", "X-Sum"), ("Server", "upstream/1.0"),
                ("Date", "Mon, 01 Jan 2001 00:00:00 GMT"), ("Via", "1.1 inner"),
                ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"), ("Content-Type", "text/x-thing"),
                ("Content-Length", "5")], b"hello")
            return False

        up = Upstream(answer)
        try:
            with Proxy([up.url]) as px:
                c = px.conn()
                c.request("GET", "/")
                r = c.getresponse()
                self.assertEqual((r.status, r.read()), (201, b"hello"))
                headers = r.getheaders()
                names = [k.lower() for k, _ in headers]
                for hop in ("x-internal", "keep-alive", "proxy-authenticate", "upgrade",
                            "trailer", "transfer-encoding"):
                    self.assertNotIn(hop, names)
                # The upstream's Connection: close is its own: the client's connection stays.
                self.assertNotIn("connection", names)
                self.assertEqual([v for k, v in headers if k.lower() == "set-cookie"],
                                 ["a=1", "b=2"])
                self.assertEqual(r.getheader("content-type"), "text/x-thing")
                self.assertEqual(r.getheader("content-length"), "5")
                self.assertEqual(r.getheader("via"), "1.1 inner, 1.1 greenhttp")
                self.assertEqual([v for k, v in headers if k.lower() == "server"], ["greenhttp"])
                self.assertEqual(len([k for k in names if k == "date"]), 1)
                self.assertNotIn("2001", r.getheader("date"))
                # And the kept-alive connection serves the next request.
                c.request("GET", "/")
                self.assertEqual(c.getresponse().read(), b"hello")
                c.close()
        finally:
            up.close()


    def test_no_body_statuses_and_head_keep_the_connection_usable(self):
        def answer(upstream, conn, f, request):
            method, path = request[0].split()[:2]
            if path == "/204":
                respond(conn, "204 No Content", [("X-A", "1")])
            elif path == "/304":
                respond(conn, "304 Not Modified", [("ETag", '"v1"'), ("Content-Length", "10")])
            elif method == "HEAD":  # a chunked GET, asked for its head only
                respond(conn, "200 OK", [("Transfer-Encoding", "chunked")])
            else:
                respond(conn, "200 OK", [("Content-Length", "2")], b"ok")
            return True

        up = Upstream(answer)
        try:
            with Proxy([up.url]) as px:
                c = px.conn()
                for method, path, status in (("GET", "/204", 204), ("GET", "/304", 304),
                                             ("HEAD", "/chunked", 200), ("GET", "/ok", 200)):
                    c.request(method, path)
                    r = c.getresponse()
                    body = r.read()
                    self.assertEqual(r.status, status, path)
                    self.assertEqual(body, b"ok" if path == "/ok" else b"", path)
                    if path == "/304":
                        self.assertEqual(r.getheader("etag"), '"v1"')
                c.close()
        finally:
            up.close()

    def test_upstream_path_prefix_and_expect_continue(self):
        up = Upstream(ok)
        try:
            with Proxy([up.url + "/api/"]) as px:
                s = socket.create_connection(("127.0.0.1", px.port), timeout=10)
                s.sendall(b"POST /x?y=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n"
                          b"Expect: 100-continue\r\n\r\n")
                self.assertTrue(s.recv(4096).startswith(b"HTTP/1.1 100 Continue"))
                s.sendall(b"body")
                reply = b""
                while b"ok" not in reply:
                    chunk = s.recv(4096)
                    self.assertTrue(chunk, reply)
                    reply += chunk
                s.close()
            line, headers, body = up.requests[0]
            self.assertEqual((line, body), ("POST /api/x?y=1 HTTP/1.1", b"body"))
            self.assertIsNone(header(headers, "expect"))
        finally:
            up.close()


class Bodies(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.static_dir = tempfile.mkdtemp(prefix="proxy_test_")
        cls.big = os.urandom(20 << 20)
        with open(os.path.join(cls.static_dir, "big.bin"), "wb") as f:
            f.write(cls.big)
        cls.backend = Greenhttp(cls.static_dir)

    @classmethod
    def tearDownClass(cls):
        cls.backend.close()
        shutil.rmtree(cls.static_dir)

    def test_plaintext_keeps_its_content_length(self):
        with Proxy([self.backend.url]) as px:
            status, headers, body = get(px.port, "/plaintext")
            self.assertEqual((status, body), (200, b"Hello, World!"))
            h = {k.lower(): v for k, v in headers}
            self.assertEqual(h["content-length"], "13")
            self.assertNotIn("transfer-encoding", h)
            self.assertEqual(h["via"], "1.1 greenhttp")
            # HEAD: the length a GET would have, no body.
            status, headers, body = get(px.port, "/plaintext", method="HEAD")
            self.assertEqual((status, body), (200, b""))
            self.assertEqual(dict((k.lower(), v) for k, v in headers)["content-length"], "13")

    def test_large_download_streams_with_its_length(self):
        with Proxy([self.backend.url]) as px:
            status, headers, body = get(px.port, "/static/big.bin", timeout=30)
            self.assertEqual(status, 200)
            self.assertEqual(dict((k.lower(), v) for k, v in headers)["content-length"],
                             str(len(self.big)))
            self.assertEqual(hashlib.sha256(body).digest(), hashlib.sha256(self.big).digest())

    def test_large_upload_with_length_and_chunked_echoes_back(self):
        data = self.big
        with Proxy([self.backend.url]) as px:
            status, _, body = get(px.port, "/echo", method="POST", body=data, timeout=60,
                                  headers={"Content-Type": "application/x-test"})
            self.assertEqual(status, 200)
            self.assertEqual(len(body), len(data))
            self.assertTrue(body == data)
            # Chunked from the client: streamed to the upstream chunked (its length unknown).
            c = px.conn(timeout=60)
            pieces = [data[i:i + (1 << 20)] for i in range(0, 4 << 20, 1 << 20)]
            c.request("POST", "/echo", body=iter(pieces), encode_chunked=True)
            r = c.getresponse()
            self.assertEqual(r.status, 200)
            self.assertTrue(r.read() == data[:4 << 20])
            c.close()

    def test_event_stream_is_not_held_back(self):
        with Proxy([self.backend.url]) as px:
            s = socket.create_connection(("127.0.0.1", px.port), timeout=10)
            s.sendall(b"GET /events?n=2&ms=5000 HTTP/1.1\r\nHost: x\r\n\r\n")
            # The first event must come through while the upstream still holds the second one
            # back for 5 s: a proxy that buffered would time out here.
            s.settimeout(3)
            got = b""
            while b"data: 1" not in got:
                chunk = s.recv(65536)
                self.assertTrue(chunk, got)
                got += chunk
            self.assertIn(b"transfer-encoding: chunked", got.lower())
            s.close()

    def test_slow_upstream_body_and_slow_client_body_arrive_whole(self):
        def trickle(upstream, conn, f, request):
            respond(conn, "200 OK", [("Transfer-Encoding", "chunked")])
            for i in range(10):
                conn.sendall(b"3\r\n%03d\r\n" % i)
                time.sleep(0.02)  # the upstream's pace: what this test is about
            conn.sendall(b"0\r\n\r\n")
            return True

        up = Upstream(trickle)
        try:
            with Proxy([up.url]) as px:
                status, _, body = get(px.port, "/")
                self.assertEqual((status, body), (200, b"".join(b"%03d" % i for i in range(10))))
                # The client trickles a chunked upload; the upstream gets all of it.
                s = socket.create_connection(("127.0.0.1", px.port), timeout=10)
                s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
                for i in range(5):
                    s.sendall(b"2\r\n%02d\r\n" % i)
                    time.sleep(0.02)  # the client's pace
                s.sendall(b"0\r\n\r\n")
                f = s.makefile("rb")
                self.assertIn(b"200", f.readline())
                s.close()
                self.assertEqual(up.requests[-1][2], b"0001020304")
        finally:
            up.close()

    def test_slow_client_slows_the_upstream(self):
        total = 64 << 20
        state = {"sent": 0, "stalled": threading.Event()}

        def flood(upstream, conn, f, request):
            respond(conn, "200 OK", [("Content-Length", str(total))])
            piece = b"x" * 65536
            conn.settimeout(0.5)
            while state["sent"] < total:
                try:
                    # send, not sendall: a timeout then means nothing of this piece went out.
                    state["sent"] += conn.send(piece[:total - state["sent"]])
                except socket.timeout:  # the proxy stopped reading
                    state["stalled"].set()
                    conn.settimeout(30)
            return False

        up = Upstream(flood)
        try:
            with Proxy([up.url]) as px:
                rss_before = px.rss_kib()
                s = socket.socket()
                s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
                s.settimeout(30)
                s.connect(("127.0.0.1", px.port))
                s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                # The client reads nothing: the upstream must stall long before the body ends,
                # with the proxy holding a bounded amount of it.
                self.assertTrue(state["stalled"].wait(20), "the upstream was never held back")
                self.assertLess(state["sent"], total // 2)
                if not px.sanitized():
                    self.assertLess(px.rss_kib() - rss_before, 16 << 10)
                got = 0
                while True:
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        break
                    got += len(chunk)
                    if got >= total:
                        break
                s.close()
                self.assertGreaterEqual(got, total)  # the head and the whole body, in the end
        finally:
            up.close()


class Failures(unittest.TestCase):
    def test_refused_garbage_and_reset_are_502(self):
        def garbage(upstream, conn, f, request):
            conn.sendall(b"SPEAKING NOT HTTP\r\n\r\n")
            return False

        def reset(upstream, conn, f, request):
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return False  # closed with RST

        keep, refused = refused_url()
        bad = Upstream(garbage)
        rst = Upstream(reset)
        try:
            for url in (refused, bad.url, rst.url):
                with Proxy([url]) as px:
                    for _ in range(2):  # the second finds it marked down and tries it anyway
                        status, _, body = get(px.port, "/x")
                        self.assertEqual(status, 502, url)
                        self.assertIn(b"502 Bad Gateway", body)
        finally:
            keep.close()
            bad.close()
            rst.close()

    def test_an_answer_sent_before_the_upload_was_read_is_relayed(self):
        def refuse(upstream, conn, f, request):
            respond(conn, "413 Content Too Large",
                    [("Content-Length", "4"), ("Connection", "close")], b"big!")
            # Then the body is read and dropped (a lingering close, as nginx and greenhttp do),
            # so no reset can overtake the answer.
            while f.read(65536):
                pass
            return False

        up = Upstream(refuse, read_request_body=False)
        try:
            with Proxy([up.url]) as px:
                s = socket.create_connection(("127.0.0.1", px.port), timeout=10)
                s.sendall(b"PUT /file HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n"
                          + b"a" * (1 << 20))
                reply = b""
                while b"big!" not in reply:
                    chunk = s.recv(65536)
                    self.assertTrue(chunk, reply)
                    reply += chunk
                self.assertTrue(reply.startswith(b"HTTP/1.1 413"), reply)
                s.close()
        finally:
            up.close()

    def test_upstream_cut_mid_body_truncates_the_response(self):
        def cut_length(upstream, conn, f, request):
            respond(conn, "200 OK", [("Content-Length", "100000")], b"y" * 70000)
            return False

        def cut_chunked(upstream, conn, f, request):
            respond(conn, "200 OK", [("Transfer-Encoding", "chunked")],
                    b"11170\r\n" + b"z" * 70000 + b"\r\n")
            return False

        for behave in (cut_length, cut_chunked):
            up = Upstream(behave)
            try:
                with Proxy([up.url]) as px:
                    reply = raw_exchange(px.port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    head, body = reply.split(b"\r\n\r\n", 1)
                    self.assertIn(b"200 OK", head)
                    if behave is cut_length:
                        self.assertIn(b"Content-Length: 100000", head)
                        self.assertLess(len(body), 100000)
                    else:
                        self.assertIn(b"Transfer-Encoding: chunked", head)
                        self.assertFalse(body.endswith(b"0\r\n\r\n"), body[-20:])
            finally:
                up.close()

    def test_slow_upstream_is_504_and_its_call_is_dropped(self):
        up = Upstream(wait_closed)
        try:
            with Proxy([up.url], "--upstream-timeout", "300ms") as px:
                start = time.monotonic()
                status, _, body = get(px.port, "/slow")
                self.assertEqual(status, 504)
                self.assertIn(b"504 Gateway Timeout", body)
                self.assertLess(time.monotonic() - start, 5)
                self.assertTrue(wait_until(lambda: up.closed >= 1, 5))
        finally:
            up.close()


class Cancellation(unittest.TestCase):
    def test_client_leaving_while_upstream_thinks_closes_the_upstream_call(self):
        up = Upstream(wait_closed)
        try:
            with Proxy([up.url]) as px:  # default timeouts: 30 s, far past the deadline below
                s = socket.create_connection(("127.0.0.1", px.port), timeout=10)
                s.sendall(b"GET /think HTTP/1.1\r\nHost: x\r\n\r\n")
                self.assertTrue(wait_until(lambda: len(up.requests) == 1, 5))
                s.close()
                self.assertTrue(wait_until(lambda: up.closed == 1, 5),
                                "the upstream never saw the call end")
        finally:
            up.close()

    def test_client_leaving_mid_body_closes_the_upstream_stream(self):
        def endless(upstream, conn, f, request):
            respond(conn, "200 OK", [("Transfer-Encoding", "chunked")])
            try:
                while True:
                    conn.sendall(b"400\r\n" + b"e" * 1024 + b"\r\n")
                    time.sleep(0.01)  # an endless slow stream
            except OSError:
                upstream.saw_closed()
            return False

        up = Upstream(endless)
        try:
            with Proxy([up.url]) as px:
                s = socket.create_connection(("127.0.0.1", px.port), timeout=10)
                s.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
                self.assertIn(b"200 OK", s.recv(65536))
                s.close()
                self.assertTrue(wait_until(lambda: up.closed == 1, 5),
                                "the upstream kept streaming to nobody")
        finally:
            up.close()


class Balancing(unittest.TestCase):
    def test_round_robin_over_two(self):
        a, b = Upstream(ok), Upstream(ok)
        try:
            with Proxy([a.url, b.url]) as px:
                for _ in range(10):
                    self.assertEqual(get(px.port, "/")[0], 200)
            self.assertEqual((len(a.requests), len(b.requests)), (5, 5))
        finally:
            a.close()
            b.close()

    def test_a_down_upstream_is_skipped_and_requests_still_succeed(self):
        keep, refused = refused_url()
        good = Upstream(ok)
        try:
            with Proxy([refused, good.url], "--fail-timeout", "60s", metrics=True) as px:
                for _ in range(10):
                    self.assertEqual(get(px.port, "/", method="POST", body=b"data")[0], 200)
                self.assertEqual(len(good.requests), 10)
                self.assertTrue(all(r[2] == b"data" for r in good.requests))
                m = px.metrics()
                down = 'greenhttp_proxy_upstream_%s{upstream="127.0.0.1:%s"}' % (
                    "%s", refused.rsplit(":", 1)[1])
                # One failed connect marked it down (max_fails 1); it was not tried again.
                self.assertEqual(m[down % "failures_total"], 1)
                self.assertEqual(m[down % "down"], 1)
                self.assertEqual(m["greenhttp_proxy_next_upstream_total"], 1)
                self.assertEqual(m["greenhttp_proxy_requests_total"], 10)
                self.assertIn("greenhttp_proxy_client_requests_total", m)
        finally:
            keep.close()
            good.close()


class Chaos(unittest.TestCase):
    def test_chaos_leaves_no_fds_or_memory_behind(self):
        """Bounded: 2 rounds of 200 requests, 8 at a time, mixing clients that leave early,
        upstreams that send garbage, reset, stall or trickle, and clients that read slowly.
        After each round the proxy's fds come back to where they were, and its RSS does not
        grow from the first round to the second."""

        def chaos(upstream, conn, f, request):
            path = request[0].split()[1]
            if path == "/garbage":
                conn.sendall(b"\x00\x01garbage\r\n\r\n")
                return False
            if path == "/reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return False
            if path == "/stall":
                wait_closed(upstream, conn)
                return False
            if path == "/big":
                respond(conn, "200 OK", [("Content-Length", str(1 << 20))], b"b" * (1 << 20))
                return True
            if path == "/trickle":
                respond(conn, "200 OK", [("Transfer-Encoding", "chunked")])
                for _ in range(5):
                    conn.sendall(b"1\r\nt\r\n")
                    time.sleep(0.01)  # the upstream's pace
                conn.sendall(b"0\r\n\r\n")
                return True
            respond(conn, "200 OK", [("Content-Length", "2")], b"ok")
            return True

        up = Upstream(chaos)
        rng = random.Random(14)

        def one(kind):
            s = socket.create_connection(("127.0.0.1", px.port), timeout=10)
            try:
                if kind == "leave_early":
                    s.sendall(b"GET /stall HTTP/1.1\r\nHost: x\r\n\r\n")
                    time.sleep(rng.random() * 0.05)  # leaves at a random point of the call
                elif kind == "leave_mid_upload":
                    s.sendall(b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
                              + b"u" * 100000)
                elif kind == "leave_mid_download":
                    s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
                    s.recv(1000)
                elif kind == "slow_reader":
                    s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    while s.recv(65536):
                        time.sleep(0.001)  # a slow reader
                elif kind == "bad_request":
                    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
                    while s.recv(65536):
                        pass
                else:  # a whole request: garbage, reset, stall (504), trickle or ok
                    s.sendall(b"GET /%s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
                              % kind.encode())
                    while s.recv(65536):
                        pass
            except OSError:
                pass
            finally:
                s.close()

        kinds = ["leave_early", "leave_mid_upload", "leave_mid_download", "slow_reader",
                 "bad_request", "garbage", "reset", "stall", "trickle", "ok", "ok", "ok"]

        def round_of(n):
            jobs = [rng.choice(kinds) for _ in range(n)]
            lock = threading.Lock()

            def worker():
                while True:
                    with lock:
                        if not jobs:
                            return
                        kind = jobs.pop()
                    one(kind)

            threads = [threading.Thread(target=worker) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)

        def unpooled_fds():
            """The proxy's fds less the upstream connections its client keeps (those are
            bounded by the concurrency and expire; anything else left over is a leak)."""
            pooled = px.metrics()["greenhttp_proxy_client_open_connections"]
            return px.fd_count() - pooled

        try:
            with Proxy([up.url], "--upstream-timeout", "200ms", "--max-fails", "0",
                       metrics=True) as px:
                for _ in range(20):
                    get(px.port, "/ok")
                fds_start = unpooled_fds()
                round_of(200)
                self.assertTrue(wait_until(lambda: unpooled_fds() <= fds_start + 1, 10),
                                (fds_start, unpooled_fds()))
                self.assertLessEqual(px.metrics()["greenhttp_proxy_client_open_connections"], 8)
                rss_first = px.rss_kib()
                round_of(200)
                self.assertTrue(wait_until(lambda: unpooled_fds() <= fds_start + 1, 10),
                                (fds_start, unpooled_fds()))
                self.assertLessEqual(px.metrics()["greenhttp_proxy_client_open_connections"], 8)
                if not px.sanitized():
                    self.assertLess(px.rss_kib() - rss_first, 8 << 10)
                # And it still serves.
                self.assertEqual(get(px.port, "/ok")[:3:2], (200, b"ok"))
        finally:
            up.close()


class TlsUpstream(Upstream):
    """Upstream behind TLS (Python's ssl, with the certificate of make-cert.sh): the server
    names each handshake asked for (SNI) are recorded in `server_names`, failed handshakes
    counted in `handshake_failures`."""

    def __init__(self, behave, cert_dir):
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(os.path.join(cert_dir, "server.pem"),
                                 os.path.join(cert_dir, "server.key"))
        self.server_names = []
        self.handshake_failures = 0
        self.ctx.sni_callback = lambda sock, name, ctx: self.server_names.append(name)
        super().__init__(behave)
        self.url = "https://localhost:%d" % self.port

    def _serve(self, conn):
        conn.settimeout(30)
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            with self.lock:
                self.handshake_failures += 1
            conn.close()
            return
        with self.lock:
            self.conns.append(tls)
        super()._serve(tls)


class Https(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="proxy-tls-")
        for which in ("a", "b"):  # b: a CA the upstreams' certificates do not chain to
            subprocess.run(["sh", MAKE_CERT, os.path.join(cls.dir, which), "server"], check=True,
                           timeout=60)
        cls.ca = os.path.join(cls.dir, "a", "ca.pem")
        cls.other_ca = os.path.join(cls.dir, "b", "ca.pem")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def test_python_ssl_upstream_through_upstream_ca(self):
        def echo(upstream, conn, f, request):
            line, headers, body = request
            reply = ("%s xfp=%s" % (line, header(headers, "x-forwarded-proto"))).encode()
            respond(conn, "200 OK", [("Content-Length", str(len(reply)))], reply)
            return True

        up = TlsUpstream(echo, os.path.join(self.dir, "a"))
        try:
            with Proxy([up.url], "--upstream-ca", self.ca, metrics=True) as px:
                c = px.conn()
                for i in range(3):
                    c.request("POST", "/p?i=%d" % i, body=b"x" * 100)
                    r = c.getresponse()
                    self.assertEqual((r.status, r.read()),
                                     (200, b"POST /p?i=%d HTTP/1.1 xfp=http" % i))
                c.close()
                m = px.metrics()
                self.assertEqual(m['greenhttp_proxy_client_tls_handshakes_total{result="full"}'], 1)
                self.assertEqual(m['greenhttp_proxy_client_pool_hits_total'], 2)
            self.assertEqual(up.server_names, ["localhost"])  # SNI: the upstream URL's host
            self.assertEqual([b for _, _, b in up.requests], [b"x" * 100] * 3)
        finally:
            up.close()

    def test_upstream_that_does_not_verify_is_502_and_insecure_trusts_it(self):
        up = TlsUpstream(ok, os.path.join(self.dir, "a"))
        try:
            for flags, status in ((["--upstream-ca", self.other_ca], 502), ([], 502),
                                  (["--upstream-insecure"], 200)):
                with Proxy([up.url], *flags, metrics=True) as px:
                    self.assertEqual(get(px.port, "/")[0], status, flags)
                    m = px.metrics()
                    self.assertEqual(m['greenhttp_proxy_client_errors_total{kind="tls"}'],
                                     1 if status == 502 else 0, flags)
                    self.assertEqual(m['greenhttp_proxy_client_tls_handshake_failures_total'
                                       '{reason="certificate"}'],
                                     1 if status == 502 else 0, flags)
            self.assertEqual(len(up.requests), 1)  # only the insecure proxy's
            self.assertEqual(up.handshake_failures, 2)
        finally:
            up.close()

    def test_greenhttp_listen_tls_upstream(self):
        cert_dir = os.path.join(self.dir, "a")
        port_file = os.path.join(self.dir, "tls-port")
        g = subprocess.Popen(
            [GREENHTTP, "--listen", "off", "--listen-tls", "127.0.0.1:0", "--tls-port-file",
             port_file, "--tls-cert", os.path.join(cert_dir, "server.pem"), "--tls-key",
             os.path.join(cert_dir, "server.key"), "--access-log", "off", "--threads", "2"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            self.assertTrue(wait_until(lambda: g.poll() is not None or (
                os.path.exists(port_file) and open(port_file).read().strip())))
            self.assertIsNone(g.poll(), "greenhttp --listen-tls exited")
            port = int(open(port_file).read().strip())
            with Proxy(["https://127.0.0.1:%d" % port], "--upstream-ca", self.ca) as px:
                for _ in range(2):
                    status, _, body = get(px.port, "/plaintext")
                    self.assertEqual((status, body), (200, b"Hello, World!"))
        finally:
            g.terminate()
            g.wait(timeout=15)


class Flags(unittest.TestCase):
    def test_bad_flags_are_one_line_and_exit_2(self):
        for args in (["--bogus"], [], ["--upstream", "ftp://x:1"],
                     ["--upstream", "https://127.0.0.1:1", "--upstream-ca", "/nonexistent/ca.pem"],
                     ["--upstream", "http://127.0.0.1:1", "--upstream-timeout", "soon"],
                     ["--upstream", "http://127.0.0.1:1", "--listen", "nowhere"],
                     ["--upstream", "http://127.0.0.1:1", "--max-body", "lots"]):
            p = subprocess.run([PROXY] + args, capture_output=True, text=True, timeout=10)
            self.assertEqual(p.returncode, 2, (args, p.stderr))
            self.assertEqual(len(p.stderr.strip().splitlines()), 1, (args, p.stderr))
            self.assertTrue(p.stderr.startswith("proxy: "), p.stderr)

    def test_a_port_in_use_is_an_error_not_a_hang(self):
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        try:
            address = "127.0.0.1:%d" % taken.getsockname()[1]
            p = subprocess.run([PROXY, "--listen", address, "--upstream", "http://127.0.0.1:1"],
                               capture_output=True, text=True, timeout=10)
            self.assertEqual(p.returncode, 1, p.stderr)
            self.assertEqual(p.stderr.strip(), "proxy: --listen: cannot listen on %s: Address "
                             "already in use" % address)
        finally:
            taken.close()


if __name__ == "__main__":
    GREENHTTP = sys.argv.pop(2)
    PROXY = sys.argv.pop(1)
    unittest.main(verbosity=2)
