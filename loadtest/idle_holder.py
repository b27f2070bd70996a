#!/usr/bin/env python3
"""Open N keep-alive connections to a server, send one request on each, read each response,
then hold them all idle until stdin closes (or SIGTERM). Prints "HELD <n>" on stdout once every
connection has had its response, so a harness can read the server's RSS with N idle
connections; errors go to stderr.

    python3 loadtest/idle_holder.py --port 8080 --count 10000 [--path /plaintext] [--tls]

--tls speaks HTTPS: a full TLS handshake per connection (no session reuse, no certificate
check: the figure is the server's), made blocking, one after another within a batch.

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
    bufs = {}
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
        bufs[s] = b""
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
            if read_response(s, bufs[s]):
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
    p.add_argument("--per-source", type=int, default=0,
                   help="connections per source address (default: 3/4 of the port range)")
    args = p.parse_args()
    args.request = (f"GET {args.path} HTTP/1.1\r\nHost: {args.host}\r\n"
                    "User-Agent: greenhttp-idle-holder\r\n\r\n").encode()
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
    for s in held:
        s.close()


if __name__ == "__main__":
    main()
