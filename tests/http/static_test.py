#!/usr/bin/env python3
"""The static file server on the real binary, checked as nginx would behave (RFC 9110).

Usage: static_test.py BINARY [--slow] [unittest options, e.g. -v or a test name]

build/greenhttp runs with --listen 127.0.0.1:0 and --port-file over directories made at test
time (real files, symlinks, a FIFO, a socket file, a device node where the test may make one).
The clients are real ones: curl (`curl -sS -D -`) and raw sockets (for what curl would tidy up
first, such as `..` in a path, and for slow, stalled and vanishing readers). Each test class
starts its own server (about 15 ms each) with the flags under test; the checks of one class share
it. --slow (the sanitizer trees) loosens the time bounds and makes the big file smaller.

  Main            /static/ with --static-mime-types (a file of ours), --static-cache-control
                  rules: 200 headers, HEAD, conditionals (304, 412), Range and If-Range,
                  directories (301, index, 403), precompressed .gz, Cache-Control precedence,
                  traversal in every encoding, NUL, symlinks, special files, 405, /metrics,
                  every kind of answer pipelined on one keep-alive connection
  Autoindex       --static-autoindex: an HTML listing, hostile names escaped, dotfiles hidden
  NoIndexFiles    --static-index '': a directory with index.html is a 403
  GzipOff         --static-gzip false: the .gz is never chosen
  SymlinksNever   --static-symlinks never: any symlink in the path is a 404
  Unreadable      a chmod 000 file and directory: 403 (as root the server runs as nobody, for
                  root's access checks pass whatever the mode; skipped if it cannot)
  FileServer      --static-prefix / with --debug-listen: a site at /, /metrics on the debug port
  FileServerAlone --static-prefix / without --debug-listen: /metrics, /healthz are not served
  CustomPrefix    --static-prefix /files: the files move, the demo endpoints stay
  TomlConfig      the [static] table of a --config file
  Revalidation    --static-cache-valid 100ms: rewritten, touched, replaced (new inode), created
                  and deleted files: new content and ETag once the entry is rechecked
  SmallCache      --static-cache-entries 2: many files, right bodies, two cached descriptors
  NoCache         --static-cache-entries 0: a change shows on the very next request
  Https           the same over --listen-tls (bodies copied, not sendfile'd): curl, pipelined
  Streaming       a 200 MB sparse file without RSS growth, a 5 GiB one (64-bit offsets), a slow
                  reader, a file cut short mid-body, 20 clients that leave mid-file
                  (descriptors back to the baseline)
  WriteTimeout    --write-timeout 1s: a reader that stops reading is cut off and freed
  SlowButMoving   --write-timeout and --handler-timeout 1s: a slow but steady download is
                  never cut off, over HTTP and HTTPS
  FoundByAttack   doubled slashes, list fields on several lines, the listing and symlinks,
                  If-Range garbage (what a hostile-client run found)
  FlagErrors      bad --static-* values: exit 2, one line on stderr naming the flag

Every wait is bounded and waits for something observable (a port file, a changed answer, a
socket queue in /proc/net/tcp, the server's descriptors in /proc/PID/fd); all traffic goes to
127.0.0.1.
"""

import fcntl
import gzip
import hashlib
import html
import os
import random
import re
import shutil
import socket
import ssl
import stat
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import unittest
import urllib.parse

from binary_harness import ServerProcess, wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def parse_argv():
    binary, slow, rest = None, False, []
    for a in sys.argv[1:]:
        if a == "--slow":
            slow = True
        elif binary is None and not a.startswith("-") and os.path.isfile(a):
            binary = a
        else:
            rest.append(a)
    if binary is None:
        binary = os.environ.get("GREENHTTP_BINARY", os.path.join(ROOT, "build", "greenhttp"))
    return os.path.abspath(binary), slow, rest


BINARY, SLOW, UNITTEST_ARGS = parse_argv()
# How long something that should be prompt may take (a request on a quiet server): generous for
# a 2-core machine shared with builds, still far below the hangs it guards against.
PROMPT = 3.0 if SLOW else 1.5
BIG_SIZE = (64 if SLOW else 200) << 20
RSS_GROWTH_LIMIT_KIB = (64 if SLOW else 32) << 10


def http_date(t):
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(t))


def rfc850_date(t):
    return time.strftime("%A, %d-%b-%y %H:%M:%S GMT", time.gmtime(t))


def asctime_date(t):
    g = time.gmtime(t)
    return time.strftime("%a %b ", g) + ("%2d" % g.tm_mday) + time.strftime(" %H:%M:%S %Y", g)


# --- HTTP ------------------------------------------------------------------------------------


class Response:
    def __init__(self, status, head_lines, body):
        self.status = status
        self.head = "\r\n".join(head_lines)
        self.fields = []  # (lower-case name, value), in order
        for line in head_lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                self.fields.append((k.strip().lower(), v.strip()))
        self.body = body

    def all(self, name):
        return [v for k, v in self.fields if k == name.lower()]

    def h(self, name):
        """The field's value (several lines joined with ', '), or None."""
        values = self.all(name)
        return ", ".join(values) if values else None

    def __repr__(self):
        return "%s\r\n\r\n%r" % (self.head, self.body[:200])


def parse_response(data):
    at = data.find(b"\r\n\r\n")
    if at < 0:
        raise AssertionError("no complete response head in %r" % data[:500])
    lines = data[:at].decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    return Response(status, lines, data[at + 4:])


def request(port, method, target, headers=(), body=b"", timeout=None):
    """One request on its own connection (Connection: close), read to EOF: returns Response.

    Reading to EOF rather than to Content-Length makes a body on a HEAD, 304 or 416 answer, or
    one longer than its Content-Length, visible.
    """
    if isinstance(target, str):
        target = target.encode("latin-1")
    lines = [b"%s %s HTTP/1.1" % (method.encode(), target), b"Host: localhost",
             b"Connection: close"]
    for h in headers:
        lines.append(h.encode("latin-1") if isinstance(h, str) else h)
    if body or method in ("POST", "PUT"):
        lines.append(b"Content-Length: %d" % len(body))
    with socket.create_connection(("127.0.0.1", port), timeout=timeout or PROMPT * 4) as s:
        s.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        data = bytearray()
        while True:
            chunk = s.recv(1 << 16)
            if not chunk:
                break
            data += chunk
            if len(data) > 64 << 20:
                raise AssertionError("more than 64 MiB in a response read whole")
    return parse_response(bytes(data))


def get(port, target, *headers, **kw):
    return request(port, "GET", target, headers, **kw)


def head(port, target, *headers, **kw):
    return request(port, "HEAD", target, headers, **kw)


def curl(port, target, *args, timeout=None, scheme="http"):
    """curl -sS -D - -o FILE: returns Response (the last header block: after any redirects)."""
    with tempfile.NamedTemporaryFile(prefix="greenhttp-static-curl-") as out:
        argv = ["curl", "-sS", "-D", "-", "-o", out.name, "--max-time",
                str(int(timeout or PROMPT * 4)), *args,
                "%s://127.0.0.1:%d%s" % (scheme, port, target)]
        r = subprocess.run(argv, capture_output=True, timeout=(timeout or PROMPT * 4) + 10)
        if r.returncode != 0:
            raise AssertionError("%s: exit %d: %s" % (" ".join(argv), r.returncode,
                                                      r.stderr.decode(errors="replace")))
        blocks = [b for b in r.stdout.decode("latin-1").split("\r\n\r\n") if b.strip()]
        lines = blocks[-1].split("\r\n")
        with open(out.name, "rb") as f:
            body = f.read()
    return Response(int(lines[0].split()[1]), lines, body)


