"""PNG charts of a run with gnuplot (Debian gnuplot-nox): requests/s, p99 latency and server
CPU per request, one cluster of bars per scenario, one bar per peer."""

import os
import shutil
import subprocess

COLOURS = {"greenhttp": "#2e9e4f", "go": "#2a7ab9", "nginx": "#8c8c8c"}

CHARTS = [  # (file suffix, figure key, scale, y label, log scale)
    ("throughput", "rps", 1e-3, "thousand requests/s (higher is better)", False),
    ("latency", "p99_us", 1e-3, "p99 latency, ms, log scale (lower is better)", True),
    ("cpu", "cpu_us_per_req", 1.0, "server CPU per request, us (lower is better)", False),
]


def draw(summary, peers, scenarios, base):
    """summary[scenario][peer] -> figures dict; writes base-<chart>.png; returns the paths."""
    if shutil.which("gnuplot") is None:
        return [], "gnuplot is not installed (run `make deps`): no charts"
    written = []
    for suffix, key, scale, ylabel, log in CHARTS:
        dat = f"{base}-{suffix}.dat"
        with open(dat, "w") as f:
            f.write("scenario " + " ".join(peers) + "\n")
            for s in scenarios:
                row = []
                for p in peers:
                    v = summary.get(s, {}).get(p, {}).get(key)
                    row.append("?" if v is None else f"{v * scale:.4g}")
                f.write(s + " " + " ".join(row) + "\n")
        png = f"{base}-{suffix}.png"
        plots = ", ".join(
            f'"{dat}" using {i + 2}{":xtic(1)" if i == 0 else ""} title columnheader({i + 2})'
            f' lc rgb "{COLOURS.get(p, "#c07020")}"' for i, p in enumerate(peers))
        script = f"""
set terminal pngcairo size 1100,520 font "sans,11"
set output "{png}"
set title "{os.path.basename(base)}: {ylabel}"
set datafile missing "?"
set style data histogram
set style histogram clustered gap 1
set style fill solid 0.85 border -1
set boxwidth 0.9
set grid ytics
set key top right
set ylabel "{ylabel}"
set yrange [{'0.01' if log else '0'}:*]
{'set logscale y' if log else ''}
plot {plots}
"""
        p = subprocess.run(["gnuplot"], input=script, capture_output=True, text=True)
        os.unlink(dat)
        if p.returncode != 0:
            return written, f"gnuplot failed: {p.stderr.strip()[:200]}"
        written.append(png)
    return written, None
