"""An example binary (examples/) in a child process, for tests/examples/*_test.py.

It is started on 127.0.0.1:0, so the kernel picks a free port (no race with other servers on
the machine), and it is ready once it has printed "listening on 127.0.0.1:PORT" (listen_and_serve
prints it after listen(), with its signal handlers in): the helper waits for that line under a
deadline instead of sleeping, and reads the port from it.
"""
import http.client
import json
import re
import signal
import subprocess
import threading
import time


class Example:
    def __init__(self, binary, address="127.0.0.1:0", ready_timeout=10.0, args=None):
        # `args`: the whole argument list, for examples that take flags (fanout, proxy), in
        # place of the one address the others take.
        argv = [binary] + (list(args) if args is not None else [address])
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True)
        self.stderr_lines = []
        self.port = None
        self._ready = threading.Event()
        # Drains stderr for as long as the process lives, so it can never block on a full pipe.
        self._reader = threading.Thread(target=self._read_stderr, daemon=True)
        self._reader.start()
        self._ready.wait(ready_timeout)

    def _read_stderr(self):
        for line in self.proc.stderr:
            self.stderr_lines.append(line)
            self.on_stderr_line(line.strip())
            m = re.match(r"listening on 127\.0\.0\.1:(\d+)$", line.strip())
            if m:
                self.port = int(m.group(1))
                self._ready.set()
        self._ready.set()  # exited: whoever waits sees port None

    def on_stderr_line(self, line):
        """Each line the example prints, for a subclass that looks for more than the port."""

    def stderr(self):
        self._reader.join(timeout=5)
        return "".join(self.stderr_lines)

    def signal(self, sig):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout):
        """The exit code (negative: killed by that signal), or None if still running."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def close(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)  # SIGKILL: bounded all the same
        self._reader.join(timeout=5)
        self.proc.stderr.close()

    def __enter__(self):
        if self.port is None:
            self.close()
            raise RuntimeError("example did not start: " + self.stderr())
        return self

    def __exit__(self, exc_type, *exc):
        # A test that got this far also checks the way out: SIGTERM drains and exits 0 (under
        # the sanitizers, that exit is also where leaks are reported, as a nonzero code).
        rc = self.stop()
        if exc_type is None and rc not in (None, 0):
            raise AssertionError("example exited %s after SIGTERM:\n%s" % (rc, self.stderr()))

    def stop(self, timeout=15):
        """SIGTERM, then the exit code; None if it had exited already. Kills it on timeout."""
        if self.proc.poll() is not None:
            self.close()
            return None
        self.proc.send_signal(signal.SIGTERM)
        rc = self.wait(timeout)
        if rc is None:
            # Still running: before the kill, SIGQUIT makes the runtime print every green
            # thread and where it waits (runtime/sysmon.cpp), which lands in the failure's
            # stderr. No dump at all says the process took no signal either. (Examples.chat once
            # failed here under TSan in a full `make test`, not reproduced in 60 lone runs.)
            self.proc.send_signal(signal.SIGQUIT)
            self.wait(3)
        self.close()
        return "still running after %ss" % timeout if rc is None else rc

    def conn(self, timeout=10):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method, path, body=None, headers=None):
        """One request on a new connection: (status, headers dict (lower-case), body bytes)."""
        c = self.conn()
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def get_json(self, path):
        status, _, body = self.request("GET", path)
        assert status == 200, (path, status, body)
        return json.loads(body)


def wait_until(predicate, timeout=10.0, interval=0.01):
    """Polls `predicate` until it holds or `timeout` passes; returns its last value. For states
    only observable from outside (a counter in another process)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)  # polling under the deadline above
