"""examples/chat: subscribers receive what others post, leave when they disconnect, and a slow
one is disconnected without holding up the rest. Usage: chat_test.py BUILD/examples/chat"""
import json
import signal
import socket
import sys
import time
import unittest

from example_process import Example, wait_until

BINARY = None


class Subscriber:
    """GET /events on a raw socket, with just enough HTTP to decode the chunked stream."""

    def __init__(self, port, rcvbuf=None):
        self.sock = socket.socket()
        if rcvbuf is not None:  # before connect: the window is set at the handshake
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(10)
        self.sock.connect(("127.0.0.1", port))
        self.sock.sendall(b"GET /events HTTP/1.1\r\nHost: chat\r\n"
                          b"Accept: text/event-stream\r\n\r\n")
        self.raw = b""
        self.stream = b""  # the decoded body so far
        self.ended = False  # the last chunk came: the response is over
        self.searched = 0  # wait_for has looked at stream[:searched]
        while b"\r\n\r\n" not in self.raw:
            self._recv()
        self.head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        self.wait_for(b": joined\n\n")  # the server's first flush: we are in the room now

    def _recv(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the server closed the stream")
        self.raw += data

    def _decode(self):
        while True:
            line_end = self.raw.find(b"\r\n")
            if line_end < 0:
                return
            size = int(self.raw[:line_end], 16)
            if size == 0:
                self.ended = True
                return
            if len(self.raw) < line_end + 2 + size + 2:
                return
            self.stream += self.raw[line_end + 2:line_end + 2 + size]
            self.raw = self.raw[line_end + 2 + size + 2:]

    def wait_for(self, needle, timeout=10):
        deadline = time.monotonic() + timeout
        while True:
            self._decode()
            # Only the new bytes: the stream grows to megabytes in the slow-subscriber test.
            at = self.stream.find(needle, max(0, self.searched - len(needle) + 1))
            if at >= 0:
                self.searched = at + len(needle)
                return
            self.searched = len(self.stream)
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            self._recv()

    def events(self):
        """The data of every complete event so far."""
        self._decode()
        return [e[len(b"data: "):].decode() for e in self.stream.split(b"\n\n")
                if e.startswith(b"data: ")]

    def close(self):
        self.sock.close()


class Chat(unittest.TestCase):
    def setUp(self):
        self.ex = Example(BINARY).__enter__()
        self.subscribers = []

    def tearDown(self):
        for s in self.subscribers:
            s.close()
        self.ex.__exit__(None)

    def subscribe(self, **kwargs):
        s = Subscriber(self.ex.port, **kwargs)
        self.subscribers.append(s)
        return s

    def stats(self):
        return self.ex.get_json("/stats")

    def post(self, text):
        return self.ex.request("POST", "/send", body=text)

    def test_the_stream_is_server_sent_events(self):
        s = self.subscribe()
        self.assertTrue(s.head.startswith(b"HTTP/1.1 200 OK\r\n"), s.head)
        self.assertIn(b"\r\nContent-Type: text/event-stream\r\n", s.head)
        self.assertIn(b"\r\nCache-Control: no-cache\r\n", s.head + b"\r\n")
        self.assertIn(b"\r\nTransfer-Encoding: chunked\r\n", s.head + b"\r\n")

    def test_two_subscribers_receive_a_message_posted_by_a_third(self):
        a, b = self.subscribe(), self.subscribe()
        self.assertEqual(self.stats()["subscribers"], 2)
        self.assertEqual(self.post("hello, room")[0], 202)
        self.assertEqual(self.post("second")[0], 202)
        for s in (a, b):
            s.wait_for(b"data: second\n\n")
            self.assertEqual(s.events(), ["hello, room", "second"])

    def test_bad_messages_are_400_and_not_broadcast(self):
        a = self.subscribe()
        for body in [b"", b"x" * 1001, b"two\nlines", b"forged\r\n\r\ndata: evil", b"cr\r"]:
            with self.subTest(body=body[:20]):
                self.assertEqual(self.post(body)[0], 400)
        self.assertEqual(self.post("x" * 1000)[0], 202)
        a.wait_for(b"x" * 1000 + b"\n\n")
        self.assertEqual(a.events(), ["x" * 1000])

    def test_a_subscriber_that_disconnects_leaves_the_room(self):
        a, b = self.subscribe(), self.subscribe()
        self.assertEqual(self.stats()["subscribers"], 2)
        a.close()
        self.assertTrue(wait_until(lambda: self.stats()["subscribers"] == 1, timeout=5),
                        self.stats())
        self.assertEqual(self.post("still here")[0], 202)
        b.wait_for(b"data: still here\n\n")
        self.assertEqual(self.stats(), {"subscribers": 1, "slow_disconnected": 0})

    def test_a_slow_subscriber_is_disconnected_and_does_not_block_the_others(self):
        # `slow` never reads, with a small receive window; `fast` reads every message. The
        # room goes on at fast's pace; once slow's socket buffers and its 16-message queue are
        # full, the broadcaster disconnects it instead of waiting or buffering more.
        slow = self.subscribe(rcvbuf=4096)
        fast = self.subscribe()
        # Posts go in pipelined batches of 8 on one connection, fewer than a queue holds, and
        # fast must have each batch before the next is sent.
        poster = socket.create_connection(("127.0.0.1", self.ex.port), timeout=10)
        message = "m" * 995
        sent = 0
        deadline = time.monotonic() + 60
        while self.stats()["slow_disconnected"] == 0:
            self.assertLess(time.monotonic(), deadline, "slow subscriber never disconnected")
            batch = b""
            for _ in range(8):
                sent += 1
                body = b"%05d%s" % (sent, message.encode())
                batch += b"POST /send HTTP/1.1\r\nHost: chat\r\nContent-Length: %d\r\n\r\n%s" % (
                    len(body), body)
            poster.sendall(batch)
            answers = b""
            while answers.count(b"\r\n\r\n") < 8:  # 202s have no body
                answers += poster.recv(65536)
            self.assertEqual(answers.count(b"HTTP/1.1 202 Accepted\r\n"), 8, answers)
            fast.wait_for(b"data: %05d" % sent, timeout=5)  # never held up by slow
        poster.close()
        self.assertEqual(self.stats(), {"subscribers": 1, "slow_disconnected": 1})
        self.assertEqual(len(fast.events()), sent)
        # The slow client, reading at last, finds the messages that were queued for it, in
        # order, and then the end of the response.
        slow.sock.settimeout(10)
        while not slow.ended:
            slow._recv()
            slow._decode()
        got = slow.events()
        self.assertLess(len(got), sent)
        self.assertEqual(got, ["%05d%s" % (i, message) for i in range(1, len(got) + 1)])
        print("slow subscriber disconnected after %d of %d messages of 1000 bytes"
              % (len(got), sent), file=sys.stderr)

    def test_sigterm_ends_subscriptions_and_exits_zero(self):
        s = self.subscribe()
        self.ex.signal(signal.SIGTERM)
        # Subscribers never end on their own: after the 2 s drain their connections close.
        self.assertEqual(self.ex.wait(10), 0, self.ex.stderr())
        with self.assertRaises((EOFError, ConnectionResetError)):
            s.wait_for(b"never")

    def test_a_second_sigint_during_the_drain_ends_the_process_at_once(self):
        self.subscribe()  # keeps the drain waiting
        self.ex.signal(signal.SIGINT)

        def refused():  # the first SIGINT was handled: the listener is closed, the drain runs
            try:
                socket.create_connection(("127.0.0.1", self.ex.port), timeout=1).close()
                return False
            except (ConnectionRefusedError, ConnectionResetError):
                return True  # reset: the listener closed with this connect in its queue

        if not wait_until(refused, timeout=5):
            self.ex.signal(signal.SIGQUIT)  # the runtime prints every green thread
            self.ex.wait(3)
            self.ex.close()
            self.fail("the listener is still open 5 s after SIGINT:\n" + self.ex.stderr())
        self.assertIsNone(self.ex.proc.poll())  # still draining (2 s)
        self.ex.signal(signal.SIGINT)  # SA_RESETHAND: the default action now
        self.assertEqual(self.ex.wait(5), -signal.SIGINT)


if __name__ == "__main__":
    BINARY = sys.argv.pop(1)
    unittest.main(verbosity=2)
