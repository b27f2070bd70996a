#!/usr/bin/env python3
"""Open N keep-alive connections to a server, send one request on each, read each response,
then hold them all idle until stdin closes (or SIGTERM). Prints "HELD <n>" on stdout once every
connection has had its response, so a harness can read the server's RSS with N idle
connections; errors go to stderr.

    python3 loadtest/idle_holder.py --port 8080 --count 10000 [--path /plaintext] [--tls|--h2c]

--tls speaks HTTPS: a full TLS handshake per connection (no session reuse, no certificate
check: the figure is the server's), made blocking, one after another within a batch.
--h2c speaks HTTP/2 with prior knowledge (issue 17) and sends no request: the connection
preface and an empty SETTINGS frame; a connection counts as held once the server's SETTINGS
(acknowledged with a SETTINGS ACK, as a client must) and the server's ACK of ours came. A
GOAWAY, or an HTTP/1.1 answer, is an error.

When stdin closes, "OPEN <n> of <N>" on stdout says how many connections the server had not
closed by then (so a figure taken while they were held is known to be one of N connections).

Connections are opened in batches (so a listen backlog of a few hundred is enough) and, when
N is larger than the ephemeral ports one source address has (ip_local_port_range), spread
over source addresses 127.0.0.1, 127.0.0.2, ... (all of 127/8 is local on Linux). The
open-files soft limit is raised to the hard limit first. Standard library only."""

import argparse
import resource
import selectors
import signal
import socket
import ssl
import sys

IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h: bind the address now, choose the port at connect

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
H2_SETTINGS, H2_GOAWAY, H2_ACK = 0x4, 0x7, 0x1


def h2_frame(ftype, flags, payload=b"", stream=0):
    return len(payload).to_bytes(3, "big") + bytes((ftype, flags)) + stream.to_bytes(4, "big") \
        + payload


class H2cState:
    """What one h2c connection has received: whole frames are consumed from `offset`."""

    def __init__(self):
        self.offset, self.settings, self.acked = 0, False, False


def h2c_ready(sock, buf, st):
    """Whether buf now holds the server's SETTINGS and its ACK of ours; answers the server's
    SETTINGS with an ACK on the way."""
    if buf.startswith(b"HTTP/"):
        raise ConnectionError(f"server answered HTTP/1.x, not h2c: {buf[:40]!r}")
    while len(buf) - st.offset >= 9:
        length = int.from_bytes(buf[st.offset:st.offset + 3], "big")
        if len(buf) - st.offset < 9 + length:
            break
        ftype, flags = buf[st.offset + 3], buf[st.offset + 4]
        payload = buf[st.offset + 9:st.offset + 9 + length]
        if ftype == H2_SETTINGS and flags & H2_ACK:
            st.acked = True
        elif ftype == H2_SETTINGS:
            st.settings = True
            sock.setblocking(True)
            sock.sendall(h2_frame(H2_SETTINGS, H2_ACK))
            sock.setblocking(False)
        elif ftype == H2_GOAWAY:
            raise ConnectionError("server sent GOAWAY, error code "
                                  f"{int.from_bytes(payload[4:8], 'big')}")
        st.offset += 9 + length
    return st.settings and st.acked


def ports_per_source():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = map(int, f.read().split())
        return hi - lo + 1
    except OSError:
        return 28232


def read_response(sock, buf):
    """Whether buf now holds one complete response (headers + Content-Length body)."""
    head_end = buf.find(b"\r\n\r\n")
    if head_end < 0:
        return False
    length = 0
    for line in buf[:head_end].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    return len(buf) >= head_end + 4 + length


def open_batch(args, sources, start, count):
    socks = []
    for i in range(start, start + count):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        src = sources[i % len(sources)]
        if src != "127.0.0.1":
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((src, 0))
        s.settimeout(args.timeout)
        s.connect((args.host, args.port))
        if args.tls:
            s = args.tls.wrap_socket(s, server_hostname=args.host)
        s.sendall(args.request)
        s.setblocking(False)
        socks.append(s)
    sel = selectors.DefaultSelector()
    bufs, h2 = {}, {}
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
        bufs[s] = b""
        if args.h2c:
            h2[s] = H2cState()
    pending = len(socks)
    while pending:
        events = sel.select(timeout=args.timeout)
        if not events:
            raise TimeoutError(f"{pending} responses missing after {args.timeout} s")
        for key, _ in events:
            s = key.fileobj
            try:
                data = s.recv(65536)
                while isinstance(s, ssl.SSLSocket) and s.pending():
                    data += s.recv(65536)  # decrypted bytes the selector cannot see
            except ssl.SSLWantReadError:
                continue  # a record without data (a TLS 1.3 session ticket)
            if not data:
                raise ConnectionError("server closed a connection before answering")
            bufs[s] += data
            if h2c_ready(s, bufs[s], h2[s]) if args.h2c else read_response(s, bufs[s]):
                sel.unregister(s)
                pending -= 1
    sel.close()
    return socks


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--path", default="/plaintext")
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--tls", action="store_true", help="HTTPS (no certificate verification)")
    p.add_argument("--h2c", action="store_true",
                   help="HTTP/2 prior knowledge: preface and SETTINGS, no request")
    p.add_argument("--per-source", type=int, default=0,
                   help="connections per source address (default: 3/4 of the port range)")
    args = p.parse_args()
    if args.tls and args.h2c:
        p.error("--tls and --h2c: h2 over TLS is not implemented here")
    args.request = (f"GET {args.path} HTTP/1.1\r\nHost: {args.host}\r\n"
                    "User-Agent: greenhttp-idle-holder\r\n\r\n").encode()
    if args.h2c:
        args.request = H2_PREFACE + h2_frame(H2_SETTINGS, 0)
    if args.tls:
        args.tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        args.tls.check_hostname = False
        args.tls.verify_mode = ssl.CERT_NONE

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and args.count + 64 > hard:
        sys.exit(f"idle_holder: {args.count} connections need more than the open-files hard "
                 f"limit ({hard})")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    # Keep a quarter of the range free for whatever else this machine connects.
    per_source = args.per_source or ports_per_source() * 3 // 4
    sources = [f"127.0.0.{i + 1}" for i in range(-(-args.count // per_source))]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    held = []
    try:
        while len(held) < args.count:
            held += open_batch(args, sources, len(held), min(args.batch, args.count - len(held)))
    except (OSError, TimeoutError, ConnectionError) as e:
        sys.exit(f"idle_holder: after {len(held)} connections: {e}")
    print(f"HELD {len(held)} sources={len(sources)}", flush=True)
    sys.stdin.read()  # hold until the harness closes our stdin
    print(f"OPEN {sum(map(still_open, held))} of {len(held)}", flush=True)
    for s in held:
        s.close()


def still_open(s):
    """Whether the server has not closed s: no EOF waiting on it (data waiting, such as a
    GOAWAY, counts as open; the server may close after it)."""
    try:
        # The plain socket's recv, also for an SSLSocket: peek at the raw bytes.
        return socket.socket.recv(s, 1, socket.MSG_PEEK | socket.MSG_DONTWAIT) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False


if __name__ == "__main__":
    main()
