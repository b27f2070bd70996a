"""One wrk run against one peer, measured: wrk's own figures (from report.lua's LOADTEST line)
plus the server's CPU time and peak RSS over exactly the run (from /proc)."""

import json
import os
import subprocess

from . import h2load, procfs


def script_for(scenario, repo, tmp):
    """The scenario's script with report.lua appended, written under tmp; returns its path."""
    wrk_dir = os.path.join(repo, "loadtest", "wrk")
    parts = [os.path.join(wrk_dir, scenario.script)] if scenario.script else []
    parts.append(os.path.join(wrk_dir, "report.lua"))
    path = os.path.join(tmp, f"{scenario.name}.lua")
    with open(path, "w") as out:
        for p in parts:
            with open(p) as f:
                out.write(f.read() + "\n")
    return path


def tlsload_binary(build):
    """loadtest/peers/tlsload, built by compare.py (peers.build_go) into the build tree."""
    return os.path.join(build, "loadtest", "tlsload")


def command(scenario, port, seconds, wrk_cpus, script, floor=True, build="build", headers=()):
    """wrk's argv (or tlsload's, for client="tlsload"); floor=False (warm-ups) ignores the
    scenario's minimum run length; headers: -H for this peer alone (static-304's validator)."""
    if floor:
        seconds = scenario.seconds(seconds)
    if scenario.client == "h2load":
        return h2load.command(scenario, port, seconds, wrk_cpus)
    if scenario.client == "tlsload":
        return ["taskset", "-c", wrk_cpus, tlsload_binary(build), "-addr", f"127.0.0.1:{port}",
                "-path", scenario.path, "-c", str(scenario.conns), "-d", f"{seconds}s",
                *(["-keepalive"] if scenario.kind == "flood" else [])]
    scheme = "https" if scenario.tls else "http"
    argv = ["taskset", "-c", wrk_cpus, "wrk", "-t1", f"-c{scenario.conns}", f"-d{seconds}s",
            "--latency", "-s", script]
    for h in (*scenario.headers, *headers):
        argv += ["-H", h]
    argv.append(f"{scheme}://127.0.0.1:{port}{scenario.path}")
    if scenario.args:
        argv += ["--", *scenario.args]
    return argv


def display_command(scenario, seconds):
    """The command as a person would type it in loadtest/wrk/ (no taskset, PORT unfilled)."""
    seconds = scenario.seconds(seconds)
    if scenario.client == "h2load":
        return h2load.display_command(scenario, seconds)
    if scenario.client == "tlsload":
        return (f"build/loadtest/tlsload -addr 127.0.0.1:PORT -path {scenario.path} "
                f"-c {scenario.conns} -d {seconds}s"
                + (" -keepalive" if scenario.kind == "flood" else ""))
    s = f"wrk -t1 -c{scenario.conns} -d{seconds}s --latency"
    if scenario.script:
        s += f" -s {scenario.script}"
    s += "".join(f" -H '{h}'" for h in scenario.headers)
    if scenario.revalidate:
        s += " -H 'If-None-Match: ETAG'"
    s += f" {'https' if scenario.tls else 'http'}://127.0.0.1:PORT{scenario.path}"
    if scenario.args:
        s += " -- " + " ".join(scenario.args)
    return s


def parse(returncode, stdout, stderr):
    """The figures of a finished wrk (or tlsload) run from its LOADTEST line."""
    line = next((l for l in stdout.splitlines() if l.startswith("LOADTEST ")), None)
    if returncode != 0 or line is None:
        tail = (stderr.strip() or stdout.strip()).splitlines()[-3:]
        return {"error": f"wrk exited {returncode}: {' | '.join(tail)}"}
    r = json.loads(line[len("LOADTEST "):])
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    r["socket_errors"] = r["connect"] + r["read"] + r["write"] + r["timeout"]
    r["bytes_per_s"] = r["bytes"] / (r["duration_us"] / 1e6)
    return r


def measure(peer, scenario, seconds, wrk_cpus, script, headers=()):
    """Run wrk once; returns a dict of figures, or one with an "error" key."""
    seconds = scenario.seconds(seconds)
    pids = peer.pids()
    argv = command(scenario, peer.port, seconds, wrk_cpus, script, build=peer.ctx.build,
                   headers=headers)
    cpu0 = procfs.cpu_seconds(pids)
    with procfs.PeakRss(pids) as rss:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            return {"error": f"wrk did not finish within {seconds + 60} s"}
    cpu1 = procfs.cpu_seconds(pids)
    if scenario.client == "h2load":  # h2load's summary; figures kept beside an "error"
        r = h2load.parse(scenario, seconds, p.returncode, p.stdout, p.stderr)
        if "requests" not in r:
            return r
    else:
        r = parse(p.returncode, p.stdout, p.stderr)
        if "error" in r:
            return r
    r["cpu_s"] = cpu1 - cpu0
    r["cpu_us_per_req"] = (r["cpu_s"] * 1e6 / r["requests"]) if r["requests"] else None
    r["peak_rss"] = rss.peak
    # The tree's RSS as wrk started and as it ended (issue 16: flat while a file streams).
    r["rss_start"], r["rss_end"] = rss.start, rss.end
    if scenario.rss_trace:
        r["rss_samples"] = rss.samples
    if peer.proc.poll() is not None:
        r["error"] = "; ".join(filter(None, (
            f"{peer.name} died during the run (exit status {peer.proc.returncode})",
            r.get("error"))))
    return r
