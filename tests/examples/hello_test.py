"""examples/hello: answers, and listen_and_serve's contract (signals drain and exit 0, a port it
cannot listen on is an error). Usage: hello_test.py BUILD/examples/hello"""
import signal
import socket
import sys
import time
import unittest

from example_process import Example

BINARY = None


class Hello(unittest.TestCase):
    def test_answers_hello_world(self):
        with Example(BINARY) as ex:
            status, headers, body = ex.request("GET", "/")
            self.assertEqual(status, 200)
            self.assertEqual(headers["content-type"], "text/plain")
            self.assertEqual(body, b"Hello, World!\n")
            # Only the one route: the router answers everything else.
            self.assertEqual(ex.request("GET", "/nope")[0], 404)
            status, headers, _ = ex.request("POST", "/")
            self.assertEqual(status, 405)
            self.assertEqual(headers["allow"], "GET, HEAD")

    def test_serves_keep_alive_connections_concurrently(self):
        with Example(BINARY) as ex:
            conns = [ex.conn() for _ in range(20)]  # each one its own green thread
            for _ in range(3):
                for c in conns:
                    c.request("GET", "/")
                for c in conns:
                    r = c.getresponse()
                    self.assertEqual((r.status, r.read()), (200, b"Hello, World!\n"))
            for c in conns:
                c.close()

    def _drains_on(self, sig):
        with Example(BINARY) as ex:
            idle = socket.create_connection(("127.0.0.1", ex.port), timeout=10)
            idle.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertIn(b"Hello, World!", idle.recv(4096))
            start = time.monotonic()
            ex.signal(sig)
            # The drain closes the idle keep-alive connection (no reset), then the call returns
            # and main exits 0.
            self.assertEqual(idle.recv(4096), b"")
            self.assertEqual(ex.wait(10), 0, ex.stderr())
            self.assertLess(time.monotonic() - start, 5)
            idle.close()

    def test_sigterm_drains_and_exits_zero(self):
        self._drains_on(signal.SIGTERM)

    def test_sigint_drains_and_exits_zero(self):
        self._drains_on(signal.SIGINT)

    def test_a_port_in_use_is_an_error_not_a_hang(self):
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        ex = Example(BINARY, "127.0.0.1:%d" % taken.getsockname()[1])
        try:
            self.assertEqual(ex.wait(10), 1)
            self.assertIn("cannot listen on 127.0.0.1:%d: Address already in use"
                          % taken.getsockname()[1], ex.stderr())
        finally:
            ex.close()
            taken.close()

    def test_a_bad_address_is_an_error(self):
        ex = Example(BINARY, "not-an-address")
        try:
            self.assertEqual(ex.wait(10), 1)
            self.assertIn("cannot listen on not-an-address: not a HOST:PORT address", ex.stderr())
        finally:
            ex.close()


if __name__ == "__main__":
    BINARY = sys.argv.pop(1)
    unittest.main(verbosity=2)
