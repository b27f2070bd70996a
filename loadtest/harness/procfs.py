"""CPU time and resident memory of a server and its children, read from /proc.

A server is measured as a process tree: nginx is a master and its workers, greenhttp and Go
are one process with many threads (a process's /proc/PID/stat already sums its threads).
CPU is user+system of every live process in the tree plus the time of children it has
reaped (cutime+cstime), in clock ticks, as anchors.md defines "CPU/req".
"""

import os
import threading

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid):
    """Fields 3.. of /proc/PID/stat (the command name may hold spaces and parentheses)."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    return data[data.rindex(b")") + 2:].split()


def tree(root):
    """root and every descendant of it alive now."""
    children = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(entry)[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    result, stack = [], [root]
    while stack:
        pid = stack.pop()
        result.append(pid)
        stack.extend(children.get(pid, []))
    return result


def cpu_seconds(pids):
    """utime+stime+cutime+cstime of the given processes, in seconds; gone processes count 0."""
    ticks = 0
    for pid in pids:
        try:
            f = _stat_fields(pid)
        except OSError:
            continue
        ticks += int(f[11]) + int(f[12]) + int(f[13]) + int(f[14])
    return ticks / CLOCK_TICKS


def rss_bytes(pids):
    """Sum of resident set sizes (/proc/PID/statm) of the given processes."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/statm") as f:
                total += int(f.read().split()[1]) * PAGE_SIZE
        except OSError:
            continue
    return total


class PeakRss:
    """Samples the tree's summed RSS every `interval` seconds on a thread, keeps the peak, the
    first sample (start), the last (end) and all of them (samples)."""

    def __init__(self, pids, interval=0.1):
        self.pids, self.interval = pids, interval
        self.start = self.peak = self.end = rss_bytes(pids)
        self.samples = [self.start]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self):
        self.end = rss_bytes(self.pids)
        self.samples.append(self.end)
        self.peak = max(self.peak, self.end)

    def _run(self):
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._sample()