class Conn:
    """A keep-alive connection: requests written at once, responses read in order by their
    framing (Content-Length or chunked; none on HEAD, 304 and 1xx)."""

    def __init__(self, port, sock=None):
        self.sock = sock or socket.create_connection(("127.0.0.1", port), timeout=PROMPT * 4)
        self.buf = bytearray()
        self.methods = []

    def close(self):
        self.sock.close()

    def send(self, method, target, *headers):
        lines = ["%s %s HTTP/1.1" % (method, target), "Host: localhost"] + list(headers)
        self.methods.append(method)
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")

    def _fill(self):
        chunk = self.sock.recv(1 << 16)
        if not chunk:
            raise EOFError("the server closed the connection; unread: %r" % bytes(self.buf[:200]))
        self.buf += chunk

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
        return self._take(at + 2)[:-2]

    def read(self):
        method = self.methods.pop(0)
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        at = self.buf.index(b"\r\n\r\n")
        r = parse_response(self._take(at + 4))
        if method == "HEAD" or r.status == 304 or r.status < 200:
            return r
        if r.h("Content-Length") is not None:
            r.body = self._take(int(r.h("Content-Length")))
        elif (r.h("Transfer-Encoding") or "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body += self._take(size)
                self._take(2)
            r.body = bytes(body)
        else:
            raise AssertionError("a keep-alive response without framing: %r" % r)
        return r


class Metrics:
    LINE = re.compile(r'^([a-zA-Z_:][\w:]*)(\{.*\})? (\S+)$')

    def __init__(self, text):
        self.samples = {}
        for line in text.splitlines():
            m = self.LINE.match(line)
            if m and not line.startswith("#"):
                self.samples[m.group(1) + (m.group(2) or "")] = float(m.group(3))

    def prefixed(self, prefix):
        return {k: v for k, v in self.samples.items() if k.startswith(prefix)}


def tcp_queues(local_port, remote_port):
    """(tx_queue, rx_queue) of the 127.0.0.1 socket local_port -> remote_port, or None."""
    want_local, want_remote = ":%04X" % local_port, ":%04X" % remote_port
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            parts = line.split()
            if parts[1].endswith(want_local) and parts[2].endswith(want_remote):
                tx, rx = parts[4].split(":")
                return int(tx, 16), int(rx, 16)
    return None


def inq(sock):
    """Bytes waiting in a socket's receive queue (FIONREAD)."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]


# --- the server ------------------------------------------------------------------------------


class Server(ServerProcess):
    """build/greenhttp in a child process, on 127.0.0.1 with its port known."""

    def __init__(self, args, run_dir, preexec_fn=None, tls=False):
        super().__init__(BINARY, run_dir, args, tls=tls, preexec_fn=preexec_fn,
                         tls_args=["--listen-tls", "127.0.0.1:0"])

    def connection_ports(self):
        """The client ports of the connections the server holds open on its public port."""
        return {remote for state, local, remote in self.tcp_sockets()
                if state != "0A" and local == self.port}

    def settled_fds(self):
        """The descriptor count once the server holds no client connection."""
        if not wait_until(lambda: not self.connection_ports(), PROMPT * 2):
            raise AssertionError("connections still open: %s" % self.connection_ports())
        return self.fds()


class ServerCase(unittest.TestCase):
    """One server per class over a tree that the class builds in make_tree()."""

    server_args = []
    server = None

    @classmethod
    def make_tree(cls, www):
        pass

    @classmethod
    def args(cls):
        return ["--static-dir", cls.www] + cls.server_args

    @classmethod
    def preexec(cls):
        return None

    tls = False

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="greenhttp-static-")
        cls.www = os.path.join(cls.tmp, "www")
        os.mkdir(cls.www)
        cls.run_dir = os.path.join(cls.tmp, "run")
        os.mkdir(cls.run_dir)
        try:
            cls.make_tree(cls.www)
            cls.server = Server(cls.args(), cls.run_dir, preexec_fn=cls.preexec(), tls=cls.tls)
        except BaseException:
            cls.cleanup_tree()
            raise

    @classmethod
    def cleanup_tree(cls):
        for dirpath, dirnames, _ in os.walk(cls.tmp):
            for d in dirnames:  # directories a test made unreadable
                p = os.path.join(dirpath, d)
                if not os.path.islink(p):
                    os.chmod(p, 0o755)
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def tearDownClass(cls):
        report = None
        if cls.server is not None:
            alive = cls.server.alive()
            cls.server.kill()
            report = cls.server.sanitizer_report()
        cls.cleanup_tree()
        if report:
            raise AssertionError("the server's stderr has a sanitizer report:\n%s" % report)
        if cls.server is not None and not alive:
            raise AssertionError("the server died during the tests (exit %s)" %
                                 cls.server.proc.returncode)

    # helpers for the cases
    @property
    def port(self):
        return self.server.port

    def get(self, target, *headers, **kw):
        return get(self.port, target, *headers, **kw)

    def head(self, target, *headers, **kw):
        return head(self.port, target, *headers, **kw)

    def curl(self, target, *args):
        return curl(self.port, target, *args)

    def assertStatus(self, r, status, what=""):
        self.assertEqual(r.status, status, "%s\n%r" % (what, r))

    def assertNoBody(self, r, what=""):
        self.assertEqual(r.body, b"", "%s: a body on a %d\n%r" % (what, r.status, r))

    def assertLocation(self, r, want):
        """Location is `want` (a path and query), or an absolute URL with that path and query."""
        loc = r.h("Location")
        self.assertIsNotNone(loc, "no Location\n%r" % r)
        u = urllib.parse.urlsplit(loc)
        got = u.path + ("?" + u.query if u.query else "")
        self.assertEqual(got, want, "Location %r" % loc)


def read(path):
    with open(path, "rb") as f:
        return f.read()


def write(path, data, mtime=None):
    with open(path, "wb") as f:
        f.write(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


# --- /static/ with every feature but autoindex -----------------------------------------------

MIME_TYPES = """\
# mime.types for the test (same format as /etc/mime.types)
text/html                     html htm
text/css                      css
text/javascript               js
text/plain                    txt
image/png                     png
font/woff2                    woff2
application/gzip              gz
application/x-greentest       gtest
text/x-greenplain             gtxt
"""

CACHE_RULES = ("/assets/=public, max-age=31536000, immutable;/assets/fonts/=max-age=99;"
               "*.css=max-age=3600;*.html=no-cache;*=max-age=60")

COND_MTIME = 1614834367  # Thu, 04 Mar 2021 05:06:07 GMT
SECRET = b"TOP-SECRET-outside-the-root\n"
APP_JS = b"// app.js\n" + b"console.log('greenhttp static test');\n" * 200
RANGE_DATA = random.Random(7).randbytes(1000)
MID = random.Random(3).randbytes(700 << 10)  # past the size a response copies: sendfile


class Main(ServerCase):
    @classmethod
    def args(cls):
        return ["--static-dir", cls.www, "--static-mime-types", cls.mime,
                "--static-cache-control", CACHE_RULES]

    @classmethod
    def make_tree(cls, www):
        cls.mime = os.path.join(cls.tmp, "mime.types")
        write(cls.mime, MIME_TYPES.encode())
        write(os.path.join(cls.tmp, "secret.txt"), SECRET)
        write(os.path.join(www, "a.txt"), b"hello static\n")
        write(os.path.join(www, "page.html"), b"<!doctype html><title>page</title>\n")
        write(os.path.join(www, "style.css"), b"body { color: green }\n")
        write(os.path.join(www, "data.gtest"), b"custom type\n")
        write(os.path.join(www, "notes.gtxt"), b"custom text type\n")
        write(os.path.join(www, "noext"), b"no extension\n")
        write(os.path.join(www, "weird.zzz"), b"unknown extension\n")
        write(os.path.join(www, "empty.txt"), b"")
        write(os.path.join(www, "cond.txt"), b"conditional requests\n", COND_MTIME)
        write(os.path.join(www, "r.bin"), RANGE_DATA, COND_MTIME)
        write(os.path.join(www, "mid.bin"), MID)
        write(os.path.join(www, "100%.txt"), b"a percent sign in the name\n")
        write(os.path.join(www, "app.js"), APP_JS, COND_MTIME)
        write(os.path.join(www, "app.js.gz"), gzip.compress(APP_JS, mtime=0), COND_MTIME + 3600)
        write(os.path.join(www, "plain.js"), b"// no .gz beside me\n")
        write(os.path.join(www, "evil.js"), b"// my .gz leads outside\n")
        os.symlink("../secret.txt", os.path.join(www, "evil.js.gz"))
        write(os.path.join(www, "pipe.js"), b"// my .gz is a FIFO\n")
        os.mkfifo(os.path.join(www, "pipe.js.gz"))
        os.mkdir(os.path.join(www, "sp ace"))
        write(os.path.join(www, "sp ace", "index.html"), b"<p>spaced</p>\n")
        os.mkdir(os.path.join(www, "sub"))
        write(os.path.join(www, "sub", "index.html"), b"<p>sub index</p>\n")
        write(os.path.join(www, "sub", "child.txt"), b"child\n")
        os.mkdir(os.path.join(www, "noindex"))
        write(os.path.join(www, "noindex", "file.txt"), b"in noindex\n")
        os.makedirs(os.path.join(www, "assets", "fonts"))
        write(os.path.join(www, "assets", "app.css"), b"/* asset */\n")
        write(os.path.join(www, "assets", "logo.png"), b"\x89PNG\r\n\x1a\n")
        write(os.path.join(www, "assets", "fonts", "f.woff2"), b"wOF2")
        os.symlink("a.txt", os.path.join(www, "link.txt"))
        os.symlink("sub", os.path.join(www, "linkdir"))
        os.symlink("../secret.txt", os.path.join(www, "out.txt"))
        os.symlink(os.path.join(cls.tmp, "secret.txt"), os.path.join(www, "abs.txt"))
        os.symlink("..", os.path.join(www, "updir"))
        os.symlink("/etc", os.path.join(www, "etc"))
        os.symlink("/dev/zero", os.path.join(www, "zero"))
        os.symlink("loop2", os.path.join(www, "loop1"))
        os.symlink("loop1", os.path.join(www, "loop2"))
        write(os.path.join(www, "UPPER.PNG"), b"\x89PNG\r\n\x1a\n")
        os.mkfifo(os.path.join(www, "fifo"))
        cls.unix_sock = socket.socket(socket.AF_UNIX)
        cls.unix_sock.bind(os.path.join(www, "sock"))
        cls.device = True
        try:
            os.mknod(os.path.join(www, "null"), 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except OSError:
            cls.device = False  # no CAP_MKNOD: the socket file and FIFO stand for the rest

    @classmethod
    def tearDownClass(cls):
        cls.unix_sock.close()
        super().tearDownClass()

    # --- a 200 and its headers ---

    def test_200_headers_through_curl(self):
        r = self.curl("/static/a.txt")
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"hello static\n")
        self.assertEqual(r.h("Content-Type"), "text/plain; charset=utf-8")
        self.assertEqual(r.h("Content-Length"), "13")
        self.assertEqual(r.h("Accept-Ranges"), "bytes")
        self.assertEqual(r.h("Cache-Control"), "max-age=60")
        mtime = os.stat(os.path.join(self.www, "a.txt")).st_mtime
        self.assertEqual(r.h("Last-Modified"), http_date(mtime))
        etag = r.h("ETag")
        self.assertIsNotNone(etag, r)
        self.assertRegex(etag, r'^"[\x21\x23-\x7e]+"$', "a strong ETag, quoted, no W/")
        self.assertEqual(len(r.all("ETag")), 1)
        # Stable while the file is unchanged.
        self.assertEqual(self.curl("/static/a.txt").h("ETag"), etag)

    def test_etags_differ_between_files(self):
        tags = {self.get("/static/%s" % n).h("ETag") for n in ("a.txt", "cond.txt", "r.bin",
                                                                "page.html", "style.css")}
        self.assertEqual(len(tags), 5, tags)

    def test_content_types(self):
        cases = [("page.html", "text/html; charset=utf-8"),
                 ("style.css", "text/css; charset=utf-8"),
                 ("app.js", "text/javascript; charset=utf-8"),
                 ("assets/logo.png", "image/png"),
                 ("UPPER.PNG", "image/png"),  # extensions compare case-insensitively (nginx)
                 ("data.gtest", "application/x-greentest"),
                 ("notes.gtxt", "text/x-greenplain; charset=utf-8"),
                 ("noext", "application/octet-stream"),
                 ("weird.zzz", "application/octet-stream"),
                 ("app.js.gz", "application/gzip")]
        for name, want in cases:
            r = self.get("/static/" + name)
            self.assertStatus(r, 200, name)
            self.assertEqual(r.h("Content-Type"), want, name)
            self.assertEqual(r.body, read(os.path.join(self.www, name)), name)

    def test_empty_file(self):
        r = self.get("/static/empty.txt")
        self.assertStatus(r, 200)
        self.assertEqual(r.h("Content-Length"), "0")
        self.assertNoBody(r)

    def test_head_has_the_same_headers_and_no_body(self):
        for name in ("a.txt", "r.bin", "page.html", "empty.txt"):
            g = self.get("/static/" + name)
            h = self.head("/static/" + name)
            self.assertStatus(h, 200, name)
            self.assertNoBody(h, name)
            for field in ("Content-Type", "Content-Length", "Last-Modified", "ETag",
                          "Accept-Ranges"):
                self.assertIsNotNone(h.h(field), "%s: HEAD without %s" % (name, field))
            for field in ("Content-Type", "Content-Length", "Last-Modified", "ETag",
                          "Accept-Ranges", "Cache-Control"):
                self.assertEqual(h.h(field), g.h(field), "%s: %s" % (name, field))
        r = self.curl("/static/a.txt", "-I")
        self.assertStatus(r, 200)
        self.assertEqual(r.h("Content-Length"), "13")

    def test_missing_is_404(self):
        for target in ("/static/nope.txt", "/static/sub/nope", "/static/a.txt/", "/static/a.txt/x",
                       "/static/nodir/x.txt", "/static/" + "n" * 300,  # ENAMETOOLONG
                       "/static/loop1", "/static/loop1/x"):  # ELOOP
            self.assertStatus(self.get(target), 404, target)

    def test_percent_encoded_name_decoded_once(self):
        r = self.get("/static/100%25.txt")
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"a percent sign in the name\n")
        self.assertStatus(self.get("/static/%61.txt"), 200, "%61 is a")

    def test_other_methods_405_with_allow(self):
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            body = b"" if method == "DELETE" else b"x"
            r = request(self.port, method, "/static/a.txt", body=body)
            self.assertStatus(r, 405, method)
            allow = sorted(m.strip() for m in (r.h("Allow") or "").split(","))
            self.assertEqual(allow, ["GET", "HEAD"], "%s: Allow %r" % (method, r.h("Allow")))

    def test_keep_alive_pipeline_of_every_kind_of_answer(self):
        """One connection, all requests written at once: a body where there must be one, none
        where there must not (HEAD, 304), so each answer starts where the last one ended; a
        file's bytes (sent by sendfile) never overtake or trail their own head."""
        etag = self.get("/static/cond.txt").h("ETag")
        gz = read(os.path.join(self.www, "app.js.gz"))
        mid = read(os.path.join(self.www, "mid.bin"))
        c = Conn(self.port)
        try:
            wants = [
                (c.send("GET", "/static/mid.bin"), 200, mid),
                (c.send("GET", "/static/a.txt"), 200, b"hello static\n"),
                (c.send("HEAD", "/static/mid.bin"), 200, b""),
                (c.send("GET", "/static/cond.txt", "If-None-Match: " + etag), 304, b""),
                (c.send("HEAD", "/static/cond.txt", "If-None-Match: " + etag), 304, b""),
                (c.send("GET", "/static/mid.bin", "Range: bytes=1000-199999"), 206,
                 mid[1000:200000]),
                (c.send("GET", "/static/r.bin", "Range: bytes=-10"), 206, RANGE_DATA[-10:]),
                (c.send("GET", "/static/r.bin", "Range: bytes=5000-"), 416, None),
                (c.send("GET", "/static/nope.txt"), 404, None),
                (c.send("GET", "/static/sub"), 301, None),
                (c.send("GET", "/static/app.js", "Accept-Encoding: gzip"), 200, gz),
                (c.send("GET", "/static/cond.txt", 'If-Match: "x"'), 412, None),
                (c.send("GET", "/static/empty.txt"), 200, b""),
                (c.send("GET", "/static/sub/"), 200, b"<p>sub index</p>\n"),
                (c.send("GET", "/static/mid.bin"), 200, mid),
                (c.send("GET", "/static/a.txt"), 200, b"hello static\n"),
            ]
            c.sock.sendall(b"".join(w[0] for w in wants))
            for i, (req, status, body) in enumerate(wants):
                r = c.read()
                what = "answer %d to %r" % (i, req.split(b"\r\n")[0])
                self.assertStatus(r, status, what)
                if body is not None:
                    self.assertEqual(r.body, body, what)
                self.assertNotEqual((r.h("Connection") or "").lower(), "close", what)
            # Nothing more on the wire, and the connection still serves.
            c.sock.sendall(c.send("GET", "/static/a.txt"))
            r = c.read()
            self.assertStatus(r, 200, "after the pipeline")
            self.assertEqual(r.body, b"hello static\n")
        finally:
            c.close()

    # --- conditionals ---

    def cond(self, *headers, method="GET", target="/static/cond.txt"):
        return request(self.port, method, target, headers)

    def cond_etag(self):
        return self.get("/static/cond.txt").h("ETag")

    def assert304(self, r, etag, what):
        self.assertStatus(r, 304, what)
        self.assertNoBody(r, what)
        self.assertEqual(r.h("ETag"), etag, what)
        self.assertEqual(r.h("Last-Modified"), http_date(COND_MTIME), what)
        self.assertEqual(r.h("Cache-Control"), "max-age=60", what)

    def test_last_modified_is_the_files_mtime(self):
        self.assertEqual(self.get("/static/cond.txt").h("Last-Modified"),
                         "Thu, 04 Mar 2021 05:06:07 GMT")

    def test_if_none_match(self):
        etag = self.cond_etag()
        self.assert304(self.cond("If-None-Match: " + etag), etag, "single")
        self.assert304(self.cond('If-None-Match: "x", %s, "y"' % etag), etag, "list")
        self.assert304(self.cond('If-None-Match: "x",%s' % etag), etag, "list without space")
        self.assert304(self.cond("If-None-Match: W/" + etag), etag, "weak form (weak compare)")
        self.assert304(self.cond("If-None-Match: *"), etag, "*")
        self.assert304(self.cond("If-None-Match: " + etag, method="HEAD"), etag, "HEAD")
        r = self.cond('If-None-Match: "other", W/"other2"')
        self.assertStatus(r, 200, "no match")
        self.assertEqual(r.body, b"conditional requests\n")
        r = self.curl("/static/cond.txt", "-H", "If-None-Match: " + etag)
        self.assertStatus(r, 304, "curl")
        self.assertEqual(r.body, b"")

    def test_if_modified_since(self):
        etag = self.cond_etag()
        self.assert304(self.cond("If-Modified-Since: " + http_date(COND_MTIME)), etag, "equal")
        self.assert304(self.cond("If-Modified-Since: " + http_date(COND_MTIME + 86400)), etag,
                       "later")
        self.assert304(self.cond("If-Modified-Since: " + rfc850_date(COND_MTIME)), etag,
                       "RFC 850 %s" % rfc850_date(COND_MTIME))
        self.assert304(self.cond("If-Modified-Since: " + asctime_date(COND_MTIME)), etag,
                       "asctime %s" % asctime_date(COND_MTIME))
        self.assert304(self.cond("If-Modified-Since: " + http_date(COND_MTIME), method="HEAD"),
                       etag, "HEAD")
        for value in (http_date(COND_MTIME - 1), rfc850_date(COND_MTIME - 86400),
                      asctime_date(COND_MTIME - 60), "yesterday", "Thu, 32 Mar 2021 05:06:07 GMT",
                      # Not a date (April has 30 days), though it would fall after Last-Modified
                      # if rolled over into May: ignored, so 200.
                      "Sat, 31 Apr 2021 05:06:07 GMT", "Thu, 04 Mar 2021 25:06:07 GMT", ""):
            r = self.cond("If-Modified-Since: " + value)
            self.assertStatus(r, 200, "If-Modified-Since: %r" % value)
            self.assertEqual(r.body, b"conditional requests\n")

    def test_if_none_match_takes_precedence_over_if_modified_since(self):
        etag = self.cond_etag()
        r = self.cond('If-None-Match: "other"', "If-Modified-Since: " + http_date(COND_MTIME))
        self.assertStatus(r, 200, "INM fails, IMS would match: IMS is ignored")
        self.assert304(self.cond("If-None-Match: " + etag,
                                 "If-Modified-Since: " + http_date(COND_MTIME - 86400)),
                       etag, "INM matches, IMS would fail")

    def test_if_match_and_if_unmodified_since(self):
        etag = self.cond_etag()
        for value in ('"other"', "W/" + etag, '"a", "b"'):
            r = self.cond("If-Match: " + value)
            self.assertStatus(r, 412, "If-Match: %s" % value)
        for value in (etag, "*", '"a", %s' % etag):
            r = self.cond("If-Match: " + value)
            self.assertStatus(r, 200, "If-Match: %s" % value)
            self.assertEqual(r.body, b"conditional requests\n")
        self.assertStatus(self.cond("If-Match: " + etag, method="HEAD"), 200, "HEAD")
        self.assertStatus(self.cond("If-Unmodified-Since: " + http_date(COND_MTIME - 1)), 412,
                          "IUS earlier than Last-Modified")
        self.assertStatus(self.cond("If-Unmodified-Since: " + rfc850_date(COND_MTIME - 86400)),
                          412, "IUS earlier, RFC 850")
        self.assertStatus(self.cond("If-Unmodified-Since: " + http_date(COND_MTIME)), 200,
                          "IUS equal")
        self.assertStatus(self.cond("If-Unmodified-Since: " + asctime_date(COND_MTIME + 5)), 200,
                          "IUS later, asctime")
        self.assertStatus(self.cond("If-Unmodified-Since: not a date"), 200, "IUS invalid")
        # If-Match first: when it is present If-Unmodified-Since is not evaluated...
        self.assertStatus(self.cond("If-Match: " + etag,
                                    "If-Unmodified-Since: " + http_date(COND_MTIME - 1)), 200,
                          "If-Match passes, IUS would fail")
        # Validators before the range: a 304 or 412, never a 206.
        self.assert304(self.cond("If-None-Match: " + etag, "Range: bytes=0-3"), etag,
                       "INM matches, with a Range")
        self.assertStatus(self.cond('If-Match: "other"', "Range: bytes=0-3"), 412,
                          "If-Match fails, with a Range")
        # ... and a failing If-Match wins over a matching If-None-Match.
        self.assertStatus(self.cond('If-Match: "other"', "If-None-Match: " + etag), 412,
                          "If-Match fails, INM matches")
        r = self.curl("/static/cond.txt", "-H", 'If-Match: "other"')
        self.assertStatus(r, 412, "curl")

    # --- Range ---

    def assert206(self, r, first, last, what):
        self.assertStatus(r, 206, what)
        self.assertEqual(r.h("Content-Range"), "bytes %d-%d/1000" % (first, last), what)
        self.assertEqual(r.h("Content-Length"), str(last - first + 1), what)
        self.assertEqual(r.body, RANGE_DATA[first:last + 1], what)

    def assert200whole(self, r, what):
        self.assertStatus(r, 200, what)
        self.assertIsNone(r.h("Content-Range"), what)
        self.assertEqual(r.h("Content-Length"), "1000", what)
        self.assertEqual(r.body, RANGE_DATA, what)

    def rng(self, value, *more, method="GET", target="/static/r.bin"):
        return request(self.port, method, target, ("Range: " + value,) + more)

    def test_single_ranges(self):
        self.assert206(self.rng("bytes=0-99"), 0, 99, "0-99")
        self.assert206(self.rng("bytes=100-"), 100, 999, "100-")
        self.assert206(self.rng("bytes=-10"), 990, 999, "-10")
        self.assert206(self.rng("bytes=990-5000"), 990, 999, "end past the size")
        self.assert206(self.rng("bytes=0-0"), 0, 0, "0-0")
        self.assert206(self.rng("bytes=999-999"), 999, 999, "last byte")
        self.assert206(self.rng("bytes=-2000"), 0, 999, "suffix longer than the file")
        self.assert206(self.rng("bytes=10-9999999999999999999"), 10, 999, "a 19-digit end")
        r = self.curl("/static/r.bin", "-r", "0-99")
        self.assert206(r, 0, 99, "curl -r 0-99")
        r = self.curl("/static/r.bin", "-r", "-10")
        self.assert206(r, 990, 999, "curl -r -10")

    def test_multiple_ranges_are_200_whole(self):
        self.assert200whole(self.rng("bytes=0-1,5-6"), "two ranges")
        self.assert200whole(self.rng("bytes=0-99, 200-299, -5"), "three ranges")

    def test_unsatisfiable_range_is_416(self):
        for value in ("bytes=1000-", "bytes=5000-6000", "bytes=1000-1000", "bytes=-0"):
            r = self.rng(value)
            self.assertStatus(r, 416, value)
            self.assertEqual(r.h("Content-Range"), "bytes */1000", value)
            self.assertNotIn(RANGE_DATA[:50], r.body, value)
        for value in ("bytes=0-", "bytes=0-0", "bytes=-5"):
            r = self.rng(value, target="/static/empty.txt")
            self.assertStatus(r, 416, "empty file, %s" % value)
            self.assertEqual(r.h("Content-Range"), "bytes */0", value)

    def test_bad_range_syntax_is_ignored(self):
        for value in ("bytes=abc", "bytes=", "bytes=-", "items=0-1", "bytes 0-1", "0-99",
                      "bytes=1-2-3", "bytes=x-5"):
            self.assert200whole(self.rng(value), "Range: %s" % value)

    def test_head_ignores_range(self):
        r = self.rng("bytes=0-99", method="HEAD")
        self.assertStatus(r, 200)
        self.assertEqual(r.h("Content-Length"), "1000")
        self.assertIsNone(r.h("Content-Range"))
        self.assertNoBody(r)

    def test_if_range(self):
        etag = self.get("/static/r.bin").h("ETag")
        self.assert206(self.rng("bytes=0-99", "If-Range: " + etag), 0, 99, "current ETag")
        self.assert200whole(self.rng("bytes=0-99", 'If-Range: "old-etag"'), "old ETag")
        self.assert200whole(self.rng("bytes=0-99", "If-Range: W/" + etag),
                            "weak ETag (If-Range compares strongly)")
        self.assert206(self.rng("bytes=10-19", "If-Range: " + http_date(COND_MTIME)), 10, 19,
                       "the exact Last-Modified date")
        self.assert200whole(self.rng("bytes=10-19", "If-Range: " + http_date(COND_MTIME + 1)),
                            "another date")
        self.assert200whole(self.rng("bytes=10-19", "If-Range: " + http_date(COND_MTIME - 1)),
                            "an older date")
        r = self.curl("/static/r.bin", "-r", "0-9", "-H", "If-Range: " + etag)
        self.assert206(r, 0, 9, "curl with If-Range")

    # --- directories ---

    def test_directory_without_slash_redirects(self):
        r = self.get("/static/sub")
        self.assertStatus(r, 301)
        self.assertLocation(r, "/static/sub/")
        r = self.get("/static/sub?x=1&y=%2F")
        self.assertStatus(r, 301)
        self.assertLocation(r, "/static/sub/?x=1&y=%2F")
        r = self.curl("/static/sub?q=2", "-L")
        self.assertStatus(r, 200, "curl -L follows to the index")
        self.assertEqual(r.body, b"<p>sub index</p>\n")

    def test_redirect_location_is_encoded(self):
        r = self.get("/static/sp%20ace")
        self.assertStatus(r, 301)
        self.assertLocation(r, "/static/sp%20ace/")
        self.assertEqual(self.get("/static/sp%20ace/").body, b"<p>spaced</p>\n")

    def test_directory_index(self):
        r = self.curl("/static/sub/")
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"<p>sub index</p>\n")
        self.assertEqual(r.h("Content-Type"), "text/html; charset=utf-8")
        self.assertEqual(r.h("Cache-Control"), "no-cache", "the index's rule (*.html)")
        etag = r.h("ETag")
        self.assertIsNotNone(etag)
        self.assertEqual(etag, self.get("/static/sub/index.html").h("ETag"))
        r = self.get("/static/sub/", "If-None-Match: " + etag)
        self.assertStatus(r, 304, "conditional on the index")

    def test_directory_without_index_is_403(self):
        for target in ("/static/noindex/", "/static/", "/static/assets/"):
            r = self.get(target)
            self.assertStatus(r, 403, target)
            self.assertNotIn(b"file.txt", r.body, "no listing without --static-autoindex")

    # --- precompressed ---

    def test_gzip_variant(self):
        gz = read(os.path.join(self.www, "app.js.gz"))
        direct = self.get("/static/app.js.gz")
        self.assertStatus(direct, 200)
        self.assertEqual(direct.h("Content-Type"), "application/gzip")
        self.assertIsNone(direct.h("Content-Encoding"), "x.gz itself is not content-coded")
        plain = self.get("/static/app.js")
        self.assertNotEqual(plain.h("ETag"), direct.h("ETag"))
        for ae in ("gzip", "gzip, deflate, br", "deflate, gzip;q=0.5", "*", "GZIP",
                   "br;q=1, *;q=0.1", "gzip;q=1.0"):
            r = self.get("/static/app.js", "Accept-Encoding: " + ae)
            self.assertStatus(r, 200, ae)
            self.assertEqual(r.h("Content-Encoding"), "gzip", "Accept-Encoding: %s\n%r" % (ae, r))
            self.assertEqual(r.h("Content-Type"), "text/javascript; charset=utf-8", ae)
            self.assertEqual(r.h("Content-Length"), str(len(gz)), ae)
            self.assertEqual(r.body, gz, ae)
            self.assertEqual(gzip.decompress(r.body), APP_JS, ae)
            self.assertEqual(r.h("ETag"), direct.h("ETag"), "the .gz's own ETag (%s)" % ae)
            self.assertEqual(r.h("Last-Modified"), http_date(COND_MTIME + 3600),
                             "the .gz's own Last-Modified (%s)" % ae)
            self.assertIn("accept-encoding", (r.h("Vary") or "").lower(), ae)
        r = self.curl("/static/app.js", "--compressed")
        self.assertEqual(r.h("Content-Encoding"), "gzip", "curl --compressed")
        self.assertEqual(r.body, APP_JS, "curl --compressed decodes to the original")

    def test_identity_variant(self):
        for headers in ((), ("Accept-Encoding: gzip;q=0",), ("Accept-Encoding: br",),
                        ("Accept-Encoding: identity",), ("Accept-Encoding: gzip;q=0, br",),
                        ("Accept-Encoding: ",)):
            r = request(self.port, "GET", "/static/app.js", headers)
            self.assertStatus(r, 200, headers)
            self.assertIsNone(r.h("Content-Encoding"), "%s\n%r" % (headers, r))
            self.assertEqual(r.body, APP_JS, headers)
            self.assertEqual(r.h("Last-Modified"), http_date(COND_MTIME), headers)
            self.assertIn("accept-encoding", (r.h("Vary") or "").lower(),
                          "Vary on the identity variant too (%s)" % (headers,))

    def test_gzip_304_and_range_on_the_variant(self):
        gz_etag = self.get("/static/app.js", "Accept-Encoding: gzip").h("ETag")
        plain_etag = self.get("/static/app.js").h("ETag")
        r = self.get("/static/app.js", "Accept-Encoding: gzip", "If-None-Match: " + gz_etag)
        self.assertStatus(r, 304)
        self.assertIn("accept-encoding", (r.h("Vary") or "").lower(), "Vary on a 304")
        r = self.get("/static/app.js", "If-None-Match: " + plain_etag)
        self.assertStatus(r, 304)
        r = self.get("/static/app.js", "If-None-Match: " + gz_etag)
        self.assertStatus(r, 200, "the .gz's ETag does not validate the identity variant")

    def test_gz_beside_follows_the_same_rules(self):
        """FILE.gz is chosen only when it is a regular file under the same rules: a .gz that is
        a symlink out of the root or a FIFO is as good as absent (and never hangs)."""
        for name, body in (("evil.js", b"// my .gz leads outside\n"),
                           ("pipe.js", b"// my .gz is a FIFO\n")):
            start = time.monotonic()
            r = get(self.port, "/static/" + name, "Accept-Encoding: gzip", timeout=PROMPT * 2)
            self.assertLess(time.monotonic() - start, PROMPT, name)
            self.assertStatus(r, 200, name)
            self.assertIsNone(r.h("Content-Encoding"), name)
            self.assertEqual(r.body, body, name)
            self.assertNotIn(b"TOP-SECRET", r.body)

    def test_no_gzip_without_a_gz_file(self):
        r = self.get("/static/plain.js", "Accept-Encoding: gzip")
        self.assertStatus(r, 200)
        self.assertIsNone(r.h("Content-Encoding"))
        self.assertEqual(r.body, b"// no .gz beside me\n")

    # --- Cache-Control ---

    def test_cache_control_precedence(self):
        cases = [("assets/app.css", "public, max-age=31536000, immutable"),  # dir beats *.css
                 ("assets/logo.png", "public, max-age=31536000, immutable"),
                 ("assets/fonts/f.woff2", "max-age=99"),  # the longest directory prefix
                 ("style.css", "max-age=3600"),  # extension beats *
                 ("page.html", "no-cache"),
                 ("a.txt", "max-age=60"),  # *
                 ("noext", "max-age=60")]
        for name, want in cases:
            r = self.get("/static/" + name)
            self.assertStatus(r, 200, name)
            self.assertEqual(r.h("Cache-Control"), want, name)
            self.assertEqual(len(r.all("Cache-Control")), 1, name)
        r = self.curl("/static/assets/app.css")
        self.assertEqual(r.h("Cache-Control"), "public, max-age=31536000, immutable", "curl")

    # --- safety ---

    def assertRefused(self, target, *statuses):
        r = self.get(target)
        self.assertIn(r.status, statuses or (404,), "%s\n%r" % (target, r))
        self.assertNotIn(b"TOP-SECRET", r.body, target)
        self.assertNotIn(b"root:", r.body, target)

    def test_traversal_in_every_encoding(self):
        for target in ("/static/../secret.txt", "/static/sub/../../secret.txt",
                       "/static/%2e%2e/secret.txt", "/static/%2E%2E/secret.txt",
                       "/static/.%2e/secret.txt", "/static/sub/%2e%2e/%2e%2e/secret.txt",
                       "/static/sub%2f..%2f..%2fsecret.txt", "/static/..%2fsecret.txt",
                       "/static/%2e%2e%2fsecret.txt", "/static/%252e%252e/secret.txt",
                       "/static/%252e%252e%252fsecret.txt", "/static/./a.txt",
                       "/static/%2e/a.txt", "/static/sub/./child.txt", "/static/sub/.",
                       "/static/sub/..", "/static//etc/passwd", "/static/%2fetc%2fpasswd",
                       "/static/....//secret.txt"):
            self.assertRefused(target)
        # A backslash is no separator on Linux (the name "..\\secret.txt", missing); a parser
        # may refuse it outright.
        self.assertRefused("/static/..\\secret.txt", 400, 404)
        # The same names, where they exist, are served when asked for plainly.
        self.assertStatus(self.get("/static/sub/child.txt"), 200)

    def test_nul_is_refused(self):
        # The spec says 404; the request parser refuses a decoded NUL in the path with a 400
        # before the route is chosen (as nginx does): either way the file is never opened.
        for target in ("/static/a.txt%00.html", "/static/a.txt%00", "/static/%00"):
            self.assertRefused(target, 400, 404)

    def test_symlinks_inside_are_followed(self):
        r = self.get("/static/link.txt")
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"hello static\n")
        r = self.get("/static/linkdir/child.txt")
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"child\n")
        r = self.get("/static/linkdir/")
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"<p>sub index</p>\n")

    def test_symlinks_outside_are_404(self):
        for target in ("/static/out.txt", "/static/abs.txt", "/static/updir/secret.txt",
                       "/static/etc/passwd", "/static/etc/hostname", "/static/zero",
                       "/static/updir/www/a.txt"):
            self.assertRefused(target)

    def test_special_files_are_404_promptly(self):
        names = ["fifo", "sock"] + (["null"] if self.device else [])
        for name in names:
            start = time.monotonic()
            r = get(self.port, "/static/" + name, timeout=PROMPT * 2)
            self.assertStatus(r, 404, name)
            self.assertLess(time.monotonic() - start, PROMPT, name)
        # Many at once: none holds a thread (a blocking open of a FIFO would).
        results, errors = [], []

        def one():
            try:
                results.append(get(self.port, "/static/fifo", timeout=PROMPT * 2).status)
            except Exception as e:  # reported below
                errors.append(repr(e))

        threads = [threading.Thread(target=one) for _ in range(40)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(PROMPT * 4)
        self.assertEqual(errors, [])
        self.assertEqual(results, [404] * 40)
        self.assertStatus(get(self.port, "/static/a.txt", timeout=PROMPT), 200, "after")

    # --- /metrics ---

    def test_metrics_static_counters_move(self):
        def scrape():
            r = self.get("/metrics")
            self.assertStatus(r, 200, "/metrics")
            return Metrics(r.body.decode()).prefixed("greenhttp_static_")

        before = scrape()
        self.assertTrue(before, "no greenhttp_static_ samples in /metrics")
        for _ in range(5):
            self.assertStatus(self.get("/static/r.bin"), 200)
        self.assertStatus(self.get("/static/nope.txt"), 404)
        after = scrape()
        moved = {k: (before.get(k, 0), v) for k, v in after.items() if v > before.get(k, 0)}
        self.assertTrue(moved, "no greenhttp_static_ sample grew: %s" % after)
        self.assertTrue(any(v - b >= 5 for b, v in moved.values()),
                        "no greenhttp_static_ sample counted the 5 requests: %s" % moved)


# --- other option sets -----------------------------------------------------------------------


class Autoindex(ServerCase):
    HOSTILE = "<b>&\"x'.txt"

    @classmethod
    def args(cls):
        return ["--static-dir", cls.www, "--static-autoindex"]

    @classmethod
    def make_tree(cls, www):
        write(os.path.join(www, cls.HOSTILE), b"hostile name\n")
        write(os.path.join(www, "plain.txt"), b"plain\n")
        write(os.path.join(www, ".hiddenmark"), b"dotfile\n")
        write(os.path.join(www, "sp ace.txt"), b"space\n")
        os.mkdir(os.path.join(www, "childdir"))
        write(os.path.join(www, "childdir", "inner.txt"), b"inner\n")
        os.mkdir(os.path.join(www, ".hiddendir"))
        os.mkdir(os.path.join(www, "<i>dir"))
        write(os.path.join(www, "<i>dir", "x.txt"), b"x\n")
        os.mkdir(os.path.join(www, "withindex"))
        write(os.path.join(www, "withindex", "index.html"), b"<p>an index wins</p>\n")

    def test_listing(self):
        r = curl(self.port, "/static/")
        self.assertStatus(r, 200)
        self.assertTrue((r.h("Content-Type") or "").startswith("text/html"), r.h("Content-Type"))
        text = r.body.decode("utf-8")
        self.assertNotIn("<b>", text, "the hostile name is not escaped")
        self.assertIn("&lt;b&gt;&amp;", text, "the hostile name is not listed (escaped)")
        self.assertNotIn(".hiddenmark", text, "a dotfile is listed")
        self.assertNotIn(".hiddendir", text, "a dot directory is listed")
        hrefs = [html.unescape(h) for h in re.findall(r'href="([^"]*)"', text)]
        targets = {}  # the decoded path -> the target a browser would send for the link
        for h in hrefs:
            url = urllib.parse.urljoin("/static/", h)
            path = urllib.parse.urlsplit(url).path
            targets[urllib.parse.unquote(path)] = urllib.parse.quote(path, safe="/%!$&'()*+,;=:@~")
        for want in ("/static/" + self.HOSTILE, "/static/plain.txt", "/static/sp ace.txt",
                     "/static/childdir/", "/static/withindex/"):
            self.assertIn(want, targets, "no link to %r in %s" % (want, sorted(targets)))
        # The links work: the hostile name's link fetches the hostile file.
        for path, body in (("/static/" + self.HOSTILE, b"hostile name\n"),
                           ("/static/sp ace.txt", b"space\n"), ("/static/plain.txt", b"plain\n")):
            r = self.get(targets[path])
            self.assertStatus(r, 200, targets[path])
            self.assertEqual(r.body, body, targets[path])
        r = self.get(targets["/static/childdir/"])
        self.assertStatus(r, 200, "the subdirectory's own listing")
        self.assertIn(b"inner.txt", r.body)
        self.assertIn("/static/<i>dir/", targets)
        r = self.get(targets["/static/<i>dir/"])
        self.assertStatus(r, 200, "a hostile directory name's listing")
        self.assertIn(b"x.txt", r.body)
        self.assertNotIn(b"<i>", r.body, "the directory's name (in the title) is not escaped")

    def test_index_wins_over_listing(self):
        r = self.get("/static/withindex/")
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"<p>an index wins</p>\n")

    def test_listing_head_and_redirect(self):
        r = self.head("/static/childdir/")
        self.assertStatus(r, 200)
        self.assertNoBody(r)
        r = self.get("/static/childdir")
        self.assertStatus(r, 301)
        self.assertLocation(r, "/static/childdir/")


