#!/usr/bin/python3
"""Writes the HTTP/2 seeds of the connection fuzzer's corpus (tests/http/fuzz/corpus/h2-*).

Each seed is what a client sends on one h2c connection: the preface, then frames built with
Debian's python3-h2 (its HPACK encoder and frame layer) or by hand where h2 refuses to build
them (frames on the wrong stream, a header block cut in two). "|~|" between frames is the
harness's read split; a leading "|~|" picks the server with small limits
(tests/http/fuzz/connection_fuzz.cpp).

    /usr/bin/python3 tests/http/fuzz/make_h2_corpus.py tests/http/fuzz/corpus

Output is deterministic: rerunning it rewrites the same bytes.
"""

import os
import struct
import sys

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
SPLIT = b"|~|"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, \
    CONTINUATION = range(10)
END_STREAM, ACK, END_HEADERS, PADDED, PRIO = 0x1, 0x1, 0x4, 0x8, 0x20


def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + \
        struct.pack(">I", stream) + payload


def settings(*pairs):
    return frame(SETTINGS, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


class Client:
    """One connection's HPACK encoder: header blocks must be encoded in the order sent."""

    def __init__(self):
        self.enc = hpack.Encoder()

    def block(self, method, path, extra=()):
        return self.enc.encode([(":method", method), (":scheme", "http"),
                                (":authority", "localhost"), (":path", path)] + list(extra))

    def headers(self, stream, method, path, extra=(), end_stream=True):
        return frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), stream,
                     self.block(method, path, extra))


def start(*pairs):
    return PREFACE + settings(*pairs)


def seeds():
    out = {}
    c = Client()
    out["h2-get"] = start() + c.headers(1, "GET", "/plaintext")

    c = Client()
    out["h2-many-streams"] = start((3, 100)) + b"".join(
        c.headers(2 * i + 1, m, p) for i, (m, p) in enumerate(
            [("GET", "/plaintext"), ("GET", "/json"), ("GET", "/static/a.txt"), ("HEAD", "/"),
             ("GET", "/healthz"), ("GET", "/nope"), ("DELETE", "/json"), ("GET", "/static/")]))

    c = Client()
    body = b"x" * 300
    out["h2-post-echo"] = start() + c.headers(1, "POST", "/echo", [("content-length", "300")],
                                              end_stream=False) + \
        SPLIT + frame(DATA, 0, 1, body[:100]) + SPLIT + frame(DATA, END_STREAM, 1, body[100:])

    c = Client()
    out["h2-post-trailers"] = start() + c.headers(1, "POST", "/echo", end_stream=False) + \
        frame(DATA, 0, 1, b"hello") + \
        frame(HEADERS, END_HEADERS | END_STREAM, 1, c.enc.encode([("x-trailer", "1")]))

    c = Client()
    out["h2-expect-continue"] = start() + c.headers(
        1, "POST", "/upload", [("content-length", "4"), ("expect", "100-continue")],
        end_stream=False) + SPLIT + frame(DATA, END_STREAM, 1, b"abcd")

    c = Client()  # windows shut, then opened a little at a time
    out["h2-zero-window"] = start((4, 0)) + c.headers(1, "GET", "/static/a.txt") + \
        c.headers(3, "GET", "/json") + SPLIT + \
        frame(WINDOW_UPDATE, 0, 1, struct.pack(">I", 5)) + SPLIT + \
        frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 100)) + \
        settings((4, 65535))

    c = Client()
    out["h2-rst-while-answering"] = start() + c.headers(1, "GET", "/json") + \
        frame(RST_STREAM, 0, 1, struct.pack(">I", 8)) + c.headers(3, "GET", "/plaintext") + \
        frame(RST_STREAM, 0, 3, struct.pack(">I", 0))

    c = Client()
    block = c.block("GET", "/plaintext", [("x-long", "v" * 40)])
    out["h2-continuation"] = start() + frame(HEADERS, END_STREAM, 1, block[:7]) + SPLIT + \
        frame(CONTINUATION, 0, 1, block[7:20]) + frame(CONTINUATION, END_HEADERS, 1, block[20:])

    out["h2-control"] = start((1, 8192), (5, 32768), (6, 4096), (2, 0)) + \
        frame(PING, 0, 0, b"12345678") + frame(SETTINGS, ACK, 0) + \
        frame(PRIORITY, 0, 3, struct.pack(">IB", 1, 15)) + \
        frame(WINDOW_UPDATE, 0, 0, struct.pack(">I", 1 << 20)) + \
        frame(0xfa, 0, 0, b"unknown frame types are ignored")

    c = Client()
    out["h2-padded-priority"] = start() + frame(
        HEADERS, END_HEADERS | END_STREAM | PADDED | PRIO, 1,
        b"\x03" + struct.pack(">IB", 0, 200) + c.block("GET", "/json") + b"\x00" * 3) + \
        frame(HEADERS, END_HEADERS, 3, c.block("POST", "/echo")) + \
        frame(DATA, END_STREAM | PADDED, 3, b"\x02ab\x00\x00")

    c = Client()
    out["h2-protocol-errors"] = start() + c.headers(1, "GET", "/plaintext") + \
        frame(DATA, 0, 0, b"on stream zero") + c.headers(2, "GET", "/json")

    c = Client()
    out["h2-goaway"] = start() + c.headers(1, "GET", "/plaintext") + \
        frame(GOAWAY, 0, 0, struct.pack(">II", 0, 0) + b"bye") + c.headers(3, "GET", "/json")

    c = Client()  # the small server: 431 and 414 answers, a body over its 4 KiB limit
    out["h2-small-limits"] = SPLIT + start() + \
        c.headers(1, "GET", "/plaintext", [("x-big", "b" * 300)]) + \
        c.headers(3, "GET", "/" + "t" * 100) + \
        c.headers(5, "POST", "/echo", [("content-length", "5000")], end_stream=False) + \
        frame(DATA, END_STREAM, 5, b"z" * 5000)

    c = Client()  # a malformed request: uppercase name, connection-specific header
    out["h2-malformed"] = start() + c.headers(1, "GET", "/plaintext", [("Upper", "x")]) + \
        c.headers(3, "GET", "/json", [("connection", "close")]) + \
        c.headers(5, "GET", "/plaintext")
    return out


def main():
    target = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "corpus")
    for name, data in sorted(seeds().items()):
        with open(os.path.join(target, name), "wb") as f:
            f.write(data)
        print("%s: %d bytes" % (name, len(data)))


if __name__ == "__main__":
    main()
