"""Progress lines at a steady pace while a long download runs.

A line every ``every_s`` seconds, whether or not anything finished in between, so that a stalled
download (a host paused by Retry-After, say) is visible as a stall and not as silence.
"""

from __future__ import annotations

import asyncio
import time
from typing import Callable


class Progress:
    def __init__(self, what: str, total: int, log: Callable[[str], None], every_s: float = 10.0,
                 already: int = 0) -> None:
        self.what = what
        self.total = total
        self.log = log
        self.every_s = every_s
        self.already = already  # stored by an earlier run: counted as done, not in the rate
        self.done = 0
        self.failed = 0
        self.started = time.monotonic()

    def add(self, done: int = 0, failed: int = 0) -> None:
        self.done += done
        self.failed += failed

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        finished = self.done + self.failed
        rate = finished / elapsed
        left = self.total - self.already - finished
        eta = f"{left / rate:.0f}s" if rate > 0 else "unknown"
        share = 100.0 * (self.already + finished) / self.total if self.total else 100.0
        return (
            f"{self.what}: {self.already + finished}/{self.total} ({share:.1f}%), "
            f"{self.done} fetched, {self.failed} failed, {self.already} from an earlier run; "
            f"{rate:.1f}/s, ETA {eta}"
        )

    async def report_every(self) -> None:
        """Run as a task beside the downloads; cancelled when they end."""
        while True:
            await asyncio.sleep(self.every_s)
            self.log(self.line())