class NoIndexFiles(ServerCase):
    server_args = ["--static-index", ""]

    @classmethod
    def make_tree(cls, www):
        os.mkdir(os.path.join(www, "site"))
        write(os.path.join(www, "site", "index.html"), b"<p>index</p>\n")

    def test_index_html_is_not_an_index(self):
        r = self.get("/static/site/")
        self.assertStatus(r, 403)
        self.assertNotIn(b"<p>index</p>", r.body)
        r = self.get("/static/site/index.html")
        self.assertStatus(r, 200, "still served by its own name")
        self.assertEqual(r.body, b"<p>index</p>\n")
        self.assertStatus(self.get("/static/site"), 301)


class GzipOff(ServerCase):
    server_args = ["--static-gzip", "false"]

    @classmethod
    def make_tree(cls, www):
        write(os.path.join(www, "app.js"), APP_JS)
        write(os.path.join(www, "app.js.gz"), gzip.compress(APP_JS, mtime=0))

    def test_gz_is_not_chosen(self):
        r = self.get("/static/app.js", "Accept-Encoding: gzip")
        self.assertStatus(r, 200)
        self.assertIsNone(r.h("Content-Encoding"), r)
        self.assertEqual(r.body, APP_JS)
        r = self.get("/static/app.js.gz")
        self.assertStatus(r, 200, "the .gz by its own name")
        self.assertEqual(gzip.decompress(r.body), APP_JS)


