"""The markdown report: setup, one table per scenario, idle memory, runtime microbenchmarks,
goals check, exact commands. Figures per scenario and peer are medians over the interleaved
rounds (errors are summed, CPU/request is total CPU over total requests, RSS is the peak)."""

import statistics

from . import bench as bench_mod
from .scenarios import BY_NAME
from .wrk import display_command


def summarise(runs):
    """runs: list of {"scenario", "peer", "round", figures...} -> summary[scenario][peer]."""
    grouped = {}
    for r in runs:
        grouped.setdefault(r["scenario"], {}).setdefault(r["peer"], []).append(r)
    summary = {}
    for scen, by_peer in grouped.items():
        for peer, rs in by_peer.items():
            ok = [r for r in rs if "requests" in r]
            s = {"errors_text": [r["error"] for r in rs if "error" in r]}
            if ok:
                # A figure a client does not give (h2load: no percentiles) stays None.
                med = lambda k: (statistics.median(r[k] for r in ok)
                                 if all(r.get(k) is not None for r in ok) else None)
                reqs = sum(r["requests"] for r in ok)
                s.update(rps=med("rps"), p50_us=med("p50_us"), p99_us=med("p99_us"),
                         p999_us=med("p999_us"),
                         socket_errors=sum(r["socket_errors"] for r in ok),
                         status_errors=sum(r["status"] for r in ok),
                         cpu_us_per_req=(sum(r["cpu_s"] for r in ok) * 1e6 / reqs) if reqs else None,
                         peak_rss=max(r["peak_rss"] for r in ok),
                         rounds=[r["rps"] for r in ok])
                if all("bytes_per_s" in r for r in ok):  # bytes/s, CPU per MiB (issue 16)
                    nbytes = sum(r["bytes"] for r in ok)
                    s.update(bytes_per_s=med("bytes_per_s"), requests=reqs, bytes=nbytes,
                             cpu_us_per_mib=(sum(r["cpu_s"] for r in ok) * 1e6
                                             / (nbytes / 2**20)) if nbytes else None,
                             bytes_rounds=[r["bytes_per_s"] for r in ok])
                if all("rss_start" in r for r in ok):  # first round's start, last one's end
                    s.update(rss_start=ok[0]["rss_start"], rss_end=ok[-1]["rss_end"])
                if all(r.get("client") == "h2load" for r in ok):  # issue 17: its latency
                    s.update(mean_us=med("mean_us"), sd_us=med("sd_us"),
                             max_us=max(r["max_us"] for r in ok),
                             done=sum(r["requests"] for r in ok),
                             succeeded=sum(r["succeeded"] for r in ok),
                             errored=sum(r["errored"] for r in ok),
                             negotiated=" ".join(filter(None, (ok[0].get("protocol"),
                                                               ok[0].get("tls_protocol"),
                                                               ok[0].get("cipher")))))
                flood = [r["flood_rps"] for r in ok if "flood_rps" in r]
                if flood:  # https-flood: the handshake flood's own rate beside the wrk run
                    s.update(flood_rps=statistics.median(flood),
                             flood_errors=sum(r.get("flood_errors", 0) for r in ok),
                             p99_rounds=[r["p99_us"] for r in ok])
            summary.setdefault(scen, {})[peer] = s
    return summary


def ms(us):
    return "–" if us is None else (f"{us / 1000:.2f} ms" if us >= 1000 else f"{us:.0f} µs")


def kilo(x):
    return f"{x / 1000:.1f}K" if x >= 1000 else f"{x:.0f}"


def mib(b):
    return f"{b / 2**20:.1f} MiB"


