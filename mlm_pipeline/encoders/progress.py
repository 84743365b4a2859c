"""Steady progress lines (count, share, rate) for long inference loops."""

from __future__ import annotations

import time
from typing import Callable


class Progress:
    """Logs at most every ``every_s`` seconds, and once at the end, so long runs show a pace."""

    def __init__(self, what: str, total: int, log: Callable[[str], None] | None, every_s: float = 10.0) -> None:
        self.what = what
        self.total = total
        self.log = log
        self.every_s = every_s
        self.done = 0
        self.start = time.perf_counter()
        self._last = self.start

    def advance(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.log is not None and now - self._last >= self.every_s:
            self._last = now
            self.log(self.line(now))

    def finish(self) -> float:
        """Seconds since the start; logs the closing line."""
        now = time.perf_counter()
        if self.log is not None:
            self.log(self.line(now))
        return now - self.start

    def line(self, now: float) -> str:
        elapsed = max(now - self.start, 1e-9)
        share = 100.0 * self.done / self.total if self.total else 100.0
        return f"{self.what}: {self.done}/{self.total} ({share:.0f}%) in {elapsed:.1f} s, {self.done / elapsed:.1f}/s"
