#!/usr/bin/python3
"""HTTP/2 on the real binary (issue 17): negotiation, multiplexing, flow control, the limits and
the attacks they stop, timeouts, the drain, metrics (RFC 9113, RFC 7541, RFC 9110).

Usage: /usr/bin/python3 http2_test.py BINARY [--slow] [unittest options, e.g. -v or a test name]

Needs Debian's python3-h2 (h2 4.x with hpack; /usr/bin/python3 has it, a pyenv python3 on PATH
may not: the script exits 77, "skipped", without it), curl built with nghttp2, and nghttp and
h2load (nghttp2-client); config/tls/make-cert.sh makes a certificate at test time.

build/greenhttp runs with --listen 127.0.0.1:0 --port-file (and --listen-tls with
--tls-port-file where a class needs HTTPS). Three kinds of client:
  - real ones: curl (--http2 over TLS with ALPN, --http2-prior-knowledge, --http2 on http://,
    the h2c Upgrade), nghttp (-nv, -u) and h2load (-c 20 -m 100);
  - the h2 library (LibClient), which checks every frame the server sends against RFC 9113
    (flow-control windows, header validity, stream states) for the ordinary traffic:
    multiplexed streams, uploads and downloads under small windows;
  - a client of our own (H2), frames packed with struct and header blocks from hpack, for what
    h2 would refuse to send: malformed requests, floods, resets, unfinished header blocks,
    windows that never open, streams past the limit.

Each class starts its own server (about 15 ms) with the flags under test and its tests share
it; each test leaves the server as it found it (connections closed, green threads back).
  Main            negotiation (ALPN, prior knowledge, Upgrade: h2c, HTTP/1.1 on both ports),
                  SETTINGS, response headers, multiplexing, flow control both ways, request
                  bodies, every limit and flood at the default flags, metrics, the green-thread
                  dump, clients that vanish
  Rates           non-default --http2-* flags: SETTINGS values, a 6th stream refused while 5
                  reset streams' handlers still run, the reset and control token buckets at
                  their size
  HeaderTimeout   --read-header-timeout 1s: an unfinished header block, a stalled body (408)
  Idle            --idle-timeout 1s: GOAWAY(NO_ERROR) and close, but not while a stream is open
  WriteTimeout    --write-timeout 1s: zero windows (RST_STREAM CANCEL), a socket that takes
                  nothing (closed), memory and green threads bounded meanwhile
  HandlerTimeout  --handler-timeout 1s: 503 before anything was sent, RST_STREAM after
  Drain           SIGTERM: GOAWAY with the last stream id, open streams finish, exit 0
  FoundByAttack   what a hostile-client run found, each test its reproducer: a header block
                  paused past the idle memory release, unread bodies (404s, ended and reset
                  streams) and the connection window, a trailer HPACK bomb, h2load at the
                  stream limit never refused, an Upgrade with too many settings, Host against
                  :authority; ...BigTables (a 64 KiB HPACK table, 1000 streams): tables past
                  16 KiB through an idle pause; ...HandlerTimeout (1ms): every stream ends
  NoHttp2, NoH2c  --http2 false, --h2c false
  TomlConfig      the [http2] table of a --config file (enabled, h2c, the limits)
  Flags           --help lists the flags; bad values exit 2 naming the flag

Every wait is bounded and waits for something observable (a port file, a frame, a closed
socket, a counter in /metrics, a socket queue in /proc/net/tcp); all traffic goes to
127.0.0.1, and every flood is a few hundred frames.
"""

import base64
import hashlib
import os
import random
import re
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import time
import unittest

from binary_harness import Metrics, ServerProcess, wait_until

try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    import h2.settings
    import hpack
except ImportError:  # a python3 without python3-h2 (a pyenv one): say so, and skip (77)
    print("http2_test.py needs the h2 and hpack modules (Debian python3-h2): run it with "
          "/usr/bin/python3")
    sys.exit(77)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MAKE_CERT = os.path.join(ROOT, "config", "tls", "make-cert.sh")


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
# How long something that should be prompt may take (a request on a quiet server, a close the
# server decided on): generous for a 2-core machine shared with builds, still far below the
# hangs it guards against.
PROMPT = 3.0 if SLOW else 1.5
# A timeout flag set to 1 s fires no earlier than this (timers may round down a little).
EARLIEST = 0.75
# Sanitizer trees (--slow): shadow memory and quarantines multiply what a stalled stream costs;
# the Release tree checks the real bound.
RSS_GROWTH_LIMIT_KIB = (128 if SLOW else 32) << 10
MIB = 1 << 20


def sha(data):
    return hashlib.sha256(data).hexdigest()[:16]


def fnv1a(data):
    h = 14695981039346656037
    for b in data:
        h = ((h ^ b) * 1099511628211) & 0xFFFFFFFFFFFFFFFF
    return h


# --- HTTP/2 frames ---------------------------------------------------------------------------

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
(DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE,
 CONTINUATION) = range(10)
FRAME_NAMES = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE", "PING",
               "GOAWAY", "WINDOW_UPDATE", "CONTINUATION"]
END_STREAM = ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20
(S_HEADER_TABLE_SIZE, S_ENABLE_PUSH, S_MAX_CONCURRENT_STREAMS, S_INITIAL_WINDOW_SIZE,
 S_MAX_FRAME_SIZE, S_MAX_HEADER_LIST_SIZE) = range(1, 7)
(NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED,
 FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM,
 INADEQUATE_SECURITY, HTTP_1_1_REQUIRED) = range(14)
ERROR_NAMES = ["NO_ERROR", "PROTOCOL_ERROR", "INTERNAL_ERROR", "FLOW_CONTROL_ERROR",
               "SETTINGS_TIMEOUT", "STREAM_CLOSED", "FRAME_SIZE_ERROR", "REFUSED_STREAM",
               "CANCEL", "COMPRESSION_ERROR", "CONNECT_ERROR", "ENHANCE_YOUR_CALM",
               "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED"]
MAX_WINDOW = (1 << 31) - 1


def error_name(code):
    if code is None:
        return "none"
    return ERROR_NAMES[code] if 0 <= code < len(ERROR_NAMES) else "0x%x" % code


def frame(ftype, flags, sid, payload=b""):
    payload = bytes(payload)
    return (struct.pack(">I", len(payload))[1:] + struct.pack(">BBI", ftype, flags, sid)
            + payload)


def settings_frame(settings=None, ack=False):
    return frame(SETTINGS, ACK if ack else 0, 0,
                 b"".join(struct.pack(">HI", k, v) for k, v in (settings or {}).items()))


def window_update(sid, increment):
    return frame(WINDOW_UPDATE, 0, sid, struct.pack(">I", increment))


def rst_stream(sid, code=CANCEL):
    return frame(RST_STREAM, 0, sid, struct.pack(">I", code))


def ping_frame(payload=b"\0" * 8, ack=False):
    return frame(PING, ACK if ack else 0, 0, payload)


def priority_frame(sid, depends_on=0, weight=15):
    return frame(PRIORITY, 0, sid, struct.pack(">IB", depends_on, weight))


def header_frames(sid, block, end_stream, max_frame=16384):
    """HEADERS, then CONTINUATION frames as needed, carrying the header block `block`."""
    first, rest = block[:max_frame], block[max_frame:]
    flags = END_STREAM if end_stream else 0
    if not rest:
        return frame(HEADERS, flags | END_HEADERS, sid, first)
    out = [frame(HEADERS, flags, sid, first)]
    while rest:
        piece, rest = rest[:max_frame], rest[max_frame:]
        out.append(frame(CONTINUATION, 0 if rest else END_HEADERS, sid, piece))
    return b"".join(out)


def hpack_int(n, prefix_bits, first=0):
    """RFC 7541 5.1: n in an N-bit prefix; `first` holds the bits above the prefix."""
    top = (1 << prefix_bits) - 1
    if n < top:
        return bytes([first | n])
    out = bytearray([first | top])
    n -= top
    while n >= 128:
        out.append(n % 128 + 128)
        n //= 128
    out.append(n)
    return bytes(out)


def hpack_literal(name, value, indexed=False):
    """RFC 7541 6.2: one field as raw octets (no Huffman), with incremental indexing (it joins
    the server's dynamic table) or without indexing (the table stays as it is)."""
    name, value = name.encode(), value.encode()
    return (b"\x40" if indexed else b"\x00") + hpack_int(len(name), 7) + name + \
        hpack_int(len(value), 7) + value


def hpack_request(path, method="GET", authority="127.0.0.1", headers=()):
    """A request's header block that leaves the dynamic table alone (literals without
    indexing): for a connection whose table the test drives itself, byte by byte."""
    return b"".join(hpack_literal(k, v) for k, v in
                    [(":method", method), (":scheme", "http"), (":authority", authority),
                     (":path", path)] + list(headers))


class Stream:
    """What one stream received."""

    def __init__(self, sid, send_window=65535):
        self.sid = sid
        self.blocks = []  # decoded header blocks, in order: [(name, value)]
        self.data = bytearray()
        self.data_frames = []  # flow-controlled length of each DATA frame
        self.ended = False  # END_STREAM received
        self.reset = None  # RST_STREAM's error code
        self.done_at = None
        self.send_window = send_window
        self.window_updates = []  # WINDOW_UPDATE increments the server sent for this stream

    @property
    def done(self):
        return self.ended or self.reset is not None

    @property
    def headers(self):
        """The final (non-1xx) response header block, or None."""
        for b in self.blocks:
            status = dict(b).get(":status", "")
            if not status.startswith("1"):
                return b
        return None

    @property
    def trailers(self):
        finals = [b for b in self.blocks if not dict(b).get(":status", "").startswith("1")]
        return finals[1] if len(finals) > 1 else None

    @property
    def status(self):
        h = self.headers
        return int(dict(h)[":status"]) if h is not None and ":status" in dict(h) else None

    def h(self, name):
        values = [v for k, v in (self.headers or []) if k == name]
        return ", ".join(values) if values else None

    def __repr__(self):
        return "<stream %d: status %s, %d body bytes in %d DATA, %s%s>" % (
            self.sid, self.status, len(self.data), len(self.data_frames),
            "ended" if self.ended else "open",
            ", RST_STREAM %s" % error_name(self.reset) if self.reset is not None else "")