def scenario_table(scen, peers, summary, lines):
    lines += ["| peer | requests/s | vs nginx | p50 | p99 | p99.9 | socket errors | non-2xx "
              "| CPU/req | peak RSS | requests/s per round |",
              "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    base = summary.get(scen, {}).get("nginx", {}).get("rps")
    for p in peers + [p for p in summary.get(scen, {}) if p not in peers]:
        s = summary.get(scen, {}).get(p)
        if s is None:
            continue
        if "rps" not in s:
            lines.append(f"| {p} | failed: {'; '.join(s['errors_text'])[:200]} |"
                         + " |" * 9)
            continue
        ratio = f"{s['rps'] / base:.2f}x" if base else "–"
        cpu = "–" if s["cpu_us_per_req"] is None else f"{s['cpu_us_per_req']:.1f} µs"
        lines.append(
            f"| {p} | {kilo(s['rps'])} | {ratio} | {ms(s['p50_us'])} | {ms(s['p99_us'])} | "
            f"{ms(s['p999_us'])} | {s['socket_errors']} | {s['status_errors']} | {cpu} | "
            f"{mib(s['peak_rss'])} | {', '.join(kilo(x) for x in s['rounds'])} |")
        for e in s["errors_text"]:
            lines.append(f"| | ⚠ {e[:200]} |" + " |" * 9)


def headline(summary, peers, scenarios, idle, lines):
    """Requests/s of every peer per scenario in one table, with greenhttp's ratios."""
    ratios = [b for b in ("greenhttp-base", "nginx", "go") if b in peers and "greenhttp" in peers]
    lines += ["| " + " | ".join(["scenario", *peers, *(f"greenhttp / {b}" for b in ratios)])
              + " |",
              "| --- |" + " ---: |" * (len(peers) + len(ratios))]
    for scen in scenarios:
        if BY_NAME[scen].kind != "load":
            continue
        row = summary.get(scen, {})
        rps = {p: row.get(p, {}).get("rps") for p in peers}
        cells = [kilo(rps[p]) if rps[p] else "–" for p in peers]
        cells += [f"{rps['greenhttp'] / rps[b]:.2f}x" if rps["greenhttp"] and rps[b] else "–"
                  for b in ratios]
        lines.append(f"| {BY_NAME[scen].title} (requests/s) | " + " | ".join(cells) + " |")
    if idle:
        per = {p: idle.get(p, {}).get("per_conn") for p in peers}
        cells = [f"{per[p] / 1000:.1f} KB" if per[p] is not None else "–" for p in peers]
        cells += [f"{per['greenhttp'] / per[b]:.2f}x" if per["greenhttp"] and per[b] else "–"
                  for b in ratios]
        lines.append("| memory per idle connection | " + " | ".join(cells) + " |")
    lines.append("")


def goals(summary, idle, lines):
    """anchors.md's goals for greenhttp, checked against nginx in this run."""
    def ratio(scen):
        g = summary.get(scen, {}).get("greenhttp", {}).get("rps")
        n = summary.get(scen, {}).get("nginx", {}).get("rps")
        return (g / n) if g and n else None

    rows = []
    for scen, goal, label in (("plaintext", 1.0, "keep-alive c=100 ≥ 1.0× nginx"),
                              ("pipelined", 2.5, "pipelined ×16 ≥ 2.5× nginx"),
                              ("c1000", 1.0, "c=1000 ≥ 1.0× nginx, no socket errors"),
                              ("c10000", 1.0, "c=10000 ≥ 1.0× nginx, no socket errors")):
        r = ratio(scen)
        if r is None:
            continue
        errs = summary[scen]["greenhttp"].get("socket_errors", 0)
        met = r >= goal and (errs == 0 or scen in ("plaintext", "pipelined"))
        rows.append(f"| {label} | {r:.2f}× ({errs} socket errors) | {'met' if met else 'not met'} |")
    g = summary.get("plaintext", {}).get("greenhttp", {})
    n = summary.get("plaintext", {}).get("nginx", {})
    if g.get("cpu_us_per_req") and n.get("cpu_us_per_req"):
        rows.append(f"| keep-alive CPU/req ≤ nginx's | {g['cpu_us_per_req']:.1f} vs "
                    f"{n['cpu_us_per_req']:.1f} µs | "
                    f"{'met' if g['cpu_us_per_req'] <= n['cpu_us_per_req'] else 'not met'} |")
    if g.get("p99_us") and n.get("p99_us"):
        rows.append(f"| keep-alive p99 ≤ nginx's | {ms(g['p99_us'])} vs {ms(n['p99_us'])} | "
                    f"{'met' if g['p99_us'] <= n['p99_us'] else 'not met'} |")
    gi = idle.get("greenhttp", {})
    if "per_conn" in gi:
        rows.append(f"| idle keep-alive connection ≤ 5 KB | {gi['per_conn'] / 1000:.1f} KB | "
                    f"{'met' if gi['per_conn'] <= 5000 else 'not met'} |")
    rows += proxy_goals(summary.get("proxy", {}))
    if rows:
        lines += ["## Goals (anchors.md, issue 14), greenhttp against nginx and Go in this run",
                  "",
                  "| goal | this run | |", "| --- | --- | --- |"] + rows + [""]


def proxy_goals(row):
    """Issue 14's goals for the reverse proxy: against nginx proxy_pass and Go's
    httputil.ReverseProxy, each in front of the same backend."""
    g, n, o = (row.get(p, {}) for p in ("greenhttp", "nginx", "go"))
    rows = []
    if g.get("rps") and n.get("rps"):
        r = g["rps"] / n["rps"]
        rows.append(f"| proxy: requests/s ≥ 1.0× nginx proxy_pass | {r:.2f}× "
                    f"({g.get('socket_errors', 0)} socket errors) | "
                    f"{'met' if r >= 1.0 else 'not met'} |")
    if g.get("p99_us") and n.get("p99_us"):
        rows.append(f"| proxy: p99 ≤ nginx proxy_pass's | {ms(g['p99_us'])} vs "
                    f"{ms(n['p99_us'])} | {'met' if g['p99_us'] <= n['p99_us'] else 'not met'} |")
    if g.get("rps") and o.get("rps"):
        r = g["rps"] / o["rps"]
        rows.append(f"| proxy: requests/s ≥ 2× Go httputil.ReverseProxy | {r:.2f}× | "
                    f"{'met' if r >= 2.0 else 'not met'} |")
    if g.get("cpu_us_per_req") and n.get("cpu_us_per_req"):
        rows.append(f"| proxy: CPU/req (reported, no goal) | {g['cpu_us_per_req']:.1f} µs vs "
                    f"nginx {n['cpu_us_per_req']:.1f} µs"
                    + (f", Go {o['cpu_us_per_req']:.1f} µs" if o.get("cpu_us_per_req") else "")
                    + " | – |")
    return rows


def met(ok):
    return "met" if ok else "not met"


def tls_section(meta, peers, summary, tls_idle, tls_info, scenarios, lines):
    """Issue 15: HTTPS figures and goals (greenhttp against nginx `ssl` and Go crypto/tls on
    the same certificate), memory per idle TLS connection, and the handshake flood."""
    if not any(BY_NAME[s].tls and not BY_NAME[s].h2 for s in scenarios):
        return
    lines += ["## HTTPS (issue 15)", ""]
    if meta.get("tls_skip"):
        lines += [f"Not run: {meta['tls_skip']}", ""]
        return
    lines += ["Every peer serves one certificate made for the run by `config/tls/make-cert.sh` "
              "(ECDSA P-256, signed by a throwaway CA), with its own default protocols and "
              "ciphers; nginx with `ssl_session_cache shared:SSL:10m` and `ssl_session_tickets "
              "on` (peers/nginx/nginx-tls.conf.in), Go with `ServeTLS` (HTTP/2 off). "
              "Negotiated with Python's `ssl` client: "
              + ", ".join(f"{p} {v}" for p, v in tls_info.items()) + ".", ""]
    row = lambda scen: summary.get(scen, {})
    rows = []

    def rps_goal(scen, base, goal, label):
        g, b = row(scen).get("greenhttp", {}), row(scen).get(base, {})
        if g.get("rps") and b.get("rps"):
            r = g["rps"] / b["rps"]
            rows.append(f"| {label} | {r:.2f}× ({kilo(g['rps'])} vs {kilo(b['rps'])}; "
                        f"{g.get('socket_errors', 0)} socket errors) | "
                        + (f"{met(r >= goal)} |" if goal else "reported |"))

    rps_goal("https", "nginx", 1.0, "HTTPS keep-alive c=100 ≥ 1.0× nginx")
    g, n = row("https").get("greenhttp", {}), row("https").get("nginx", {})
    if g.get("cpu_us_per_req") and n.get("cpu_us_per_req"):
        rows.append(f"| HTTPS keep-alive CPU/req ≤ nginx's | {g['cpu_us_per_req']:.1f} vs "
                    f"{n['cpu_us_per_req']:.1f} µs | "
                    f"{met(g['cpu_us_per_req'] <= n['cpu_us_per_req'])} |")
    rps_goal("https", "go", 1.5, "HTTPS keep-alive c=100 ≥ 1.5× Go")
    rps_goal("https-handshake", "nginx", 1.0,
             "new TLS connection per request (resumed, wrk) ≥ 1.0× nginx")
    rps_goal("https-handshake-full", "nginx", 0,
             "new TLS connection per request, full handshakes (tlsload), vs nginx")
    for scen in ("https-handshake", "https-handshake-full"):
        g, n = row(scen).get("greenhttp", {}), row(scen).get("nginx", {})
        if g.get("cpu_us_per_req") and n.get("cpu_us_per_req"):
            rows.append(f"| {scen}: server CPU per connection | {g['cpu_us_per_req']:.0f} vs "
                        f"nginx {n['cpu_us_per_req']:.0f} µs"
                        + (f", Go {row(scen)['go']['cpu_us_per_req']:.0f} µs"
                           if row(scen).get("go", {}).get("cpu_us_per_req") else "")
                        + " | reported |")
    gi, ni, oi = (tls_idle.get(p, {}).get("per_conn") for p in ("greenhttp", "nginx", "go"))
    if gi is not None and ni is not None:
        rows.append(f"| idle TLS connection ≤ nginx's + 4 KB | {gi / 1000:.1f} KB vs "
                    f"{ni / 1000:.1f} KB | {met(gi <= ni + 4000)} |")
    if gi is not None and oi is not None:
        rows.append(f"| idle TLS connection ≤ 0.5× Go's | {gi / 1000:.1f} KB vs {oi / 1000:.1f} "
                    f"KB ({gi / oi:.2f}×) | {met(gi <= 0.5 * oi)} |")
    if rows:
        lines += ["| goal (issue 15) | this run | |", "| --- | --- | --- |"] + rows + [""]

    for scen in scenarios:
        sc = BY_NAME[scen]
        if not sc.tls or sc.kind != "load" or sc.h2:
            continue
        lines += [f"### {sc.title}", "", f"`{display_command(sc, meta['seconds'])}`"
                  + (f" — {sc.note}" if sc.note else ""), ""]
        scenario_table(scen, peers, summary, lines)
        lines.append("")

    if "https-idle" in scenarios:
        lines += [f"### Memory per idle keep-alive TLS connection "
                  f"({meta.get('tls_idle_conns', 0):,} connections)", "",
                  "`python3 loadtest/idle_holder.py --port PORT --count N --tls`: N connections, "
                  "each a full handshake and one `GET /plaintext`, held idle; the server's RSS "
                  "with them held, minus before, over N.", "",
                  "| peer | RSS before | RSS with connections held | per idle TLS connection |",
                  "| --- | ---: | ---: | ---: |"]
        for p, r in tls_idle.items():
            if "error" in r:
                lines.append(f"| {p} | failed: {r['error'][:200]} | | |")
            else:
                lines.append(f"| {p} | {mib(r['rss_before'])} | {mib(r['rss_after'])} | "
                             f"{r['per_conn'] / 1000:.1f} KB |")
        lines.append("")

    if "https-flood" in scenarios:
        sc = BY_NAME["https-flood"]
        lines += [f"### {sc.title}", "",
                  f"`{display_command(sc, meta['seconds'])}` opens its connections, then "
                  "measures keep-alive requests on them while "
                  f"`build/loadtest/tlsload -c {meta.get('flood_conns', '?')}` opens new "
                  "connections (full handshakes, `Connection: close`) from 1 s before to after "
                  "it (latency per request, as wrk's). greenhttp-capped is greenhttp with "
                  "`--tls-max-handshakes` at twice its threads (the default is no cap). CPU/req is not shown: the server's CPU "
                  "went to both loads.", "",
                  "| server | keep-alive requests/s | p50 | p99 | p99.9 | p99 per round "
                  "| flood: new connections/s | flood errors |",
                  "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: |"]
        for p, s in row("https-flood").items():
            if "rps" not in s:
                lines.append(f"| {p} | failed: {'; '.join(s['errors_text'])[:200]} |"
                             + " |" * 6)
                continue
            lines.append(f"| {p} | {kilo(s['rps'])} | {ms(s['p50_us'])} | {ms(s['p99_us'])} | "
                         f"{ms(s['p999_us'])} | {', '.join(ms(x) for x in s.get('p99_rounds', []))}"
                         f" | {kilo(s['flood_rps']) if 'flood_rps' in s else '–'} | "
                         f"{s.get('flood_errors', '–')} |")
        lines.append("")


def mib_s(b):
    return f"{b / 2**20:,.0f} MiB/s"


def statuses_text(counts):
    return ", ".join(f"{n:,} × {code}" for code, n in sorted(counts.items())) or "none"


def revalidated(s, info):
    """static-304, one peer: (every answer 304?, what says so). The warm-up counted every
    status (status.lua); the measured runs, without that hook, are checked by their bytes:
    answers carrying the file = (bytes - answers × one 304's size) / (one 200's size - one
    304's size), the sizes measured on the wire before the load (peers.revalidation)."""
    ws, wn = info.get("warmup_statuses"), info.get("warmup_requests")
    warm_ok = ws is not None and ws == {"304": wn}
    text = [f"warm-up: {statuses_text(ws)}" if ws is not None
            else f"warm-up: not counted ({info.get('warmup_error') or 'no statuses'})"]
    carried = None
    if s.get("requests") and "bytes" in s:
        per = s["bytes"] / s["requests"]
        h304, h200 = info.get("size_304"), info.get("size_200")
        if h304 and h200 and h200 > h304:
            carried = (s["bytes"] - s["requests"] * h304) / (h200 - h304)
            text.append(f"measured: {s['requests']:,} answers of {per:.1f} bytes (a 304 is "
                        f"{h304}, a 200 {h200}): ≈{carried:,.0f} carried the file")
        else:
            text.append(f"measured: {s['requests']:,} answers of {per:.1f} bytes (no 304 "
                        "seen before the load)")
    ok = info.get("check") == "ok" and warm_ok and carried is not None and abs(carried) < 0.5
    return ok, "; ".join(text)


def static_section(meta, peers, summary, static_info, scenarios, lines):
    """Issue 16: the static-file scenarios, greenhttp --static-dir against nginx (sendfile,
    open_file_cache) and Go's http.FileServer on the same files, with the goals."""
    names = [s for s in scenarios if BY_NAME[s].static and not BY_NAME[s].h2]
    if not names:
        return
    lines += ["## Static files (issue 16)", "",
              "Every peer serves one directory of files made for the run (random bytes: "
              "`4k.bin` 4 KiB, `1m.bin` 1 MiB) under `/static/`: greenhttp `--static-dir`, "
              "nginx `alias` with `sendfile on`, `open_file_cache max=1000 inactive=20s`, "
              "`open_file_cache_valid 10s` and `etag on` (peers/nginx/nginx.conf.in), Go "
              "`http.StripPrefix` + `http.FileServer(http.Dir(dir))` (peers/go/). Go's "
              "FileServer sends no ETag, so static-304 revalidates it with `If-Modified-Since:` "
              "its Last-Modified instead of `If-None-Match:`.", ""]
    row = lambda scen: summary.get(scen, {})
    rows = []
    g, n = row("static-4k").get("greenhttp", {}), row("static-4k").get("nginx", {})
    if g.get("rps") and n.get("rps"):
        r = g["rps"] / n["rps"]
        rows.append(f"| static-4k: requests/s ≥ 1.0× nginx | {r:.2f}× ({kilo(g['rps'])} vs "
                    f"{kilo(n['rps'])}; {g['socket_errors']} socket errors) | {met(r >= 1.0)} |")
    g, n = row("static-1m").get("greenhttp", {}), row("static-1m").get("nginx", {})
    if g.get("bytes_per_s") and n.get("bytes_per_s"):
        r = g["bytes_per_s"] / n["bytes_per_s"]
        rows.append(f"| static-1m: bytes/s ≥ 1.0× nginx | {r:.2f}× ({mib_s(g['bytes_per_s'])} "
                    f"vs {mib_s(n['bytes_per_s'])}) | {met(r >= 1.0)} |")
    if g.get("cpu_us_per_mib") and n.get("cpu_us_per_mib"):
        rows.append(f"| static-1m: server CPU per byte ≤ nginx's | {g['cpu_us_per_mib']:.0f} vs "
                    f"{n['cpu_us_per_mib']:.0f} µs per MiB | "
                    f"{met(g['cpu_us_per_mib'] <= n['cpu_us_per_mib'])} |")
    idle_rss = static_info.get("static-1m", {}).get("greenhttp", {}).get("rss_idle")
    if g.get("peak_rss") and idle_rss is not None:
        # Buffering each response's file would grow the RSS by about conns × the file's size;
        # flat means well under a tenth of that.
        limit = BY_NAME["static-1m"].conns * 2**20 // 10
        grew = g["peak_rss"] - idle_rss
        rows.append(f"| static-1m: RSS flat, peak − after start < {mib(limit)} (a tenth of "
                    f"{BY_NAME['static-1m'].conns} buffered files) | {mib(grew)} "
                    f"({mib(idle_rss)} → peak {mib(g['peak_rss'])}) | {met(grew < limit)} |")
    g, n = row("static-304").get("greenhttp", {}), row("static-304").get("nginx", {})
    if g.get("rps") and n.get("rps"):
        r = g["rps"] / n["rps"]
        rows.append(f"| static-304: requests/s ≥ 1.0× nginx | {r:.2f}× ({kilo(g['rps'])} vs "
                    f"{kilo(n['rps'])}) | {met(r >= 1.0)} |")
    info = static_info.get("static-304", {}).get("greenhttp")
    if info and g.get("rps"):
        ok, text = revalidated(g, info)
        rows.append(f"| static-304: every answer 304 | {text} | {met(ok)} |")
    if rows:
        lines += ["| goal (issue 16) | this run | |", "| --- | --- | --- |"] + rows + [""]

    for scen in names:
        sc = BY_NAME[scen]
        lines += [f"### {sc.title}", "", f"`{display_command(sc, meta['seconds'])}`"
                  + (f" — {sc.note}" if sc.note else ""), ""]
        scenario_table(scen, peers, summary, lines)
        lines.append("")
        present = [p for p in peers if "rps" in row(scen).get(p, {})]
        info = static_info.get(scen, {})
        if scen == "static-1m" and present:
            base = row(scen).get("nginx", {}).get("bytes_per_s")
            lines += ["| peer | bytes/s | vs nginx | CPU per MiB | RSS after start | RSS as "
                      "the first run starts | peak | as the last run ends | bytes/s per round |",
                      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
            for p in present:
                s = row(scen)[p]
                if "bytes_per_s" not in s:
                    continue
                idle = info.get(p, {}).get("rss_idle")
                ratio = f"{s['bytes_per_s'] / base:.2f}x" if base else "–"
                cpu = f"{s['cpu_us_per_mib']:.0f} µs" if s.get("cpu_us_per_mib") else "–"
                opt = lambda v: "–" if v is None else mib(v)
                lines.append(
                    f"| {p} | {mib_s(s['bytes_per_s'])} | {ratio} | {cpu} | {opt(idle)} | "
                    f"{opt(s.get('rss_start'))} | {mib(s['peak_rss'])} | "
                    f"{opt(s.get('rss_end'))} | "
                    f"{', '.join(mib_s(x) for x in s['bytes_rounds'])} |")
            lines.append("")
        if scen == "static-304" and info:
            lines += ["| peer | header sent | one request with it before the load | every "
                      "answer 304? |", "| --- | --- | --- | --- |"]
            for p in peers:
                if p not in info:
                    continue
                ok, text = revalidated(row(scen).get(p, {}), info[p])
                lines.append(f"| {p} | `{info[p].get('header', '?')}` | "
                             f"{info[p].get('check', '?')} | {'yes' if ok else 'no'}: {text} |")
            lines.append("")


def h2_section(meta, peers, summary, static_info, h2_idle, scenarios, lines):
    """Issue 17: HTTP/2 under h2load, greenhttp against nginx (`http2`) and Go (net/http's
    built-in HTTP/2, over TLS only), with the goals; memory per idle h2c connection beside
    HTTP/1.1's."""
    names = [s for s in scenarios if BY_NAME[s].h2]
    if not names:
        return
    lines += ["## HTTP/2 (issue 17)", ""]
    threads = meta.get("h2load_threads", 1)
    lines += [f"Client: {meta.get('h2load_version') or 'h2load'} (Debian nghttp2-client), "
              f"`-t{threads}`, pinned as wrk is, told to speak h2 only (`--npn-list=h2` over "
              "TLS; prior knowledge on `http://`). A run counts only if every request done "
              "succeeded with a 2xx, nothing errored and the protocol negotiated is h2 (h2c); "
              "otherwise the table says what went wrong. h2load gives no latency percentiles: "
              "mean, standard deviation and maximum of its \"time for request\" instead.",
              "",
              "Servers: greenhttp `--listen-tls` (ALPN h2, then http/1.1) or its plain "
              "`--listen` (h2c prior knowledge), HTTP/2 settings at its defaults; nginx "
              "`listen ... ssl http2` or `listen ... http2` (peers/nginx/nginx-h2.conf.in: "
              "nginx-tls.conf.in's TLS settings, HTTP/2 at nginx's defaults, "
              "`keepalive_requests` 1,000,000 which since 1.19.7 also bounds the streams per "
              "connection); Go `ServeTLS` with net/http's built-in HTTP/2 (peers/go/ "
              "`--http2`). **Go is not measured over h2c**: Go 1.19's standard library has no "
              "cleartext HTTP/2 (golang.org/x/net/http2/h2c is outside it). h2-1m runs over "
              "TLS (all three peers).", ""]
    if meta.get("h2_skip"):
        lines += [f"The h2load scenarios did not run: {meta['h2_skip']}.", ""]
    row = lambda scen: summary.get(scen, {})
    rows = []

    def clean(s):
        return (not s.get("errors_text") and s.get("socket_errors", 0) == 0
                and s.get("status_errors", 0) == 0)

    def goal(scen, base, key, target, label, fmt=kilo):
        g, b = row(scen).get("greenhttp", {}), row(scen).get(base, {})
        if g.get(key) and b.get(key):
            r = g[key] / b[key]
            note = "" if clean(g) else "; greenhttp had errors (see below)"
            verdict = met(r >= target and clean(g)) if clean(b) else \
                f"– ({base} had errors: no comparison)"
            rows.append(f"| {label} | {r:.2f}× ({fmt(g[key])} vs {fmt(b[key])}{note}) | "
                        f"{verdict} |")
        elif g.get("errors_text") and "rps" not in g:
            rows.append(f"| {label} | greenhttp failed: {'; '.join(g['errors_text'])[:160]} | "
                        "not met |")

    goal("h2-tls", "nginx", "rps", 1.0, "h2-tls: requests/s ≥ 1.0× nginx")
    goal("h2-tls", "go", "rps", 2.0, "h2-tls: requests/s ≥ 2× Go")
    goal("h2c", "nginx", "rps", 1.0, "h2c: requests/s ≥ 1.0× nginx")
    goal("h2-1m", "nginx", "bytes_per_s", 1.0, "h2-1m: bytes/s ≥ 1.0× nginx", mib_s)
    g = row("h2-1m").get("greenhttp", {})
    idle_rss = static_info.get("h2-1m", {}).get("greenhttp", {}).get("rss_idle")
    if g.get("peak_rss") and idle_rss is not None:
        sc = BY_NAME["h2-1m"]
        rows.append(f"| h2-1m: server RSS, after start → peak ({sc.conns * sc.streams} "
                    f"streams of 1 MiB in flight) | {mib(idle_rss)} → {mib(g['peak_rss'])} "
                    f"(+{mib(g['peak_rss'] - idle_rss)}) | reported |")
    gi = h2_idle.get("greenhttp", {})
    ni = h2_idle.get("nginx", {})
    if "per_conn" in gi.get("h2c", {}):
        text = f"{gi['h2c']['per_conn'] / 1000:.1f} KB"
        if "per_conn" in gi.get("http1", {}):
            text += f" (HTTP/1.1: {gi['http1']['per_conn'] / 1000:.1f} KB)"
        if "per_conn" in ni.get("h2c", {}):
            text += f"; nginx h2c {ni['h2c']['per_conn'] / 1000:.1f} KB"
        rows.append(f"| h2-idle: memory per idle h2c connection | {text} | reported |")
    if rows:
        lines += ["| goal (issue 17) | this run | |", "| --- | --- | --- |"] + rows + [""]

    for scen in names:
        sc = BY_NAME[scen]
        if sc.kind != "load":
            continue
        lines += [f"### {sc.title}", "", f"`{display_command(sc, meta['seconds'])}`"
                  + (f" — {sc.note}" if sc.note else ""), ""]
        lines += ["| peer | requests/s | vs nginx | vs Go | mean | sd | max | errored "
                  "| non-2xx | CPU/req | peak RSS | negotiated | requests/s per round |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: "
                  "| --- | --- |"]
        n_rps = row(scen).get("nginx", {}).get("rps")
        o_rps = row(scen).get("go", {}).get("rps")
        for p in peers + [p for p in row(scen) if p not in peers]:
            s = row(scen).get(p)
            if s is None:
                continue
            if "rps" not in s:
                lines.append(f"| {p} | failed: {'; '.join(s['errors_text'])[:300]} |"
                             + " |" * 11)
                continue
            cpu = "–" if s["cpu_us_per_req"] is None else f"{s['cpu_us_per_req']:.1f} µs"
            vs_n = f"{s['rps'] / n_rps:.2f}x" if n_rps else "–"
            vs_o = f"{s['rps'] / o_rps:.2f}x" if o_rps else "–"
            lines.append(
                f"| {p} | {kilo(s['rps'])} | {vs_n} | {vs_o} | {ms(s.get('mean_us'))} | {ms(s.get('sd_us'))} | {ms(s.get('max_us'))} | "
                f"{s.get('errored', s['socket_errors'])} | {s['status_errors']} | {cpu} | "
                f"{mib(s['peak_rss'])} | {s.get('negotiated', '?')} | "
                f"{', '.join(kilo(x) for x in s['rounds'])} |")
            for e in s["errors_text"]:
                lines.append(f"| | ⚠ {e[:300]} |" + " |" * 11)
        lines.append("")
        if sc.static:
            present = [p for p in peers if "bytes_per_s" in row(scen).get(p, {})]
            n_b = row(scen).get("nginx", {}).get("bytes_per_s")
            info = static_info.get(scen, {})
            lines += ["| peer | bytes/s | vs nginx | CPU per MiB | RSS after start | RSS as "
                      "the first run starts | peak | as the last run ends | bytes/s per round |",
                      "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
            opt = lambda v: "–" if v is None else mib(v)
            for p in present:
                s = row(scen)[p]
                cpu = f"{s['cpu_us_per_mib']:.0f} µs" if s.get("cpu_us_per_mib") else "–"
                vs_n = f"{s['bytes_per_s'] / n_b:.2f}x" if n_b else "–"
                lines.append(
                    f"| {p} | {mib_s(s['bytes_per_s'])} | {vs_n} | {cpu} | "
                    f"{opt(info.get(p, {}).get('rss_idle'))} | {opt(s.get('rss_start'))} | "
                    f"{mib(s['peak_rss'])} | {opt(s.get('rss_end'))} | "
                    f"{', '.join(mib_s(x) for x in s['bytes_rounds'])} |")
            lines.append("")

    if "h2-idle" in scenarios:
        n = meta.get("h2_idle_conns", 0)
        lines += [f"### Memory per idle HTTP/2 connection, beside HTTP/1.1 ({n:,} connections "
                  "each)", "",
                  "Each on a fresh server, on its plain port: `python3 loadtest/idle_holder.py "
                  "--port PORT --count N` (HTTP/1.1: one `GET /plaintext` per connection, then "
                  "idle) and `... --h2c` (the HTTP/2 connection preface and an empty SETTINGS, "
                  "the server's SETTINGS acknowledged and our SETTINGS' ACK awaited, no "
                  "stream, then idle). The figure is the server's RSS with them held, minus "
                  "before, over N; \"open\" is how many the server still held after the RSS "
                  "was read. nginx's HTTP/1.1 figure is its plain config's "
                  "(peers/nginx/nginx.conf.in), its h2c one nginx-h2.conf.in's.", "",
                  "| peer | HTTP/1.1: RSS before → held | per connection | open | h2c: RSS "
                  "before → held | per connection | open | h2c − HTTP/1.1 |",
                  "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for p in peers + [p for p in h2_idle if p not in peers]:
            res = h2_idle.get(p)
            if res is None:
                continue
            if "skipped" in res:
                lines.append(f"| {p} | skipped: {res['skipped']} |" + " |" * 6)
                continue
            cells = []
            for label in ("http1", "h2c"):
                r = res.get(label, {})
                if "per_conn" in r:
                    cells += [f"{mib(r['rss_before'])} → {mib(r['rss_after'])}",
                              f"{r['per_conn'] / 1000:.1f} KB",
                              f"{r.get('open_at_end', '?')}"]
                else:
                    cells += [f"failed: {r.get('error', 'not run')[:200]}", "", ""]
            both = all("per_conn" in res.get(k, {}) for k in ("http1", "h2c"))
            diff = (f"{(res['h2c']['per_conn'] - res['http1']['per_conn']) / 1000:+.1f} KB"
                    if both else "–")
            lines.append(f"| {p} | " + " | ".join(cells) + f" | {diff} |")
        lines.append("")


def bench_section(b, lines):
    lines += ["## Runtime microbenchmarks (`make bench` shapes): greenrt and Go side by side", ""]
    if not b:
        lines += ["Not run (LOADTEST_BENCH=0).", ""]
        return
    lines += ["| figure | greenrt | Go | greenrt / Go | goal |", "| --- | ---: | ---: | ---: | --- |"]
    for name, what, goal in bench_mod.FIGURES:
        g, o = b["greenrt"].get(name), b["go"].get(name)
        if g is None and o is None:
            continue
        fmt = lambda v: "–" if v is None else f"{v[0]:,.1f} {v[1]}"
        r = f"{g[0] / o[0]:.2f}x" if g and o and o[0] else "–"
        lines.append(f"| {what} (`{name}`) | {fmt(g)} | {fmt(o)} | {r} | {goal} |")
    pc = b["greenrt"].get("parked_count") or b["go"].get("parked_count")
    if pc:
        lines.append(f"\nParked: {int(pc[0]):,} at once. Each timed figure is the median of 3 "
                     "runs after a warm-up (see bench/runtime_bench.cpp and "
                     "loadtest/peers/go-micro/).")
    for e in b["errors"]:
        lines.append(f"\n⚠ {e}")
    lines += ["", "```"] + b["commands"] + ["```", ""]


def write(path, meta, peers, skipped, smoke, summary, idle, bench, charts, scenarios,
          tls_idle=None, tls_info=None, static_info=None, h2_idle=None):
    L = [f"# greenhttp load test — {meta['date']} on {meta['host']}"
         + (" (LOADTEST_QUICK)" if meta["quick"] else ""), ""]
    L += [f"Produced by `{meta['command']}`. Each scenario runs the peers "
          f"interleaved ({' '.join(peers)}, then again: {meta['rounds']} rounds of "
          f"{meta['seconds']} s each, after an unmeasured {meta['warmup']} s warm-up per peer); "
          "figures are the medians over rounds. Compare ratios within this report: absolute "
          "numbers drift between runs and machines, and this machine's cores may be shared.", ""]
    L += ["## Setup", "",
          f"- Machine: {meta['cpu']}, {meta['nproc']} CPUs, {meta['mem']}, {meta['os']}, "
          f"Linux {meta['kernel']}; load average {meta['loadavg']} the run.",
          f"- Network: loopback; {meta['sysctl']}.",
          f"- Cores: servers pinned with `taskset -c {meta['server_cpus']}`, wrk with "
          f"`taskset -c {meta['wrk_cpus']}` ({meta['pinning']})"
          + (f"; the proxy/fanout backend with `taskset -c {meta['backend_cpus']}`, beside "
             "wrk (compare.py's pick_backend_cpus)"
             if "backend_cpus" in meta and any(BY_NAME[s].front for s in scenarios) else "")
          + ".",
          f"- Server threads: {meta['threads']} for every peer (greenhttp `--threads`, "
          "Go `GOMAXPROCS`, nginx `worker_processes`).",
          f"- Open files: soft limit raised to {meta['nofile']}; ephemeral ports "
          f"{meta['port_range']}.",
          f"- wrk: {meta['wrk_version']}; Python {meta['python']}.", ""]
    L += ["| peer | version | command |", "| --- | --- | --- |"]
    for p in peers:
        L.append(f"| {p} | {meta['versions'].get(p, '?')} | `{meta['peer_commands'].get(p, '')}` |")
    for p, why in skipped.items():
        L.append(f"| {p} | **skipped** | {why} |")
    L.append("")
    bad = [(p, r, v) for p, res in smoke.items() for r, v in res.items() if v != "ok"]
    if bad:
        L += ["Routes a peer does not serve as the scenarios need (those scenarios skip it):", ""]
        L += [f"- {p} `/{r}`: {v}" for p, r, v in bad] + [""]
    L += ["## Summary", ""]
    headline(summary, peers, scenarios, idle, L)
    goals(summary, idle, L)
    tls_section(meta, peers, summary, tls_idle or {}, tls_info or {}, scenarios, L)
    static_section(meta, peers, summary, static_info or {}, scenarios, L)
    h2_section(meta, peers, summary, static_info or {}, h2_idle or {}, scenarios, L)
    L += ["## Results", ""]
    for c in charts:
        L.append(f"![{c['title']}]({c['file']})")
    L.append("")
    for scen in scenarios:
        sc = BY_NAME[scen]
        if sc.tls or sc.static or sc.h2:
            continue  # in the HTTPS, static-files or HTTP/2 section
        L += [f"### {sc.title}", "", f"`{display_command(sc, meta['seconds'])}`"
              + (f" — {sc.note}" if sc.note else ""), ""]
        scenario_table(scen, peers, summary, L)
        L.append("")
    if meta["idle_conns"]:  # LOADTEST_IDLE_CONNS=0: not measured
        L += [f"## Memory per idle keep-alive connection ({meta['idle_conns']:,} connections)",
              "", "`python3 loadtest/idle_holder.py --port PORT --count N` opens N connections, "
              "sends `GET /plaintext` on each, reads the response and holds them; the figure is "
              "the server's RSS (process and children, /proc/PID/statm) with them held, minus "
              "before, over N.", "",
              "| peer | RSS before | RSS with connections held | per idle connection |",
              "| --- | ---: | ---: | ---: |"]
        for p in peers:
            r = idle.get(p)
            if r is None:
                continue
            if "error" in r:
                L.append(f"| {p} | failed: {r['error'][:200]} | | |")
            else:
                L.append(f"| {p} | {mib(r['rss_before'])} | {mib(r['rss_after'])} | "
                         f"{r['per_conn'] / 1000:.1f} KB |")
        L.append("")
    bench_section(bench, L)
    L += ["## Exact commands", "", "```"] + meta["commands"] + ["```", ""]
    with open(path, "w") as f:
        f.write("\n".join(L))
