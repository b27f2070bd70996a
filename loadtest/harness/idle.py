"""Memory per idle keep-alive connection: the server's RSS (process tree) before and after
loadtest/idle_holder.py holds N connections that each carried one request (HTTP/1.1 or TLS),
or, for HTTP/2 (h2c), each sent the connection preface and SETTINGS and got the server's."""

import os
import subprocess
import sys
import time

from . import procfs


def measure(peer, repo, count, settle=1.0, tls=False, h2c=False):
    """tls: the connections speak HTTPS (idle_holder.py --tls, a full handshake each); h2c:
    HTTP/2 with prior knowledge, no request (idle_holder.py --h2c)."""
    pids = peer.pids()
    before = procfs.rss_bytes(pids)
    holder = subprocess.Popen(
        [sys.executable, os.path.join(repo, "loadtest", "idle_holder.py"),
         "--port", str(peer.port), "--count", str(count)] + (["--tls"] if tls else [])
        + (["--h2c"] if h2c else []),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = holder.stdout.readline()
        if not line.startswith("HELD "):
            holder.wait(timeout=10)
            return {"error": (holder.stderr.read().strip() or "holder gave no HELD line")}
        time.sleep(settle)  # let the server finish returning buffers and parking
        pids = peer.pids()
        after = procfs.rss_bytes(pids)
        result = {"count": count, "rss_before": before, "rss_after": after,
                  "per_conn": (after - before) / count, "holder": line.strip()}
        # How many the server still held when the RSS was read (idle_holder.py's OPEN line,
        # written once its stdin closes).
        try:
            out, _ = holder.communicate(input="", timeout=30)
            for rest in out.splitlines():
                if rest.startswith("OPEN "):
                    result["open_at_end"] = int(rest.split()[1])
        except (subprocess.TimeoutExpired, ValueError):
            pass
        return result
    finally:
        if holder.poll() is None:
            holder.stdin.close()
            try:
                holder.wait(timeout=30)
            except subprocess.TimeoutExpired:
                holder.kill()
                holder.wait()