class Wire:
    """A socket (plain or TLS) read and written without blocking the other direction: a write
    the server does not take yet reads what the server sends meanwhile (so a client never
    deadlocks a server that writes before it reads)."""

    def __init__(self, sock):
        self.sock = sock
        self.outq = bytearray()
        self.closed = False
        self.closed_at = None
        self.write_error = None
        self.started = time.monotonic()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self, reset=False):
        if reset:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        try:
            self.sock.close()
        except OSError:
            pass

    def _feed(self, data):
        raise NotImplementedError

    def _eof(self):
        if not self.closed:
            self.closed = True
            self.closed_at = time.monotonic()

    def _recv(self, timeout):
        """One read: waits up to `timeout` (0: takes only what is there)."""
        if self.closed:
            return
        try:
            if timeout <= 0:
                self.sock.setblocking(False)
            else:
                self.sock.settimeout(timeout)
            data = self.sock.recv(1 << 18)
        except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError, socket.timeout):
            return
        except OSError:  # a reset, or a TLS alert before the close
            self._eof()
            return
        if not data:
            self._eof()
            return
        self._feed(data)

    def _flush(self):
        deadline = time.monotonic() + PROMPT * 8
        while self.outq and not self.closed and self.write_error is None:
            try:
                self.sock.setblocking(False)
                n = self.sock.send(bytes(self.outq[:1 << 16]))
                del self.outq[:n]
                continue
            except (BlockingIOError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
                pass
            except OSError as e:  # EPIPE, ECONNRESET: the server closed; the caller checks
                self.write_error = e
                break
            if time.monotonic() > deadline:
                raise AssertionError("the server took none of %d bytes for %.0fs" % (
                    len(self.outq), PROMPT * 8))
            readable, _, _ = select.select([self.sock], [self.sock], [], 0.05)
            if readable:
                self._recv(0)
        if self.closed or self.write_error is not None:
            self.outq.clear()

    def send_raw(self, data):
        """Queues and writes `data`; False if the connection is gone (the server closed)."""
        self.outq += data
        self._flush()
        return self.write_error is None and not self.closed

    def pump(self, timeout):
        self._flush()
        self._recv(timeout)
        self._flush()

    def wait(self, pred, limit):
        """Reads (and answers) until pred() holds, the peer closes or `limit` passes."""
        deadline = time.monotonic() + limit
        while True:
            if pred():
                return True
            left = deadline - time.monotonic()
            if left <= 0 or self.closed:
                return pred()
            self.pump(min(left, 0.25))

    def describe(self):
        return ""

    def must(self, pred, limit, what):
        if not self.wait(pred, limit):
            raise AssertionError("%s: not within %.1fs\n%s" % (what, limit, self.describe()))

    def wait_closed(self, limit, what="the server closes the connection"):
        self.must(lambda: self.closed, limit, what)


class H2(Wire):
    """A client of our own: frames as written, HPACK from the hpack module, the server's frames
    parsed and logged. By default it answers SETTINGS and PING, and gives back (WINDOW_UPDATE)
    every DATA byte at once: auto_window=False keeps the windows as the server left them."""

    def __init__(self, sock, settings=None, auto_window=True, preface=True, wait_settings=True,
                 scheme="http", initial=b"", upgraded=False):
        super().__init__(sock)
        self.scheme = scheme
        self.buf = bytearray()
        self.enc = hpack.Encoder()
        self.dec = hpack.Decoder()
        self.streams = {}
        self.next_sid = 1
        self.first_frame = None
        self.server_settings = None  # the first SETTINGS
        self.settings_frames = []
        self.settings_acks = 0
        self.ping_acks = []
        self.goaways = []  # (last_stream_id, error_code, debug data)
        self.conn_window_updates = []
        self.push_promises = 0
        self.send_window = 65535
        self.peer_initial_window = 65535
        self.peer_max_frame = 16384
        self.local_initial_window = (settings or {}).get(S_INITIAL_WINDOW_SIZE, 65535)
        self.auto_window = auto_window
        self.log = []
        self.hblock = None
        self.ended_order = []
        if upgraded:  # stream 1 is the HTTP/1.1 request, half-closed on our side
            self._stream(1)
            self.next_sid = 3
        if preface:
            self.outq += PREFACE + settings_frame(settings or {})
        if initial:
            self._feed(initial)
        self._flush()
        if preface and wait_settings:
            self.must(lambda: self.server_settings is not None, PROMPT * 2,
                      "the server's SETTINGS")

    @classmethod
    def connect(cls, port, tls=None, rcvbuf=None, **kw):
        """A new connection to 127.0.0.1:port; tls: an SSLContext (ALPN h2 is checked)."""
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(PROMPT * 4)
        try:
            raw.connect(("127.0.0.1", port))
            sock = raw
            if tls is not None:
                sock = tls.wrap_socket(raw, server_hostname="localhost")
                if sock.selected_alpn_protocol() != "h2":
                    raise AssertionError("ALPN chose %r, not h2" % sock.selected_alpn_protocol())
                kw.setdefault("scheme", "https")
            return cls(sock, **kw)
        except BaseException:
            raw.close()
            raise

    # --- the server's frames ---

    def _note(self, text, merge_key=None):
        t = time.monotonic() - self.started
        if merge_key is not None and self.log and self.log[-1][0] == merge_key:
            self.log[-1][2] += 1
            self.log[-1][4] = t
            return
        self.log.append([merge_key, text, 1, t, t])

    def describe(self):
        lines = []
        for key, text, count, t0, t1 in self.log[-40:]:
            if count > 1:
                lines.append("  +%.3fs..%.3fs %s x%d" % (t0, t1, text, count))
            else:
                lines.append("  +%.3fs %s" % (t0, text))
        state = "closed by the server at +%.3fs" % (self.closed_at - self.started) \
            if self.closed else "open"
        if self.write_error is not None:
            state += ", a write failed: %r" % self.write_error
        return "frames from the server (last 40 of %d):\n%s\n  connection %s" % (
            len(self.log), "\n".join(lines) or "  (none)", state)

    def _stream(self, sid):
        st = self.streams.get(sid)
        if st is None:
            st = self.streams[sid] = Stream(sid, self.peer_initial_window)
        return st

    def _feed(self, data):
        self.buf += data
        while len(self.buf) >= 9:
            length = int.from_bytes(self.buf[0:3], "big")
            if len(self.buf) < 9 + length:
                break
            ftype, flags = self.buf[3], self.buf[4]
            sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
            payload = bytes(self.buf[9:9 + length])
            del self.buf[:9 + length]
            if self.first_frame is None:
                self.first_frame = ftype
            self._frame(ftype, flags, sid, payload)

    def _frame(self, ftype, flags, sid, payload):
        name = FRAME_NAMES[ftype] if ftype < len(FRAME_NAMES) else "type-0x%x" % ftype
        if self.hblock is not None and (ftype != CONTINUATION or sid != self.hblock[0]):
            raise AssertionError("the server sent %s s%d inside the header block of s%d "
                                 "(RFC 9113 6.10)\n%s" % (name, sid, self.hblock[0],
                                                          self.describe()))
        if ftype == DATA:
            body = payload
            if flags & PADDED:
                body = payload[1:len(payload) - payload[0]]
            st = self._stream(sid)
            st.data += body
            st.data_frames.append(len(payload))
            self._note("DATA s%d (%d bytes each or less)" % (sid, len(payload)), ("DATA", sid))
            if payload and self.auto_window:
                self.outq += window_update(0, len(payload))
                if not flags & END_STREAM:
                    self.outq += window_update(sid, len(payload))
            if flags & END_STREAM:
                self._end(st)
                self._note("DATA s%d END_STREAM" % sid)
        elif ftype in (HEADERS, PUSH_PROMISE):
            off = 0
            pad = 0
            if flags & PADDED:
                pad = payload[0]
                off = 1
            if ftype == HEADERS and flags & PRIORITY_FLAG:
                off += 5
            if ftype == PUSH_PROMISE:
                self.push_promises += 1
                off += 4
            self.hblock = [sid, flags, bytearray(payload[off:len(payload) - pad]), ftype]
            if flags & END_HEADERS:
                self._end_block()
        elif ftype == CONTINUATION:
            if self.hblock is None:
                raise AssertionError("CONTINUATION s%d without HEADERS\n%s" % (
                    sid, self.describe()))
            self.hblock[2] += payload
            if flags & END_HEADERS:
                self._end_block()
        elif ftype == RST_STREAM:
            code = struct.unpack(">I", payload[:4])[0]
            st = self._stream(sid)
            st.reset = code
            self._end(st)
            self._note("RST_STREAM s%d %s" % (sid, error_name(code)))
        elif ftype == SETTINGS:
            if flags & ACK:
                self.settings_acks += 1
                self._note("SETTINGS ACK", ("SETTINGS ACK",))
            else:
                values = {}
                for i in range(0, len(payload) - 5, 6):
                    k, v = struct.unpack(">HI", payload[i:i + 6])
                    values[k] = v
                self.settings_frames.append(values)
                if self.server_settings is None:
                    self.server_settings = values
                if S_INITIAL_WINDOW_SIZE in values:
                    delta = values[S_INITIAL_WINDOW_SIZE] - self.peer_initial_window
                    self.peer_initial_window = values[S_INITIAL_WINDOW_SIZE]
                    for st in self.streams.values():
                        st.send_window += delta
                if S_MAX_FRAME_SIZE in values:
                    self.peer_max_frame = values[S_MAX_FRAME_SIZE]
                self.outq += settings_frame(ack=True)
                self._note("SETTINGS %s" % values)
        elif ftype == PING:
            if flags & ACK:
                self.ping_acks.append(payload)
                self._note("PING ACK", ("PING ACK",))
            else:
                self.outq += ping_frame(payload, ack=True)
                self._note("PING", ("PING",))
        elif ftype == GOAWAY:
            last, code = struct.unpack(">II", payload[:8])
            self.goaways.append((last & 0x7FFFFFFF, code, payload[8:]))
            self._note("GOAWAY last_stream_id=%d %s %r" % (last & 0x7FFFFFFF, error_name(code),
                                                           payload[8:200]))
        elif ftype == WINDOW_UPDATE:
            inc = struct.unpack(">I", payload[:4])[0] & 0x7FFFFFFF
            if sid == 0:
                self.send_window += inc
                self.conn_window_updates.append(inc)
            else:
                self._stream(sid).send_window += inc
                self._stream(sid).window_updates.append(inc)
            self._note("WINDOW_UPDATE s%d +%d" % (sid, inc), ("WU", sid))
        else:
            self._note("%s s%d flags=0x%x len=%d" % (name, sid, flags, len(payload)))

    def _end_block(self):
        sid, flags, block, ftype = self.hblock
        self.hblock = None
        try:
            fields = self.dec.decode(bytes(block), raw=False)
        except Exception as e:  # hpack's errors: the server's HPACK is broken
            raise AssertionError("cannot decode the server's header block on s%d: %r\n%s" % (
                sid, e, self.describe()))
        if ftype == PUSH_PROMISE:
            self._note("PUSH_PROMISE s%d %s" % (sid, fields))
            return
        st = self._stream(sid)
        st.blocks.append(fields)
        status = dict(fields).get(":status")
        self._note("HEADERS s%d%s :status=%s (%d fields)" % (
            sid, " END_STREAM" if flags & END_STREAM else "", status, len(fields)))
        if flags & END_STREAM:
            self._end(st)

    def _end(self, st):
        if st.done_at is None:
            st.done_at = time.monotonic()
            self.ended_order.append(st.sid)
        if st.reset is None:
            st.ended = True

    @property
    def goaway(self):
        return self.goaways[-1] if self.goaways else None

    # --- our frames ---

    def headers_block(self, path, method="GET", headers=(), authority="127.0.0.1"):
        return [(":method", method), (":scheme", self.scheme), (":authority", authority),
                (":path", path)] + list(headers)

    def encode(self, fields, huffman=True):
        return self.enc.encode(fields, huffman=huffman)

    def new_stream(self):
        sid = self.next_sid
        self.next_sid += 2
        self.streams[sid] = Stream(sid, self.peer_initial_window)
        return sid

    def request_bytes(self, path, method="GET", headers=(), end_stream=True, fields=None):
        """(stream id, the HEADERS frames) of a request, not sent yet."""
        sid = self.new_stream()
        fields = fields if fields is not None else self.headers_block(path, method, headers)
        return sid, header_frames(sid, self.encode(fields), end_stream, self.peer_max_frame)

    def request(self, path, method="GET", headers=(), body=None, fields=None):
        """Sends a request (body: bytes sent under the windows, with content-length) and
        returns its stream id."""
        headers = list(headers)
        if body is not None and fields is None and not any(k == "content-length"
                                                           for k, _ in headers):
            headers.append(("content-length", str(len(body))))
        sid, data = self.request_bytes(path, method, headers, end_stream=not body,
                                       fields=fields)
        self.send_raw(data)
        if body:
            self.send_body(sid, body)
        return sid

    def send_body(self, sid, body, end_stream=True, limit=None):
        """Sends DATA within the server's windows (waiting for its WINDOW_UPDATEs); returns
        how many bytes went, which is less if the stream ended or was reset first."""
        st = self.streams[sid]
        view = memoryview(body)
        sent = 0
        limit = limit or PROMPT * 4
        stalled_since = time.monotonic()
        while sent < len(view):
            if st.done or self.closed or self.write_error is not None:
                return sent
            n = min(self.send_window, st.send_window, self.peer_max_frame, len(view) - sent)
            if n <= 0:
                if time.monotonic() - stalled_since > limit:
                    raise AssertionError("s%d: no window to send the body (%d of %d bytes sent; "
                                         "stream window %d, connection window %d) for %.1fs\n%s"
                                         % (sid, sent, len(view), st.send_window,
                                            self.send_window, limit, self.describe()))
                self.pump(0.05)
                continue
            stalled_since = time.monotonic()
            last = sent + n == len(view)
            self.send_raw(frame(DATA, END_STREAM if last and end_stream else 0, sid,
                                view[sent:sent + n]))
            self.send_window -= n
            st.send_window -= n
            sent += n
            self._recv(0)
        if not view and end_stream:
            self.send_raw(frame(DATA, END_STREAM, sid))
        return sent

    def response(self, sid, limit=None):
        st = self.streams[sid]
        self.must(lambda: st.done, limit or PROMPT * 4, "the answer on stream %d" % sid)
        return st

    def get(self, path, headers=(), limit=None):
        return self.response(self.request(path, headers=headers), limit)

    def ping(self, limit=None):
        """A PING and its ACK: the connection is alive and has read everything before it."""
        payload = os.urandom(8)
        self.send_raw(ping_frame(payload))
        return self.wait(lambda: payload in self.ping_acks, limit or PROMPT)

    def assert_alive(self, what=""):
        if not self.ping():
            raise AssertionError("%s: the connection no longer answers PING\n%s" % (
                what, self.describe()))
        if self.goaways:
            raise AssertionError("%s: unexpected GOAWAY\n%s" % (what, self.describe()))


class LibClient(Wire):
    """The h2 library as the client: it validates everything the server sends (windows,
    header fields, stream states) and raises on any violation."""

    def __init__(self, sock, scheme="http", stream_window=None, conn_window=None, ack=True):
        super().__init__(sock)
        self.scheme = scheme
        self.c = h2.connection.H2Connection(config=h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8"))
        if stream_window is not None:
            codes = h2.settings.SettingCodes
            self.c.local_settings = h2.settings.Settings(client=True, initial_values={
                codes.MAX_CONCURRENT_STREAMS: 100, codes.MAX_HEADER_LIST_SIZE: 65536,
                codes.ENABLE_PUSH: 0, codes.INITIAL_WINDOW_SIZE: stream_window})
        self.c.initiate_connection()
        if conn_window:
            self.c.increment_flow_control_window(conn_window - 65535)
        self.ack = ack
        self.streams = {}
        self.bodies = {}
        self.ended_order = []
        self.data_order = []  # the stream id of each DATA frame, in arrival order
        self.window_updates = {}  # stream id (0: the connection) -> [increments]
        self.terminated = None
        self.remote_settings = {}
        self.events = 0
        self.outq += self.c.data_to_send()
        self._flush()

    @classmethod
    def connect(cls, port, tls=None, **kw):
        raw = socket.create_connection(("127.0.0.1", port), timeout=PROMPT * 4)
        try:
            sock = raw
            if tls is not None:
                sock = tls.wrap_socket(raw, server_hostname="localhost")
                if sock.selected_alpn_protocol() != "h2":
                    raise AssertionError("ALPN chose %r" % sock.selected_alpn_protocol())
                kw.setdefault("scheme", "https")
            return cls(sock, **kw)
        except BaseException:
            raw.close()
            raise

    def describe(self):
        return "h2 client: %d events; streams %s; GOAWAY %s; connection %s" % (
            self.events, sorted(self.streams.values(), key=lambda s: s.sid)[:20],
            self.terminated, "closed" if self.closed else "open")

    def _feed(self, data):
        try:
            events = self.c.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            raise AssertionError("h2 rejected the server's frames: %r\n%s" % (e, self.describe()))
        for ev in events:
            self.events += 1
            if isinstance(ev, h2.events.ResponseReceived):
                self.streams[ev.stream_id].blocks.append(list(ev.headers))
            elif isinstance(ev, h2.events.TrailersReceived):
                self.streams[ev.stream_id].blocks.append(list(ev.headers))
            elif isinstance(ev, h2.events.DataReceived):
                st = self.streams[ev.stream_id]
                st.data += ev.data
                st.data_frames.append(ev.flow_controlled_length)
                self.data_order.append(ev.stream_id)
                if self.ack and ev.flow_controlled_length:
                    self.c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                st = self.streams[ev.stream_id]
                st.ended = True
                st.done_at = time.monotonic()
                self.ended_order.append(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                st = self.streams.get(ev.stream_id)
                if st is not None:
                    st.reset = ev.error_code
                    st.done_at = time.monotonic()
                    self.ended_order.append(ev.stream_id)
                self.bodies.pop(ev.stream_id, None)
            elif isinstance(ev, h2.events.WindowUpdated):
                self.window_updates.setdefault(ev.stream_id, []).append(ev.delta)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                self.terminated = (ev.error_code, ev.last_stream_id)
            elif isinstance(ev, h2.events.RemoteSettingsChanged):
                for k, v in ev.changed_settings.items():
                    self.remote_settings[int(k)] = v.new_value
        self._send_bodies()
        self.outq += self.c.data_to_send()

    def _send_bodies(self):
        for sid in list(self.bodies):
            view = self.bodies[sid]
            st = self.streams[sid]
            if st.done:
                del self.bodies[sid]
                continue
            while len(view):
                n = min(self.c.local_flow_control_window(sid), self.c.max_outbound_frame_size,
                        len(view))
                if n <= 0:
                    break
                self.c.send_data(sid, view[:n].tobytes())
                view = view[n:]
            if len(view):
                self.bodies[sid] = view
            else:
                self.c.end_stream(sid)
                del self.bodies[sid]

    def request(self, path, method="GET", body=None, headers=()):
        sid = self.c.get_next_available_stream_id()
        fields = [(":method", method), (":scheme", self.scheme), (":authority", "127.0.0.1"),
                  (":path", path)] + list(headers)
        if body is not None:
            fields.append(("content-length", str(len(body))))
        self.c.send_headers(sid, fields, end_stream=body is None)
        self.streams[sid] = Stream(sid)
        if body is not None:
            self.bodies[sid] = memoryview(body)
            self._send_bodies()
        self.outq += self.c.data_to_send()
        self._flush()
        return sid

    def run(self, sids, limit):
        """Until every stream in `sids` has ended or been reset."""
        self.must(lambda: all(self.streams[s].done for s in sids), limit,
                  "%d streams to finish" % len(sids))


def tls_context(alpn=("h2",)):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(CERTS["ca"])
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


# --- HTTP/1.1 ------------------------------------------------------------------------------


def read_http1(sock, limit=None):
    """(status, {lower name: value}, body, head bytes, bytes read past the response): a response
    framed by Content-Length (or read to EOF)."""
    sock.settimeout(limit or PROMPT * 4)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1 << 16)
        if not chunk:
            raise AssertionError("the connection closed before a response head: %r" % data[:300])
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    fields = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        fields[k.strip().lower()] = v.strip()
    if status == 101:
        return status, fields, b"", head, rest
    if "content-length" in fields:
        n = int(fields["content-length"])
        while len(rest) < n:
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            rest += chunk
        return status, fields, rest[:n], head, rest[n:]
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            break
        rest += chunk
    return status, fields, rest, head, b""


def http1_get(port, target, extra=b"", sock=None):
    """One HTTP/1.1 request with Connection: close: (status, fields, body)."""
    own = sock is None
    s = sock or socket.create_connection(("127.0.0.1", port), timeout=PROMPT * 4)
    try:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n%s\r\n" % (
            target.encode(), extra))
        status, fields, body, _, _ = read_http1(s)
        return status, fields, body
    finally:
        if own:
            s.close()


