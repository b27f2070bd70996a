#!/usr/bin/env python3
"""`make loadtest`: greenhttp, Go net/http and nginx side by side under the same wrk load.

For every scenario (loadtest/harness/scenarios.py) the peers are started fresh on 127.0.0.1,
checked route by route, warmed up, then measured interleaved — A B C, A B C — so drift on a
shared machine hits all of them alike. Then each peer holds N idle keep-alive connections
(memory per connection), and the runtime microbenchmarks run (greenrt and Go). Writes
loadtest/results/<date>-<host>.md, a .json of every run and PNG charts.

Settings (environment, all optional):
  LOADTEST_QUICK=1          2 s runs, 1 s warm-up, smaller microbenchmarks: under 5 minutes
  LOADTEST_DURATION=8       seconds per measured wrk run (quick: 2)
  LOADTEST_ROUNDS=2         interleaved rounds per scenario
  LOADTEST_PEERS=greenhttp,go,nginx
  LOADTEST_SCENARIOS=plaintext,json,pipelined,echo,mix,c1000,c10000,proxy,fanout,https,
                     https-handshake,https-handshake-full,https-idle,https-flood,static-4k,
                     static-1m,static-304,h2-tls,h2c,h2-1m,h2-idle (the default set);
                     https-all names the five HTTPS ones, static-all the three static-file
                     ones, h2-all the four HTTP/2 ones
  LOADTEST_TLS_IDLE_CONNS=10000  idle keep-alive TLS connections per peer in https-idle
  LOADTEST_H2_IDLE_CONNS=10000   idle HTTP/2 (h2c) connections per peer in h2-idle, and as
                     many HTTP/1.1 ones beside them
  LOADTEST_H2LOAD_THREADS=1 h2load -t (the HTTP/2 scenarios' client)
  LOADTEST_IDLE_CONNS=10000 idle keep-alive connections held per peer (0: skip)
  LOADTEST_BENCH=1          0 skips the runtime microbenchmarks
  LOADTEST_BENCH_ARGS       e.g. "-n 200000 -parked 100000" (quick's default)
  LOADTEST_SERVER_CPUS, LOADTEST_WRK_CPUS  taskset lists (default: see pick_cpus)
  LOADTEST_BACKEND_CPUS     taskset list of the proxy/fanout backend (default: wrk's CPUs)
  LOADTEST_THREADS          server threads/workers/GOMAXPROCS (default: server CPU count)
  BUILD=build               the CMake build directory
`compare.py --render results/<run>.json` re-writes a report and its charts from a run's data.
A run that sets PEERS, SCENARIOS, DURATION, ROUNDS, IDLE_CONNS or BENCH(_ARGS) writes
<date>-<host>[-quick]-custom.md, so it never overwrites the report of a complete run.
"""

import dataclasses
import datetime
import json
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from types import SimpleNamespace

sys.dont_write_bytecode = True  # keep loadtest/ free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import bench, charts, h2load, idle, peers, procfs, report, wrk  # noqa: E402
from harness.scenarios import BY_NAME, GROUPS, SCENARIOS  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def env_int(name, default):
    v = os.environ.get(name, "")
    return int(v) if v.strip() else default


def env_list(name, default):
    v = os.environ.get(name, "").strip()
    return [x.strip() for x in v.split(",") if x.strip()] if v else default


def cpu_list(cpus):
    return ",".join(str(c) for c in sorted(cpus))


