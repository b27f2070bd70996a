"""PNG charts of a run with gnuplot (Debian gnuplot-nox), one cluster of bars per row, one
bar per peer: requests/s, p99 latency and server CPU per request for every scenario, and the
latency percentiles of the keep-alive plaintext scenario."""

import math
import os
import shutil
import subprocess

COLOURS = {"greenhttp": "#2e9e4f", "greenhttp-base": "#9fd8ad", "go": "#2a7ab9",
           "nginx": "#8c8c8c"}

SCENARIO_CHARTS = [  # (file suffix, figure key, scale, y label, log scale)
    # Log scale: pipelined runs at ten times the others, and equal ratios look equal.
    ("throughput", "rps", 1e-3, "thousand requests/s, log scale (higher is better)", True),
    ("latency", "p99_us", 1e-3, "p99 latency, ms, log scale (lower is better)", True),
    ("cpu", "cpu_us_per_req", 1.0, "server CPU per request, us (lower is better)", False),
]
PERCENTILES = [("p50", "p50_us"), ("p99", "p99_us"), ("p99.9", "p999_us")]
TITLES = {"throughput": "requests per second", "latency": "p99 latency",
          "cpu": "server CPU per request", "percentiles": "plaintext latency percentiles"}


def _plot(base, suffix, rows, peers, ylabel, log):
    """rows: [(label, {peer: value or None})]; writes base-suffix.png; returns an error or None."""
    dat, png = f"{base}-{suffix}.dat", f"{base}-{suffix}.png"
    values = [v for _, row in rows for v in row.values() if v]
    with open(dat, "w") as f:
        f.write("row " + " ".join(peers) + "\n")
        for label, row in rows:
            f.write(label + " " + " ".join("?" if row.get(p) is None else f"{row[p]:.4g}"
                                           for p in peers) + "\n")
    plots = ", ".join(
        f'"{dat}" using {i + 2}{":xtic(1)" if i == 0 else ""} title columnheader({i + 2})'
        f' lc rgb "{COLOURS.get(p, "#c07020")}"' for i, p in enumerate(peers))
    # On a log scale bars grow from the bottom of the range: start a decade below the least.
    bottom = 10 ** math.floor(math.log10(min(values))) if log and values else 0
    script = f"""
set terminal pngcairo size 1100,520 font "sans,11"
set output "{png}"
set title "{os.path.basename(base)}: {TITLES[suffix]}"
set datafile missing "?"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key outside top center horizontal
set ylabel "{ylabel}"
set yrange [{bottom}:*]
{'set logscale y' if log else ''}
plot {plots}
"""
    p = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True)
    os.unlink(dat)
    return None if p.returncode == 0 else f"gnuplot failed: {p.stderr.strip()[:200]}"


def draw(summary, peers, scenarios, base):
    """summary[scenario][peer] -> figures; writes base-<chart>.png; returns (paths, error)."""
    if shutil.which("gnuplot") is None:
        return [], "gnuplot is not installed (run `make deps`): no charts"
    written = []
    for suffix, key, scale, ylabel, log in SCENARIO_CHARTS:
        rows = []
        for s in scenarios:
            row = {}
            for p in peers:
                v = summary.get(s, {}).get(p, {}).get(key)
                row[p] = None if v is None else v * scale
            rows.append((s, row))
        if not any(v for _, row in rows for v in row.values()):
            continue  # no scenario has the figure (h2load gives no p99): no chart
        err = _plot(base, suffix, rows, peers, ylabel, log)
        if err:
            return written, err
        written.append(f"{base}-{suffix}.png")
    if "plaintext" in scenarios:
        rows = [(label, {p: (summary["plaintext"].get(p, {}).get(key) or 0) / 1000 or None
                         for p in peers}) for label, key in PERCENTILES]
        err = _plot(base, "percentiles", rows, peers,
                    "plaintext c=100 latency, ms, log scale (lower is better)", True)
        if err:
            return written, err
        written.append(f"{base}-percentiles.png")
    return written, None