class SymlinksNever(ServerCase):
    server_args = ["--static-symlinks", "never"]

    @classmethod
    def make_tree(cls, www):
        write(os.path.join(www, "a.txt"), b"regular\n")
        os.mkdir(os.path.join(www, "sub"))
        write(os.path.join(www, "sub", "b.txt"), b"in sub\n")
        os.symlink("a.txt", os.path.join(www, "link.txt"))
        os.symlink("sub", os.path.join(www, "linkdir"))
        os.symlink("../a.txt", os.path.join(www, "sub", "up.txt"))

    def test_any_symlink_is_404(self):
        self.assertStatus(self.get("/static/a.txt"), 200)
        self.assertStatus(self.get("/static/sub/b.txt"), 200)
        for target in ("/static/link.txt", "/static/linkdir/b.txt", "/static/sub/up.txt",
                       "/static/linkdir/", "/static/linkdir"):
            r = self.get(target)
            self.assertStatus(r, 404, target)
            self.assertNotIn(b"regular", r.body)


def nobody_preexec():
    os.setgroups([])
    os.setgid(65534)
    os.setuid(65534)


class Unreadable(ServerCase):
    """A chmod 000 file is a 403 (nginx). Root passes access checks whatever the mode, so as
    root the server runs as nobody (uid 65534); where that is impossible, the case is skipped."""

    as_nobody = False

    @classmethod
    def preexec(cls):
        return nobody_preexec if cls.as_nobody else None

    @classmethod
    def setUpClass(cls):
        probe_dir = tempfile.mkdtemp(prefix="greenhttp-static-probe-")
        try:
            probe = os.path.join(probe_dir, "probe")
            write(probe, b"x")
            os.chmod(probe, 0)
            try:
                open(probe, "rb").close()
                bypassed = True  # root (CAP_DAC_OVERRIDE): modes are not checked for us
            except PermissionError:
                bypassed = False
        finally:
            shutil.rmtree(probe_dir)
        cls.as_nobody = bypassed
        if bypassed and os.geteuid() != 0:
            raise unittest.SkipTest("access checks are bypassed and we cannot change user")
        try:
            super().setUpClass()
        except (PermissionError, subprocess.SubprocessError) as e:
            raise unittest.SkipTest("cannot run the server as nobody: %r" % e)

    @classmethod
    def make_tree(cls, www):
        if cls.as_nobody:
            for d in (cls.tmp, www):
                os.chmod(d, 0o755)
            os.chmod(cls.run_dir, 0o777)  # the port file
        write(os.path.join(www, "readable.txt"), b"readable\n")
        write(os.path.join(www, "secret.txt"), b"mode 000\n")
        os.chmod(os.path.join(www, "secret.txt"), 0)
        os.mkdir(os.path.join(www, "locked"))
        write(os.path.join(www, "locked", "inner.txt"), b"behind a mode 000 directory\n")
        os.chmod(os.path.join(www, "locked"), 0)

    def test_unreadable_is_403(self):
        r = self.get("/static/readable.txt")
        self.assertStatus(r, 200, "the server can read a readable file")
        for target in ("/static/secret.txt", "/static/locked/inner.txt"):
            r = self.get(target)
            self.assertStatus(r, 403, target)
            self.assertNotIn(b"mode 000", r.body)
            self.assertNotIn(b"behind", r.body)