def curl(url, *args, limit=None):
    """curl -sS with its bodies to files; returns (["version code", ...] per transfer, the
    header dump, [bodies])."""
    limit = limit or PROMPT * 6
    with tempfile.TemporaryDirectory(prefix="greenhttp-h2-curl-") as d:
        urls = [url] if isinstance(url, str) else list(url)
        outs = []
        for i in range(len(urls)):
            outs += ["-o", os.path.join(d, "body%d" % i)]
        head = os.path.join(d, "head")
        argv = ["curl", "-sS", "--max-time", str(int(limit)), "-D", head,
                "-w", "%{http_version} %{response_code} %{num_connects}\\n"] + outs + \
            list(args) + urls
        r = subprocess.run(argv, capture_output=True, timeout=limit + 10)
        if r.returncode != 0:
            raise AssertionError("%s: exit %d: %s" % (" ".join(argv), r.returncode,
                                                      r.stderr.decode(errors="replace")))
        bodies = []
        for i in range(len(urls)):
            with open(os.path.join(d, "body%d" % i), "rb") as f:
                bodies.append(f.read())
        with open(head, "rb") as f:
            dump = f.read().decode("latin-1")
    return r.stdout.decode().split(), dump, bodies


# --- the server ------------------------------------------------------------------------------


CERTS = {}


def make_certs(directory):
    subprocess.run(["sh", MAKE_CERT, directory], check=True, timeout=60,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    CERTS.update(ca=os.path.join(directory, "ca.pem"),
                 cert=os.path.join(directory, "server.pem"),
                 key=os.path.join(directory, "server.key"))


class Server(ServerProcess):
    """build/greenhttp in a child process, on 127.0.0.1 with its port(s) known."""

    def __init__(self, args, run_dir, tls=False, plain=True):
        super().__init__(BINARY, run_dir, args, plain=plain, tls=tls, tls_args=[
            "--listen-tls", "127.0.0.1:0", "--tls-cert", CERTS.get("cert"),
            "--tls-key", CERTS.get("key")] if tls else ())

    def connection_ports(self):
        """The client ports of the connections the server holds open (not the listeners)."""
        return {remote for state, local, remote in self.tcp_sockets() if state != "0A"}

    def metrics(self):
        status, _, body = http1_get(self.port, "/metrics")
        if status != 200:
            raise AssertionError("/metrics answered %d" % status)
        return Metrics(body.decode())

    def metric(self, name, **labels):
        return self.metrics().sum(name, **labels)

    def green_threads(self):
        return int(self.metric("greenrt_green_threads"))

    def settled(self):
        """Waits until no HTTP/2 connection is open (the last test's are gone); returns the
        green-thread count then, a baseline."""
        if not wait_until(lambda: self.metric("greenhttp_http2_connections") == 0
                          and self.metric("greenhttp_http2_streams") == 0, PROMPT * 2):
            raise AssertionError("HTTP/2 connections still open: %s" % self.metrics().find(
                "greenhttp_http2_connections"))
        return self.green_threads()


def setUpModule():
    global CERT_DIR
    CERT_DIR = tempfile.mkdtemp(prefix="greenhttp-h2-certs-")
    make_certs(CERT_DIR)


def tearDownModule():
    shutil.rmtree(CERT_DIR, ignore_errors=True)


class ServerCase(unittest.TestCase):
    """One server per class over a tree that the class builds in make_tree()."""

    server_args = []
    tls = False
    server = None
    files = {}

    @classmethod
    def make_tree(cls, www):
        pass

    @classmethod
    def args(cls):
        return ["--static-dir", cls.www] + cls.server_args

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="greenhttp-h2-")
        cls.www = os.path.join(cls.tmp, "www")
        os.mkdir(cls.www)
        cls.run_dir = os.path.join(cls.tmp, "run")
        os.mkdir(cls.run_dir)
        try:
            cls.files = {}
            cls.make_tree(cls.www)
            cls.server = Server(cls.args(), cls.run_dir, tls=cls.tls)
        except BaseException:
            shutil.rmtree(cls.tmp, ignore_errors=True)
            raise

    @classmethod
    def tearDownClass(cls):
        report = None
        alive = True
        if cls.server is not None:
            alive = cls.server.alive()
            cls.server.kill()
            report = cls.server.sanitizer_report()
        shutil.rmtree(cls.tmp, ignore_errors=True)
        if report:
            raise AssertionError("the server's stderr has a sanitizer report:\n%s" % report)
        if not alive:
            raise AssertionError("the server died during the tests (exit %s)" %
                                 cls.server.proc.returncode)

    @classmethod
    def add_file(cls, name, data):
        with open(os.path.join(cls.www, name), "wb") as f:
            f.write(data)
        cls.files[name] = data

    @property
    def port(self):
        return self.server.port

    def h2(self, **kw):
        return H2.connect(self.port, **kw)

    def h2s(self, **kw):
        return H2.connect(self.server.tls_port, tls=tls_context(), **kw)

    def assertStatus(self, st, status, what=""):
        self.assertEqual(st.status, status, "%s: %r" % (what, st))

    def assertReset(self, st, code, what="", conn=None):
        self.assertEqual(st.reset, code, "%s: %r, want RST_STREAM %s\n%s" % (
            what, st, error_name(code), conn.describe() if conn else ""))

    def assertGoaway(self, c, code, what=""):
        self.assertTrue(c.goaways, "%s: no GOAWAY\n%s" % (what, c.describe()))
        self.assertEqual(c.goaway[1], code, "%s: GOAWAY %s, want %s\n%s" % (
            what, error_name(c.goaway[1]), error_name(code), c.describe()))

    def served(self, what="another client"):
        """A new HTTP/2 client and an HTTP/1.1 one are both answered promptly."""
        started = time.monotonic()
        with self.h2() as c:
            st = c.get("/plaintext", limit=PROMPT)
            self.assertStatus(st, 200, what)
            self.assertEqual(bytes(st.data), b"Hello, World!")
        status, _, body = http1_get(self.port, "/plaintext")
        self.assertEqual((status, body), (200, b"Hello, World!"), what)
        self.assertLess(time.monotonic() - started, PROMPT * 2, what + ": slow")

    def back_to(self, baseline, what):
        """Green threads back to `baseline` (and no HTTP/2 connection or stream open)."""
        ok = wait_until(lambda: self.server.green_threads() <= baseline
                        and self.server.metric("greenhttp_http2_streams") == 0, PROMPT * 3)
        self.assertTrue(ok, "%s: green threads %d, baseline %d; %s" % (
            what, self.server.green_threads(), baseline,
            [l for l in self.server.metrics().text.splitlines() if "http2_stream" in l]))

    def delta(self, before, name, **labels):
        return self.server.metrics().sum(name, **labels) - before.sum(name, **labels)


def random_bytes(seed, n):
    return random.Random(seed).randbytes(n)


RFC1123 = re.compile(r"^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|"
                     r"Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$")
FORBIDDEN = ("connection", "transfer-encoding", "keep-alive", "proxy-connection", "upgrade")


# --- the main server: defaults, plain and TLS ------------------------------------------------


