"""The runtime microbenchmarks side by side: build/bench/runtime_bench (greenrt) and
loadtest/peers/go-micro (Go), the same shapes `make bench` runs, parsed from their
`BENCH <name> <value> <unit>` lines."""

import os
import shutil
import subprocess

FIGURES = [  # (name, what, goal as greenrt/Go ratio or absolute, lower is better)
    ("spawn_join_ns", "spawn + run + join, per green thread", "<= 0.25x Go"),
    ("pingpong_rt_ns", "unbuffered channel ping-pong round trip", "<= 0.5x Go"),
    ("yield_ns", "yield (Gosched)", ""),
    ("echo_rt_us", "1 KiB TCP echo round trip, 100 connections", ""),
    ("sleep_wake_us", "lateness of a 1 ms sleep", ""),
    ("parked_bytes", "RSS per parked green thread", "<= 4.5 KB"),
]


def parse(text):
    out = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 3 and f[0] == "BENCH":
            out[f[1]] = (float(f[2]), f[3] if len(f) > 3 else "")
    return out


def run(ctx, args, cpus):
    """{"greenrt": {...}, "go": {...}, "commands": [...], "errors": [...]}"""
    result = {"greenrt": {}, "go": {}, "commands": [], "errors": []}
    bench = os.path.join(ctx.build, "bench", "runtime_bench")
    env = dict(os.environ, GREEN_MAXPROCS=str(ctx.threads), GOMAXPROCS=str(ctx.threads))
    if os.access(bench, os.X_OK):
        argv = ["taskset", "-c", cpus, bench] + args
        result["commands"].append(f"GREEN_MAXPROCS={ctx.threads} " + " ".join(argv))
        p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
        result["greenrt"] = parse(p.stdout)
        if p.returncode:
            result["errors"].append(f"runtime_bench exited {p.returncode}")
    else:
        result["errors"].append(f"{bench} is not built: run `make build`")
    if shutil.which("go"):
        gomicro = os.path.join(ctx.build, "gomicro")
        src = os.path.join(ctx.repo, "loadtest", "peers", "go-micro")
        b = subprocess.run(["go", "build", "-o", gomicro, "."], cwd=src, capture_output=True,
                           text=True, env=dict(env, GOPROXY="off", GOFLAGS="-mod=mod"))
        if b.returncode == 0:
            argv = ["taskset", "-c", cpus, gomicro] + args
            result["commands"].append(f"GOMAXPROCS={ctx.threads} " + " ".join(argv))
            p = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=900)
            result["go"] = parse(p.stdout)
            result["go_version"] = next((l for l in p.stderr.splitlines()
                                         if l.startswith("gomicro: go")), "")
        else:
            result["errors"].append(f"go build of go-micro failed: {b.stderr.strip()}")
    else:
        result["errors"].append("`go` is not installed: run `make deps`")
    return result
