"""HTTP the way Wikimedia asks bulk clients to behave, and every failure as a reason.

img2dataset-style downloaders get blocked on Wikimedia because they ignore per-host limits and
Retry-After, and they lose failed samples silently. Here every request goes through a gate (one
per host, or a named pool such as all media hosts together) that caps concurrency and holds back
the whole host while a server's Retry-After runs; transient trouble (429, 5xx, timeouts, broken
connections, truncated bodies, wrong content types, bodies the caller finds damaged) is retried
a bounded number of times with exponential back-off and jitter; and whatever still fails is
raised as ``FetchFailed`` with a short machine-readable reason (``http_404``, ``timeout``,
``too_large``, ``redirect_loop``, ...) that callers turn into a dropout record.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from datetime import datetime, timezone
from types import TracebackType
from typing import Any, Callable, Mapping

import aiohttp
from yarl import URL

from mlm_pipeline.resources import ConfigError

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
# Final for this run but worth another run: refusals of access (Wikimedia's answer to a bad
# User-Agent or a block) and throttling say nothing about the item itself.
LATER_RUN_STATUS = frozenset({401, 403, 429})


@dataclass(frozen=True)
class Politeness:
    """Limits for one client. Defaults follow Wikimedia's published rules for bulk clients."""

    user_agent: str
    concurrency: int = 2  # requests in flight per host (or per named pool)
    pool_concurrency: Mapping[str, int] = field(default_factory=dict)  # overrides by host[:port] or pool name
    max_attempts: int = 5
    backoff_s: float = 1.0  # first back-off; doubles per attempt, with jitter
    backoff_max_s: float = 60.0
    max_retry_after_s: float = 300.0  # a longer pause asked by a server fails the request instead of waiting
    timeout_s: float = 60.0
    # After a timeout the server may still be working on the abandoned request: its slot stays
    # taken this much longer, so that the retry does not make one request too many in flight.
    timeout_hold_s: float = 10.0
    max_redirects: int = 5

    def __post_init__(self) -> None:
        if not self.user_agent.strip():
            raise ConfigError("user_agent is empty: Wikimedia refuses requests without one")
        for name in ("concurrency", "max_attempts"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be at least 1")
        for pool, limit in self.pool_concurrency.items():
            if limit < 1:
                raise ConfigError(f"pool_concurrency[{pool!r}]={limit} must be at least 1")
        for name in ("backoff_s", "backoff_max_s", "max_retry_after_s", "timeout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be positive")
        if self.timeout_hold_s < 0:
            raise ConfigError(f"timeout_hold_s={self.timeout_hold_s} must not be negative")
        if self.max_redirects < 0:
            raise ConfigError(f"max_redirects={self.max_redirects} must not be negative")

    def limit_for(self, pool: str) -> int:
        return self.pool_concurrency.get(pool, self.concurrency)


@dataclass
class Response:
    url: str  # after redirects: the URL the body came from
    status: int
    content_type: str
    body: bytes
    attempts: int = 1
    checked: Any = None  # what the caller's check made of the body (parsed JSON, image facts)


class FetchFailed(Exception):
    """The final outcome of a request that did not succeed within the limits."""

    def __init__(
        self, reason: str, detail: str, attempts: int = 1, status: int | None = None,
        last: Response | None = None, transient: bool = False,
    ) -> None:
        super().__init__(f"{reason}: {detail} (after {attempts} attempt{'s' * (attempts != 1)})")
        self.reason = reason
        self.detail = detail
        self.attempts = attempts
        self.status = status
        self.last = last  # the last complete body, when the failure was the caller's check
        self.transient = transient  # retries ran out on trouble that a later run may not meet

    @property
    def record_detail(self) -> str:
        """For dropout tables: what happened and how often it was tried, nothing timing-dependent."""
        return f"{self.detail}; attempts={self.attempts}"


class Invalid(Exception):
    """Raised by a caller's ``check`` when a complete body is unusable (bad JSON, damaged image)."""

    def __init__(self, reason: str, detail: str, retry: bool = True) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.retry = retry


class _Trouble(Exception):
    """One attempt's failure; ``retry`` says whether another attempt may help."""

    def __init__(
        self, reason: str, detail: str, *, retry: bool, status: int | None = None,
        retry_after: float | None = None, last: Response | None = None, gate: str | None = None,
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.retry = retry
        self.status = status
        self.retry_after = retry_after
        self.last = last
        self.gate = gate  # the host or pool that answered, when its answer concerns all its requests


class _Gate:
    """Concurrency slots for one host or pool, and the time before which it must stay quiet."""

    def __init__(self, limit: int) -> None:
        self.slots = asyncio.Semaphore(limit)
        self.not_before = 0.0


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


class PoliteSession:
    """An aiohttp session whose every request obeys one ``Politeness``.

    ``stats`` counts requests sent (``requests``, and per gate ``requests@<pool or host>``),
    responses by status (``status_<code>``), retries, troubles by reason and failures, so that
    benchmarks and asset metadata can report 429s and requests per item.
    """

    def __init__(self, politeness: Politeness) -> None:
        self.politeness = politeness
        self.stats: Counter[str] = Counter()
        self._gates: dict[str, _Gate] = {}
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> PoliteSession:
        p = self.politeness
        self._session = aiohttp.ClientSession(
            headers={"User-Agent": p.user_agent},
            timeout=aiohttp.ClientTimeout(total=p.timeout_s),
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300),
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._session is not None
        await self._session.close()

    def _gate(self, pool: str) -> _Gate:
        if pool not in self._gates:
            self._gates[pool] = _Gate(self.politeness.limit_for(pool))
        return self._gates[pool]

    async def get(
        self,
        url: str | URL,
        *,
        params: Mapping[str, str] | None = None,
        accept: tuple[str, ...],
        max_bytes: int,
        pool: str | None = None,
        check: Callable[[Response], Any] | None = None,
    ) -> Response:
        """GET ``url`` politely; the body is returned only if it is complete, of an accepted
        media type (prefix match), at most ``max_bytes`` long and passes ``check`` (which
        raises ``Invalid`` or returns what it made of the body, kept as ``Response.checked``).

        ``pool`` puts the request (and every redirect hop) into a named gate shared with other
        hosts, e.g. Wikimedia's single concurrency budget for all media downloads; by default
        each host has its own gate. Raises ``FetchFailed`` when attempts run out or the failure
        cannot improve (4xx other than 429, too large, too many redirects).
        """
        p = self.politeness
        start = URL(url, encoded=True) if isinstance(url, str) else url
        if params:
            start = start.update_query(params)
        last: _Trouble | None = None
        for attempt in range(1, p.max_attempts + 1):
            try:
                response = await self._follow(start, accept, max_bytes, pool)
                if check is not None:
                    try:
                        response.checked = check(response)
                    except Invalid as bad:
                        raise _Trouble(bad.reason, bad.detail, retry=bad.retry, last=response) from None
                response.attempts = attempt
                return response
            except _Trouble as trouble:
                last = trouble
                self.stats[f"trouble_{trouble.reason}"] += 1
                delay = self._back_off_delay(attempt)
                paused = self._pause_gate(trouble, delay)  # even after the last attempt: others wait too
                if not trouble.retry or attempt == p.max_attempts:
                    break
                self.stats["retries"] += 1
                if not paused:
                    await asyncio.sleep(delay)
        assert last is not None
        self.stats["failures"] += 1
        raise FetchFailed(last.reason, last.detail, attempts=attempt, status=last.status, last=last.last,
                          transient=last.retry or last.status in LATER_RUN_STATUS)

    def _back_off_delay(self, attempt: int) -> float:
        p = self.politeness
        delay = min(p.backoff_max_s, p.backoff_s * 2 ** (attempt - 1))
        return random.uniform(delay / 2, delay)

    def _pause_gate(self, trouble: _Trouble, delay: float) -> bool:
        """A 429 or a Retry-After speaks for the whole host (or pool): hold every request to it."""
        if trouble.gate is None or (trouble.status != 429 and trouble.retry_after is None):
            return False
        gate = self._gate(trouble.gate)
        pause = trouble.retry_after if trouble.retry_after is not None else delay
        gate.not_before = max(gate.not_before, asyncio.get_running_loop().time() + pause)
        return True

    async def _follow(self, start: URL, accept: tuple[str, ...], max_bytes: int, pool: str | None) -> Response:
        seen: set[str] = set()
        current = start
        for _hop in range(self.politeness.max_redirects + 1):
            if str(current) in seen:
                raise _Trouble("redirect_loop", f"redirected back to {current.path} after {len(seen)} hops", retry=True)
            seen.add(str(current))
            if current.scheme not in ("http", "https"):
                raise _Trouble("bad_redirect", f"redirect to a {current.scheme or 'relative'} URL", retry=False)
            outcome = await self._once(current, accept, max_bytes, pool or _host(current))
            if isinstance(outcome, Response):
                return outcome
            current = current.join(outcome)
        raise _Trouble(
            "too_many_redirects", f"more than {self.politeness.max_redirects} redirects",
            retry=False,
        )

    async def _enter(self, gate: _Gate, pool: str) -> None:
        """Wait for the gate's pause to end and for a free slot (the pause may grow meanwhile)."""
        loop = asyncio.get_running_loop()
        while True:
            wait = gate.not_before - loop.time()
            if wait > self.politeness.max_retry_after_s:
                raise _Trouble(
                    "http_429", f"Retry-After pause longer than max_retry_after_s={self.politeness.max_retry_after_s:g}s",
                    retry=False, status=429,
                )
            if wait > 0:
                await asyncio.sleep(wait)
            await gate.slots.acquire()
            if gate.not_before <= loop.time():
                return
            gate.slots.release()

    async def _once(self, url: URL, accept: tuple[str, ...], max_bytes: int, pool: str) -> Response | URL:
        """One request: a complete acceptable response, or the URL a redirect points to."""
        assert self._session is not None
        gate = self._gate(pool)
        await self._enter(gate, pool)
        try:
            self.stats["requests"] += 1
            self.stats[f"requests@{pool}"] += 1
            async with self._session.get(url, allow_redirects=False) as resp:
                self.stats[f"status_{resp.status}"] += 1
                if resp.status in REDIRECT_STATUS:
                    location = resp.headers.get("Location")
                    if not location:
                        raise _Trouble("bad_redirect", f"HTTP {resp.status} without Location", retry=False,
                                       status=resp.status)
                    return URL(location)
                if resp.status in RETRYABLE_STATUS:
                    raise _Trouble(
                        f"http_{resp.status}", f"HTTP {resp.status}", retry=True, status=resp.status,
                        retry_after=parse_retry_after(resp.headers.get("Retry-After")), gate=pool,
                    )
                if resp.status != 200:
                    raise _Trouble(f"http_{resp.status}", f"HTTP {resp.status}", retry=False, status=resp.status)
                ctype = media_type(resp.headers.get("Content-Type", ""))
                if not ctype.startswith(accept):
                    raise _Trouble("content_type", f"got {ctype or 'no content type'}, wanted {'/'.join(accept)}",
                                   retry=True, status=200)
                if resp.content_length is not None and resp.content_length > max_bytes:
                    raise _Trouble("too_large", f"Content-Length {resp.content_length} > {max_bytes} bytes",
                                   retry=False, status=200)
                body = bytearray()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > max_bytes:
                        raise _Trouble("too_large", f"body over {max_bytes} bytes", retry=False, status=200)
                return Response(url=str(url), status=200, content_type=ctype, body=bytes(body))
        except aiohttp.ClientPayloadError as exc:
            raise _Trouble("truncated", f"incomplete body ({type(exc).__name__})", retry=True) from None
        except (asyncio.TimeoutError, aiohttp.ServerTimeoutError):
            await asyncio.sleep(self.politeness.timeout_hold_s)
            raise _Trouble("timeout", f"no complete answer within {self.politeness.timeout_s:g}s",
                           retry=True) from None
        except aiohttp.ClientResponseError as exc:
            raise _Trouble("bad_response", type(exc).__name__, retry=True) from None
        except aiohttp.ClientConnectionError as exc:
            raise _Trouble("connection", type(exc).__name__, retry=True) from None
        finally:
            gate.slots.release()


def _host(url: URL) -> str:
    return f"{url.host}:{url.port}" if url.port else str(url.host)
