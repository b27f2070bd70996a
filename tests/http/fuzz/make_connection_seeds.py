#!/usr/bin/env python3
# Writes the conn-* seeds of tests/http/fuzz/corpus/ for connection_fuzz (format: the top of
# tests/http/fuzz/connection_fuzz.cpp; "|~|" marks a read split, a leading one picks the small
# limits). Run from the repository root: python3 tests/http/fuzz/make_connection_seeds.py
#   tests/http/fuzz/corpus
import os, sys
d = sys.argv[1]
S = "|~|"
R = "GET /json HTTP/1.1\r\nHost: ab\r\n\r\n"  # 32 bytes
assert len(R) == 32
seeds = {
 "conn-split-request-line": "GE|~|T /plaint|~|ext HTTP/1.|~|1\r\nHost: x\r\n\r\n",
 "conn-split-crlf": "GET /json HTTP/1.1\r|~|\nHost: x\r\n\r|~|\n",
 "conn-pipelined-splits": "GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n|~|GET /json HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\n|~|Host: x\r\n\r\nGET /readyz HTTP/1.1\r\nHost: x\r\n\r\n",
 "conn-echo-length-split": "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nContent-Type: text/plain\r\n\r\nhello|~| world",
 "conn-echo-chunked-split": "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5|~|\r\nhello\r\n6;ext=|~|1\r\n world\r\n0\r\nX-Trailer: t|~|\r\n\r\nGET /json HTTP/1.1\r\nHost: x\r\n\r\n",
 "conn-expect-continue": "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n|~|body",
 "conn-head": "HEAD / HTTP/1.1\r\nHost: x\r\n\r\nHEAD /json HTTP/1.1\r\nHost: x\r\n\r\n|~|GET /plaintext HTTP/1.1\r\nHost: x\r\n\r\n",
 "conn-close-then-more": "GET /json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /json HTTP/1.1\r\nHost: x\r\n\r\n",
 "conn-http10-keepalive": "GET /plaintext HTTP/1.0\r\nConnection: keep-alive\r\n\r\n|~|GET /json HTTP/1.0\r\n\r\n",
 "conn-leading-crlf": "\r\n\r\n|~|\r\nGET /json HTTP/1.1\r\nHost: x\r\n\r\n\r\n|~|GET /json HTTP/1.1\r\nHost: x\r\n\r\n",
 "conn-bad-then-more": "GET / HTTP/1.1\r\nBad Header: x\r\n\r\nGET /json HTTP/1.1\r\nHost: x\r\n\r\n",
 "conn-small-long-target": S + "GET /" + "a"*100 + " HTTP/1.1\r\nHost: x\r\n\r\n",
 "conn-small-big-head": S + "GET / HTTP/1.1\r\nHost: x\r\nX-A: " + "b"*300 + "\r\n\r\n",
 "conn-small-many-headers": S + "GET / HTTP/1.1\r\nHost: x\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\nE: 5\r\n\r\n",
 "conn-small-body-too-big": S + "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + "c"*100,
 "conn-small-chunk-too-big": S + "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000\r\n" + "d"*64 + "|~|" + "d"*64,
 "conn-small-expect-too-big": S + "POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 9999\r\n\r\n",
 # issue 11 section 2: a read that fills the 4 KiB buffer exactly at a request boundary
 "conn-small-pipelined-exact-fill": S + R * 200,
 "conn-small-pipelined-exact-fill-split": S + R * 128 + "|~|" + R * 72,
 "conn-small-crlf-run": S + "\r\n" * 2100 + R,
 "conn-static": "GET /static/a.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /static/../a.txt HTTP/1.1\r\nHost: x\r\n\r\nGET /static/nope HTTP/1.1\r\nHost: x\r\n\r\nHEAD /static/index.html HTTP/1.1\r\nHost: x\r\n\r\n",
 "conn-encoded-slash": "GET /debug%2Fgreenthreads HTTP/1.1\r\nHost: x\r\n\r\nGET /static%2Fa.txt HTTP/1.1\r\nHost: x\r\n\r\n",
 "conn-observability": "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n|~|GET /debug/vars HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\nDELETE /json HTTP/1.1\r\nHost: x\r\n\r\n",
 "conn-empty-values": "GET /json HTTP/1.1\r\nHost: x\r\nX-Empty:\r\nAccept: \r\nCookie:\r\n\r\n",
 "conn-bare-cr": "GET /json HTTP/1.1\r\nHost: x\r\n\rX: y\r\n\r\n",
 "conn-bad-host": "GET /json HTTP/1.1\r\nHost: u@a\r\n\r\nGET /json HTTP/1.1\r\nHost: a b\r\n\r\n",
 "conn-http10-te": "POST /echo HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
 "conn-trailer-fold": "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\n0\r\nX: a\r\n folded\r\n\r\n",
 "conn-chunk-zeros": "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + "0"*40 + "1\r\na\r\n0\r\n\r\n",
 "conn-chunk-long-ext": "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1;" + "e"*5000 + "\r\na\r\n0\r\n\r\n",
 "conn-cl-and-te": "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
 "conn-two-cl": "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
 "conn-garbage": "\x00\xff\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03|~|\x8a\x00\r\n\r\n",
 "conn-tls-hello": "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + "\x00"*32,
 "conn-byte-by-byte": "|~|".join("GET /json HTTP/1.1\r\nHost: x\r\n\r\n"),
 "conn-incomplete-head": "GET /json HTTP/1.1\r\nHost: x\r\n",
 "conn-incomplete-body": "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc|~|def",
 "conn-absolute-form": "GET http://x/json HTTP/1.1\r\nHost: x\r\n\r\nOPTIONS * HTTP/1.1\r\nHost: x\r\n\r\nCONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
 # issue 11 section 2: 2,000 pipelined 32-byte requests in one write (896 answered, then silence)
 "conn-pipelined-2000": R * 2000,
 "conn-http09-and-2": "GET /json\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
 # issue 12 section 3: streamed bodies (past the read buffer, chunked, or behind 100-continue)
 "conn-upload-streamed": "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 40000\r\n\r\n" + "u"*20000 + "|~|" + "u"*20000 + R,
 "conn-upload-chunked-split": "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + "10;a=b\r\n" + "v"*16 + "\r\n|~|3\r\nabc\r\n0\r\nT: 1\r\n\r\n" + R,
 "conn-unread-chunked-then-more": "POST /json HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n|~|0\r\n\r\n" + R,
 "conn-expect-unread": "POST /json HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 10\r\n\r\n|~|0123456789" + R,
 "conn-small-upload-over-body": S + "POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + ("40\r\n" + "w"*64 + "\r\n") * 40 + "|~|0\r\n\r\n",
}
total = 0
for name, text in seeds.items():
    b = text.encode("latin-1")
    total += len(b)
    with open(os.path.join(d, name), "wb") as f:
        f.write(b)
print(len(seeds), "seeds,", total, "bytes")