class Main(ServerCase):
    tls = True
    server_args = ["--max-body", "3MiB"]

    @classmethod
    def make_tree(cls, www):
        cls.add_file("small.txt", b"hello h2\n")
        cls.add_file("k1.bin", random_bytes(1, 1000))
        for i in range(6):
            cls.add_file("big%d.bin" % i, random_bytes(100 + i, MIB))

    # --- negotiation ---

    def test_curl_https_alpn_h2(self):
        out, dump, bodies = curl("https://127.0.0.1:%d/plaintext" % self.server.tls_port,
                                 "--http2", "--cacert", CERTS["ca"])
        self.assertEqual(out[:2], ["2", "200"], dump)
        self.assertEqual(bodies[0], b"Hello, World!")
        lines = dump.strip().split("\r\n")
        self.assertEqual(lines[0].strip(), "HTTP/2 200", dump)
        fields = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            fields.setdefault(k.strip().lower(), []).append(v.strip())
        self.assertEqual(fields.get("server"), ["greenhttp"], dump)
        self.assertEqual(fields.get("content-length"), ["13"], dump)
        self.assertEqual(fields.get("content-type"), ["text/plain"], dump)
        self.assertRegex(fields.get("date", [""])[0], RFC1123)
        for name in FORBIDDEN:
            self.assertNotIn(name, fields, dump)
        out, _, bodies = curl("https://127.0.0.1:%d/static/big0.bin" % self.server.tls_port,
                              "--http2", "--cacert", CERTS["ca"])
        self.assertEqual(out[:2], ["2", "200"])
        self.assertEqual(sha(bodies[0]), sha(self.files["big0.bin"]))

    def test_curl_prior_knowledge(self):
        # One URL per curl: curl 7.88.1 fails its own second request on a reused prior-knowledge
        # connection ("Error in the HTTP2 framing layer" before it sends it, against any h2c
        # server); the reuse is checked over TLS and Upgrade below.
        base = "http://127.0.0.1:%d" % self.port
        for target, want in (("/json", b'{"message":"Hello, World!"}'),
                             ("/static/big1.bin", self.files["big1.bin"])):
            out, dump, bodies = curl(base + target, "--http2-prior-knowledge")
            self.assertEqual(out, ["2", "200", "1"], dump)
            self.assertEqual(sha(bodies[0]), sha(want), target)

    def test_curl_reuses_one_connection(self):
        """Three URLs in one curl, over TLS (ALPN h2) and over an Upgrade: all HTTP/2, and one
        connection for the three ("version status connects" per transfer)."""
        for base, args in (("https://127.0.0.1:%d" % self.server.tls_port,
                            ["--http2", "--cacert", CERTS["ca"]]),
                           ("http://127.0.0.1:%d" % self.port, ["--http2"])):
            out, dump, bodies = curl([base + "/json", base + "/static/big1.bin",
                                      base + "/plaintext"], *args)
            self.assertEqual(out, ["2", "200", "1", "2", "200", "0", "2", "200", "0"], dump)
            self.assertEqual(bodies[0], b'{"message":"Hello, World!"}')
            self.assertEqual(sha(bodies[1]), sha(self.files["big1.bin"]))
            self.assertEqual(bodies[2], b"Hello, World!")

    def test_curl_upgrade_h2c(self):
        out, dump, bodies = curl("http://127.0.0.1:%d/json" % self.port, "--http2")
        self.assertEqual(out[:2], ["2", "200"], dump)
        self.assertIn("HTTP/1.1 101 Switching Protocols", dump)
        self.assertIn("HTTP/2 200", dump)
        self.assertEqual(bodies[0], b'{"message":"Hello, World!"}')

    def test_http11_still_served_on_both_ports(self):
        out, _, bodies = curl("http://127.0.0.1:%d/plaintext" % self.port, "--http1.1")
        self.assertEqual(out[:2], ["1.1", "200"])
        self.assertEqual(bodies[0], b"Hello, World!")
        out, _, bodies = curl("https://127.0.0.1:%d/plaintext" % self.server.tls_port,
                              "--http1.1", "--cacert", CERTS["ca"])
        self.assertEqual(out[:2], ["1.1", "200"])
        self.assertEqual(bodies[0], b"Hello, World!")
        for alpn in (["http/1.1"], None):
            raw = socket.create_connection(("127.0.0.1", self.server.tls_port),
                                           timeout=PROMPT * 4)
            with tls_context(alpn).wrap_socket(raw, server_hostname="localhost") as s:
                self.assertEqual(s.selected_alpn_protocol(), alpn[0] if alpn else None)
                status, fields, body = http1_get(None, "/plaintext", sock=s)
                self.assertEqual((status, body), (200, b"Hello, World!"), alpn)

    def test_alpn_prefers_h2(self):
        for offer in (["h2", "http/1.1"], ["http/1.1", "h2"], ["h2"]):
            raw = socket.create_connection(("127.0.0.1", self.server.tls_port),
                                           timeout=PROMPT * 4)
            with tls_context(offer).wrap_socket(raw, server_hostname="localhost") as s:
                self.assertEqual(s.selected_alpn_protocol(), "h2", "offered %s" % offer)
                with H2(s, scheme="https") as c:
                    self.assertStatus(c.get("/plaintext"), 200, "offered %s" % offer)

    def test_upgrade_applies_http2_settings(self):
        """Upgrade: h2c with HTTP2-Settings INITIAL_WINDOW_SIZE=100: 101, then the answer on
        stream 1 within that window (100 bytes of the 1000 until a WINDOW_UPDATE), then more
        streams on the same connection."""
        payload = struct.pack(">HIHI", S_INITIAL_WINDOW_SIZE, 100, S_ENABLE_PUSH, 0)
        token = base64.urlsafe_b64encode(payload).rstrip(b"=")
        s = socket.create_connection(("127.0.0.1", self.port), timeout=PROMPT * 4)
        s.sendall(b"GET /static/k1.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                  b"HTTP2-Settings: " + token + b"\r\n\r\n")
        status, fields, _, head, rest = read_http1(s)
        self.assertEqual(status, 101, head)
        self.assertEqual(fields.get("upgrade", "").lower(), "h2c", head)
        self.assertIn("upgrade", fields.get("connection", "").lower(), head)
        with H2(s, initial=rest, upgraded=True, auto_window=False,
                settings={S_INITIAL_WINDOW_SIZE: 100}) as c:
            self.assertEqual(c.first_frame, SETTINGS, "the server preface is a SETTINGS frame")
            st = c.streams[1]
            c.must(lambda: len(st.data) >= 100, PROMPT, "100 bytes on stream 1")
            self.assertTrue(c.ping(), "PING")  # whatever the server sent before the ACK is in
            self.assertEqual(len(st.data), 100, "more than the 100-byte window: %r\n%s" % (
                st, c.describe()))
            self.assertFalse(st.done)
            self.assertEqual(st.status, 200)
            self.assertEqual(st.h("content-length"), "1000")
            c.send_raw(window_update(1, 1000))
            c.response(1)
            self.assertTrue(st.ended, st)
            self.assertEqual(bytes(st.data), self.files["k1.bin"])
            c.send_raw(window_update(0, 1000))
            c.send_raw(settings_frame({S_INITIAL_WINDOW_SIZE: 65535}))
            st3 = c.get("/plaintext")
            self.assertEqual(st3.sid, 3)
            self.assertStatus(st3, 200)
            self.assertEqual(bytes(st3.data), b"Hello, World!")

    def test_upgrade_with_a_body_is_answered_in_http11(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=PROMPT * 4)
        with s:
            s.sendall(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                      b"HTTP2-Settings: AAMAAABkAAQAAP__\r\nContent-Type: text/x-mine\r\n"
                      b"Content-Length: 5\r\n\r\nhello")
            status, fields, body, head, _ = read_http1(s)
            self.assertTrue(head.startswith(b"HTTP/1.1 200"), head)
            self.assertEqual(body, b"hello")
            self.assertEqual(fields.get("content-type"), "text/x-mine")

    def test_nghttp_prior_knowledge_and_tls(self):
        r = subprocess.run(["nghttp", "-nv", "-t", "%ds" % int(PROMPT * 4),
                            "http://127.0.0.1:%d/plaintext" % self.port],
                           capture_output=True, timeout=PROMPT * 4 + 10)
        out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
        self.assertEqual(r.returncode, 0, out)
        for want in ("recv SETTINGS frame", "[SETTINGS_MAX_CONCURRENT_STREAMS(0x03):100]",
                     "[SETTINGS_INITIAL_WINDOW_SIZE(0x04):262144]",
                     "(window_size_increment=%d)" % (MIB - 65535)):
            self.assertIn(want, out)
        self.assertRegex(out, r"recv \(stream_id=\d+\) :status: 200")
        self.assertRegex(out, r"recv \(stream_id=\d+\) server: greenhttp")
        self.assertRegex(out, r"recv DATA frame <length=13, flags=0x01")
        r = subprocess.run(["nghttp", "-nvy", "-t", "%ds" % int(PROMPT * 4),
                            "https://127.0.0.1:%d/json" % self.server.tls_port],
                           capture_output=True, timeout=PROMPT * 4 + 10)
        out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
        self.assertEqual(r.returncode, 0, out)
        self.assertRegex(out, r"recv \(stream_id=\d+\) :status: 200")
        self.assertRegex(out, r"recv DATA frame <length=27, flags=0x01")

    def test_nghttp_upgrade(self):
        r = subprocess.run(["nghttp", "-nvu", "-t", "%ds" % int(PROMPT * 4),
                            "http://127.0.0.1:%d/plaintext" % self.port],
                           capture_output=True, timeout=PROMPT * 4 + 10)
        out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
        self.assertEqual(r.returncode, 0, out)
        self.assertIn("HTTP Upgrade success", out)
        self.assertIn("recv (stream_id=1) :status: 200", out)

    # --- what the server sends ---

    def test_server_settings_and_connection_window(self):
        with self.h2() as c:
            self.assertEqual(c.first_frame, SETTINGS, "the server preface is a SETTINGS frame")
            s = c.server_settings
            self.assertEqual(s.get(S_MAX_CONCURRENT_STREAMS), 100, s)
            self.assertEqual(s.get(S_INITIAL_WINDOW_SIZE), 262144, s)
            self.assertEqual(s.get(S_MAX_HEADER_LIST_SIZE), 16384 + 8192, s)
            self.assertEqual(s.get(S_HEADER_TABLE_SIZE, 4096), 4096, s)
            self.assertEqual(s.get(S_ENABLE_PUSH, 0), 0, s)
            c.must(lambda: c.conn_window_updates and c.settings_acks, PROMPT,
                   "WINDOW_UPDATE on stream 0 and the ACK of our SETTINGS")
            self.assertEqual(c.conn_window_updates, [MIB - 65535])
            self.assertEqual(c.send_window, MIB)

    def test_response_headers(self):
        with self.h2() as c:
            st = c.get("/plaintext")
            self.assertStatus(st, 200)
            self.assertEqual(bytes(st.data), b"Hello, World!")
            self.assertEqual(st.h("server"), "greenhttp")
            self.assertEqual(st.h("content-type"), "text/plain")
            self.assertEqual(st.h("content-length"), "13")
            self.assertRegex(st.h("date") or "", RFC1123)
            names = [k for k, _ in st.headers]
            self.assertEqual(names[0], ":status", "pseudo-header first")
            for name in names:
                self.assertEqual(name, name.lower(), "an upper-case field name")
                self.assertNotIn(name, FORBIDDEN, "a connection-specific field: %s" % names)
            st = c.get("/json")
            self.assertEqual((st.status, bytes(st.data)), (200, b'{"message":"Hello, World!"}'))
            self.assertEqual(st.h("content-type"), "application/json")
            st = c.get("/no/such/thing")
            self.assertStatus(st, 404)
            st = c.response(c.request("/plaintext", method="POST", body=b"x"))
            self.assertStatus(st, 405)
            self.assertIn("GET", st.h("allow") or "")
            self.assertFalse(c.push_promises)

    def test_static_head_range_conditional(self):
        with self.h2() as c:
            sid = c.request("/static/big2.bin", method="HEAD")
            st = c.response(sid)
            self.assertStatus(st, 200)
            self.assertEqual(st.h("content-length"), str(MIB))
            self.assertEqual(st.data_frames, [], "DATA on a HEAD")
            st = c.get("/static/big2.bin", headers=[("range", "bytes=100-199")])
            self.assertStatus(st, 206)
            self.assertEqual(st.h("content-range"), "bytes 100-199/%d" % MIB)
            self.assertEqual(bytes(st.data), self.files["big2.bin"][100:200])
            etag = c.get("/static/small.txt").h("etag")
            self.assertTrue(etag)
            st = c.get("/static/small.txt", headers=[("if-none-match", etag)])
            self.assertStatus(st, 304)
            self.assertEqual(bytes(st.data), b"")

    # --- multiplexing and flow control (the h2 library checks every frame) ---

    def test_many_streams_multiplexed(self):
        c = LibClient.connect(self.port)
        with c:
            slow = c.request("/sleep?ms=400")
            want = {}
            bigs = []
            for i in range(4):
                sid = c.request("/static/big%d.bin" % i)
                want[sid] = self.files["big%d.bin" % i]
                bigs.append(sid)
            quick = []
            for i in range(20):
                sid = c.request("/plaintext")
                want[sid] = b"Hello, World!"
                quick.append(sid)
                sid = c.request("/json")
                want[sid] = b'{"message":"Hello, World!"}'
                quick.append(sid)
                sid = c.request("/static/small.txt")
                want[sid] = b"hello h2\n"
                quick.append(sid)
            echoes = {}
            for i in range(10):
                body = random_bytes(1000 + i, 10000 + i)
                sid = c.request("/echo", method="POST", body=body,
                                headers=[("content-type", "application/x-test-%d" % i)])
                want[sid] = body
                echoes[sid] = "application/x-test-%d" % i
            want[slow] = b"slept 400 ms\n"
            c.run(list(want), PROMPT * 6)
            problems = []
            for sid, body in want.items():
                st = c.streams[sid]
                if st.status != 200 or bytes(st.data) != body or not st.ended:
                    problems.append("%r: body %s, want %d bytes %s" % (
                        st, sha(bytes(st.data)), len(body), sha(body)))
                elif st.h("content-length") not in (None, str(len(body))):
                    problems.append("%r: content-length %s" % (st, st.h("content-length")))
            self.assertFalse(problems, "\n".join(problems))
            for sid, ctype in echoes.items():
                self.assertEqual(c.streams[sid].h("content-type"), ctype)
            # No head-of-line blocking: the quick answers did not wait for the sleeping one.
            at = c.ended_order.index(slow)
            self.assertFalse([s for s in quick if c.ended_order.index(s) > at],
                             "quick answers finished after /sleep: order %s" % c.ended_order)
            # The four downloads share the connection: their DATA frames interleave.
            first_end = min(c.ended_order.index(s) for s in bigs)
            ended_sid = c.ended_order[first_end]
            cut = max(i for i, s in enumerate(c.data_order) if s == ended_sid)
            seen = {s for s in c.data_order[:cut] if s in bigs}
            self.assertGreaterEqual(len(seen), 2, "downloads sent one after the other")

    def test_large_downloads_small_windows(self):
        """Six 1 MiB files at once through 16 KiB stream windows and a 64 KiB connection window:
        every byte exact, no frame past a window (h2 raises FlowControlError if one is)."""
        c = LibClient.connect(self.port, stream_window=16384)
        with c:
            sids = {c.request("/static/big%d.bin" % i): "big%d.bin" % i for i in range(6)}
            c.run(list(sids), PROMPT * 8)
            for sid, name in sids.items():
                st = c.streams[sid]
                self.assertStatus(st, 200, name)
                self.assertTrue(st.ended, st)
                self.assertEqual(sha(bytes(st.data)), sha(self.files[name]), name)
                self.assertLessEqual(max(st.data_frames), 16384, name)

    def test_post_echo_1mib_flow_control(self):
        """A 1 MiB body through the server's 256 KiB stream window: the server opens it as the
        handler reads (WINDOW_UPDATEs on the stream), and echoes every byte."""
        body = random_bytes(7, MIB)
        c = LibClient.connect(self.port)
        with c:
            sid = c.request("/echo", method="POST", body=body,
                            headers=[("content-type", "application/octet-stream")])
            c.run([sid], PROMPT * 6)
            st = c.streams[sid]
            self.assertStatus(st, 200)
            self.assertEqual(sha(bytes(st.data)), sha(body))
            got = sum(c.window_updates.get(sid, []))
            self.assertGreaterEqual(got, MIB - 262144,
                                    "stream WINDOW_UPDATEs %s" % c.window_updates.get(sid))

    def test_upload_window_opens_as_the_handler_reads(self):
        """Exactly the stream window (256 KiB) of a 1 MiB upload, then nothing: the server must
        give window back as /upload reads it (and no more than it read), without any more bytes
        from us; then the rest goes and /upload's count and hash are right."""
        body = random_bytes(8, MIB)
        with self.h2() as c:
            window = c.server_settings[S_INITIAL_WINDOW_SIZE]
            sid, hdrs = c.request_bytes("/upload", method="POST", end_stream=False,
                                        headers=[("content-length", str(len(body)))])
            c.must(lambda: c.send_window >= window, PROMPT, "the connection window")
            c.send_raw(hdrs)
            st = c.streams[sid]
            for at in range(0, window, 16384):  # the window's worth, whatever comes back
                c.send_raw(frame(DATA, 0, sid, body[at:at + 16384]))
            st.send_window -= window
            c.send_window -= window
            c.must(lambda: sum(st.window_updates) >= window // 2, PROMPT,
                   "WINDOW_UPDATEs for at least half the window while we send nothing more")
            self.assertTrue(c.ping())
            self.assertLessEqual(sum(st.window_updates), window,
                                 "the stream window opened past what the handler read")
            c.send_body(sid, body[window:])
            c.response(sid, PROMPT * 4)
            self.assertStatus(st, 200)
            self.assertEqual(bytes(st.data).decode(),
                             "bytes=%d fnv1a=%016x\n" % (len(body), fnv1a(body)))

    def test_max_body_413_and_the_connection_window_survives(self):
        """Bodies past --max-body (3 MiB) get 413, declared or not; the connection window the
        refused bytes took is given back (a 1 MiB echo still goes through afterwards)."""
        with self.h2() as c:
            big = random_bytes(9, 4 * MIB)
            sid = c.request("/echo", method="POST", body=big)
            st = c.response(sid)
            self.assertStatus(st, 413, "declared 4 MiB")
            sid, hdrs = c.request_bytes("/echo", method="POST", end_stream=False)
            c.send_raw(hdrs)
            c.send_body(sid, big)
            st = c.response(sid)
            self.assertStatus(st, 413, "4 MiB without content-length")
            body = random_bytes(10, MIB)
            st = c.response(c.request("/echo", method="POST", body=body), PROMPT * 4)
            self.assertStatus(st, 200, "an upload after the refused ones")
            self.assertEqual(sha(bytes(st.data)), sha(body))

    def test_tls_h2_multiplexed(self):
        c = LibClient.connect(self.server.tls_port, tls=tls_context())
        body = random_bytes(11, MIB)
        with c:
            downloads = {c.request("/static/big%d.bin" % i): "big%d.bin" % i for i in (3, 4)}
            up = c.request("/echo", method="POST", body=body)
            plain = c.request("/plaintext")
            c.run(list(downloads) + [up, plain], PROMPT * 6)
            for sid, name in downloads.items():
                self.assertEqual(sha(bytes(c.streams[sid].data)), sha(self.files[name]), name)
            self.assertEqual(sha(bytes(c.streams[up].data)), sha(body))
            self.assertEqual(bytes(c.streams[plain].data), b"Hello, World!")

    # --- limits ---

    def sleepers(self, c, n, ms):
        """(stream ids, frames) of n requests for /sleep?ms=ms."""
        sids, batch = [], []
        for _ in range(n):
            sid, data = c.request_bytes("/sleep?ms=%d" % ms)
            sids.append(sid)
            batch.append(data)
        return sids, b"".join(batch)

    def test_streams_past_the_limit_before_our_settings_ack(self):
        """101 streams written with the preface, before the client has even read (so ACKed) the
        server's SETTINGS: nghttp2 refuses the 101st alone, RST_STREAM(REFUSED_STREAM); the
        connection lives and the 100 finish."""
        before = self.server.metrics()
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=PROMPT * 4)
        with H2(raw, preface=False) as c:
            sids, batch = self.sleepers(c, 100, 500)
            extra, data = c.request_bytes("/plaintext")
            c.send_raw(PREFACE + settings_frame({}) + batch + data)
            st = c.response(extra, PROMPT)
            self.assertReset(st, REFUSED_STREAM, "the 101st stream", c)
            self.assertEqual(st.blocks, [])
            c.assert_alive("after the refusal")
            c.must(lambda: all(c.streams[s].done for s in sids), PROMPT * 4,
                   "the 100 sleeping streams")
            bad = [c.streams[s] for s in sids if c.streams[s].status != 200
                   or bytes(c.streams[s].data) != b"slept 500 ms\n"]
            self.assertFalse(bad, bad[:5])
            self.assertStatus(c.get("/plaintext"), 200, "after the 100")
        self.assertEqual(self.delta(before, "greenhttp_http2_resets_total", cause="refused"), 1)

    def test_streams_past_the_limit_after_our_settings_ack(self):
        """The client has ACKed MAX_CONCURRENT_STREAMS=100 and opens 101: nghttp2 makes that a
        connection error, GOAWAY(PROTOCOL_ERROR) naming the last stream it took, and the close
        (RFC 9113 5.1.2 would allow a stream error; nghttp2 chooses the connection). The 100
        handlers it had started are cancelled: green threads back to the baseline."""
        before = self.server.metrics()
        baseline = self.server.settled()
        with self.h2() as c:
            c.must(lambda: c.settings_acks, PROMPT, "the server's ACK")
            sids, batch = self.sleepers(c, 100, 30000)
            extra, data = c.request_bytes("/plaintext")
            c.send_raw(batch + data)
            c.must(lambda: c.goaways, PROMPT, "GOAWAY for the 101st stream")
            self.assertGoaway(c, PROTOCOL_ERROR, "the 101st stream")
            self.assertEqual(c.goaway[0], sids[-1], "GOAWAY's last stream id")
            c.wait_closed(PROMPT)
            self.assertEqual(c.streams[extra].blocks, [])
        self.served()
        self.back_to(baseline, "after the over-limit client")
        self.assertEqual(self.delta(before, "greenhttp_http2_goaways_total", cause="protocol"), 1)

    def test_header_limits_431_414(self):
        with self.h2() as c:
            cases = [
                ("one 30 KB field", [("x-big", "a" * 30000)], 431),
                ("60 fields of 500 bytes", [("x-f%d" % i, "b" * 500) for i in range(60)], 431),
                ("150 fields", [("x-n%d" % i, "v") for i in range(150)], 431),
                ("a 15 KB field", [("x-big", "a" * 15000)], 200),
                ("90 fields", [("x-n%d" % i, "v") for i in range(90)], 200),
            ]
            for what, headers, want in cases:
                st = c.get("/plaintext", headers=headers)
                self.assertStatus(st, want, what)
            st = c.get("/plaintext?" + "q" * 9000)
            self.assertStatus(st, 414, ":path of 9 KB")
            st = c.get("/plaintext?" + "q" * 8000)
            self.assertStatus(st, 200, ":path of 8000 bytes")
            c.assert_alive("after the refused requests")

    def test_malformed_requests_rst_protocol_error(self):
        """RFC 9113 8.2 and 8.3 (nghttp2's messaging checks): each malformed request gets
        RST_STREAM(PROTOCOL_ERROR), no answer, and the connection serves on."""
        before = self.server.metrics()
        base = [(":method", "GET"), (":scheme", "http"), (":authority", "127.0.0.1"),
                (":path", "/plaintext")]
        without = lambda name: [f for f in base if f[0] != name]  # noqa: E731
        cases = [
            ("no :method", without(":method"), True, None),
            ("no :path", without(":path"), True, None),
            ("no :scheme", without(":scheme"), True, None),
            ("empty :path", without(":path") + [(":path", "")], True, None),
            ("two :path", base + [(":path", "/json")], True, None),
            ("unknown pseudo-header", base + [(":foo", "bar")], True, None),
            ("pseudo-header after a field", base[:3] + [("x-a", "b"), base[3]], True, None),
            ("upper-case name", base + [("X-Upper", "v")], True, None),
            ("connection", base + [("connection", "keep-alive")], True, None),
            ("transfer-encoding", base + [("transfer-encoding", "chunked")], True, None),
            ("keep-alive", base + [("keep-alive", "timeout=5")], True, None),
            ("upgrade", base + [("upgrade", "h2c")], True, None),
            ("te: gzip", base + [("te", "gzip")], True, None),
            ("content-length 10, no body", base + [("content-length", "10")], True, None),
            ("content-length 10, 5 bytes",
             [(":method", "POST"), (":scheme", "http"), (":authority", "127.0.0.1"),
              (":path", "/echo"), ("content-length", "10")], False, b"12345"),
        ]
        with self.h2() as c:
            problems = []
            for what, fields, end_stream, body in cases:
                sid = c.new_stream()
                c.send_raw(header_frames(sid, c.encode(fields), end_stream))
                if body is not None:
                    c.send_raw(frame(DATA, END_STREAM, sid, body))
                st = c.response(sid, PROMPT)
                if st.reset != PROTOCOL_ERROR or st.blocks:
                    problems.append("%s: %r" % (what, st))
            self.assertFalse(problems, "\n".join(problems) + "\n" + c.describe())
            st = c.get("/plaintext", headers=[("te", "trailers")])
            self.assertStatus(st, 200, "te: trailers is allowed")
            c.assert_alive("after the malformed requests")
        self.assertEqual(self.delta(before, "greenhttp_http2_resets_total", cause="protocol"),
                         len(cases))

    def test_even_stream_id_is_a_connection_error(self):
        before = self.server.metrics()
        with self.h2() as c:
            c.send_raw(header_frames(2, c.encode(c.headers_block("/plaintext")), True))
            c.must(lambda: c.goaways, PROMPT, "GOAWAY for a client stream with an even id")
            self.assertGoaway(c, PROTOCOL_ERROR)
            c.wait_closed(PROMPT)
        self.served()
        self.assertEqual(self.delta(before, "greenhttp_http2_goaways_total", cause="protocol"), 1,
                         "goaways_total{cause=protocol}")

    def test_continuation_frames_accepted(self):
        with self.h2() as c:
            sid = c.new_stream()
            block = c.encode(c.headers_block("/json", headers=[("x-a", "1" * 300),
                                                               ("x-b", "2" * 300)]))
            third = len(block) // 3
            c.send_raw(frame(HEADERS, END_STREAM, sid, block[:third])
                       + frame(CONTINUATION, 0, sid, block[third:2 * third])
                       + frame(CONTINUATION, END_HEADERS, sid, block[2 * third:]))
            st = c.response(sid)
            self.assertEqual((st.status, bytes(st.data)), (200, b'{"message":"Hello, World!"}'))

    def test_continuation_flood(self):
        """HEADERS without END_HEADERS, then 1000 CONTINUATION frames (CVE-2024-27316 class):
        GOAWAY and close well before they are all read."""
        before = self.server.metrics()
        baseline = self.server.settled()
        with self.h2() as c:
            sid = c.new_stream()
            flood = [frame(HEADERS, END_STREAM, sid, c.encode(c.headers_block("/plaintext")))]
            piece = c.encode([("x-c", "v")], huffman=False)
            flood += [frame(CONTINUATION, 0, sid, piece)] * 1000
            c.send_raw(b"".join(flood))
            c.must(lambda: c.goaways, PROMPT * 2, "GOAWAY for a CONTINUATION flood")
            self.assertNotEqual(c.goaway[1], NO_ERROR, c.describe())
            c.wait_closed(PROMPT)
            self.assertEqual(c.streams[sid].blocks, [])
        self.served()
        self.back_to(baseline, "after the CONTINUATION flood")
        self.assertGreaterEqual(self.delta(before, "greenhttp_http2_goaways_total"), 1,
                                "goaways_total")

    def test_huge_header_block_ends_the_connection(self):
        """A 100 KB header block in HEADERS + 6 CONTINUATION frames (fewer than nghttp2's 8, but
        past twice the advertised header list size): GOAWAY and close."""
        with self.h2() as c:
            sid = c.new_stream()
            fields = c.headers_block("/plaintext") + [("x-h%d" % i, "v" * 4000)
                                                      for i in range(25)]
            block = c.encode(fields, huffman=False)
            self.assertGreater(len(block), 100000)
            self.assertLessEqual(len(block), 7 * 16384)
            c.send_raw(header_frames(sid, block, True))
            c.must(lambda: c.goaways, PROMPT * 2, "GOAWAY for a 100 KB header block")
            c.wait_closed(PROMPT)
            self.assertEqual(c.streams[sid].blocks, [], "the request was answered")
        self.served()

    def flood(self, build, cause, what, settings=None):
        """Sends build(client) in one go: GOAWAY(ENHANCE_YOUR_CALM), the close, the cause's
        counter, and other clients served; green threads back to where they were."""
        before = self.server.metrics()
        baseline = self.server.settled()
        with self.h2(settings=settings) as c:
            c.send_raw(build(c))
            c.must(lambda: c.goaways, PROMPT * 2, what + ": GOAWAY")
            self.assertGoaway(c, ENHANCE_YOUR_CALM, what)
            c.wait_closed(PROMPT, what + ": the close after GOAWAY")
        self.served(what)
        self.back_to(baseline, what)
        self.assertEqual(self.delta(before, "greenhttp_http2_goaways_total", cause=cause), 1,
                         what + ": goaways_total{cause=%s}" % cause)

    def test_rapid_reset(self):
        """CVE-2023-44487: 1000 HEADERS + RST_STREAM pairs on /sleep?ms=5000."""
        def build(c):
            out = []
            for _ in range(1000):
                sid, data = c.request_bytes("/sleep?ms=5000")
                out.append(data + rst_stream(sid, CANCEL))
            return b"".join(out)
        self.flood(build, "rapid_reset", "rapid reset")

    def test_settings_flood(self):
        self.flood(lambda c: settings_frame({S_ENABLE_PUSH: 0}) * 1000, "control_flood",
                   "SETTINGS flood")

    def test_ping_flood(self):
        self.flood(lambda c: b"".join(ping_frame(struct.pack(">Q", i)) for i in range(1000)),
                   "control_flood", "PING flood")

    def test_priority_flood(self):
        self.flood(lambda c: b"".join(priority_frame(2 * i + 1) for i in range(1000)),
                   "control_flood", "PRIORITY flood")

    def test_empty_data_flood(self):
        def build(c):
            sid, hdrs = c.request_bytes("/upload", method="POST", end_stream=False)
            return hdrs + frame(DATA, 0, sid) * 1000
        self.flood(build, "control_flood", "empty DATA flood")

    # --- observability ---

    def test_metrics_names_and_counts(self):
        self.server.settled()
        before = self.server.metrics()
        names = ["greenhttp_http2_connections_total", "greenhttp_http2_connections",
                 "greenhttp_http2_streams_total", "greenhttp_http2_streams",
                 "greenhttp_http2_flow_control_stalls_total"]
        missing = [n for n in names if not before.has(n)]
        missing += ["greenhttp_http2_resets_total{cause=%s}" % c
                    for c in ("client", "refused", "flow_control_timeout", "handler", "protocol")
                    if not before.has("greenhttp_http2_resets_total", cause=c)]
        missing += ["greenhttp_http2_goaways_total{cause=%s}" % c
                    for c in ("rapid_reset", "control_flood", "protocol", "idle", "drain",
                              "header_timeout")
                    if not before.has("greenhttp_http2_goaways_total", cause=c)]
        self.assertFalse(missing, "missing from /metrics")
        with self.h2() as c:
            for _ in range(3):
                self.assertStatus(c.get("/plaintext"), 200)
            sid = c.request("/sleep?ms=10000")
            self.assertTrue(wait_until(
                lambda: self.server.metric("greenhttp_http2_streams") == 1, PROMPT),
                "the open stream is not counted")
            self.assertEqual(self.delta(before, "greenhttp_http2_connections"), 1)
            c.send_raw(rst_stream(sid, CANCEL))
            self.assertTrue(wait_until(
                lambda: self.server.metric("greenhttp_http2_streams") == 0, PROMPT),
                "the reset stream is still counted")
            c.assert_alive("after one reset")
        self.assertTrue(wait_until(
            lambda: self.server.metric("greenhttp_http2_connections") == 0, PROMPT))
        self.assertEqual(self.delta(before, "greenhttp_http2_connections_total"), 1)
        self.assertEqual(self.delta(before, "greenhttp_http2_streams_total"), 4)
        self.assertEqual(self.delta(before, "greenhttp_http2_resets_total", cause="client"), 1)
        self.assertEqual(self.delta(before, "greenhttp_http2_goaways_total"), 0)

    def test_greenthreads_dump_shows_streams(self):
        with self.h2() as c:
            sids = [c.request("/sleep?ms=10000") for _ in range(3)]
            text = [""]

            def listed():
                _, _, body = http1_get(self.port, "/debug/greenthreads")
                text[0] = body.decode(errors="replace")
                return all(re.search(r"\n\tlabel: h2 stream %d\n" % sid, text[0])
                           for sid in sids)

            self.assertTrue(wait_until(listed, PROMPT),
                            "no '\\tlabel: h2 stream N' lines for %s in:\n%s" % (
                                sids, text[0][-3000:]))
            for sid in sids:
                c.send_raw(rst_stream(sid, CANCEL))
            self.assertTrue(wait_until(lambda: not re.search(
                r"label: h2 stream",
                http1_get(self.port, "/debug/greenthreads")[2].decode(errors="replace")),
                PROMPT), "the reset streams' green threads are still listed")

    def test_client_disconnect_frees_everything(self):
        """Clients that vanish mid-stream (handlers parked in /sleep, downloads held by a zero
        window, an upload half sent), by RST and by FIN: every green thread, stream and
        descriptor is released."""
        for i in range(4):  # the open-file cache holds these descriptors from now on
            self.assertEqual(http1_get(self.port, "/static/big%d.bin" % i)[0], 200)
        baseline = self.server.settled()
        fds = self.server.fds()
        for reset in (True, False):
            with self.h2(settings={S_INITIAL_WINDOW_SIZE: 0}) as c:
                for _ in range(30):
                    c.request("/sleep?ms=30000")
                for i in range(4):
                    c.request("/static/big%d.bin" % i)
                up, hdrs = c.request_bytes("/upload", method="POST", end_stream=False,
                                           headers=[("content-length", str(2 * MIB))])
                c.send_raw(hdrs)
                c.send_body(up, random_bytes(12, 100000), end_stream=False)
                self.assertTrue(wait_until(
                    lambda: self.server.green_threads() >= baseline + 35, PROMPT * 2),
                    "35 handlers running: green threads %d, baseline %d" % (
                        self.server.green_threads(), baseline))
                c.close(reset=reset)
            self.back_to(baseline, "after a client %s" % ("reset" if reset else "closed"))
            self.assertTrue(wait_until(lambda: self.server.fds() <= fds, PROMPT),
                            "descriptors %d, baseline %d" % (self.server.fds(), fds))
        self.served()


