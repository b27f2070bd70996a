#!/usr/bin/env python3
"""Start the greenhttp container image and check it; `make image-test` runs this.

    deploy/image_test.py [IMAGE] [--mode auto|container|chroot] [--engine docker|podman]

What it checks, from the image as built (IMAGE, default greenhttp:latest):
- its config: a non-root User, an Entrypoint or Cmd, and the HEALTHCHECK (which the OCI format
  would have dropped: podman must build with --format docker);
- started with its own Entrypoint and Cmd, unchanged, GET /healthz and GET /plaintext answer
  200 (and /plaintext says "Hello, World!"), and the HEALTHCHECK command passes;
- the server process runs as the image's user, not root (the Uid line of its /proc status, all
  four ids, as seen inside the container);
- SIGTERM drains: a request in flight when it arrives (/sleep?ms=1500, accepted before the
  signal: the server's accepted-connections counter says so) still gets its 200, and the
  process exits 0.

How it starts the image (--mode auto tries them in this order):
- container: `ENGINE run -d -p 127.0.0.1:PORT:8080` with a free host PORT, so the image's own
  0.0.0.0:8080 is private to the container. For podman, when the plain run fails (this
  project's VMs withhold CAP_SYS_RESOURCE, so the default rlimits cannot be set, and crun does
  not run on hybrid cgroups), it retries once with runc and the host's own open-file limit.
- chroot, where no container runs: the image's root file system (`podman image mount`, else a
  created container's `export`) under chroot, as the image's user by number (looked up in the
  image's own /etc/passwd and /etc/group), with the image's Env and WorkingDir, /proc mounted
  and /dev bound, in private mount and network namespaces: its 0.0.0.0:8080 collides with no
  process on the machine, the command line stays the image's own, and the checks reach it from
  a thread that joined that network namespace. Needs root, as the container engines do here.
Exit status 0 = all checks passed, 1 = a check failed, 2 = could not start the image at all.
"""
import argparse
import concurrent.futures
import ctypes
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

CLONE_NEWNET = 0x40000000
READY_TIMEOUT_S = 60
DRAIN_SLEEP_MS = 1500


class CheckFailed(Exception):
    pass


class CannotStart(Exception):
    pass


def log(msg):
    print(f"[image-test {time.monotonic() - START:6.1f}s] {msg}", flush=True)


START = time.monotonic()


def run(cmd, check=True, timeout=120, **kw):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise CheckFailed(f"{' '.join(cmd)}: exit {p.returncode}: {p.stderr.strip()[-2000:]}")
    return p


def pick_engine(explicit):
    if explicit:
        return explicit
    if os.environ.get("CONTAINER_ENGINE"):
        return os.environ["CONTAINER_ENGINE"]
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return "docker"
    if shutil.which("podman"):
        return "podman"
    raise CannotStart("neither a docker daemon nor podman (make deps-podman)")


