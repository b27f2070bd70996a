"""What the suites that drive the real binary share (static_test.py, tls_test.py, http2_test.py):
starting build/greenhttp on port 0 and learning its ports, watching the process from /proc (its
descriptors, RSS, TCP sockets, sanitizer reports), a /metrics parser, and wait_until, the one way
these suites wait: an observable state polled under a deadline, never a bare sleep.

Imported by name: each suite runs as a script from this directory, which Python puts first on
sys.path.
"""

import os
import re
import signal
import subprocess
import time


def wait_until(pred, limit, pause=0.005):
    """Waits until pred() holds or `limit` seconds pass; returns whether it held."""
    deadline = time.monotonic() + limit
    while True:
        if pred():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)  # polling an observable state, bounded by the deadline
        pause = min(pause * 2, 0.05)


def read_text(path):
    with open(path) as f:
        return f.read()


class Metrics:
    """One /metrics scrape: sum(name, label=value, ...) over the matching samples."""

    LINE = re.compile(r'^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$')
    LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

    def __init__(self, text):
        self.text = text
        self.samples = []
        for line in text.splitlines():
            m = self.LINE.match(line)
            if m and not line.startswith("#"):
                labels = dict(self.LABEL.findall(m.group(2) or ""))
                self.samples.append((m.group(1), labels, float(m.group(3))))

    def find(self, name, **labels):
        return [(l, v) for n, l, v in self.samples
                if n == name and all(l.get(k) == want for k, want in labels.items())]

    def sum(self, name, **labels):
        return sum(v for _, v in self.find(name, **labels))

    def has(self, name, **labels):
        return bool(self.find(name, **labels))


class ServerProcess:
    """The binary in a child process, started with its listeners on port 0: it writes each port
    to a file once that listener is open (--port-file, --tls-port-file), which is how a suite
    knows it is ready. `plain` opens the plain listener; `tls` waits for the TLS one, which
    `tls_args` or `args` open (--listen-tls 127.0.0.1:0 and the certificate, or a config file
    with a [tls] table)."""

    def __init__(self, binary, run_dir, args, plain=True, tls=False, tls_args=(),
                 preexec_fn=None, start_timeout=20):
        os.makedirs(run_dir, exist_ok=True)
        self.run_dir = run_dir
        self.stderr_path = os.path.join(run_dir, "stderr")
        port_file = os.path.join(run_dir, "port")
        tls_port_file = os.path.join(run_dir, "tls-port")
        argv = [binary, "--access-log", "off", "--threads", "2"]
        argv += ["--listen", "127.0.0.1:0", "--port-file", port_file] if plain else \
            ["--listen", "off"]
        files = [port_file] if plain else []
        if tls:
            argv += ["--tls-port-file", tls_port_file] + list(tls_args)
            files.append(tls_port_file)
        self.argv = argv + list(args)
        with open(self.stderr_path, "w") as err:
            self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=err,
                                         preexec_fn=preexec_fn)
        ready = wait_until(lambda: all(os.path.exists(f) for f in files)
                           or self.proc.poll() is not None, start_timeout)
        if not ready or self.proc.poll() is not None:
            self.kill()
            raise AssertionError("greenhttp %s did not start (exit %s): %s" % (
                " ".join(args), self.proc.returncode, self.stderr()[-2000:]))
        self.port = int(read_text(port_file)) if plain else None
        self.tls_port = int(read_text(tls_port_file)) if tls else None

    @property
    def pid(self):
        return self.proc.pid

    def stderr(self):
        with open(self.stderr_path, errors="replace") as f:
            return f.read()

    def alive(self):
        return self.proc.poll() is None

    def fds(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def rss_kib(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS for %d" % self.pid)

    def tcp_sockets(self):
        """(state, local port, remote port) of each TCP socket this process holds open (its
        descriptors' inodes in /proc/net/tcp); state 0A is LISTEN, 01 ESTABLISHED."""
        inodes = set()
        for fd in os.listdir("/proc/%d/fd" % self.pid):
            try:
                target = os.readlink("/proc/%d/fd/%s" % (self.pid, fd))
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
        out = []
        with open("/proc/net/tcp") as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if parts[9] in inodes:
                    out.append((parts[3], int(parts[1].split(":")[1], 16),
                                int(parts[2].split(":")[1], 16)))
        return out

    def listening_ports(self):
        return {local for state, local, _ in self.tcp_sockets() if state == "0A"}

    def signal(self, sig):
        self.proc.send_signal(sig)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def stop(self, limit=15):
        """SIGTERM; returns the exit status (or a string saying it had to be killed)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            self.kill()
            return "killed after %d s" % limit

    def sanitizer_report(self):
        """The first ASan, LSan, TSan or UBSan report in the server's stderr, or None."""
        err = self.stderr()
        for mark in ("AddressSanitizer", "ThreadSanitizer", "LeakSanitizer", "runtime error:"):
            if mark in err:
                at = err.index(mark)
                return err[max(0, at - 200):][:3000]
        return None