# --- non-default --http2-* flags -------------------------------------------------------------


class Rates(ServerCase):
    server_args = ["--http2-max-concurrent-streams", "5", "--http2-stream-window", "65535",
                   "--http2-header-table-size", "8192", "--http2-reset-rate", "10",
                   "--http2-control-rate", "10"]

    def test_settings_values(self):
        with self.h2() as c:
            s = c.server_settings
            self.assertEqual(s.get(S_MAX_CONCURRENT_STREAMS), 5, s)
            self.assertEqual(s.get(S_INITIAL_WINDOW_SIZE, 65535), 65535, s)
            self.assertEqual(s.get(S_HEADER_TABLE_SIZE), 8192, s)
            c.must(lambda: c.conn_window_updates, PROMPT, "the connection WINDOW_UPDATE")
            self.assertEqual(c.conn_window_updates, [MIB - 65535], "max(1 MiB, stream window)")

    def test_sixth_running_handler_refused(self):
        """Five streams reset by the client whose handlers still run (/spawn?n=100000 does not
        watch its context: it runs its tens of milliseconds to the end), then a sixth stream in
        the same write: RST_STREAM(REFUSED_STREAM), counted as refused; once the five handlers
        end, streams are served again."""
        before = self.server.metrics()
        self.server.settled()
        with self.h2() as c:
            baseline = self.server.green_threads()  # with this connection's own
            batch = []
            for _ in range(5):
                # 100,000 green threads: tens of milliseconds; a tenth of that under the
                # sanitizers, where each spawn costs ten times as much.
                sid, data = c.request_bytes("/spawn?n=%d" % (10000 if SLOW else 100000))
                batch.append(data + rst_stream(sid, CANCEL))
            sixth, data = c.request_bytes("/plaintext")
            c.send_raw(b"".join(batch) + data)
            self.assertReset(c.response(sixth, PROMPT), REFUSED_STREAM, "the 6th stream", c)
            c.assert_alive("after the refusal")
            # (Under TSan a 100,000-green-thread /spawn takes seconds.)
            self.assertTrue(wait_until(lambda: self.server.green_threads() <= baseline,
                                       PROMPT * (20 if SLOW else 2)),
                            "the five handlers never ended")
            self.assertStatus(c.get("/plaintext"), 200, "after the five handlers ended")
        self.assertEqual(self.delta(before, "greenhttp_http2_resets_total", cause="refused"), 1)

    def test_streams_past_the_limit_before_our_settings_ack(self):
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=PROMPT * 4)
        with H2(raw, preface=False) as c:
            sids, batch = [], []
            for _ in range(5):
                sid, data = c.request_bytes("/sleep?ms=300")
                sids.append(sid)
                batch.append(data)
            sixth, data = c.request_bytes("/plaintext")
            c.send_raw(PREFACE + settings_frame({}) + b"".join(batch) + data)
            self.assertReset(c.response(sixth, PROMPT), REFUSED_STREAM, "the 6th stream", c)
            c.must(lambda: all(c.streams[s].done for s in sids), PROMPT * 3, "the 5 sleepers")
            self.assertEqual([c.streams[s].status for s in sids], [200] * 5)
            self.assertStatus(c.get("/plaintext"), 200, "after the 5")

    def test_reset_bucket(self):
        """--http2-reset-rate 10: a bucket of 20. 12 resets in a burst are fine; 40 more are
        not."""
        def pairs(c, n):
            out = []
            for _ in range(n):
                sid, data = c.request_bytes("/plaintext")
                out.append(data + rst_stream(sid, CANCEL))
            return b"".join(out)

        with self.h2() as c:
            c.send_raw(pairs(c, 12))
            c.assert_alive("12 resets (under the bucket of 20)")
            c.send_raw(pairs(c, 40))
            c.must(lambda: c.goaways, PROMPT, "GOAWAY after 52 resets")
            self.assertGoaway(c, ENHANCE_YOUR_CALM, "rapid reset")
            c.wait_closed(PROMPT)

    def test_control_bucket(self):
        with self.h2() as c:
            c.send_raw(b"".join(ping_frame(struct.pack(">Q", i)) for i in range(12)))
            c.assert_alive("12 PINGs (under the bucket of 20)")
            c.send_raw(b"".join(ping_frame(struct.pack(">Q", 100 + i)) for i in range(40)))
            c.must(lambda: c.goaways, PROMPT, "GOAWAY after 52 PINGs")
            self.assertGoaway(c, ENHANCE_YOUR_CALM, "PING flood")
            c.wait_closed(PROMPT)


