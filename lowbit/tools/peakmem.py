"""Peak memory of a command, sampled from ``/proc/<pid>/status`` (Linux).

``RssAnon`` is the memory a process allocated (arrays, interpreter); ``RssFile`` is pages of
memory-mapped files it touched, which the kernel can drop at any time (reading a memory-mapped
checkpoint counts its pages there, not as allocations). The sampling runs every few milliseconds,
so a peak that lasts less than that can be missed; the tensors here live for far longer.

>>> import sys
>>> r = run_measured([sys.executable, "-c", "import numpy as np; a = np.ones(50_000_000)"])
>>> r["returncode"], r["peak_anon_bytes"] > 400_000_000
(0, True)
"""

from __future__ import annotations

import os
import resource
import subprocess
import tempfile
import time
from typing import Any

__all__ = ["run_measured"]

_KEYS = {"VmRSS": "peak_rss_bytes", "RssAnon": "peak_anon_bytes", "RssFile": "peak_file_bytes"}


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc/PID/task/TID/children)."""
    out, todo = [], [pid]
    while todo:
        q = todo.pop()
        out.append(q)
        try:
            for task in os.listdir(f"/proc/{q}/task"):
                with open(f"/proc/{q}/task/{task}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            pass
    return out


def run_measured(argv: list[str], *, interval: float = 0.005, **popen: Any) -> dict[str, Any]:
    """Run ``argv``; return its return code, wall time, CPU time (user + system of the reaped child
    and the children it waited for: ``cpu_seconds``), the peaks of VmRSS, RssAnon and RssFile
    (bytes) summed over the command's process tree (a pool's workers count), and what it wrote
    to stderr. ``popen`` goes to :class:`subprocess.Popen` (stdout is discarded unless given)."""
    popen.setdefault("stdout", subprocess.DEVNULL)
    peak = dict.fromkeys(_KEYS.values(), 0)
    err = tempfile.TemporaryFile()  # a file, not a pipe: a chatty child cannot block on a full pipe
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.Popen(argv, stderr=err, **popen)
    while p.poll() is None:
        now = dict.fromkeys(_KEYS.values(), 0)
        for pid in _tree(p.pid):  # the command and every process under it (a worker pool's too), summed
            try:
                with open(f"/proc/{pid}/status") as f:
                    for line in f:
                        key = _KEYS.get(line.split(":", 1)[0])
                        if key:
                            now[key] += int(line.split()[1]) * 1024
            except (OSError, ValueError, IndexError):  # the process ended between the listing and open()
                pass
        for key, v in now.items():
            peak[key] = max(peak[key], v)
        time.sleep(interval)
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    err.seek(0)
    text = err.read().decode(errors="replace")
    err.close()
    return {"returncode": p.returncode, "seconds": seconds, "cpu_seconds": cpu, "stderr": text, **peak}
