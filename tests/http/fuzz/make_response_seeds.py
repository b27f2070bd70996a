#!/usr/bin/env python3
# Writes the seeds of tests/http/fuzz/response_corpus/ for response_fuzz (format: the top of
# tests/http/fuzz/response_fuzz.cpp: byte 0 holds the flags, "|~|" marks a write split). Run from
# the repository root: python3 tests/http/fuzz/make_response_seeds.py tests/http/fuzz/response_corpus
#
# Flags used here: '@' GET, closing; 'A' HEAD; 'B' POST; 'C' GET with Connection: close;
# +4 ('D', 'E', 'F', 'G') kept open; +8 ('H', 'L') pauses at splits; 'P' / '`' / 'p' reads of
# 1 / 7 / 100 bytes ('T', 'X', '\\' combine them with keeping open and pausing).
import os, sys

d = sys.argv[1]
H = "HTTP/1.1 "
seeds = {
    "length": "@" + H + "200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "length-kept-open": "D" + H + "200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
    "chunked-ext-trailers": "L" + H + "200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;name=value\r\nhello|~|\r\n6;x;y=\"q\"\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
    "chunked-byte-reads": "T" + H + "200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n",
    "no-content": "D" + H + "204 No Content\r\n\r\n",
    "no-content-with-length": "D" + H + "204 No Content\r\nContent-Length: 5\r\n\r\nhello",
    "not-modified-with-length": "D" + H + "304 Not Modified\r\nContent-Length: 100\r\nETag: \"x\"\r\n\r\n",
    "head": "E" + H + "200 OK\r\nContent-Length: 1000\r\n\r\n",
    "head-then-body-bytes": "E" + H + "200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "continue-then-200": "H" + H + "100 Continue\r\n\r\n|~|" + H + "200 OK\r\nContent-Length: 2\r\n\r\nhi",
    "early-hints-then-200": "D" + H + "103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" + H + "200 OK\r\nContent-Length: 2\r\n\r\nhi",
    "switching-protocols": "D" + H + "101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
    "until-close": "@" + H + "200 OK\r\n\r\nbody until the close",
    "until-close-kept-open": "D" + H + "200 OK\r\n\r\nthe client waits for a close that never comes",
    "length-and-chunked": "@" + H + "200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "two-lengths": "@" + H + "200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
    "huge-length": "@" + H + "200 OK\r\nContent-Length: 18446744073709551616\r\n\r\nx",
    "bad-chunk-size": "@" + H + "200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
    "obs-fold": "@" + H + "200 OK\r\nX-A: a\r\n  folded\r\nContent-Length: 2\r\n\r\nhi",
    "bare-lf": "@HTTP/1.1 200 OK\nContent-Length: 2\n\nhi",
    "huge-header": "@" + H + "200 OK\r\nX-Big: " + "a" * 2000 + "\r\n\r\n",
    "many-headers": "@" + H + "200 OK\r\n" + "".join("X-%d: %d\r\n" % (i, i) for i in range(12)) + "Content-Length: 0\r\n\r\n",
    "body-too-large": "@" + H + "200 OK\r\nContent-Length: 9000\r\n\r\n" + "b" * 9000,
    "short-body": "@" + H + "200 OK\r\nContent-Length: 10\r\n\r\nhello",
    "two-responses": "D" + H + "200 OK\r\nContent-Length: 2\r\n\r\nhi" + H + "200 OK\r\nContent-Length: 2\r\n\r\nho",
    "two-responses-paused": "L" + H + "200 OK\r\nContent-Length: 2\r\n\r\nhi|~|" + H + "200 OK\r\nContent-Length: 2\r\n\r\nho",
    "split-everywhere": "XH|~|TTP/1.1 2|~|00 OK\r|~|\nContent-Le|~|ngth: 3\r\n\r|~|\nab|~|c",
    "post-created": "F" + H + "201 Created\r\nLocation: /x\r\nContent-Length: 0\r\n\r\n",
    "request-said-close": "G" + H + "200 OK\r\nContent-Length: 2\r\n\r\nhi",
    "response-said-close": "D" + H + "200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi",
    "http10-keep-alive": "DHTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi",
    "http10": "DHTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi",
    "status-missing": "D" + H + "\r\nContent-Length: 2\r\n\r\nhi",
    "status-one-digit": "@" + H + "2 OK\r\nContent-Length: 2\r\n\r\nhi",
    "status-600": "@" + H + "600 Beyond\r\nContent-Length: 2\r\n\r\nhi",
    "http10-keep-alive-and-close": "DHTTP/1.0 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 2\r\n\r\nhi",
    "empty-header-name": "@" + H + "200 OK\r\nA: b\r\n: 2\r\nContent-Length: 2\r\n\r\nhi",
    "trailer-long": "D" + H + "200 OK\r\nTransfer-Encoding: chunked\r\nX-A: b\r\n\r\n1\r\na\r\n0\r\nX-Trailer: " + "t" * 600 + "\r\n\r\n",
    "trailers-too-large": "D" + H + "200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\n" + "X-T: 0123456789abcdef\r\n" * 60 + "\r\n",
    # The keep-alive race (bit 7): the pooled connection is closed (FIN; RST with bit 3) as the
    # second GET arrives on it, which must be retried on a new connection.
    "race-fin": "\xc4" + H + "200 OK\r\nContent-Length: 2\r\n\r\nhi",
    "race-rst": "\xcc" + H + "200 OK\r\nContent-Length: 2\r\n\r\nhi",
    "garbage": "@\x00\xff garbage \x7f\r\n\r\n",
    "empty": "@",
}
os.makedirs(d, exist_ok=True)
for name, text in seeds.items():
    with open(os.path.join(d, name), "wb") as f:
        f.write(text.encode("latin-1"))
print(len(seeds), "seeds")