# --- timeouts --------------------------------------------------------------------------------


class HeaderTimeout(ServerCase):
    server_args = ["--read-header-timeout", "1s"]

    def test_unfinished_header_block(self):
        before = self.server.metrics()
        with self.h2() as c:
            sid = c.new_stream()
            block = c.encode(c.headers_block("/plaintext"))
            c.send_raw(frame(HEADERS, END_STREAM, sid, block))  # no END_HEADERS, ever
            started = time.monotonic()
            c.must(lambda: c.goaways, 1 + PROMPT * 2, "GOAWAY for a header block left open")
            took = time.monotonic() - started
            self.assertGreater(took, EARLIEST, "GOAWAY before --read-header-timeout")
            c.wait_closed(PROMPT)
            self.assertEqual(c.streams[sid].blocks, [])
        self.served()
        self.assertEqual(self.delta(before, "greenhttp_http2_goaways_total",
                                    cause="header_timeout"), 1, "goaways_total{header_timeout}")

    def test_stalled_body_408(self):
        with self.h2() as c:
            sid, hdrs = c.request_bytes("/echo", method="POST", end_stream=False,
                                        headers=[("content-length", "1000")])
            c.send_raw(hdrs + frame(DATA, 0, sid, b"x" * 100))
            started = time.monotonic()
            st = c.response(sid, 1 + PROMPT * 2)
            self.assertGreater(time.monotonic() - started, EARLIEST)
            self.assertStatus(st, 408, "a body that stopped coming")


class Idle(ServerCase):
    server_args = ["--idle-timeout", "1s"]

    def idle_goaway(self, c, last_stream_id):
        started = time.monotonic()
        c.must(lambda: c.goaways, 1 + PROMPT * 2, "GOAWAY on an idle connection")
        self.assertGreater(time.monotonic() - started, EARLIEST, "GOAWAY before --idle-timeout")
        self.assertEqual(c.goaway[:2], (last_stream_id, NO_ERROR), c.describe())
        c.wait_closed(PROMPT, "the close after the idle GOAWAY")

    def test_idle_connection_gets_goaway(self):
        before = self.server.metrics()
        with self.h2() as c:
            self.assertStatus(c.get("/plaintext"), 200)
            self.idle_goaway(c, 1)
        self.assertEqual(self.delta(before, "greenhttp_http2_goaways_total", cause="idle"), 1)

    def test_preface_only(self):
        with self.h2() as c:
            self.idle_goaway(c, 0)

    def test_open_stream_is_not_idle(self):
        with self.h2() as c:
            st = c.get("/sleep?ms=2000", limit=2 + PROMPT * 2)
            self.assertStatus(st, 200)
            self.assertEqual(c.goaways, [], "GOAWAY while a stream was open\n" + c.describe())
            self.idle_goaway(c, 1)