class FileServer(ServerCase):
    """--static-prefix /: every public path is a file; the observability routes move to the
    debug listener."""

    server_args = ["--static-prefix", "/", "--debug-listen", "127.0.0.1:0"]

    @classmethod
    def make_tree(cls, www):
        write(os.path.join(www, "index.html"), b"<!doctype html><p>the site</p>\n")
        write(os.path.join(www, "json"), b"a file named json\n")
        os.mkdir(os.path.join(www, "docs"))
        write(os.path.join(www, "docs", "index.html"), b"<p>docs</p>\n")
        write(os.path.join(www, "logo.png"), b"\x89PNG\r\n\x1a\n")

    def debug_port(self):
        ports = self.server.listening_ports() - {self.port}
        self.assertEqual(len(ports), 1, "listening ports %s" % self.server.listening_ports())
        return ports.pop()

    def test_site_at_root(self):
        r = curl(self.port, "/")
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"<!doctype html><p>the site</p>\n")
        self.assertEqual(r.h("Content-Type"), "text/html; charset=utf-8")
        self.assertIsNone(r.h("Cache-Control"), "no rules: no Cache-Control")
        r = self.get("/index.html")
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"<!doctype html><p>the site</p>\n")
        r = self.get("/docs")
        self.assertStatus(r, 301)
        self.assertLocation(r, "/docs/")
        self.assertEqual(self.get("/docs/").body, b"<p>docs</p>\n")
        r = self.get("/logo.png")
        self.assertEqual(r.h("Content-Type"), "image/png", "the default mime types")
        self.assertStatus(request(self.port, "POST", "/index.html", body=b"x"), 405)

    def test_demo_endpoints_are_files_now(self):
        for target in ("/plaintext", "/metrics", "/healthz", "/debug/vars", "/static/index.html"):
            self.assertStatus(self.get(target), 404, target)
        r = self.get("/json")
        self.assertStatus(r, 200, "a file named json")
        self.assertEqual(r.body, b"a file named json\n")
        self.assertEqual(r.h("Content-Type"), "application/octet-stream")

    def test_metrics_on_the_debug_listener(self):
        debug = self.debug_port()
        self.assertStatus(self.get("/index.html"), 200)
        r = get(debug, "/metrics")
        self.assertStatus(r, 200, "/metrics on --debug-listen")
        self.assertTrue(Metrics(r.body.decode()).prefixed("greenhttp_static_"),
                        "no greenhttp_static_ samples")
        self.assertStatus(get(debug, "/healthz"), 200, "/healthz on --debug-listen")


