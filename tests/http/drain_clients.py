#!/usr/bin/env python3
"""Keep-alive clients against a greenhttp process while it drains after SIGTERM.

    drain_clients.py PORT PID [CLIENTS] [SECONDS_BOUND]

CLIENTS threads (default 50) each loop on one keep-alive connection: send a whole GET, read its
response, repeat; when the server closes, connect again, until connecting is refused (the
listener is gone). Once every client has had a few answers, SIGTERM goes to PID.

What a client may see after a request it has fully sent (RFC 9112 §9.6, nginx and Go alike):
  - its complete response (the one with "Connection: close" is the last on that connection);
  - a clean end of stream before any byte of a response (the server closed an idle connection
    just as the request crossed; a client may retry it).
Anything else is a failure: a reset (ECONNRESET) or a truncated response. Prints one summary
line (key=value) and exits 1 if any client failed, 2 if the run exceeded its time bound.
"""
import os
import signal
import socket
import sys
import threading
import time

PORT = int(sys.argv[1])
PID = int(sys.argv[2])
CLIENTS = int(sys.argv[3]) if len(sys.argv) > 3 else 50
BOUND = float(sys.argv[4]) if len(sys.argv) > 4 else 20.0
WARM_UP = 3  # answers per client before SIGTERM
if PID <= 1:  # kill(-1) or kill(0) would signal far more than the server
    sys.exit("drain_clients.py: bad pid %d" % PID)

REQUEST = ("GET /plaintext HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % PORT).encode()

lock = threading.Lock()
counts = {"ok": 0, "close": 0, "clean_fin": 0, "reset": 0, "truncated": 0, "other": 0}
failures = []
answered = [0] * CLIENTS
deadline = time.monotonic() + BOUND


def count(kind, detail=None):
    with lock:
        counts[kind] += 1
        if detail is not None and len(failures) < 10:
            failures.append(detail)


def read_response(sock, pending):
    """Returns (outcome, pending): outcome is 'ok', 'close', 'clean_fin', 'truncated'."""
    while b"\r\n\r\n" not in pending:
        data = sock.recv(65536)
        if not data:
            return ("clean_fin" if not pending else "truncated"), b""
        pending += data
    head, _, rest = pending.partition(b"\r\n\r\n")
    length = 0
    close = False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value.strip())
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    while len(rest) < length:
        data = sock.recv(65536)
        if not data:
            return "truncated", b""
        rest += data
    return ("close" if close else "ok"), rest[length:]


def client(index):
    while time.monotonic() < deadline:
        try:
            sock = socket.create_connection(("127.0.0.1", PORT), timeout=10)
        except (ConnectionRefusedError, ConnectionResetError):
            return  # the listener is closed (or closing): the drain is under way
        except OSError as e:
            count("other", "connect: %r" % e)
            return
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pending = b""
        try:
            while time.monotonic() < deadline:
                try:
                    sock.sendall(REQUEST)
                except (BrokenPipeError, ConnectionResetError) as e:
                    # The request did not get through whole: the server had closed first. A
                    # reset here means the server left unread bytes behind, which is what we
                    # test: count it.
                    if isinstance(e, ConnectionResetError):
                        count("reset", "client %d: reset while sending" % index)
                    break
                try:
                    outcome, pending = read_response(sock, pending)
                except ConnectionResetError:
                    count("reset", "client %d: reset after sending a request" % index)
                    break
                except socket.timeout:
                    count("other", "client %d: no answer in 10s" % index)
                    break
                count(outcome, None if outcome != "truncated" else "client %d: truncated" % index)
                if outcome in ("ok", "close"):
                    answered[index] += 1
                if outcome != "ok":
                    break
        finally:
            sock.close()


threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(CLIENTS)]
for t in threads:
    t.start()
while min(answered) < WARM_UP and time.monotonic() < deadline:
    time.sleep(0.005)  # polling the clients' counts under the run's deadline
warm = min(answered) >= WARM_UP
os.kill(PID, signal.SIGTERM)
for t in threads:
    t.join(max(0.0, deadline - time.monotonic()))
timed_out = any(t.is_alive() for t in threads)
print(" ".join("%s=%d" % kv for kv in counts.items()),
      "warm=%d" % warm, "timed_out=%d" % timed_out, "|", "; ".join(failures))
sys.stdout.flush()
if timed_out or not warm:
    os._exit(2)
os._exit(1 if counts["reset"] or counts["truncated"] or counts["other"] else 0)