class WriteTimeout(ServerCase):
    server_args = ["--write-timeout", "1s"]

    @classmethod
    def make_tree(cls, www):
        with open(os.path.join(www, "big.bin"), "wb") as f:
            f.truncate(32 * MIB)  # sparse: zeros
        cls.add_file("small.txt", b"small\n")

    def stall_counters(self):
        m = self.server.metrics()
        return (m.sum("greenhttp_http2_flow_control_stalls_total"),
                m.sum("greenhttp_http2_resets_total", cause="flow_control_timeout"))

    def test_zero_window_stream_reset(self):
        baseline = self.server.settled()
        stalls, resets = self.stall_counters()
        with self.h2(settings={S_INITIAL_WINDOW_SIZE: 0}) as c:
            sid = c.request("/static/big.bin")
            started = time.monotonic()
            self.served("a client while another is stalled")
            st = c.response(sid, 1 + PROMPT * 3)
            took = time.monotonic() - started
            self.assertReset(st, CANCEL, "a stream whose window stayed 0", c)
            self.assertGreater(took, EARLIEST, "reset before --write-timeout")
            self.assertEqual(len(st.data), 0)
            # The connection lives: open the windows and it serves.
            c.send_raw(settings_frame({S_INITIAL_WINDOW_SIZE: 65535}))
            st = c.get("/static/small.txt")
            self.assertEqual((st.status, bytes(st.data)), (200, b"small\n"))
        new_stalls, new_resets = self.stall_counters()
        self.assertGreaterEqual(new_stalls - stalls, 1, "flow_control_stalls_total")
        self.assertEqual(new_resets - resets, 1, "resets_total{cause=flow_control_timeout}")
        self.back_to(baseline, "after the stalled stream")

    def test_window_never_given_back(self):
        """The default 64 KiB windows, never updated: exactly 65535 bytes, then RST_STREAM
        (CANCEL); given back, the connection window serves another request."""
        with self.h2(auto_window=False) as c:
            sid = c.request("/static/big.bin")
            st = c.response(sid, 1 + PROMPT * 3)
            self.assertReset(st, CANCEL, "a stream whose window was used up", c)
            self.assertEqual(len(st.data), 65535)
            c.send_raw(window_update(0, 65535))
            st = c.get("/static/small.txt")
            self.assertEqual((st.status, bytes(st.data)), (200, b"small\n"))

    def test_file_that_shrinks_mid_send_resets_the_stream(self):
        """A file cut short while its stream waits for the client's window: once the window
        opens, the server finds the end early and resets the stream (INTERNAL_ERROR) instead of
        ending it as if complete; the connection goes on."""
        path = os.path.join(self.www, "shrinks.bin")
        with open(path, "wb") as f:
            f.truncate(4 * MIB)
        before = self.server.metrics()
        with self.h2(auto_window=False) as c:
            sid = c.request("/static/shrinks.bin")
            c.must(lambda: len(c.streams[sid].data) >= 65535, PROMPT * 2, "the first window")
            os.truncate(path, 100000)  # the server holds it open: it reads the same inode
            c.send_raw(window_update(0, 8 * MIB) + window_update(sid, 8 * MIB))
            st = c.response(sid, PROMPT * 3)
            self.assertReset(st, INTERNAL_ERROR, "a file that shrank", c)
            self.assertLess(len(st.data), 4 * MIB)
            c.send_raw(window_update(0, 65535))
            st = c.get("/static/small.txt")
            self.assertEqual((st.status, bytes(st.data)), (200, b"small\n"))
        self.assertEqual(self.delta(before, "greenhttp_http2_resets_total", cause="handler"), 1)
        os.unlink(path)

    def test_many_stalled_streams_stay_bounded(self):
        baseline = self.server.settled()
        rss = self.server.rss_kib()
        with self.h2(settings={S_INITIAL_WINDOW_SIZE: 0}) as c:
            sids = [c.request("/static/big.bin") for _ in range(50)]
            c.must(lambda: all(c.streams[s].done for s in sids), 1 + PROMPT * 4,
                   "50 stalled streams reset")
            self.assertEqual({c.streams[s].reset for s in sids}, {CANCEL})
            growth = self.server.rss_kib() - rss
            self.assertLess(growth, RSS_GROWTH_LIMIT_KIB, "RSS grew %d KiB" % growth)
            c.assert_alive("after 50 resets")
        self.back_to(baseline, "after 50 stalled streams")

    def test_socket_that_takes_nothing_is_closed(self):
        """Windows wide open, but the client never reads: once the socket has taken nothing for
        --write-timeout the server closes the connection and frees it."""
        baseline = self.server.settled()
        fds = self.server.fds()
        c = self.h2(rcvbuf=4096, settings={S_INITIAL_WINDOW_SIZE: MAX_WINDOW})
        with c:
            c.send_raw(window_update(0, MAX_WINDOW - 65535))
            client_port = c.sock.getsockname()[1]
            c.send_raw(c.request_bytes("/static/big.bin")[1])

            def queued():
                with open("/proc/net/tcp") as f:
                    for line in f.readlines()[1:]:
                        p = line.split()
                        if p[1].endswith(":%04X" % self.port) and \
                                p[2].endswith(":%04X" % client_port):
                            return int(p[4].split(":")[0], 16) > 0
                return False

            self.assertTrue(wait_until(queued, PROMPT * 2), "the server never queued bytes")
            stalled = time.monotonic()
            self.assertTrue(wait_until(lambda: client_port not in self.server.connection_ports(),
                                       1 + PROMPT * 3),
                            "the connection is still open %.1fs after the socket filled" % (
                                time.monotonic() - stalled))
            self.assertGreater(time.monotonic() - stalled, EARLIEST)
        self.assertTrue(wait_until(lambda: self.server.fds() <= fds, PROMPT))
        self.back_to(baseline, "after the unread connection")


class HandlerTimeout(ServerCase):
    server_args = ["--handler-timeout", "1s"]

    def test_503_when_nothing_was_sent(self):
        with self.h2() as c:
            started = time.monotonic()
            st = c.get("/sleep?ms=5000", limit=1 + PROMPT * 2)
            self.assertGreater(time.monotonic() - started, EARLIEST)
            self.assertStatus(st, 503)
            self.assertTrue(st.ended)
            self.assertStatus(c.get("/plaintext"), 200, "the connection after the 503")

    def test_reset_when_cut_mid_response(self):
        with self.h2() as c:
            started = time.monotonic()
            st = c.get("/events?n=50&ms=100", limit=1 + PROMPT * 2)
            self.assertGreater(time.monotonic() - started, EARLIEST)
            self.assertStatus(st, 200)
            self.assertIn(b"id: 1\n", bytes(st.data))
            self.assertIsNotNone(st.reset, "a response cut by the handler deadline ended "
                                 "cleanly: %r\n%s" % (st, c.describe()))
            self.assertFalse(st.ended)
            c.assert_alive("after the reset stream")


# --- drain -----------------------------------------------------------------------------------


class Drain(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="greenhttp-h2-drain-")
        self.server = Server([], self.tmp)

    def tearDown(self):
        self.server.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_sigterm_finishes_open_streams(self):
        ms = int((PROMPT + 1) * 1000)
        busy = H2.connect(self.server.port)
        idle = H2.connect(self.server.port)
        with busy, idle:
            self.assertEqual(busy.get("/plaintext").status, 200)
            sid = busy.request("/sleep?ms=%d" % ms)
            self.assertTrue(wait_until(lambda: re.search(
                r"h2 stream %d\b" % sid, http1_get(self.server.port, "/debug/greenthreads")[2]
                .decode(errors="replace")), PROMPT), "the handler of stream %d never ran" % sid)
            self.server.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            busy.must(lambda: any(g[0] < MAX_WINDOW for g in busy.goaways), PROMPT,
                      "GOAWAY with the last stream id after SIGTERM")
            last, code, _ = [g for g in busy.goaways if g[0] < MAX_WINDOW][0]
            self.assertEqual(code, NO_ERROR)
            self.assertGreaterEqual(last, sid)
            # The idle connection: GOAWAY and closed at once.
            idle.must(lambda: idle.goaways, PROMPT, "GOAWAY on the idle connection")
            self.assertEqual(idle.goaway[1], NO_ERROR)
            idle.wait_closed(PROMPT, "the idle connection's close")
            self.assertLess(time.monotonic() - signalled, ms / 1000.0)
            # A stream past the last id is ignored; the open one finishes.
            late, data = busy.request_bytes("/plaintext")
            busy.send_raw(data)
            st = busy.response(sid, ms / 1000.0 + PROMPT * 2)
            self.assertEqual(st.status, 200, "the stream open at SIGTERM: %r" % st)
            self.assertEqual(bytes(st.data), b"slept %d ms\n" % ms)
            self.assertTrue(st.ended)
            busy.wait_closed(PROMPT, "the close after the last stream")
            self.assertEqual(busy.streams[late].blocks, [], "a stream past GOAWAY was answered")
        try:
            rc = self.server.proc.wait(timeout=PROMPT * 2)
        except subprocess.TimeoutExpired:
            rc = "still running"
        self.assertEqual(rc, 0, self.server.stderr()[-1000:])


# --- found by a hostile-client run -----------------------------------------------------------

# The server gives an idle HTTP/2 connection's memory back once it has read nothing for 500 ms
# (kShrinkAfter, server/http2.cpp). A test about that stays silent this long: a deliberate
# pause, the one thing here that must be real idle time rather than a wait for an event.
IDLE_PAUSE = 1.0