class FileServerAlone(ServerCase):
    server_args = ["--static-prefix", "/"]

    @classmethod
    def make_tree(cls, www):
        write(os.path.join(www, "index.html"), b"<p>alone</p>\n")

    def test_observability_routes_are_not_served(self):
        self.assertEqual(self.get("/").body, b"<p>alone</p>\n")
        for target in ("/metrics", "/healthz", "/readyz", "/debug/vars", "/plaintext", "/json"):
            r = self.get(target)
            self.assertStatus(r, 404, target)
            self.assertNotIn(b"greenhttp_", r.body, target)


class CustomPrefix(ServerCase):
    server_args = ["--static-prefix", "/files"]

    @classmethod
    def make_tree(cls, www):
        write(os.path.join(www, "a.txt"), b"under /files/\n")

    def test_prefix(self):
        r = self.get("/files/a.txt")
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"under /files/\n")
        self.assertStatus(self.get("/static/a.txt"), 404, "the default prefix is gone")
        self.assertStatus(self.get("/filesa.txt"), 404)
        r = self.get("/plaintext")
        self.assertStatus(r, 200, "the demo endpoints stay when the prefix is not /")
        self.assertEqual(r.body, b"Hello, World!")


class TomlConfig(ServerCase):
    @classmethod
    def args(cls):
        path = os.path.join(cls.tmp, "greenhttp.toml")
        with open(path, "w") as f:
            # static_dir stays a top-level key (it predates the [static] table).
            f.write('static_dir = "%s"\n[static]\nprefix = "/files/"\nindex = "start.html"\n'
                    'autoindex = true\nsymlinks = "never"\ncache_control = "*=max-age=5"\n'
                    'gzip = false\ncache_entries = 10\ncache_valid = "1s"\n' % cls.www)
        return ["--config", path]

    @classmethod
    def make_tree(cls, www):
        write(os.path.join(www, "start.html"), b"<p>start</p>\n")
        write(os.path.join(www, "a.txt"), b"a\n")
        os.symlink("a.txt", os.path.join(www, "link.txt"))
        os.mkdir(os.path.join(www, "list"))
        write(os.path.join(www, "list", "item.txt"), b"item\n")

    def test_static_table(self):
        r = self.get("/files/")
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"<p>start</p>\n", "index = start.html")
        self.assertEqual(r.h("Cache-Control"), "max-age=5")
        r = self.get("/files/list/")
        self.assertStatus(r, 200, "autoindex = true")
        self.assertIn(b"item.txt", r.body)
        self.assertStatus(self.get("/files/link.txt"), 404, 'symlinks = "never"')
        self.assertStatus(self.get("/static/a.txt"), 404, "prefix = /files/")
        self.assertEqual(self.get("/files/a.txt").body, b"a\n")


# --- the open-file cache ---------------------------------------------------------------------


class Revalidation(ServerCase):
    server_args = ["--static-cache-valid", "100ms"]
    LIMIT = 100e-3 + PROMPT * 2  # the validity plus a generous margin

    @classmethod
    def make_tree(cls, www):
        for name in ("f.txt", "same.txt", "inode.txt", "gone.txt"):
            write(os.path.join(www, name), b"version 1 of " + name.encode() + b"\n", COND_MTIME)

    def wait_for(self, target, pred, what):
        seen = [None]

        def check():
            seen[0] = self.get(target)
            return pred(seen[0])

        self.assertTrue(wait_until(check, self.LIMIT), "%s: still %r" % (what, seen[0]))
        return seen[0]

    def test_rewritten_file(self):
        path = os.path.join(self.www, "f.txt")
        first = self.get("/static/f.txt")
        self.assertEqual(first.body, b"version 1 of f.txt\n")
        write(path, b"version 2, longer than the first\n", COND_MTIME + 10)
        r = self.wait_for("/static/f.txt",
                          lambda r: r.h("Last-Modified") == http_date(COND_MTIME + 10),
                          "rewritten")
        self.assertEqual(r.body, b"version 2, longer than the first\n")
        self.assertEqual(r.h("Content-Length"), str(len(r.body)))
        self.assertNotEqual(r.h("ETag"), first.h("ETag"))
        self.assertEqual(r.h("Last-Modified"), http_date(COND_MTIME + 10))
        self.assertStatus(self.get("/static/f.txt", "If-None-Match: " + first.h("ETag")), 200,
                          "the old ETag no longer matches")
        self.assertStatus(self.get("/static/f.txt", "If-None-Match: " + r.h("ETag")), 304)

    def test_same_size_new_mtime(self):
        path = os.path.join(self.www, "same.txt")
        first = self.get("/static/same.txt")
        # Same length, other bytes, in place (same inode); only the mtime tells.
        with open(path, "r+b") as f:
            f.write(b"VERSION 2")
        os.utime(path, (COND_MTIME + 20, COND_MTIME + 20))
        r = self.wait_for("/static/same.txt",
                          lambda r: r.h("Last-Modified") == http_date(COND_MTIME + 20),
                          "same size, new mtime")
        self.assertEqual(r.body, b"VERSION 2 of same.txt\n")
        self.assertNotEqual(r.h("ETag"), first.h("ETag"))
        # The mtime alone (a touch, bytes unchanged) changes it again.
        os.utime(path, (COND_MTIME + 30, COND_MTIME + 30))
        r2 = self.wait_for("/static/same.txt",
                           lambda x: x.h("Last-Modified") == http_date(COND_MTIME + 30), "touch")
        self.assertNotEqual(r2.h("ETag"), r.h("ETag"))

    def test_replaced_by_rename_same_size_and_mtime(self):
        path = os.path.join(self.www, "inode.txt")
        first = self.get("/static/inode.txt")
        write(path + ".new", b"version 1 of inode.txt\n", COND_MTIME)  # same bytes and mtime
        os.replace(path + ".new", path)  # only the inode differs
        r = self.wait_for("/static/inode.txt", lambda r: r.h("ETag") != first.h("ETag"),
                          "a new inode")
        self.assertEqual(r.body, first.body)

    def test_created_file(self):
        self.assertStatus(self.get("/static/new.txt"), 404)
        write(os.path.join(self.www, "new.txt"), b"new\n")
        r = self.wait_for("/static/new.txt", lambda r: r.status == 200, "created after a 404")
        self.assertEqual(r.body, b"new\n")

    def test_deleted_file(self):
        self.assertStatus(self.get("/static/gone.txt"), 200)
        os.unlink(os.path.join(self.www, "gone.txt"))
        self.wait_for("/static/gone.txt", lambda r: r.status == 404, "deleted")


class SmallCache(ServerCase):
    """--static-cache-entries 2: twenty files in turn are all served right, and the cache holds
    no more than its two descriptors."""

    server_args = ["--static-cache-entries", "2"]

    @classmethod
    def make_tree(cls, www):
        for i in range(20):
            write(os.path.join(www, "f%02d.txt" % i), b"file %d\n" % i * (i + 1))

    def test_bounded_descriptors(self):
        before = self.server.settled_fds()
        for _ in range(2):
            for i in range(20):
                r = self.get("/static/f%02d.txt" % i)
                self.assertStatus(r, 200, i)
                self.assertEqual(r.body, b"file %d\n" % i * (i + 1), i)
        after = self.server.settled_fds()
        self.assertLessEqual(after - before, 2, "descriptors %d -> %d" % (before, after))


class NoCache(ServerCase):
    server_args = ["--static-cache-entries", "0"]

    @classmethod
    def make_tree(cls, www):
        write(os.path.join(www, "f.txt"), b"one\n", COND_MTIME)

    def test_change_shows_at_once(self):
        first = self.get("/static/f.txt")
        self.assertEqual(first.body, b"one\n")
        write(os.path.join(self.www, "f.txt"), b"two!\n", COND_MTIME + 1)
        r = self.get("/static/f.txt")  # no wait: nothing is cached
        self.assertEqual(r.body, b"two!\n")
        self.assertNotEqual(r.h("ETag"), first.h("ETag"))
        os.unlink(os.path.join(self.www, "f.txt"))
        self.assertStatus(self.get("/static/f.txt"), 404)


# --- HTTPS: the same files through the TLS connection's copy path ----------------------------