def pick_cpus():
    """Servers and wrk on disjoint halves when there are 4+ CPUs; on fewer, everything shares
    every CPU (as anchors.md measured on the 2-core machine): splitting 2 cores would give each
    server one core and measure wrk's core, not the server."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= 4:
        half = len(cpus) // 2
        server, client, how = cpus[:half], cpus[half:], "disjoint halves of the CPUs"
    else:
        server, client, how = cpus, cpus, "server and wrk share every CPU, as in anchors.md"
    server_s = os.environ.get("LOADTEST_SERVER_CPUS") or cpu_list(server)
    client_s = os.environ.get("LOADTEST_WRK_CPUS") or cpu_list(client)
    if "LOADTEST_SERVER_CPUS" in os.environ or "LOADTEST_WRK_CPUS" in os.environ:
        how = "set by LOADTEST_SERVER_CPUS / LOADTEST_WRK_CPUS"
    return server_s, client_s, how, cpu_count(server_s)


def cpu_count(cpus):
    """How many CPUs a taskset list ("0-3,6") names."""
    return sum(len(range(int(a), int(b) + 1)) if "-" in part else 1
               for part in cpus.split(",") for a, _, b in [part.partition("-")])


def pick_backend_cpus(wrk_cpus):
    """The `proxy` and `fanout` scenarios measure a front (the proxy, or the fan-out example)
    that calls a greenhttp backend. The front is the server under test and gets the servers'
    CPUs, as in every other scenario; the backend is part of the load, the same for every
    front, so it runs beside wrk on wrk's CPUs. Putting it on the front's CPUs would make a
    front that spends less CPU leave more to the backend and count twice; on its own CPUs
    (LOADTEST_BACKEND_CPUS) it would need more than the 4+ CPUs split in halves. On the
    2-core machines everything shares both CPUs anyway."""
    return os.environ.get("LOADTEST_BACKEND_CPUS") or wrk_cpus


# https-flood: tlsload's connections (each a full handshake after the other), and how long it
# runs before wrk's measurement starts and after it ends.
FLOOD_CONNS = 200
FLOOD_LEAD_S = 1


def free_port(taken, start=28080):
    """A port below the ephemeral range that nothing listens on (others share this machine)."""
    port = start
    while True:
        port += 1
        if port in taken:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port


def first_line(path, key):
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return line.split(":", 1)[1].strip() if ":" in line else line.split("=", 1)[1]
    except OSError:
        pass
    return "?"


def sysctl(name):
    try:
        with open("/proc/sys/" + name.replace(".", "/")) as f:
            return f.read().strip()
    except OSError:
        return "?"


class Progress:
    """One line: scenario, peer, round, seconds left. On a terminal it is rewritten in place
    and counts down every second; otherwise one line per step (logs stay readable)."""

    def __init__(self, total):
        self.left, self.tty = total, sys.stderr.isatty()
        self.label, self.since = "", time.monotonic()
        self.lock = threading.Lock()
        if self.tty:
            threading.Thread(target=self._tick, daemon=True).start()

    def _line(self):
        left = max(0, self.left - (time.monotonic() - self.since))
        return f"[loadtest] {self.label} — about {int(left)} s left"

    def _tick(self):
        while True:
            time.sleep(1)
            with self.lock:
                if self.label:
                    sys.stderr.write("\r\033[K" + self._line())
                    sys.stderr.flush()

    def show(self, label):
        """A new step begins; the estimate left is the plan minus the time spent."""
        with self.lock:
            self.left = max(0, self.left - (time.monotonic() - self.since))
            self.label, self.since = label, time.monotonic()
            sys.stderr.write(("\r\033[K" if self.tty else "") + self._line()
                             + ("" if self.tty else "\n"))
            sys.stderr.flush()

    def skip(self, seconds):
        with self.lock:
            self.left = max(0, self.left - seconds)

    def note(self, msg):
        with self.lock:
            sys.stderr.write(("\r\033[K" if self.tty else "") + msg + "\n")
            if msg == "[loadtest] done":
                self.label = ""
            sys.stderr.flush()


def main():
    quick = os.environ.get("LOADTEST_QUICK", "") not in ("", "0")
    seconds = env_int("LOADTEST_DURATION", 2 if quick else 8)
    warmup = 1 if quick else 2
    rounds = env_int("LOADTEST_ROUNDS", 2)
    idle_conns = env_int("LOADTEST_IDLE_CONNS", 10000)
    run_bench = env_int("LOADTEST_BENCH", 1) != 0
    bench_args = os.environ.get("LOADTEST_BENCH_ARGS",
                                "-n 200000 -parked 100000" if quick else "").split()
    peer_names = env_list("LOADTEST_PEERS", list(peers.ALL))
    scen_names = env_list("LOADTEST_SCENARIOS", [s.name for s in SCENARIOS if s.default])
    scen_names = list(dict.fromkeys(x for n in scen_names for x in GROUPS.get(n, [n])))
    build = os.path.join(REPO, os.environ.get("BUILD", "build"))
    for n in peer_names:
        if n not in peers.ALL:
            sys.exit(f"loadtest: unknown peer {n!r} in LOADTEST_PEERS (have {', '.join(peers.ALL)})")
    for n in scen_names:
        if n not in BY_NAME:
            sys.exit(f"loadtest: unknown scenario {n!r} (have {', '.join(BY_NAME)})")

    for tool in ("wrk", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"loadtest: `{tool}` is not installed: {peers.MAKE_DEPS_HINT}")

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # children inherit it
    tls_idle_conns = env_int("LOADTEST_TLS_IDLE_CONNS", BY_NAME["https-idle"].conns)
    h2_idle_conns = env_int("LOADTEST_H2_IDLE_CONNS", BY_NAME["h2-idle"].conns)
    need = max([BY_NAME[s].conns for s in scen_names] + [idle_conns]) + 100
    if hard != resource.RLIM_INFINITY and hard < need:
        print(f"loadtest: the open-files hard limit ({hard}) is below {need}: the biggest "
              "scenarios will see connect errors", file=sys.stderr)

    lo, hi = map(int, sysctl("net.ipv4.ip_local_port_range").split())
    for n in scen_names:
        if BY_NAME[n].conns > (hi - lo + 1) * 3 // 4 and BY_NAME[n].kind != "idle":
            # wrk cannot bind a source address; idle_holder.py spreads over 127.0.0.x itself.
            print(f"loadtest: {n} opens {BY_NAME[n].conns} connections from one source "
                  f"address, which has {hi - lo + 1} ephemeral ports: expect connect errors",
                  file=sys.stderr)

    server_cpus, wrk_cpus, pinning, ncpu = pick_cpus()
    backend_cpus = pick_backend_cpus(wrk_cpus)
    threads = env_int("LOADTEST_THREADS", ncpu)
    tmp = tempfile.mkdtemp(prefix="greenhttp-loadtest-")
    ctx = SimpleNamespace(repo=REPO, build=build, tmp=tmp, threads=threads,
                          server_cpus=server_cpus, backend_cpus=backend_cpus,
                          backend_threads=cpu_count(backend_cpus), static_dir=None)
    if any(BY_NAME[s].static for s in scen_names):
        ctx.static_dir = peers.make_static_files(tmp)  # random bytes, served under /static/

    h2_skip = None  # why the h2load scenarios cannot run here (issue 17)
    if any(BY_NAME[s].client == "h2load" for s in scen_names):
        if not h2load.available() or shutil.which("curl") is None:
            h2_skip = h2load.INSTALL_HINT if not h2load.available() else \
                f"`curl` is not installed: {peers.H2_INSTALL_HINT}"
            print(f"loadtest: skipping the h2load scenarios: {h2_skip}", file=sys.stderr)
            scen_names = [s for s in scen_names if BY_NAME[s].client != "h2load"]

    tls_skip = None
    if any(BY_NAME[s].tls for s in scen_names):
        try:
            ctx.tls_dir = peers.make_cert(REPO, tmp)
            if any(BY_NAME[s].client == "tlsload" or BY_NAME[s].kind == "flood"
                   for s in scen_names):
                peers.build_go(ctx, "tlsload", wrk.tlsload_binary(build))
        except peers.PeerUnavailable as e:
            tls_skip = str(e)
            print(f"loadtest: skipping the HTTPS scenarios: {e}", file=sys.stderr)
            scen_names = [s for s in scen_names if not BY_NAME[s].tls]

    skipped, live = {}, []
    for name in peer_names:
        peer = peers.ALL[name](ctx)
        try:
            peer.prepare()
            live.append(peer)
        except peers.PeerUnavailable as e:
            skipped[name] = str(e)
            print(f"loadtest: skipping {name}: {e}", file=sys.stderr)

    taken = set()
    def per_peer(scen_name):  # planned seconds of one peer in one scenario
        scen = BY_NAME[scen_name]
        if scen.kind == "idle" and scen.h2:  # HTTP/1.1, then h2c, each on a fresh server
            return 2 * (3 + h2_idle_conns / 4000)
        if scen.kind == "idle":
            return 5 + tls_idle_conns / 500  # a full handshake per connection, one at a time
        lead = FLOOD_LEAD_S if scen.kind == "flood" else 0
        return warmup + 1 + rounds * (scen.seconds(seconds) + 0.7 + lead)

    total = sum(per_peer(s) for s in scen_names) * len(live) + \
        (len(live) * 4 if idle_conns else 0) + ((30 if quick else 150) if run_bench else 0)
    progress = Progress(total)
    runs, smoke, idle_results = [], {}, {}
    tls_idle, tls_info = {}, {}  # https-idle per peer; the negotiated version and cipher
    h2_idle = {}  # h2-idle: per peer, {"http1": idle figures, "h2c": idle figures}
    # Static scenarios: per scenario and peer, the RSS after start (before the warm-up) and,
    # in static-304, the revalidation header sent and its check (peers.revalidation).
    static_info = {}
    scripts = {s: wrk.script_for(BY_NAME[s], REPO, tmp) for s in scen_names}
    # The warm-up's script where it differs (static-304 counts statuses in its warm-up).
    warmup_scripts = {s: wrk.script_for(dataclasses.replace(
        BY_NAME[s], name=f"{s}-check", script=BY_NAME[s].check_script), REPO, tmp)
        for s in scen_names if BY_NAME[s].check_script}
    loadavg = open("/proc/loadavg").read().split()[:3]

    smoked = set()

    def start(peer):
        """Start a peer; on failure drop it from the run for good (with the reason)."""
        try:
            peer.start(free_port(taken))
            if peer.name not in smoked:
                smoked.add(peer.name)
                smoke.setdefault(peer.name, {}).update(peer.smoke())
            return True
        except peers.PeerUnavailable as e:
            skipped[peer.name] = str(e)
            live.remove(peer)
            progress.note(f"loadtest: skipping {peer.name}: {e}")
            return False

    fronts = []  # the running backend and fronts of a proxy/fanout scenario

    def start_fronts(scen):
        """The backend, then each live peer's front for the scenario (peers.FRONTS). A peer
        without one, or whose front cannot run here, sits the scenario out; its smoke entry
        says why, and so does the report."""
        backend = peers.Backend(ctx)
        try:
            backend.prepare()
            backend.start(free_port(taken))
        except peers.PeerUnavailable as e:
            progress.note(f"loadtest: {scen.name}: no backend: {e}")
            return []
        fronts.append(backend)
        started = []
        for base in live:
            result = smoke.setdefault(base.name, {})
            cls = peers.FRONTS[scen.front].get(base.name)
            front = cls(ctx) if cls else None
            try:
                if front is None:
                    raise peers.PeerUnavailable(f"no {scen.front} peer for {base.name}")
                front.upstream = backend.port
                front.prepare()
                front.start(free_port(taken))
            except peers.PeerUnavailable as e:
                result[scen.front] = f"skipped: {e}"
                progress.skip(per_peer(scen.name))
                continue
            fronts.append(front)
            result.update(front.smoke())
            started.append(front)
        return started

    def start_tls(scen):
        """Each live peer's HTTPS twin (peers.TLS_PEERS) on the run's certificate; in
        https-flood, greenhttp a second time with handshakes capped at twice its threads. Smoke results go
        under "tls:<route>" beside the plain ones."""
        names = [p.name for p in live if p.name in peers.TLS_PEERS]
        if scen.kind == "flood" and "greenhttp" in names:
            names.insert(names.index("greenhttp") + 1, "greenhttp-capped")
        started = []
        for name in names:
            result = smoke.setdefault(name, {})
            peer = peers.TLS_PEERS[name](ctx)
            try:
                peer.prepare()
                peer.start(free_port(taken))
            except peers.PeerUnavailable as e:
                result["tls:plaintext"] = f"skipped: {e}"
                progress.skip(per_peer(scen.name))
                continue
            fronts.append(peer)
            result.update({f"tls:{k}": v for k, v in peer.smoke().items()})
            tls_info[name] = getattr(peer, "negotiated", "?")
            started.append(peer)
        return started

    def start_h2(scen):
        """Each live peer's HTTP/2 twin (peers.H2_PEERS[scen.h2]); a peer with none (Go for
        h2c), or whose twin cannot run (a greenhttp without HTTP/2 yet), sits the scenario out
        and its smoke entry says why. Smoke results go under "h2:<route>" (TLS) or
        "h2c:<route>"."""
        prefix = "h2" if scen.h2 == "tls" else "h2c"
        started = []
        for base in live:
            result = smoke.setdefault(base.name, {})
            cls = peers.H2_PEERS[scen.h2].get(base.name)
            try:
                if cls is None:
                    raise peers.PeerUnavailable(peers.H2_MISSING.get(
                        base.name, f"no HTTP/2 twin of {base.name}"))
                peer = cls(ctx)
                peer.prepare()
                peer.start(free_port(taken))
            except peers.PeerUnavailable as e:
                result[f"{prefix}:plaintext"] = f"skipped: {e}"
                progress.note(f"loadtest: {scen.name}: {base.name} skipped: {e}")
                progress.skip(per_peer(scen.name))
                continue
            fronts.append(peer)
            result.update({f"{prefix}:{k}": v for k, v in peer.smoke().items()})
            started.append(peer)
        return started

    def run_h2_idle(scen):
        """h2-idle: per peer with an h2c twin, memory per idle connection twice, each on a
        fresh server: HTTP/1.1 (the plain peer, idle_holder.py as in the idle phase) and h2c
        (its HTTP/2 twin, idle_holder.py --h2c: preface and SETTINGS only)."""
        for base in list(live):
            res = h2_idle.setdefault(base.name, {})
            cls = peers.H2_PEERS["h2c"].get(base.name)
            if cls is None:
                res["skipped"] = peers.H2_MISSING.get(base.name, f"no h2c twin of {base.name}")
                progress.skip(per_peer(scen.name))
                continue
            for label, make in (("http1", peers.ALL[base.name]), ("h2c", cls)):
                peer = make(ctx)
                try:
                    peer.prepare()
                    peer.start(free_port(taken))
                except peers.PeerUnavailable as e:
                    res[label] = {"error": f"skipped: {e}"}
                    progress.note(f"loadtest: {scen.name} {base.name} {label}: {e}")
                    continue
                fronts.append(peer)
                progress.show(f"{scen.name} x{h2_idle_conns} | {base.name} | {label}")
                res[label] = idle.measure(peer, REPO, h2_idle_conns, h2c=(label == "h2c"))
                peer.stop()
                fronts.remove(peer)
                if "error" in res[label]:
                    progress.note(f"loadtest: {scen.name} {base.name} {label}: "
                                  f"{res[label]['error']}")

    def route_key(scen, route):
        """A route's key in a peer's smoke results for the scenario's kind of server."""
        if scen.h2:
            return f"{'h2' if scen.h2 == 'tls' else 'h2c'}:{route}"
        return f"tls:{route}" if scen.tls else route

    def run_flood(scen, runnable):
        """tlsload -keepalive on scen.conns connections, opened first, then measured for the
        run's seconds while a second tlsload floods the same server with new connections
        (full handshakes) from FLOOD_LEAD_S before to after it; the flood's own rate rides
        along in the run's figures."""
        flood = dataclasses.replace(scen, conns=FLOOD_CONNS, kind="load")
        for rnd in range(1, rounds + 1):
            for p in runnable:
                progress.show(f"{scen.name} | {p.name} | round {rnd}/{rounds}")
                procs = [subprocess.Popen(
                    wrk.command(scen, p.port, seconds, wrk_cpus, "", build=build)
                    + ["-lead", f"{FLOOD_LEAD_S}s"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)]
                try:
                    first = procs[0].stdout.readline()  # its connections are established
                    if first.strip() == "ESTABLISHED":
                        procs.append(subprocess.Popen(
                            wrk.command(flood, p.port, seconds + 2 * FLOOD_LEAD_S, wrk_cpus, "",
                                        build=build),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
                    outs = [q.communicate(timeout=seconds + 60) for q in procs]
                finally:
                    for q in procs:
                        if q.poll() is None:
                            q.kill()
                            q.wait()
                r = wrk.parse(procs[0].returncode, *outs[0])
                if len(outs) > 1:
                    f = wrk.parse(procs[1].returncode, *outs[1])
                    if "error" in f:
                        r["flood_error"] = f["error"]
                    else:
                        r["flood_rps"], r["flood_errors"] = f["rps"], f["socket_errors"]
                if "error" not in r:
                    r.update(cpu_s=0.0, peak_rss=0)  # shared by both loads: not reported
                r.update(scenario=scen.name, peer=p.name, round=rnd)
                runs.append(r)
                if "error" in r:
                    progress.note(f"loadtest: {scen.name} {p.name}: {r['error']}")
                time.sleep(0.5)

    try:
        for scen_name in scen_names:
            scen = BY_NAME[scen_name]
            if scen.kind == "idle" and scen.h2:
                run_h2_idle(scen)
                fronts.clear()
                continue
            if scen.kind == "idle":
                for p in start_tls(scen):
                    progress.show(f"{scen_name} x{tls_idle_conns} | {p.name}")
                    tls_idle[p.name] = idle.measure(p, REPO, tls_idle_conns, tls=True)
                    p.stop()
                    if "error" in tls_idle[p.name]:
                        progress.note(f"loadtest: {scen_name} {p.name}: "
                                      f"{tls_idle[p.name]['error']}")
                fronts.clear()
                continue
            if scen.front:
                active = start_fronts(scen)
            elif scen.h2:
                active = start_h2(scen)
            elif scen.tls:
                active = start_tls(scen)
            else:
                active = [p for p in list(live) if start(p)]
            runnable = []
            for p in active:
                bad = [r for r in scen.needs if smoke[p.name].get(route_key(scen, r)) != "ok"]
                if bad:
                    key = route_key(scen, bad[0])
                    progress.note(f"loadtest: {scen_name}: {p.name} skipped, /{bad[0]}: "
                                  f"{smoke[p.name].get(key)}")
                    progress.skip(per_peer(scen_name))
                    p.stop()
                else:
                    runnable.append(p)
            if scen.kind == "flood":
                run_flood(scen, runnable)
                runnable = []
            headers = {}  # per peer: static-304's revalidation header
            for p in runnable if scen.static else []:
                info = static_info.setdefault(scen_name, {}).setdefault(p.name, {})
                info["rss_idle"] = procfs.rss_bytes(p.pids())
                if scen.revalidate:
                    info.update(peers.revalidation(p, scen.path))
                    headers[p.name] = (info["header"],)
                    if info["check"] != "ok":
                        progress.note(f"loadtest: {scen_name}: {p.name}: {info['check']}")
            for p in runnable:
                progress.show(f"{scen_name} | {p.name} | warm-up")
                w = subprocess.run(wrk.command(scen, p.port, warmup, wrk_cpus,
                                               warmup_scripts.get(scen_name, scripts[scen_name]),
                                               floor=False, build=build,
                                               headers=headers.get(p.name, ())),
                                   capture_output=True, text=True, timeout=warmup + 60)
                if scen.check_script:  # the warm-up's status counts
                    wr = wrk.parse(w.returncode, w.stdout, w.stderr)
                    static_info[scen_name][p.name].update(
                        warmup_statuses=wr.get("statuses"), warmup_requests=wr.get("requests"),
                        warmup_error=wr.get("error"))
                time.sleep(0.5)
            for rnd in range(1, rounds + 1):
                for p in runnable:
                    progress.show(f"{scen_name} | {p.name} | round {rnd}/{rounds}")
                    r = wrk.measure(p, scen, seconds, wrk_cpus, scripts[scen_name],
                                    headers=headers.get(p.name, ()))
                    r.update(scenario=scen_name, peer=p.name, round=rnd)
                    runs.append(r)
                    if "error" in r:
                        progress.note(f"loadtest: {scen_name} {p.name}: {r['error']}")
                    time.sleep(0.5)
            for p in runnable + fronts:
                p.stop()
            fronts.clear()

        if idle_conns:
            for p in list(live):
                progress.show(f"idle connections x{idle_conns} | {p.name}")
                if not start(p):
                    continue
                idle_results[p.name] = idle.measure(p, REPO, idle_conns)
                p.stop()
                if "error" in idle_results[p.name]:
                    progress.note(f"loadtest: idle {p.name}: {idle_results[p.name]['error']}")

        bench_result = None
        if run_bench:
            progress.show("runtime microbenchmarks (greenrt, then Go)")
            bench_result = bench.run(ctx, bench_args, server_cpus)
    finally:
        for p in live + fronts:
            p.stop()

    progress.note("[loadtest] done")
    loadavg_after = open("/proc/loadavg").read().split()[:3]
    now = datetime.datetime.now()
    host = socket.gethostname().split(".")[0]
    out_dir = os.path.join(REPO, "loadtest", "results")
    os.makedirs(out_dir, exist_ok=True)
    # Runs that leave out scenarios or peers, or change the run length, must not overwrite the
    # report of a complete run.
    custom = any(os.environ.get(v, "").strip() for v in (
        "LOADTEST_PEERS", "LOADTEST_SCENARIOS", "LOADTEST_DURATION", "LOADTEST_ROUNDS",
        "LOADTEST_IDLE_CONNS", "LOADTEST_BENCH", "LOADTEST_BENCH_ARGS",
        "LOADTEST_TLS_IDLE_CONNS", "LOADTEST_H2_IDLE_CONNS", "LOADTEST_H2LOAD_THREADS"))
    stem = f"{now:%Y-%m-%d}-{host}" + ("-quick" if quick else "") + ("-custom" if custom else "")
    base = os.path.join(out_dir, stem)
    names = [p for p in peer_names if p not in skipped]

    commands = [f"# {p}: {peers.ALL[p](ctx).display()}" for p in names]
    commands.append(f"# wrk (in loadtest/wrk/, each script with report.lua appended) and "
                    f"h2load, pinned with taskset -c {wrk_cpus}:")
    commands += [wrk.display_command(BY_NAME[s], seconds) for s in scen_names
                 if BY_NAME[s].kind != "idle"]
    if any(BY_NAME[s].tls and not BY_NAME[s].h2 for s in scen_names):
        commands.append("# HTTPS scenarios: every peer on one certificate, "
                        "config/tls/make-cert.sh TMP/tls (TMP/tls/server.pem, server.key):")
        for p in list(names) + (["greenhttp-capped"] if "https-flood" in scen_names else []):
            if p in peers.TLS_PEERS:
                commands.append(f"# {p}, HTTPS: "
                                + peers.TLS_PEERS[p](ctx).display().replace(ctx.tls_dir,
                                                                            "TMP/tls"))
    if "https-flood" in scen_names:
        commands.append(f"# https-flood, once the run above has printed ESTABLISHED, from "
                        f"{FLOOD_LEAD_S} s before its measurement to after it:")
        commands.append(wrk.display_command(dataclasses.replace(
            BY_NAME["https-flood"], conns=FLOOD_CONNS, kind="load"),
            seconds + 2 * FLOOD_LEAD_S))
    kinds = list(dict.fromkeys(BY_NAME[s].front for s in scen_names if BY_NAME[s].front))
    if kinds:
        commands.append("# the proxy/fanout backend, then each front, upstream BACKEND:")
        commands.append(peers.Backend(ctx).display().replace("PORT", "BACKEND"))
    for kind in kinds:
        for p in names:
            if p in peers.FRONTS[kind]:
                front = peers.FRONTS[kind][p](ctx)
                front.upstream = "BACKEND"
                commands.append(f"# {kind}, {p}: {front.display()}")
    for mode in dict.fromkeys(BY_NAME[s].h2 for s in scen_names if BY_NAME[s].h2):
        what = "h2 over TLS, TMP/tls as above" if mode == "tls" else "h2c"
        for p in names:
            if p in peers.H2_PEERS[mode]:
                commands.append(f"# {p}, HTTP/2 ({what}): " + peers.H2_PEERS[mode][p](ctx)
                                .display().replace(getattr(ctx, "tls_dir", "TMP/tls"),
                                                   "TMP/tls"))
    if "h2-idle" in scen_names:
        commands.append(f"python3 loadtest/idle_holder.py --port PORT --count {h2_idle_conns}"
                        "   # HTTP/1.1, on the plain peer")
        commands.append(f"python3 loadtest/idle_holder.py --port PORT --count {h2_idle_conns} "
                        "--h2c   # on its h2c twin")
    if idle_conns:
        commands.append(f"python3 loadtest/idle_holder.py --port PORT --count {idle_conns}")
    if "https-idle" in scen_names:
        commands.append(f"python3 loadtest/idle_holder.py --port PORT --count {tls_idle_conns} "
                        "--tls")
    meta = {
        "date": f"{now:%Y-%m-%d %H:%M}", "host": host, "quick": quick,
        "command": " ".join([f"{v}={os.environ[v]}" for v in sorted(os.environ)
                             if v.startswith("LOADTEST_")] + ["make loadtest"]),
        "rounds": rounds, "seconds": seconds, "warmup": warmup,
        "peers": names, "scenarios": scen_names,
        "cpu": first_line("/proc/cpuinfo", "model name"), "nproc": os.cpu_count(),
        "mem": f"{int(first_line('/proc/meminfo', 'MemTotal').split()[0]) / 2**20:.0f} GiB RAM",
        "os": first_line("/etc/os-release", "PRETTY_NAME").strip().strip('"'),
        "kernel": platform.release(),
        "loadavg": f"{' '.join(loadavg)} before, {' '.join(loadavg_after)} after",
        "sysctl": ", ".join(f"{k} {sysctl(k)}" for k in (
            "net.core.somaxconn", "net.ipv4.tcp_max_syn_backlog", "net.ipv4.tcp_tw_reuse")),
        "server_cpus": server_cpus, "wrk_cpus": wrk_cpus, "pinning": pinning,
        "backend_cpus": backend_cpus,
        "threads": threads, "nofile": hard,
        "port_range": "–".join(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()),
        "wrk_version": subprocess.run(["wrk", "-v"], capture_output=True,
                                      text=True).stdout.splitlines()[0].split(" Copyright")[0],
        "python": platform.python_version(),
        "versions": {p: peers.ALL[p](ctx).version() for p in names},
        "peer_commands": {p: peers.ALL[p](ctx).display() for p in names},
        "idle_conns": idle_conns, "commands": commands,
        "tls_idle_conns": tls_idle_conns, "tls_skip": tls_skip, "flood_conns": FLOOD_CONNS,
        "h2_idle_conns": h2_idle_conns, "h2_skip": h2_skip, "h2load_threads": h2load.threads(),
        "h2load_version": (subprocess.run(["h2load", "--version"], capture_output=True,
                                          text=True).stdout.strip() if h2load.available()
                           else None),
    }
    shutil.rmtree(tmp, ignore_errors=True)
    render(base, {"meta": meta, "skipped": skipped, "smoke": smoke, "runs": runs,
                  "idle": idle_results, "bench": bench_result, "tls_idle": tls_idle,
                  "tls_info": tls_info, "static_info": static_info, "h2_idle": h2_idle})


def render(base, data, write_json=True):
    """Writes base.md, base-*.png and (unless re-rendering) base.json from one run's data."""
    meta, runs, idle_results = data["meta"], data["runs"], data["idle"]
    names = meta.get("peers") or list(meta["versions"])
    scen_names = meta.get("scenarios") or list(dict.fromkeys(r["scenario"] for r in runs))
    summary = report.summarise(runs)
    loads = [s for s in scen_names if s in BY_NAME and BY_NAME[s].kind == "load"]
    pngs, chart_err = charts.draw(summary, names, loads, base) if loads else ([], None)
    if chart_err:
        print(f"loadtest: {chart_err}", file=sys.stderr)
    chart_refs = [{"file": os.path.basename(p),
                   "title": charts.TITLES[p[len(base) + 1:-4]]} for p in pngs]
    report.write(base + ".md", meta, names, data["skipped"], data["smoke"], summary,
                 idle_results, data["bench"], chart_refs, scen_names,
                 data.get("tls_idle"), data.get("tls_info"), data.get("static_info"),
                 data.get("h2_idle"))
    if write_json:
        with open(base + ".json", "w") as f:
            json.dump(data, f, indent=1, default=str)
    print(f"loadtest: report {os.path.relpath(base + '.md', REPO)}"
          + (f", charts {', '.join(os.path.relpath(p, REPO) for p in pngs)}" if pngs else ""))
    for scen in scen_names:
        if scen not in summary:
            continue
        cells = [f"{p} {summary[scen][p]['rps'] / 1000:.1f}K"
                 for p in names if "rps" in summary.get(scen, {}).get(p, {})]
        print(f"  {scen:<10} " + "  ".join(cells))
    for p, r in idle_results.items():
        if "per_conn" in r:
            print(f"  idle       {p} {r['per_conn'] / 1000:.1f} KB/connection")
    for p, r in (data.get("tls_idle") or {}).items():
        if "per_conn" in r:
            print(f"  https-idle {p} {r['per_conn'] / 1000:.1f} KB/connection")
    for p, res in (data.get("h2_idle") or {}).items():
        cells = [f"{label} {res[label]['per_conn'] / 1000:.1f} KB/connection"
                 for label in ("http1", "h2c") if "per_conn" in res.get(label, {})]
        if cells:
            print(f"  h2-idle    {p} " + ", ".join(cells))


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--render":
        # Re-write a report and its charts from a run's .json, without running anything.
        with open(sys.argv[2]) as f:
            render(sys.argv[2][:-len(".json")], json.load(f), write_json=False)
    elif len(sys.argv) > 1:
        sys.exit("usage: compare.py (settings in the environment, see above) | "
                 "compare.py --render results/<run>.json")
    else:
        main()