class FoundByAttack(ServerCase):
    """Bugs a hostile-client run found at the default flags: each test is the attack's
    reproducer; its docstring says, in brackets, what the server did before the fix."""

    def test_header_block_paused_mid_value(self):
        """A 20 KB header value split between HEADERS and CONTINUATION, with 1 s of silence
        between the two (past the 500 ms after which the server gives an idle connection's
        memory back): a half-decoded value is live state, not idle memory; 200. (The pages of
        nghttp2's value buffer were given back, zeros: RST_STREAM(PROTOCOL_ERROR).)"""
        with self.h2() as c:
            sid = c.new_stream()
            block = c.encode(c.headers_block("/plaintext", headers=[("x-big", "A" * 20000)]),
                             huffman=False)
            cut = len(block) - 10000  # in the middle of the value; both halves fit a frame
            c.send_raw(frame(HEADERS, END_STREAM, sid, block[:cut]))
            time.sleep(IDLE_PAUSE)  # deliberate: the connection idle past the 500 ms
            c.send_raw(frame(CONTINUATION, END_HEADERS, sid, block[cut:]))
            st = c.response(sid, PROMPT)
            self.assertEqual((st.status, bytes(st.data)), (200, b"Hello, World!"),
                             "%r\n%s" % (st, c.describe()))
            c.assert_alive("after the paused header block")

    def test_unread_bodies_of_404s_give_the_window_back(self):
        """110 POSTs with 10 KiB bodies, one after the other, to a path that answers 404
        without reading them (1.1 MiB in all, past the 1 MiB connection window; the h2 library
        keeps to the windows), then a 256 KiB POST /echo on the same connection: echoed. (A
        body no handler read never went back to the connection window: after 102 such POSTs
        the window was gone, and the echo waited for ever.)"""
        c = LibClient.connect(self.port)
        with c:
            for i in range(110):
                sid = c.request("/no/such/path", method="POST", body=b"x" * 10240)
                c.run([sid], PROMPT)
                self.assertStatus(c.streams[sid], 404, "POST %d" % i)
            body = random_bytes(13, 256 * 1024)
            sid = c.request("/echo", method="POST", body=body)
            c.run([sid], PROMPT * 2)
            st = c.streams[sid]
            self.assertStatus(st, 200, "the echo after 110 unread bodies")
            self.assertEqual(sha(bytes(st.data)), sha(body))

    def test_unread_bodies_of_ended_and_reset_streams_give_the_window_back(self):
        """Eight streams one after the other to /sleep (it never reads a body), each sent
        192 KiB within the windows (1.5 MiB in all, past the 1 MiB connection window): ended
        by the client (END_STREAM) and answered, or reset by the client while the handler
        sleeps. Each stream's unread bytes go back to the connection window as it ends, and an
        upload goes through afterwards. (They never did: the sixth body found no window.)"""
        before = self.server.metrics()
        baseline = self.server.settled()
        body = random_bytes(14, 192 * 1024)
        ms = 500 if SLOW else 100  # the whole body is in before the handler answers
        for reset in (False, True):
            what = "streams reset by the client" if reset else "streams answered"
            with self.h2() as c:
                for i in range(8):
                    sid, hdrs = c.request_bytes("/sleep?ms=%d" % (30000 if reset else ms),
                                                end_stream=False)
                    c.send_raw(hdrs)
                    sent = c.send_body(sid, body, end_stream=not reset, limit=PROMPT)
                    self.assertEqual(sent, len(body), "%s: stream %d took %d of %d bytes "
                                     "(connection window %d)\n%s" % (
                                         what, i + 1, sent, len(body), c.send_window,
                                         c.describe()))
                    if reset:
                        c.send_raw(rst_stream(sid, CANCEL))
                    else:
                        st = c.response(sid, PROMPT)
                        self.assertEqual((st.status, bytes(st.data)),
                                         (200, b"slept %d ms\n" % ms), "%s: %r" % (what, st))
                echo = random_bytes(15, 100000)
                st = c.response(c.request("/echo", method="POST", body=echo), PROMPT * 2)
                self.assertStatus(st, 200, what + ": an upload after them")
                self.assertEqual(sha(bytes(st.data)), sha(echo), what)
        self.back_to(baseline, "after the unread bodies")
        self.assertEqual(self.delta(before, "greenhttp_http2_resets_total", cause="client"), 8)

    def test_trailer_hpack_bomb(self):
        """Trailers made of one 4 KB literal that joins the HPACK table, then 12,000 one-byte
        references to it: a 16 KB frame that decodes to 50 MB. Trailers count against the
        header list bound as the head does: GOAWAY(ENHANCE_YOUR_CALM), counted as a protocol
        error, and the close, the request unanswered. Ordinary trailers are fine. (Trailers
        were not counted: 1.2 GB decoded from 330 KB sent, 1.7 s of CPU per MB.)"""
        before = self.server.metrics()
        baseline = self.server.settled()
        with self.h2() as c:
            sid, hdrs = c.request_bytes("/upload", method="POST", end_stream=False)
            trailers = c.encode([("x-checksum", "1234")])
            c.send_raw(hdrs + frame(DATA, 0, sid, b"x")
                       + frame(HEADERS, END_STREAM | END_HEADERS, sid, trailers))
            st = c.response(sid)
            self.assertEqual((st.status, bytes(st.data).decode()),
                             (200, "bytes=1 fnv1a=%016x\n" % fnv1a(b"x")), "ordinary trailers")
            sid, hdrs = c.request_bytes("/upload", method="POST", end_stream=False)
            entry = hpack_literal("a", "v" * 4000, indexed=True)  # 4033 bytes: index 62 alone
            bomb = entry + hpack_int(62, 7, 0x80) * (16384 - len(entry))
            c.send_raw(hdrs + frame(DATA, 0, sid, b"x")
                       + frame(HEADERS, END_STREAM | END_HEADERS, sid, bomb))
            c.must(lambda: c.goaways, PROMPT * 2, "GOAWAY for the trailer bomb")
            self.assertGoaway(c, ENHANCE_YOUR_CALM, "trailer bomb")
            c.wait_closed(PROMPT)
            self.assertEqual(c.streams[sid].blocks, [], "the bombed request was answered")
        self.served("after the trailer bomb")
        self.back_to(baseline, "after the trailer bomb")
        self.assertEqual(self.delta(before, "greenhttp_http2_goaways_total", cause="protocol"), 1,
                         "goaways_total{cause=protocol}")

    def test_h2load_at_the_stream_limit_is_never_refused(self):
        """h2load -c 20 -m 100 keeps each connection at exactly MAX_CONCURRENT_STREAMS (100),
        opening a stream as soon as one ends: every request succeeds, none refused. (A handler
        counted as running until after its stream had closed: the stream that replaced it
        could find 100 running and get RST_STREAM(REFUSED_STREAM), an h2load error.)"""
        n = 4000 if SLOW else 20000  # the sanitizer trees: the race, at a fifth of the volume
        before = self.server.metrics()
        argv = ["h2load", "-n", str(n), "-c", "20", "-m", "100",
                "http://127.0.0.1:%d/plaintext" % self.port]
        try:
            r = subprocess.run(argv, capture_output=True, timeout=PROMPT * 20)
        except subprocess.TimeoutExpired:
            self.fail("%s: still running after %.0fs (a stream never ended?)" % (
                " ".join(argv), PROMPT * 20))
        out = r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")
        self.assertEqual(r.returncode, 0, out)
        m = re.search(r"(?m)^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                      r"(\d+) failed, (\d+) errored, (\d+) timeout$", out)
        self.assertIsNotNone(m, out)
        self.assertEqual([int(x) for x in m.groups()], [n, n, n, n, 0, 0, 0], out)
        self.assertRegex(out, r"(?m)^status codes: %d 2xx, 0 3xx, 0 4xx, 0 5xx$" % n)
        self.assertEqual(self.delta(before, "greenhttp_http2_resets_total", cause="refused"), 0,
                         "resets_total{cause=refused}")

    def test_upgrade_with_too_many_settings_answered_in_http11(self):
        """Upgrade: h2c whose HTTP2-Settings holds more settings than nghttp2 takes (32): no
        upgrade, the request answered in HTTP/1.1. 32 still upgrade, stream 1 answered in
        HTTP/2. (101 Switching Protocols, then nghttp2 refused the settings: a close with
        nothing after the 101, no SETTINGS, no GOAWAY, no answer.)"""
        for count in (32, 33, 40):
            token = base64.urlsafe_b64encode(
                struct.pack(">HI", S_MAX_CONCURRENT_STREAMS, 100) * count).rstrip(b"=")
            s = socket.create_connection(("127.0.0.1", self.port), timeout=PROMPT * 4)
            with s:
                s.sendall(b"GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                          b"HTTP2-Settings: " + token + b"\r\n\r\n")
                status, fields, body, head, rest = read_http1(s)
                what = "%d settings" % count
                if count <= 32:
                    self.assertEqual(status, 101, "%s: %r" % (what, head))
                    with H2(s, initial=rest, upgraded=True) as c:
                        st = c.response(1)
                        self.assertEqual((st.status, bytes(st.data)), (200, b"Hello, World!"),
                                         "%s: stream 1 %r\n%s" % (what, st, c.describe()))
                else:
                    self.assertTrue(head.startswith(b"HTTP/1.1 200 "), "%s: %r" % (what, head))
                    self.assertEqual(body, b"Hello, World!", what)
                    self.assertEqual(rest, b"", "%s: bytes after the answer" % what)

    def test_host_differs_from_authority_400(self):
        """RFC 9113 8.3.1: a Host that differs from :authority makes the request malformed:
        400, and no handler runs. The same name in another case, or no Host, is fine. (The
        request was served, and handlers saw Host, not :authority.)"""
        with self.h2() as c:
            for host, want, body in (("b.example", 400,
                                      b"400 Bad Request: Host differs from :authority\n"),
                                     ("A.Example", 200, b"Hello, World!"),
                                     (None, 200, b"Hello, World!")):
                fields = c.headers_block("/plaintext", authority="a.example")
                if host is not None:
                    fields.append(("host", host))
                st = c.response(c.request("/plaintext", fields=fields))
                self.assertEqual((st.status, bytes(st.data)), (want, body),
                                 ":authority a.example, host %r: %r" % (host, st))
                self.assertTrue(st.ended, st)
            c.assert_alive("after the 400")


class FoundByAttackBigTables(ServerCase):
    """The same run with the limits raised: a 64 KiB HPACK table and 1000 streams, where
    nghttp2's tables grow to 16 KiB, the size from which the server gave an idle connection's
    allocations back (the fix: only the session's start-up allocations, never later ones)."""
    server_args = ["--http2-header-table-size", "65536",
                   "--http2-max-concurrent-streams", "1000"]

    def test_hpack_table_of_1200_entries_survives_an_idle_pause(self):
        """1200 entries in the server's HPACK table (3 header blocks of 400 fields, each
        refused 431, too many fields) grow nghttp2's ring of entry pointers to 16 KiB; 1 s of
        silence; then a request that refers to the newest entry and to one 1000 older: 200.
        (The ring's pages were given back as idle memory, zeros: SIGSEGV.)"""
        with self.h2() as c:
            for r in range(3):
                sid = c.new_stream()
                block = hpack_int(65536, 5, 0x20) if r == 0 else b""  # table size update
                block += hpack_request("/plaintext") + b"".join(
                    hpack_literal("x%s%d" % ("abc"[r], i), "", indexed=True) for i in range(400))
                c.send_raw(header_frames(sid, block, True))
                st = c.response(sid, PROMPT)
                self.assertStatus(st, 431, "block %d of 400 indexed fields" % (r + 1))
            time.sleep(IDLE_PAUSE)  # deliberate: the connection idle past the 500 ms
            sid = c.new_stream()
            block = hpack_request("/plaintext") + hpack_int(62, 7, 0x80) + \
                hpack_int(62 + 1000, 7, 0x80)
            c.send_raw(frame(HEADERS, END_HEADERS | END_STREAM, sid, block))
            st = c.response(sid, PROMPT)
            self.assertEqual((st.status, bytes(st.data)), (200, b"Hello, World!"),
                             "%r\n%s" % (st, c.describe()))
            c.assert_alive("after the references to old entries")
        self.served("after the idle HPACK table")

    def test_400_sleeping_streams_survive_an_idle_pause(self):
        """400 streams of /sleep?ms=1000 in one write (past 384 streams nghttp2 1.52's stream
        map has 1024 buckets, 16 KiB; fewer would not test it); the client is silent while the
        handlers sleep, the idle pause being theirs. Every stream is answered. (The map's pages
        were given back 500 ms into the silence: 100 of the 400 answered, the rest never.)"""
        with self.h2() as c:
            sids, batch = [], []
            for _ in range(400):
                sid, data = c.request_bytes("/sleep?ms=1000")
                sids.append(sid)
                batch.append(data)
            c.send_raw(b"".join(batch))
            ok = c.wait(lambda: all(c.streams[s].done for s in sids), 1 + PROMPT * 2)
            bad = [c.streams[s] for s in sids if not c.streams[s].ended
                   or c.streams[s].status != 200 or bytes(c.streams[s].data) != b"slept 1000 ms\n"]
            self.assertTrue(ok and not bad, "%d of 400 streams not answered: %s\n%s" % (
                len(bad), bad[:5], c.describe()))
            c.assert_alive("after the 400 streams")


class FoundByAttackHandlerTimeout(ServerCase):
    """The same run with --handler-timeout 1ms: deadlines that fall as answers finish."""
    server_args = ["--handler-timeout", "1ms"]

    def test_every_stream_ends(self):
        """--handler-timeout 1ms, 40 rounds of 100 streams: /plaintext and /spawn?n=40 in turn
        (/spawn takes about the 1 ms, so many deadlines fall as answers finish). Every stream
        ends: its answer (200), the timeout's 503, or RST_STREAM(INTERNAL_ERROR) (the deadline
        passed after the answer had begun). (A deadline that passed between the handler's
        return and its last write left the stream with neither END_STREAM nor RST_STREAM, one
        stream in thousands: h2load waited for ever.)"""
        rounds = 10 if SLOW else 40
        want = {"/plaintext": b"Hello, World!",
                "/spawn?n=40": b"spawned 40 green threads (sum 780)\n"}
        kinds = {}
        problems = []
        with self.h2() as c:
            for r in range(rounds):
                sids, batch = {}, []
                for i in range(100):
                    path = "/plaintext" if i % 2 else "/spawn?n=40"
                    sid, data = c.request_bytes(path)
                    sids[sid] = path
                    batch.append(data)
                c.send_raw(b"".join(batch))
                if not c.wait(lambda: all(c.streams[s].done for s in sids), PROMPT * 2):
                    hung = [c.streams[s] for s in sids if not c.streams[s].done]
                    self.fail("round %d: %d streams without an end (no END_STREAM, no "
                              "RST_STREAM) after %.1fs: %s\n%s" % (
                                  r + 1, len(hung), PROMPT * 2, hung[:5], c.describe()))
                for sid, path in sids.items():
                    st = c.streams[sid]
                    if st.ended and st.status == 200 and bytes(st.data) == want[path]:
                        kind = "200"
                    elif st.ended and st.status == 503 and bytes(st.data) == b"Timeout\n":
                        kind = "503"
                    elif st.reset == INTERNAL_ERROR:
                        kind = "RST_STREAM(INTERNAL_ERROR)"
                    else:
                        problems.append("%s %r %r" % (path, st, bytes(st.data[:60])))
                        continue
                    kinds[kind] = kinds.get(kind, 0) + 1
            self.assertFalse(problems, "\n".join(problems[:10]))
            c.assert_alive("after %d streams" % (rounds * 100))
        self.assertIn("503", kinds, "no deadline was met: %s" % kinds)
        if not SLOW:  # (under the sanitizers few handlers finish within 1 ms)
            self.assertIn("200", kinds, "no answer within the deadline: %s" % kinds)


# --- switched off ----------------------------------------------------------------------------


def assert_http11_505(test, port):
    """The client preface on a port without h2c: HTTP/1.1's 505 (not a SETTINGS frame)."""
    with socket.create_connection(("127.0.0.1", port), timeout=PROMPT * 4) as s:
        s.sendall(PREFACE + settings_frame({}))
        data = b""
        while len(data) < 12:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
        test.assertTrue(data.startswith(b"HTTP/1.1 505 "),
                        "the preface was answered %r, not HTTP/1.1 505" % data[:60])


class Off(ServerCase):
    tls = True

    def assert_prior_knowledge_refused(self):
        assert_http11_505(self, self.port)

    def assert_upgrade_ignored(self):
        out, dump, bodies = curl("http://127.0.0.1:%d/plaintext" % self.port, "--http2")
        self.assertEqual(out[:2], ["1.1", "200"], dump)
        self.assertNotIn(" 101 ", dump)
        self.assertEqual(bodies[0], b"Hello, World!")


class NoHttp2(Off):
    server_args = ["--http2", "false"]

    def test_alpn_offers_only_http11(self):
        raw = socket.create_connection(("127.0.0.1", self.server.tls_port), timeout=PROMPT * 4)
        with tls_context(["h2", "http/1.1"]).wrap_socket(raw, server_hostname="localhost") as s:
            self.assertEqual(s.selected_alpn_protocol(), "http/1.1")
        out, _, bodies = curl("https://127.0.0.1:%d/plaintext" % self.server.tls_port,
                              "--http2", "--cacert", CERTS["ca"])
        self.assertEqual(out[:2], ["1.1", "200"])

    def test_prior_knowledge_refused(self):
        self.assert_prior_knowledge_refused()

    def test_upgrade_ignored(self):
        self.assert_upgrade_ignored()


class NoH2c(Off):
    server_args = ["--h2c", "false"]

    def test_tls_h2_still_served(self):
        with self.h2s() as c:
            self.assertStatus(c.get("/plaintext"), 200)

    def test_prior_knowledge_refused(self):
        self.assert_prior_knowledge_refused()

    def test_upgrade_ignored(self):
        self.assert_upgrade_ignored()


class TomlConfig(ServerCase):
    tls = True

    @classmethod
    def args(cls):
        path = os.path.join(cls.tmp, "greenhttp.toml")
        with open(path, "w") as f:
            # (http2.enabled, not a top-level `http2 = true` beside the [http2] table: TOML
            # forbids defining the key http2 twice.)
            f.write("[http2]\nenabled = true\nh2c = false\nmax_concurrent_streams = 7\n"
                    "stream_window = 131072\nheader_table_size = 2048\nreset_rate = 50\n"
                    "control_rate = 50\n")
        return ["--config", path]

    def test_table_applies(self):
        with self.h2s() as c:
            s = c.server_settings
            self.assertEqual(s.get(S_MAX_CONCURRENT_STREAMS), 7, s)
            self.assertEqual(s.get(S_INITIAL_WINDOW_SIZE), 131072, s)
            self.assertEqual(s.get(S_HEADER_TABLE_SIZE), 2048, s)
        assert_http11_505(self, self.port)


class Flags(unittest.TestCase):
    FLAGS = ["--http2", "--h2c", "--http2-max-concurrent-streams", "--http2-stream-window",
             "--http2-header-table-size", "--http2-reset-rate", "--http2-control-rate"]

    def test_help_lists_the_flags(self):
        r = subprocess.run([BINARY, "--help"], capture_output=True, timeout=PROMPT * 4)
        text = r.stdout.decode(errors="replace")
        missing = [f for f in self.FLAGS
                   if not re.search(r"(?<![-\w])" + re.escape(f) + r"(?![-\w])", text)]
        self.assertFalse(missing, "not in --help")

    def test_bad_values_exit_2_naming_the_flag(self):
        tmp = tempfile.mkdtemp(prefix="greenhttp-h2-flags-")
        try:
            cases = [("--http2", "perhaps"), ("--h2c", "maybe"),
                     ("--http2-max-concurrent-streams", "many"),
                     ("--http2-max-concurrent-streams", "4294967296"),
                     ("--http2-stream-window", "huge"),
                     ("--http2-stream-window", "2147483648"),  # past RFC 9113's 2^31-1
                     ("--http2-header-table-size", "big"),
                     ("--http2-reset-rate", "fast"), ("--http2-control-rate", "slow")]
            problems = []
            for flag, value in cases:
                argv = [BINARY, "--listen", "127.0.0.1:0", "--port-file",
                        os.path.join(tmp, "port"), "--access-log", "off", flag, value]
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
                elif len(lines) != 1 or flag not in lines[0]:
                    problems.append("%s %r: want one line naming the flag: %r" % (
                        flag, value, err[-300:]))
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
