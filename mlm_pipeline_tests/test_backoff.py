"""One reading of Retry-After and one back-off for every client that retries (SPARQL, downloads)."""

from __future__ import annotations

import random
from datetime import datetime, timezone

from mlm_pipeline import backoff
from mlm_pipeline.download import politeness
from mlm_pipeline.sparql import client
from mlm_pipeline.sparql.client import RetryPolicy

NOW = datetime(2026, 1, 5, 12, 0, 0, tzinfo=timezone.utc)


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert backoff.parse_retry_after("120", NOW) == 120.0
    assert backoff.parse_retry_after(" 7 ", NOW) == 7.0
    assert backoff.parse_retry_after("Mon, 05 Jan 2026 12:00:30 GMT", NOW) == 30.0
    assert backoff.parse_retry_after("Mon, 05 Jan 2026 12:00:30", NOW) == 30.0  # no zone: GMT, as HTTP says
    assert backoff.parse_retry_after("Mon, 05 Jan 2026 11:00:00 GMT", NOW) == 0.0  # past: at once
    for unreadable in ("soon", "", "  ", "-5", None):
        assert backoff.parse_retry_after(unreadable, NOW) is None


def test_back_off_doubles_with_equal_jitter_up_to_the_cap() -> None:
    rng = random.Random(3)
    for attempt in range(1, 12):
        step = min(60.0, 1.0 * 2 ** (attempt - 1))
        for _ in range(50):
            assert step / 2 <= backoff.backoff_delay(attempt, 1.0, 60.0, rng) <= step


def test_both_clients_wait_the_same_way() -> None:
    assert client.parse_retry_after is politeness.parse_retry_after is backoff.parse_retry_after
    policy = RetryPolicy(backoff_base_s=2.0, backoff_cap_s=30.0)
    assert [policy.backoff(a, random.Random(1)) for a in range(1, 8)] == \
        [backoff.backoff_delay(a, 2.0, 30.0, random.Random(1)) for a in range(1, 8)]
