"""A dependency-free progress bar on stderr: redraws in place on a terminal, prints a line every
10 % otherwise (CI logs), silent with ``enabled=False``."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """``with Progress(total_bytes, "quantize") as p: p.update(n, note)``."""

    def __init__(self, total: int, label: str, *, unit: str = "B", enabled: bool = True, stream: TextIO | None = None) -> None:
        self.total, self.label, self.unit, self.enabled = max(int(total), 1), label, unit, enabled
        self.stream = stream or sys.stderr
        self.done = 0
        self.t0 = time.perf_counter()
        self._tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_decile = -1

    def _fmt(self, n: float) -> str:
        if self.unit != "B":
            return f"{n:,.0f}"
        for u in ("B", "KiB", "MiB", "GiB", "TiB"):
            if n < 1024 or u == "TiB":
                return f"{n:,.1f} {u}" if u != "B" else f"{n:,.0f} B"
            n /= 1024
        return str(n)

    def update(self, n: int, note: str = "") -> None:
        self.done += int(n)
        if not self.enabled:
            return
        frac = min(self.done / self.total, 1.0)
        rate = self.done / max(time.perf_counter() - self.t0, 1e-9)
        line = f"{self.label}: {frac:6.1%} {self._fmt(self.done)}/{self._fmt(self.total)} ({self._fmt(rate)}/s) {note}"
        if self._tty:
            self.stream.write("\r" + line[:150].ljust(150))
            self.stream.flush()
        elif int(frac * 10) > self._last_decile:
            self._last_decile = int(frac * 10)
            self.stream.write(line + "\n")
            self.stream.flush()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: object) -> None:
        if self.enabled and self._tty:
            self.stream.write("\n")
            self.stream.flush()
