"""When to try again: the one reading of Retry-After and the one back-off of every retrying client.

The SPARQL client and the download clients wait the same way, so a server meets one behaviour
from this project: a Retry-After it sends (delta-seconds or an HTTP date) is obeyed; otherwise
the wait grows exponentially with "equal jitter" (half the step fixed, half random), so clients
that failed together do not come back together and none comes back sooner than half a step.
"""

from __future__ import annotations

import random
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header; None when absent or unreadable (a date in the past is 0)."""
    if not value or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT; an old-style date without a zone means the same
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def backoff_delay(attempt: int, first_s: float, cap_s: float, rng: random.Random) -> float:
    """The wait after failed attempt ``attempt`` (1-based): ``first_s`` doubling up to ``cap_s``."""
    step = min(cap_s, first_s * 2 ** (attempt - 1))
    return step / 2 + rng.uniform(0, step / 2)
