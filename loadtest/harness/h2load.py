"""The HTTP/2 scenarios' client (issue 17): nghttp2's h2load (Debian nghttp2-client), its
command line and the figures of its summary.

h2load runs -t1 (as wrk does; LOADTEST_H2LOAD_THREADS overrides) for the run's seconds (-D),
with -c connections of -m concurrent streams each. Over TLS it is told to negotiate h2 and
nothing else (--npn-list=h2: its default list ends in http/1.1, and an HTTP/1.1-only server
would otherwise be measured as pipelined HTTP/1.1); on http:// it speaks h2c with prior
knowledge (its default). No --warm-up-time: with one, h2load counts the status of a stream
whose headers came before the measured window ends nowhere, and its data bytes where it
likes (measured: more data than traffic); without, its counts agree and the harness's own
warm-up run warms the server. The connections' setup is inside the window, as with wrk.

h2load exits 0 even when every request failed, so nothing is taken from its exit status: the
summary is parsed, and a run counts only if every request done succeeded, no status but 2xx
was seen, nothing errored or timed out, and the negotiated protocol is h2 (TLS) or h2c. A
peer that answers errors, or HTTP/1.1, is reported with what went wrong, never as fast.
h2load has no latency percentiles (its --log-file writes one line per request with one
write(2) each, which would load the client): the latency figures are its "time for request"
mean, standard deviation and maximum.
"""

import os
import re
import shutil

from .peers import STATIC_FILES

INSTALL_HINT = ("h2load is not installed: `apt-get install nghttp2-client` (Debian 12: "
                "nghttp2 1.52)")


def available():
    return shutil.which("h2load") is not None


def threads():
    v = os.environ.get("LOADTEST_H2LOAD_THREADS", "").strip()
    return int(v) if v else 1


def url(scenario, port):
    scheme = "https" if scenario.h2 == "tls" else "http"
    return f"{scheme}://127.0.0.1:{port}{scenario.path}"


def command(scenario, port, seconds, cpus):
    argv = ["taskset", "-c", cpus, "h2load", f"-c{scenario.conns}", f"-m{scenario.streams}",
            f"-t{threads()}", "-D", str(seconds)]
    if scenario.h2 == "tls":
        argv.append("--npn-list=h2")
    return argv + [url(scenario, port)]


def display_command(scenario, seconds):
    return " ".join(command(scenario, "PORT", seconds, "X")[3:])


_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def _duration_us(text):
    m = re.fullmatch(r"([0-9.]+)(us|ms|s)", text.strip())
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse(scenario, seconds, returncode, stdout, stderr):
    """h2load's summary -> the figures wrk.parse gives (requests, rps, bytes, bytes_per_s,
    socket_errors, status) plus h2load's own; an "error" key says why the run does not count
    (with the figures kept, so the report can show what the peer did)."""
    out = stdout + "\n" + stderr
    tail = " | ".join((stderr.strip() or stdout.strip()).splitlines()[-3:])

    def grab(pattern):
        m = re.search(pattern, stdout, re.M)
        return m.groups() if m else None

    req = grab(r"^requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
               r"(\d+) failed, (\d+) errored, (\d+) timeout")
    codes = grab(r"^status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
    traffic = grab(r"^traffic: \S+ \((\d+)\) total, \S+ \((\d+)\) headers .*?, \S+ \((\d+)\) "
                   r"data")
    finished = grab(r"^finished in ([0-9.]+(?:us|ms|s)), ([0-9.]+) req/s")
    if not (req and codes and traffic and finished):
        return {"error": f"h2load exited {returncode} without a summary: {tail}"}
    total, started, done, succeeded, failed, errored, timeout = map(int, req)
    n2xx, n3xx, n4xx, n5xx = map(int, codes)
    nbytes, header_bytes, data_bytes = map(int, traffic)
    r = {"client": "h2load", "requests": done, "started": started, "succeeded": succeeded,
         "failed": failed, "errored": errored, "timeouts": timeout,
         "statuses": {"2xx": n2xx, "3xx": n3xx, "4xx": n4xx, "5xx": n5xx},
         "bytes": nbytes, "header_bytes": header_bytes, "data_bytes": data_bytes,
         "duration_us": seconds * 1e6, "wall_us": _duration_us(finished[0]),
         "h2load_rps": float(finished[1])}
    # h2load's req/s is succeeded over -D (not over its wall time): so are these.
    r["rps"] = succeeded / seconds
    r["bytes_per_s"] = nbytes / seconds
    r["socket_errors"] = errored  # connections refused or reset, protocol errors, timeouts
    r["status"] = n3xx + n4xx + n5xx  # the column "non-2xx"
    for key, field in (("protocol", r"^Application protocol: (\S+)"),
                       ("tls_protocol", r"^TLS Protocol: (\S+)"), ("cipher", r"^Cipher: (\S+)")):
        m = re.search(field, stdout, re.M)
        r[key] = m.group(1) if m else None
    t = grab(r"^time for request:\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)")
    if t:
        r["min_us"], r["max_us"], r["mean_us"], r["sd_us"] = map(_duration_us, t)
    # No percentiles from h2load (see above): the report shows mean and max instead.
    r["p50_us"] = r["p99_us"] = r["p999_us"] = None

    problems = []
    want = "h2" if scenario.h2 == "tls" else "h2c"
    if r["protocol"] != want:
        problems.append(f"negotiated {r['protocol'] or 'no protocol'}, not {want}")
    if done == 0:
        problems.append("no request done")
    if succeeded != done:
        problems.append(f"{done - succeeded} of {done} requests done did not succeed")
    if n3xx + n4xx + n5xx:
        problems.append(f"non-2xx answers: {n3xx} 3xx, {n4xx} 4xx, {n5xx} 5xx")
    if errored or timeout or failed:
        problems.append(f"{failed} failed, {errored} errored, {timeout} timed out")
    if scenario.static:
        size = STATIC_FILES.get(scenario.static)
        # Every stream done carried the whole file; the bytes of streams still open at the
        # end count too, so data can only exceed this.
        if size and data_bytes < succeeded * size:
            problems.append(f"{data_bytes} data bytes for {succeeded} answers of {size} bytes")
    if "No protocol negotiated" in out:
        problems.append("no protocol negotiated (the server offered no h2 in ALPN)")
    if problems:
        r["error"] = "h2load: " + "; ".join(dict.fromkeys(problems))
    if succeeded == 0:  # nothing to show: a failed row, not a 0 requests/s one
        return {"error": r["error"]}
    return r