def http(port, path, timeout=10.0, sent=None):
    """One HTTP/1.1 request on a fresh connection; returns (status, headers text, body bytes).
    sent: an Event set once the whole request is written."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: image-test\r\nConnection: close\r\n\r\n".encode())
        if sent:
            sent.set()
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    if not m:
        raise CheckFailed(f"GET {path}: not an HTTP response: {data[:200]!r}")
    return int(m.group(1)), head.decode("latin-1"), body


def accepted_total(port):
    status, _, body = http(port, "/metrics")
    m = re.search(rb"^greenhttp_connections_accepted_total (\d+)", body, re.M)
    if status != 200 or not m:
        raise CheckFailed(f"/metrics: status {status}, no greenhttp_connections_accepted_total")
    return int(m.group(1))


def uids_from_status(text):
    m = re.search(r"^Uid:\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)", text, re.M)
    if not m:
        raise CheckFailed("no Uid line in /proc/PID/status")
    return [int(x) for x in m.groups()]


class Image:
    def __init__(self, engine, ref):
        self.engine, self.ref = engine, ref
        p = run([engine, "image", "inspect", ref], check=False)
        if p.returncode != 0:
            raise CannotStart(f"{engine} has no image {ref}: run `make image` ({p.stderr.strip()})")
        info = json.loads(p.stdout)[0]
        self.config = info.get("Config") or {}
        self.entrypoint = self.config.get("Entrypoint") or []
        self.cmd = self.config.get("Cmd") or []
        self.user = self.config.get("User") or ""
        self.env = self.config.get("Env") or []
        self.workdir = self.config.get("WorkingDir") or "/"
        # docker reports it in Config.Healthcheck, podman at the top level.
        self.healthcheck = self.config.get("Healthcheck") or info.get("Healthcheck") or {}

    def check_config(self):
        log(f"config: User={self.user!r} Entrypoint={self.entrypoint} Cmd={self.cmd}")
        if self.user.split(":")[0] in ("", "root", "0"):
            raise CheckFailed(f"the image runs as root (User={self.user!r})")
        if not self.entrypoint + self.cmd:
            raise CheckFailed("the image has neither Entrypoint nor Cmd")
        test = self.healthcheck.get("Test") or []
        if not test or test[0] == "NONE":
            raise CheckFailed("the image has no HEALTHCHECK (podman must build with --format docker)")
        log(f"config: HEALTHCHECK {test[0]} ... present")


class Container:
    """The image as a container, its 8080 published on a free host port."""

    def __init__(self, image):
        self.image, self.engine = image, image.engine
        self.name = f"greenhttp-image-test-{os.getpid()}"
        self.port = None
        self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)

    def attempts(self):
        yield [], []
        if self.engine == "podman":
            # The engine's default (1048576 open files) is over the host's hard limit, which
            # only CAP_SYS_RESOURCE may raise; nproc: a test-sized limit under conmon's own.
            hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
            glob = ["--runtime", "runc"] if shutil.which("runc") else []
            yield glob, ["--ulimit", f"nofile={hard}:{hard}", "--ulimit", "nproc=8192:8192"]

    def start(self):
        errors = []
        for global_args, run_args in self.attempts():
            self.port = free_port()
            run([self.engine, "rm", "-f", self.name], check=False)
            cmd = [self.engine, *global_args, "run", "-d", "--name", self.name,
                   "-p", f"127.0.0.1:{self.port}:8080", *run_args, self.image.ref]
            p = run(cmd, check=False)
            if p.returncode == 0:
                self.global_args = global_args
                log(f"container: {' '.join(cmd)}")
                return
            errors.append(f"{' '.join(cmd)}: {p.stderr.strip().splitlines()[-1:]}")
        run([self.engine, "rm", "-f", self.name], check=False)
        raise CannotStart("; ".join(errors))

    def e(self, *args, **kw):
        return run([self.engine, *self.global_args, *args], **kw)

    def alive(self):
        p = self.e("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return p.stdout.strip() == "true"

    def logs(self):
        p = self.e("logs", self.name, check=False)
        return (p.stdout + p.stderr)[-3000:]

    def call(self, fn, *args):
        return self.pool.submit(fn, self.port, *args)

    def uids(self):
        # As seen inside the container (a user namespace would make the host's view differ).
        return uids_from_status(self.e("exec", self.name, "cat", "/proc/1/status").stdout)

    def healthcheck(self):
        if self.engine == "podman":
            p = self.e("healthcheck", "run", self.name, check=False)
            return p.returncode == 0, (p.stdout + p.stderr).strip()
        deadline = time.monotonic() + 40  # docker runs it after --interval (10 s)
        status = ""
        while time.monotonic() < deadline:
            status = self.e("inspect", "--format", "{{.State.Health.Status}}", self.name).stdout.strip()
            if status in ("healthy", "unhealthy"):
                break
            time.sleep(0.5)
        return status == "healthy", status

    def terminate(self):
        self.e("kill", "--signal" if self.engine == "podman" else "-s", "TERM", self.name)
        p = self.e("wait", self.name, timeout=60)
        return int(p.stdout.strip().splitlines()[-1])

    def cleanup(self):
        self.e("rm", "-f", self.name, check=False)
        self.pool.shutdown(wait=False)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Chroot:
    """The image's root file system under chroot, in private mount and network namespaces."""

    def __init__(self, image):
        self.image, self.engine = image, image.engine
        self.port = 8080  # the image's own, inside its private network namespace
        self.rootfs = None
        self.unmount = None
        self.tmp = None
        self.proc = None

    def lookup(self, spec):
        user, _, group = spec.partition(":")

        def find(file, name):
            if name.isdigit():
                return int(name), None
            with open(os.path.join(self.rootfs, "etc", file)) as f:
                for line in f:
                    fields = line.strip().split(":")
                    if fields[0] == name:
                        return int(fields[2]), (int(fields[3]) if file == "passwd" else None)
            raise CheckFailed(f"{name} is not in the image's /etc/{file}")

        uid, primary_gid = find("passwd", user)
        gid = find("group", group)[0] if group else primary_gid
        if gid is None:
            gid = 0
        return uid, gid

    def start(self):
        if os.geteuid() != 0:
            raise CannotStart("chroot mode needs root")
        p = run([self.engine, "image", "mount", self.image.ref], check=False) \
            if self.engine == "podman" else None
        if p is not None and p.returncode == 0:
            self.rootfs = p.stdout.strip()
            self.unmount = [self.engine, "image", "unmount", self.image.ref]
            log(f"chroot: podman image mount {self.image.ref} -> {self.rootfs}")
        else:
            self.tmp = tempfile.mkdtemp(prefix="greenhttp-image-")
            self.rootfs = os.path.join(self.tmp, "root")
            os.mkdir(self.rootfs)
            cid = run([self.engine, "create", self.image.ref]).stdout.strip()
            try:
                exp = subprocess.Popen([self.engine, "export", cid], stdout=subprocess.PIPE)
                run(["tar", "-x", "--numeric-owner", "-C", self.rootfs], stdin=exp.stdout)
                exp.wait()
            finally:
                run([self.engine, "rm", "-f", cid], check=False)
            log(f"chroot: {self.engine} export of the image -> {self.rootfs}")
        uid, gid = self.lookup(self.image.user)
        self.uid, self.gid = uid, gid
        argv = self.image.entrypoint + self.image.cmd
        log(f"chroot: uid {uid} gid {gid}, exec {argv}")
        self.log = tempfile.TemporaryFile()
        # unshare and then this script exec in place: the pid is the server's.
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--net", "--propagation", "private", "--",
             sys.executable, os.path.abspath(__file__), "--exec-in-root", self.rootfs,
             str(uid), str(gid), self.image.workdir, json.dumps(self.image.env), "--", *argv],
            stdout=self.log, stderr=subprocess.STDOUT)
        self.wait_for_own_netns()
        self.pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=4, initializer=join_netns, initargs=(self.proc.pid,))

    def wait_for_own_netns(self):
        """Popen returns once `unshare` is exec'd, before it has made the new namespace: a thread
        that joined /proc/PID/ns/net then would join this machine's own network and ask its
        127.0.0.1:8080 (connection refused, every time: a thread joins once). Wait for it."""
        ours = os.readlink("/proc/self/ns/net")
        deadline = time.monotonic() + 10
        while True:
            try:
                if os.readlink(f"/proc/{self.proc.pid}/ns/net") != ours:
                    return
            except FileNotFoundError:
                pass
            if not self.alive():
                raise CheckFailed(f"the server exited before starting; its output:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise CheckFailed("unshare did not make a network namespace within 10s")
            time.sleep(0.01)  # polling an observable state (the namespace link), under a deadline

    def alive(self):
        return self.proc.poll() is None

    def logs(self):
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-3000:]

    def call(self, fn, *args):
        return self.pool.submit(fn, self.port, *args)

    def uids(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            text = f.read()
        if not re.search(r"^Name:\s+greenhttp", text, re.M):
            raise CheckFailed(f"pid {self.proc.pid} is not greenhttp: {text.splitlines()[0]}")
        return uids_from_status(text)

    def healthcheck(self):
        test = self.image.healthcheck.get("Test") or []
        argv = test[1:] if test[0] == "CMD" else ["/bin/sh", "-c", test[1]]
        env = dict(e.split("=", 1) for e in self.image.env)
        # nsenter --root: the server's root, which is the image's; its namespaces; its user.
        p = run(["nsenter", "--target", str(self.proc.pid), "--net", "--mount", "--root",
                 "--wd=/", "--setuid", str(self.uid), "--setgid", str(self.gid), *argv],
                check=False, env=env, timeout=30)
        return p.returncode == 0, f"exit {p.returncode} {p.stderr.strip()}"

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def cleanup(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if getattr(self, "pool", None):
            self.pool.shutdown(wait=False)
        if self.unmount:
            run(self.unmount, check=False)
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


def join_netns(pid):
    """Thread initializer: this thread's sockets live in the server's network namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)


def exec_in_root(args):
    """Runs as the unshare'd process: mounts, loopback up, chroot, drop to the user, exec."""
    rootfs, uid, gid, workdir, env_json = args[:5]
    argv = args[6:]  # args[5] is "--"
    subprocess.run(["mount", "-t", "proc", "proc", os.path.join(rootfs, "proc")], check=True)
    subprocess.run(["mount", "--rbind", "/dev", os.path.join(rootfs, "dev")], check=True)
    # The new network namespace has only lo, and it is down.
    subprocess.run(["ip", "link", "set", "lo", "up"], check=False) if shutil.which("ip") else lo_up()
    os.chroot(rootfs)
    os.chdir(workdir)
    os.setgroups([])
    os.setgid(int(gid))
    os.setuid(int(uid))
    env = dict(e.split("=", 1) for e in json.loads(env_json))
    os.execvpe(argv[0], argv, env)


def lo_up():
    import fcntl
    import struct
    SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sh14x", b"lo", 0)
        flags = struct.unpack("16sh14x", fcntl.ioctl(s, SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s, SIOCSIFFLAGS, struct.pack("16sh14x", b"lo", flags | IFF_UP))


def wait_ready(target):
    deadline = time.monotonic() + READY_TIMEOUT_S
    last = None
    while time.monotonic() < deadline:
        if not target.alive():
            raise CheckFailed(f"the server exited before answering; its output:\n{target.logs()}")
        try:
            status, _, _ = target.call(http, "/healthz", 2.0).result()
            if status == 200:
                return
            last = f"status {status}"
        except (OSError, CheckFailed) as e:
            last = str(e)
        time.sleep(0.1)  # polling an observable state (the listener), under a deadline
    raise CheckFailed(f"/healthz did not answer 200 within {READY_TIMEOUT_S}s ({last}); "
                      f"the server's output:\n{target.logs()}")


def checks(target):
    wait_ready(target)
    log(f"GET /healthz: 200")
    status, _, body = target.call(http, "/plaintext").result()
    if status != 200 or body != b"Hello, World!":
        raise CheckFailed(f"GET /plaintext: {status} {body[:100]!r}")
    log("GET /plaintext: 200 Hello, World!")

    uids = target.uids()
    if 0 in uids:
        raise CheckFailed(f"the server runs with a root uid: Uid {uids}")
    log(f"server process: Uid {uids} (not root)")

    ok, detail = target.healthcheck()
    if not ok:
        raise CheckFailed(f"the image's HEALTHCHECK failed: {detail}")
    log("HEALTHCHECK: healthy")

    # Drain: one request in flight when SIGTERM arrives must still be answered. In flight means
    # written whole and its connection accepted: a connection accepted before its request
    # arrives is idle, and a drain rightly closes idle connections (Go's Shutdown does too).
    before = target.call(accepted_total).result()
    sent = threading.Event()
    inflight = target.call(http, f"/sleep?ms={DRAIN_SLEEP_MS}", 30.0, sent)
    if not sent.wait(10):
        raise CheckFailed("could not send the request to be in flight")
    deadline = time.monotonic() + 10
    while target.call(accepted_total).result() < before + 2:  # the sleeper, then this scrape
        if time.monotonic() > deadline:
            raise CheckFailed("the in-flight request was never accepted")
    t0 = time.monotonic()
    code = target.terminate()
    took = time.monotonic() - t0
    try:
        status, _, body = inflight.result(timeout=30)
    except (OSError, CheckFailed) as e:
        status, body = str(e), b""
    if status != 200:
        raise CheckFailed(f"the request in flight at SIGTERM got {status} {body[:100]!r} "
                          f"(exit {code}); the server's output:\n{target.logs()}")
    if code != 0:
        raise CheckFailed(f"after SIGTERM the server exited {code}; its output:\n{target.logs()}")
    log(f"SIGTERM: the request in flight got 200, exit 0 after {took:.1f}s")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--exec-in-root":
        exec_in_root(sys.argv[2:])
        return 2
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("image", nargs="?", default="greenhttp:latest")
    ap.add_argument("--mode", choices=["auto", "container", "chroot"], default="auto")
    ap.add_argument("--engine", choices=["docker", "podman"])
    a = ap.parse_args()
    try:
        engine = pick_engine(a.engine)
        image = Image(engine, a.image)
        image.check_config()
        target = None
        if a.mode in ("auto", "container"):
            target = Container(image)
            try:
                target.start()
            except CannotStart as e:
                target.cleanup()
                if a.mode == "container":
                    raise
                log(f"no container runs here ({e}); starting the root file system under chroot")
                target = None
        if target is None:
            target = Chroot(image)
            target.start()
        try:
            checks(target)
        finally:
            target.cleanup()
    except CannotStart as e:
        print(f"image-test: cannot start the image: {e}", file=sys.stderr)
        return 2
    except (CheckFailed, concurrent.futures.TimeoutError, subprocess.TimeoutExpired) as e:
        print(f"image-test: FAILED: {e}", file=sys.stderr)
        return 1
    log(f"passed ({type(target).__name__.lower()} mode, {engine})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