class Https(ServerCase):
    """Over TLS, bodies are read into a buffer and encrypted (no sendfile): whole files, ranges
    at an offset, 304s, the .gz variant and HEADs, with curl and a pipelined Python ssl client."""

    tls = True

    @classmethod
    def args(cls):
        certs = os.path.join(cls.tmp, "certs")
        subprocess.run(["sh", os.path.join(ROOT, "config", "tls", "make-cert.sh"), certs],
                       check=True, timeout=60, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        cls.ca = os.path.join(certs, "ca.pem")
        return ["--static-dir", cls.www, "--tls-cert", os.path.join(certs, "server.pem"),
                "--tls-key", os.path.join(certs, "server.key")]

    @classmethod
    def make_tree(cls, www):
        write(os.path.join(www, "mid.bin"), MID)
        write(os.path.join(www, "a.txt"), b"over tls\n")
        write(os.path.join(www, "app.js"), APP_JS)
        write(os.path.join(www, "app.js.gz"), gzip.compress(APP_JS, mtime=0))

    def tls_curl(self, target, *args):
        return curl(self.server.tls_port, target, "--cacert", self.ca, *args, scheme="https")

    def test_files_ranges_and_validators(self):
        plain = self.get("/static/mid.bin")
        r = self.tls_curl("/static/mid.bin")
        self.assertStatus(r, 200)
        self.assertEqual(r.body, MID)
        self.assertEqual(r.h("ETag"), plain.h("ETag"))
        r = self.tls_curl("/static/mid.bin", "-r", "100000-299999")
        self.assertStatus(r, 206)
        self.assertEqual(r.h("Content-Range"), "bytes 100000-299999/%d" % len(MID))
        self.assertEqual(r.body, MID[100000:300000])
        r = self.tls_curl("/static/mid.bin", "-H", "If-None-Match: " + plain.h("ETag"))
        self.assertStatus(r, 304)
        self.assertEqual(r.body, b"")
        r = self.tls_curl("/static/app.js", "--compressed")
        self.assertEqual(r.h("Content-Encoding"), "gzip")
        self.assertEqual(r.body, APP_JS)

    def test_pipelined_over_tls(self):
        ctx = ssl.create_default_context(cafile=self.ca)
        raw = socket.create_connection(("127.0.0.1", self.server.tls_port), timeout=PROMPT * 4)
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            c = Conn(None, s)
            wants = [(c.send("GET", "/static/mid.bin"), 200, MID),
                     (c.send("HEAD", "/static/mid.bin"), 200, b""),
                     (c.send("GET", "/static/mid.bin", "Range: bytes=-70000"), 206, MID[-70000:]),
                     (c.send("GET", "/static/a.txt"), 200, b"over tls\n"),
                     (c.send("GET", "/static/mid.bin", "Range: bytes=5-"), 206, MID[5:]),
                     (c.send("GET", "/static/a.txt"), 200, b"over tls\n")]
            s.sendall(b"".join(w[0] for w in wants))
            for i, (req, status, body) in enumerate(wants):
                r = c.read()
                what = "answer %d to %r" % (i, req.split(b"\r\n")[0])
                self.assertStatus(r, status, what)
                self.assertEqual(r.body, body, what)


# --- big, slow and vanishing readers ---------------------------------------------------------

MARKS = {0: b"FIRST-MARK", 123456789 % BIG_SIZE: b"MIDDLE-MARK", BIG_SIZE - 8: b"END-MARK"}
MEDIUM = random.Random(11).randbytes(8 << 20)
HUGE_SIZE = 5 << 30
HUGE_MARK_AT = (9 << 29) + 12345  # 4.5 GiB and a bit


def open_request(port, target, rcvbuf=None, timeout=None):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(timeout or PROMPT * 4)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n" % target.encode())
    return s


def baseline_fds(server, targets):
    """The server's descriptors once a HEAD for each file came and went (what the first requests
    open lazily, and the open-file cache's entries, are open now)."""
    for target in targets:
        r = head(server.port, target)
        if r.status != 200:
            raise AssertionError("HEAD %s: %r" % (target, r))
    return server.settled_fds()


def read_head(sock, limit=1 << 16):
    """Reads up to the end of the response head; returns (Response without body, body bytes
    read past the head)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise AssertionError("closed before the head ended: %r" % data)
        data += chunk
        if len(data) > limit:
            raise AssertionError("no head end in %d bytes" % len(data))
    r = parse_response(data)
    extra, r.body = r.body, b""
    return r, extra


class Streaming(ServerCase):
    @classmethod
    def make_tree(cls, www):
        with open(os.path.join(www, "big.bin"), "wb") as f:
            f.truncate(BIG_SIZE)  # sparse: a regular file of zeros, no disk
            for at, mark in MARKS.items():
                f.seek(at)
                f.write(mark)
        write(os.path.join(www, "medium.bin"), MEDIUM)
        write(os.path.join(www, "small.txt"), b"small\n")
        with open(os.path.join(www, "huge.bin"), "wb") as f:
            f.truncate(HUGE_SIZE)  # past 4 GiB: 64-bit sizes and offsets, no disk
            f.seek(HUGE_MARK_AT)
            f.write(b"HUGE-MARK")
        with open(os.path.join(www, "shrink.bin"), "wb") as f:
            f.truncate(32 << 20)

    def served_promptly(self):
        start = time.monotonic()
        r = get(self.port, "/static/small.txt", timeout=PROMPT * 2)
        took = time.monotonic() - start
        self.assertStatus(r, 200)
        self.assertEqual(r.body, b"small\n")
        self.assertLess(took, PROMPT, "a small request took %.2fs" % took)

    def baseline_fds(self):
        return baseline_fds(self.server, ("/static/small.txt", "/static/medium.bin",
                                          "/static/big.bin"))

    def test_big_sparse_file_streams_without_rss_growth(self):
        self.baseline_fds()
        rss_before = self.server.rss_kib()
        rss_peak = rss_before
        s = open_request(self.port, "/static/big.bin", timeout=PROMPT * 10)
        with s:
            r, extra = read_head(s)
            self.assertStatus(r, 200)
            self.assertEqual(r.h("Content-Length"), str(BIG_SIZE))
            buf = bytearray(1 << 20)
            view = memoryview(buf)
            got = 0
            next_sample = 0
            pending = bytearray(extra)
            marks_seen = set()
            while True:
                if pending:
                    n = len(pending)
                    view[:n] = pending
                    pending = b""
                else:
                    n = s.recv_into(buf)
                    if n == 0:
                        break
                for at, mark in MARKS.items():  # the marks where they belong: the file's bytes
                    lo, hi = max(at, got), min(at + len(mark), got + n)
                    if lo < hi:
                        self.assertEqual(bytes(view[lo - got:hi - got]), mark[lo - at:hi - at],
                                         "bytes at offset %d" % lo)
                        if hi == at + len(mark):
                            marks_seen.add(at)
                got += n
                if got >= next_sample:
                    rss_peak = max(rss_peak, self.server.rss_kib())
                    next_sample = got + (8 << 20)
        rss_peak = max(rss_peak, self.server.rss_kib())
        self.assertEqual(got, BIG_SIZE, "bytes received")
        self.assertEqual(marks_seen, set(MARKS), "marks seen")
        self.assertLess(rss_peak - rss_before, RSS_GROWTH_LIMIT_KIB,
                        "RSS grew from %d to %d KiB streaming %d MiB" % (
                            rss_before, rss_peak, BIG_SIZE >> 20))

    def test_slow_reader_gets_every_byte(self):
        s = open_request(self.port, "/static/medium.bin", rcvbuf=4096, timeout=PROMPT * 10)
        with s:
            r, extra = read_head(s)
            self.assertStatus(r, 200)
            self.assertEqual(r.h("Content-Length"), str(len(MEDIUM)))
            body = bytearray(extra)
            while len(body) < 1000:
                body += s.recv(1000)
            client_port = s.getsockname()[1]
            # The server has more than the client takes: its socket's send queue holds bytes and
            # the client's receive queue stays full (the server waits on its socket, parked).
            seen = []

            def blocked():
                q = tcp_queues(self.port, client_port)
                seen.append((q, inq(s)))
                return (len(seen) >= 2 and q is not None and q[0] > 0 and seen[-1][1] > 0
                        and seen[-1] == seen[-2])

            self.assertTrue(wait_until(blocked, PROMPT * 2),
                            "the server's socket never blocked: %s" % seen[-5:])
            self.served_promptly()  # the parked writer holds no thread another client needs
            while True:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                body += chunk
        self.assertEqual(len(body), len(MEDIUM))
        self.assertEqual(hashlib.sha256(body).digest(), hashlib.sha256(MEDIUM).digest(),
                         "the slow reader's bytes differ")

    def test_past_4_gib(self):
        r = self.head("/static/huge.bin")
        self.assertStatus(r, 200)
        self.assertEqual(r.h("Content-Length"), str(HUGE_SIZE))
        r = self.get("/static/huge.bin", "Range: bytes=%d-%d" % (HUGE_MARK_AT - 2,
                                                                HUGE_MARK_AT + 10))
        self.assertStatus(r, 206)
        self.assertEqual(r.h("Content-Range"), "bytes %d-%d/%d" % (
            HUGE_MARK_AT - 2, HUGE_MARK_AT + 10, HUGE_SIZE))
        self.assertEqual(r.body, b"\0\0HUGE-MARK\0\0")
        r = self.get("/static/huge.bin", "Range: bytes=-3")
        self.assertStatus(r, 206)
        self.assertEqual(r.h("Content-Range"), "bytes %d-%d/%d" % (HUGE_SIZE - 3, HUGE_SIZE - 1,
                                                                   HUGE_SIZE))
        self.assertEqual(r.body, b"\0\0\0")
        r = self.get("/static/huge.bin", "Range: bytes=%d-" % HUGE_SIZE)
        self.assertStatus(r, 416)
        self.assertEqual(r.h("Content-Range"), "bytes */%d" % HUGE_SIZE)

    def test_file_shrinking_mid_body_closes_the_connection(self):
        """The declared length cannot be honoured: the server closes the connection (the
        client sees a short body and EOF, never a hang), and serves on."""
        path = os.path.join(self.www, "shrink.bin")
        s = open_request(self.port, "/static/shrink.bin", rcvbuf=4096, timeout=PROMPT * 10)
        try:
            with s:
                r, body = read_head(s)
                self.assertStatus(r, 200)
                self.assertEqual(r.h("Content-Length"), str(32 << 20))
                client_port = s.getsockname()[1]
                # Wait until the server's writes are held up by this client, then cut the file.
                self.assertTrue(wait_until(
                    lambda: (tcp_queues(self.port, client_port) or (0, 0))[0] > 0, PROMPT * 2),
                    "the server never queued bytes for the client")
                os.truncate(path, 1 << 20)
                got = len(body)
                start = time.monotonic()
                try:
                    while True:
                        chunk = s.recv(1 << 16)
                        if not chunk:
                            break
                        got += len(chunk)
                except ConnectionResetError:
                    pass
                self.assertLess(time.monotonic() - start, PROMPT * 4)
                self.assertLess(got, 32 << 20, "a full body from a file cut to 1 MiB")
        finally:
            os.truncate(path, 32 << 20)
        self.served_promptly()

    def test_disconnects_mid_file_free_everything(self):
        baseline = self.baseline_fds()
        socks = []
        try:
            for _ in range(20):
                socks.append(open_request(self.port, "/static/big.bin", rcvbuf=1 << 16))
            for i, s in enumerate(socks):
                r, body = read_head(s)
                self.assertStatus(r, 200, "client %d" % i)
                got = len(body)
                while got < 64 << 10:
                    chunk = s.recv(1 << 16)
                    self.assertTrue(chunk, "client %d: closed after %d bytes" % (i, got))
                    got += len(chunk)
            # The server is parked on 20 full sockets now, and still serves.
            self.served_promptly()
        finally:
            for i, s in enumerate(socks):
                if i % 2:  # half reset at once, half an ordinary close (with unread data: RST)
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
        self.served_promptly()
        self.assertTrue(wait_until(lambda: self.server.fds() <= baseline, PROMPT * 3),
                        "server descriptors %d, baseline %d" % (self.server.fds(), baseline))
        self.assertTrue(self.server.alive())


class WriteTimeout(ServerCase):
    server_args = ["--write-timeout", "1s"]

    @classmethod
    def make_tree(cls, www):
        with open(os.path.join(www, "big.bin"), "wb") as f:
            f.truncate(64 << 20)
        write(os.path.join(www, "small.txt"), b"small\n")

    def test_stalled_reader_is_cut_off(self):
        baseline = baseline_fds(self.server, ("/static/small.txt", "/static/big.bin"))
        s = open_request(self.port, "/static/big.bin", rcvbuf=4096, timeout=PROMPT * 10)
        with s:
            r, body = read_head(s)
            self.assertStatus(r, 200)
            stalled = time.monotonic()
            client_port = s.getsockname()[1]
            self.assertIn(client_port, self.server.connection_ports())
            # Read nothing more: after --write-timeout the server closes the connection and its
            # descriptors go (the file's, the socket's).
            self.assertTrue(wait_until(lambda: client_port not in self.server.connection_ports(),
                                       1 + PROMPT * 3),
                            "the stalled connection is still open after %.1fs" % (
                                time.monotonic() - stalled))
            took = time.monotonic() - stalled
            self.assertGreater(took, 0.8, "closed before the write timeout")
            self.assertTrue(wait_until(lambda: self.server.fds() <= baseline, PROMPT),
                            "server descriptors %d, baseline %d" % (self.server.fds(),
                                                                    baseline))
            got = len(body)
            try:
                while True:
                    chunk = s.recv(1 << 16)
                    if not chunk:
                        break
                    got += len(chunk)
            except ConnectionResetError:
                pass
            self.assertLess(got, 64 << 20, "the stalled reader got the whole file")
        r = get(self.port, "/static/small.txt")
        self.assertStatus(r, 200)


class SlowButMoving(ServerCase):
    """--write-timeout and --handler-timeout 1s: a download that keeps moving is never cut off,
    however long it takes (the write timeout bounds stalls, as nginx's send_timeout; the handler
    deadline is over once the file is handed to the connection), over HTTP and HTTPS alike.
    Found by a hostile-client run: 1 MiB had to go within the write timeout, and HTTPS downloads
    stopped at the handler deadline while plain ones went on."""

    tls = True
    SIZE = 2 << 20

    @classmethod
    def args(cls):
        certs = os.path.join(cls.tmp, "certs")
        subprocess.run(["sh", os.path.join(ROOT, "config", "tls", "make-cert.sh"), certs],
                       check=True, timeout=60, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        cls.ca = os.path.join(certs, "ca.pem")
        return ["--static-dir", cls.www, "--write-timeout", "1s", "--handler-timeout", "1s",
                "--tls-cert", os.path.join(certs, "server.pem"),
                "--tls-key", os.path.join(certs, "server.key")]

    @classmethod
    def make_tree(cls, www):
        write(os.path.join(www, "two.bin"), random.Random(16).randbytes(cls.SIZE))

    def slow_download(self, sock):
        """Reads the response at about 800 KB/s (a MiB takes longer than the 1 s timeouts) and
        returns the body; the pauses are the slow client itself, not a wait for the server."""
        sock.sendall(b"GET /static/two.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        data = b""
        started = time.monotonic()
        while True:
            chunk = sock.recv(32 * 1024)
            if not chunk:
                break
            data += chunk
            behind = len(data) / 800e3 - (time.monotonic() - started)
            if behind > 0:
                time.sleep(behind)
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200"), head[:100])
        return body, time.monotonic() - started

    def test_plain(self):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.settimeout(PROMPT * 4)
        s.connect(("127.0.0.1", self.port))
        with s:
            body, took = self.slow_download(s)
        self.assertGreater(took, 1.5, "the client was not slow: the test tests nothing")
        self.assertEqual(body, read(os.path.join(self.www, "two.bin")))

    def test_https(self):
        ctx = ssl.create_default_context(cafile=self.ca)
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        raw.settimeout(PROMPT * 4)
        raw.connect(("127.0.0.1", self.server.tls_port))
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            body, took = self.slow_download(s)
        self.assertGreater(took, 1.5, "the client was not slow: the test tests nothing")
        self.assertEqual(body, read(os.path.join(self.www, "two.bin")))


class FoundByAttack(ServerCase):
    """What a hostile-client run found: a doubled slash slipped past a directory's
    Cache-Control rule (and made a cache entry of its own); list fields on several lines
    (If-None-Match, Accept-Encoding) were read from their first line only; the listing followed
    a symlink out of the root to call it a directory; If-Range with garbage matched a file whose
    mtime is -1 (the parser's "not a date")."""

    server_args = ["--static-autoindex", "--static-cache-control",
                   "/private/data/=no-store, private;*=public, max-age=86400"]

    @classmethod
    def make_tree(cls, www):
        os.makedirs(os.path.join(www, "private", "data"))
        write(os.path.join(www, "private", "data", "s.txt"), b"s\n")
        write(os.path.join(www, "a.txt"), b"identity\n")
        write(os.path.join(www, "a.txt.gz"), gzip.compress(b"identity\n", mtime=0))
        write(os.path.join(www, "old.txt"), b"from 1969\n")
        os.utime(os.path.join(www, "old.txt"), (-1, -1))
        os.mkdir(os.path.join(www, "list"))
        os.symlink("../..", os.path.join(www, "list", "up"))
        os.mkdir(os.path.join(www, "list", "realdir"))

    def test_doubled_slashes_are_one(self):
        for target in ("/static/private/data/s.txt", "/static/private//data/s.txt",
                       "/static//private/data//s.txt"):
            r = self.get(target)
            self.assertStatus(r, 200, target)
            self.assertEqual(r.h("Cache-Control"), "no-store, private", target)

    def test_list_fields_on_several_lines(self):
        etag = self.head("/static/a.txt").h("ETag")
        r = self.get("/static/a.txt", "If-None-Match: \"other\"", "If-None-Match: " + etag)
        self.assertStatus(r, 304, "the second If-None-Match line was ignored")
        r = self.get("/static/a.txt", "Accept-Encoding: identity", "Accept-Encoding: gzip")
        self.assertEqual(r.h("Content-Encoding"), "gzip", "the second Accept-Encoding line")
        self.assertEqual(gzip.decompress(r.body), b"identity\n")

    def test_listing_does_not_follow_symlinks(self):
        r = self.get("/static/list/")
        self.assertStatus(r, 200)
        self.assertIn(b'href="realdir/"', r.body)
        self.assertIn(b'href="up"', r.body, "the symlink is listed as what it is")
        self.assertNotIn(b'href="up/"', r.body, "the listing followed a symlink out of the root")

    def test_if_range_garbage_never_matches(self):
        r = self.get("/static/old.txt", "Range: bytes=0-3", "If-Range: garbage")
        self.assertStatus(r, 200, "If-Range garbage matched a 1969 file")
        self.assertEqual(r.body, b"from 1969\n")


# --- bad flags -------------------------------------------------------------------------------


class FlagErrors(unittest.TestCase):
    def test_good_values_start(self):
        """The flags exist: with a good value the server starts (else an unknown flag's exit 2
        would pass the next test)."""
        tmp = tempfile.mkdtemp(prefix="greenhttp-static-flags-")
        try:
            mime = os.path.join(tmp, "mime.types")
            write(mime, MIME_TYPES.encode())
            for flag, value in [("--static-symlinks", "never"),
                                ("--static-cache-control", "*.css=max-age=1;/a/=no-store;*=x"),
                                ("--static-cache-entries", "0"), ("--static-cache-valid", "250ms"),
                                ("--static-mime-types", mime), ("--static-gzip", "false"),
                                ("--static-prefix", "/files/"), ("--static-index", "")]:
                run_dir = tempfile.mkdtemp(dir=tmp)
                Server(["--static-dir", tmp, flag, value], run_dir).kill()
        finally:
            shutil.rmtree(tmp)

    def test_bad_values_exit_2_naming_the_flag(self):
        tmp = tempfile.mkdtemp(prefix="greenhttp-static-flags-")
        try:
            cases = [("--static-symlinks", "maybe"), ("--static-cache-control", "noequals"),
                     ("--static-cache-control", "*.css"), ("--static-cache-entries", "-1"),
                     ("--static-cache-entries", "many"), ("--static-cache-valid", "soon"),
                     ("--static-mime-types", "/nonexistent/mime.types"),
                     ("--static-gzip", "perhaps"), ("--static-prefix", "static")]
            problems = []
            for flag, value in cases:
                port_file = os.path.join(tmp, "port")
                argv = [BINARY, "--listen", "127.0.0.1:0", "--port-file", port_file,
                        "--access-log", "off", "--static-dir", tmp, flag, value]
                proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                try:
                    _, err = proc.communicate(timeout=PROMPT * 4)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.communicate()
                    problems.append("%s %r: still running (it accepted the value)" % (flag,
                                                                                      value))
                    continue
                err = err.decode(errors="replace")
                lines = [l for l in err.splitlines() if l.strip()]
                if proc.returncode != 2:
                    problems.append("%s %r: exit %d, want 2: %r" % (flag, value, proc.returncode,
                                                                    err[-300:]))
                elif len(lines) != 1:
                    problems.append("%s %r: %d lines on stderr, want one: %r" % (
                        flag, value, len(lines), err[-300:]))
                elif flag not in lines[0]:
                    problems.append("%s %r: the error does not name the flag: %r" % (
                        flag, value, lines[0]))
            self.assertFalse(problems, "\n  ".join([""] + problems))
        finally:
            shutil.rmtree(tmp)


if __name__ == "__main__":
    started = time.monotonic()
    if not os.access(BINARY, os.X_OK):
        print("no greenhttp binary at %s" % BINARY)
        sys.exit(2)
    prog = unittest.main(argv=[sys.argv[0]] + UNITTEST_ARGS, exit=False)
    print("%.1fs" % (time.monotonic() - started))
    sys.exit(0 if prog.result.wasSuccessful() else 1)
