"""HTTP the way Wikimedia asks bulk clients to behave, and every failure as a reason.

img2dataset-style downloaders get blocked on Wikimedia because they ignore per-host limits and
Retry-After, and they lose failed samples silently. Here every request goes through a gate (one
per host, or a named pool such as all media hosts together, or a serial pool that never has two
requests in flight, as the Action API asks) that caps concurrency and holds back the whole host
while a server's Retry-After runs. A 429 also lowers the gate's concurrency by one (never below
one); quiet success gives the slot back, never beyond the configured limit. Transient trouble
(429, 5xx, timeouts, broken connections, truncated bodies, wrong content types, oversized
answers, bodies the caller finds damaged) is retried a bounded number of times with the shared
back-off (``mlm_pipeline.backoff``); whatever still fails is raised as ``FetchFailed`` with a
short machine-readable reason (``http_404``, ``timeout``, ``too_large``, ``redirect_loop``, ...)
that callers turn into a dropout record, and with ``transient`` saying whether a later run may
fare better. Answers that say the client itself is wrong (a User-Agent refused with 403) stop
with a ``ConfigError`` instead: every other request would meet the same refusal.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Callable, Collection, Mapping

import aiohttp
from yarl import URL

from mlm_pipeline.backoff import backoff_delay, parse_retry_after
from mlm_pipeline.endpoints import ConfigError

RETRYABLE_STATUS = frozenset({429, 500, 502, 503, 504})
REDIRECT_STATUS = frozenset({301, 302, 303, 307, 308})
# Final for this run but worth another run: refusals of access (a block) and throttling say
# nothing about the item itself.
LATER_RUN_STATUS = frozenset({401, 403, 429})
SERIAL = "serial:"  # pools named so allow one request in flight, whatever the limits say
# Identical answers needed before a verdict on the content (too large, undecodable) is taken as
# the item's own: a fault hitting every one of them has odds of (fault rate) to this power.
VERDICT_ATTEMPTS = 3
USER_AGENT_REFUSAL = re.compile(r"user[- ]?agent", re.IGNORECASE)


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
    # Successful answers in a row before a gate that a 429 slowed down gets one slot back (the
    # count doubles with every 429, so a limit the server keeps refusing is probed ever more rarely).
    recover_after: int = 100

    def __post_init__(self) -> None:
        if not self.user_agent.strip():
            raise ConfigError("user_agent is empty: Wikimedia refuses requests without one")
        for name in ("concurrency", "max_attempts", "recover_after"):
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
        if pool.startswith(SERIAL):
            return 1
        return self.pool_concurrency.get(pool, self.concurrency)


def serial_pool(name: str) -> str:
    """A pool that never has two requests in flight (the Action API's rule: calls in series)."""
    return SERIAL + name


@dataclass
class Response:
    url: str  # after redirects: the URL the body came from
    status: int
    content_type: str
    body: bytes
    attempts: int = 1
    checked: Any = None  # what the caller's check made of the body (parsed JSON, image facts)
    retry_after: float | None = None  # a Retry-After sent with the answer (MediaWiki's maxlag error)


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
        self.transient = transient  # a later run may fare better (see ``_transient``)

    @property
    def record_detail(self) -> str:
        """For dropout tables: what happened and how often it was tried, nothing timing-dependent."""
        return f"{self.detail}; attempts={self.attempts}"


class Invalid(Exception):
    """Raised by a caller's ``check`` when a complete body is unusable (bad JSON, damaged image).

    ``retry_after``: the server asked for this pause before the next request (the whole gate waits).
    """

    def __init__(self, reason: str, detail: str, retry: bool = True, retry_after: float | None = None) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.retry = retry
        self.retry_after = retry_after


class _Trouble(Exception):
    """One attempt's failure; ``retry`` says whether another attempt may help.

    ``evidence`` fingerprints what the server sent when the failure is a verdict on the content
    (too large, undecodable): the same verdict on the same bytes at every attempt is the item's
    own, where one among other answers is a fault on the way.
    """

    def __init__(
        self, reason: str, detail: str, *, retry: bool, status: int | None = None,
        retry_after: float | None = None, last: Response | None = None, gate: str | None = None,
        evidence: str | None = None,
    ) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.retry = retry
        self.status = status
        self.retry_after = retry_after
        self.last = last
        self.gate = gate  # the host or pool that answered, when its answer concerns all its requests
        self.evidence = evidence


def _transient(troubles: list[_Trouble]) -> bool:
    """Whether a later run may fare better than these attempts did.

    A refusal about the item (404, a missing page, too many redirects) is final, and so is a
    verdict on its content that every attempt (``VERDICT_ATTEMPTS`` at least) reached on identical
    answers: a file that really is too large or really does not decode. Anything else, including
    an oversized or damaged answer among others, was trouble on the way: the next run tries again.
    """
    last = troubles[-1]
    if not last.retry:
        return last.status in LATER_RUN_STATUS
    verdicts = {(t.reason, t.evidence) for t in troubles}
    return not (len(troubles) >= VERDICT_ATTEMPTS and len(verdicts) == 1 and last.evidence is not None)


class _Gate:
    """Slots for one host or pool, the time before which it stays quiet (Retry-After), and a
    limit that each wave of 429s lowers by one and quiet success raises again up to the cap."""

    def __init__(self, cap: int, recover_after: int) -> None:
        self.cap = cap
        self.limit = cap
        self.lowest = cap  # reported: how far 429s brought the limit down
        self.in_flight = 0
        self.not_before = 0.0
        self.generation = 0  # grows when the limit is lowered: 429s to requests sent before count once
        self.recover_after = recover_after
        self.successes = 0
        self._changed = asyncio.Event()

    def notify(self) -> None:
        """Wake everyone waiting for a slot or for the pause to end (they check again)."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self, timeout: float | None) -> None:
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except asyncio.TimeoutError:
            pass

    def throttled(self, generation: int) -> bool:
        """A 429 to a request sent under ``generation``; True when it lowered the limit."""
        self.successes = 0
        if generation != self.generation or self.limit == 1:
            return False
        self.limit -= 1
        self.lowest = min(self.lowest, self.limit)
        self.generation += 1
        self.recover_after *= 2
        return True

    def succeeded(self) -> bool:
        """A complete answer; True when enough of them in a row gave a slot back."""
        self.successes += 1
        if self.limit >= self.cap or self.successes < self.recover_after:
            return False
        self.limit += 1
        self.successes = 0
        self.notify()
        return True


class PoliteSession:
    """An aiohttp session whose every request obeys one ``Politeness``.

    ``stats`` counts requests sent (``requests``, and per gate ``requests@<pool or host>``),
    responses by status (``status_<code>``), retries, troubles by reason, failures, and for gates
    that 429s slowed down how often (``lowered@<gate>``) and how far (``lowest@<gate>``), so that
    benchmarks and asset metadata can report 429s and requests per item. ``log`` hears of every
    change of a gate's limit.
    """

    def __init__(self, politeness: Politeness, log: Callable[[str], None] | None = None) -> None:
        self.politeness = politeness
        self.stats: Counter[str] = Counter()
        self.log = log or (lambda line: None)
        self._gates: dict[str, _Gate] = {}
        self._session: aiohttp.ClientSession | None = None
        self._rng = random.Random()

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
            self._gates[pool] = _Gate(self.politeness.limit_for(pool), self.politeness.recover_after)
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
        final: Collection[str] = (),
        unthrottled_429: Callable[[str], Exception] | None = None,
    ) -> Response:
        """GET ``url`` politely; the body is returned only if it is complete, of an accepted
        media type (prefix match), at most ``max_bytes`` long and passes ``check`` (which
        raises ``Invalid`` or returns what it made of the body, kept as ``Response.checked``).

        ``pool`` puts the request (and every redirect hop) into a named gate shared with other
        hosts, e.g. Wikimedia's single concurrency budget for all media downloads; by default
        each host has its own gate. ``final`` names trouble the caller remedies better than a
        retry can (e.g. ``too_large`` for a batch it can split). ``unthrottled_429`` makes the
        exception to raise for a 429 without Retry-After, where the caller knows that such an
        answer means a configuration the server refuses rather than throttling. Raises
        ``FetchFailed`` when attempts run out or the failure cannot improve (4xx other than 429,
        too many redirects), ``ConfigError`` when the server refuses the User-Agent.
        """
        p = self.politeness
        start = URL(url, encoded=True) if isinstance(url, str) else url
        if params:
            start = start.update_query(params)
        troubles: list[_Trouble] = []
        for attempt in range(1, p.max_attempts + 1):
            try:
                response = await self._follow(start, accept, max_bytes, pool, unthrottled_429)
                if check is not None:
                    try:
                        response.checked = check(response)
                    except Invalid as bad:
                        raise _Trouble(
                            bad.reason, bad.detail, retry=bad.retry, last=response, retry_after=bad.retry_after,
                            gate=pool or _host(URL(response.url)),
                            evidence=hashlib.sha256(response.body).hexdigest(),
                        ) from None
                response.attempts = attempt
                return response
            except _Trouble as trouble:
                troubles.append(trouble)
                self.stats[f"trouble_{trouble.reason}"] += 1
                delay = backoff_delay(attempt, p.backoff_s, p.backoff_max_s, self._rng)
                paused = self._pause_gate(trouble, delay)  # even after the last attempt: others wait too
                if not trouble.retry or trouble.reason in final or attempt == p.max_attempts:
                    break
                self.stats["retries"] += 1
                if not paused:
                    await asyncio.sleep(delay)
        last = troubles[-1]
        self.stats["failures"] += 1
        raise FetchFailed(last.reason, last.detail, attempts=len(troubles), status=last.status, last=last.last,
                          transient=_transient(troubles))

    def _pause_gate(self, trouble: _Trouble, delay: float) -> bool:
        """A 429 or a Retry-After speaks for the whole host (or pool): hold every request to it."""
        if trouble.gate is None or (trouble.status != 429 and trouble.retry_after is None):
            return False
        gate = self._gate(trouble.gate)
        pause = trouble.retry_after if trouble.retry_after is not None else delay
        gate.not_before = max(gate.not_before, asyncio.get_running_loop().time() + pause)
        return True

    async def _follow(
        self, start: URL, accept: tuple[str, ...], max_bytes: int, pool: str | None,
        unthrottled_429: Callable[[str], Exception] | None,
    ) -> Response:
        seen: set[str] = set()
        current = start
        for _hop in range(self.politeness.max_redirects + 1):
            if str(current) in seen:
                raise _Trouble("redirect_loop", f"redirected back to {current.path} after {len(seen)} hops", retry=True)
            seen.add(str(current))
            if current.scheme not in ("http", "https"):
                raise _Trouble("bad_redirect", f"redirect to a {current.scheme or 'relative'} URL", retry=False)
            outcome = await self._once(current, accept, max_bytes, pool or _host(current), unthrottled_429)
            if isinstance(outcome, Response):
                return outcome
            current = current.join(outcome)
        raise _Trouble(
            "too_many_redirects", f"more than {self.politeness.max_redirects} redirects",
            retry=False,
        )

    async def _enter(self, gate: _Gate) -> int:
        """Wait for the gate's pause to end and for a free slot (the pause may grow meanwhile);
        returns the gate's generation, so that a 429 to this request lowers the limit at most once."""
        loop = asyncio.get_running_loop()
        while True:
            wait = gate.not_before - loop.time()
            if wait > self.politeness.max_retry_after_s:
                raise _Trouble(
                    "http_429", f"Retry-After pause longer than max_retry_after_s={self.politeness.max_retry_after_s:g}s",
                    retry=False, status=429,
                )
            if wait <= 0 and gate.in_flight < gate.limit:
                gate.in_flight += 1
                return gate.generation
            await gate.changed(wait if wait > 0 else None)

    def _throttled(self, gate: _Gate, pool: str, generation: int) -> None:
        if gate.throttled(generation):
            self.stats[f"lowered@{pool}"] += 1
            self.stats[f"lowest@{pool}"] = gate.lowest
            self.log(f"{pool}: HTTP 429, concurrency lowered to {gate.limit} of {gate.cap}")

    async def _once(
        self, url: URL, accept: tuple[str, ...], max_bytes: int, pool: str,
        unthrottled_429: Callable[[str], Exception] | None,
    ) -> Response | URL:
        """One request: a complete acceptable response, or the URL a redirect points to."""
        assert self._session is not None
        gate = self._gate(pool)
        generation = await self._enter(gate)
        try:
            self.stats["requests"] += 1
            self.stats[f"requests@{pool}"] += 1
            async with self._session.get(url, allow_redirects=False) as resp:
                self.stats[f"status_{resp.status}"] += 1
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                if resp.status in REDIRECT_STATUS:
                    location = resp.headers.get("Location")
                    if not location:
                        raise _Trouble("bad_redirect", f"HTTP {resp.status} without Location", retry=False,
                                       status=resp.status)
                    return URL(location)
                if resp.status == 403:
                    await self._refused_agent(url, resp)
                if resp.status == 429:
                    if retry_after is None and unthrottled_429 is not None:
                        raise unthrottled_429(str(url))
                    self._throttled(gate, pool, generation)
                if resp.status in RETRYABLE_STATUS:
                    raise _Trouble(f"http_{resp.status}", f"HTTP {resp.status}", retry=True, status=resp.status,
                                   retry_after=retry_after, gate=pool)
                if resp.status != 200:
                    raise _Trouble(f"http_{resp.status}", f"HTTP {resp.status}", retry=False, status=resp.status)
                ctype = media_type(resp.headers.get("Content-Type", ""))
                if not ctype.startswith(accept):
                    raise _Trouble("content_type", f"got {ctype or 'no content type'}, wanted {'/'.join(accept)}",
                                   retry=True, status=200)
                if resp.content_length is not None and resp.content_length > max_bytes:
                    raise _Trouble("too_large", f"Content-Length {resp.content_length} > {max_bytes} bytes",
                                   retry=True, status=200, evidence=f"length {resp.content_length}")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > max_bytes:
                        raise _Trouble("too_large", f"body over {max_bytes} bytes", retry=True, status=200,
                                       evidence="undeclared length")
                if gate.succeeded():
                    self.log(f"{pool}: concurrency back up to {gate.limit} of {gate.cap}")
                return Response(url=str(url), status=200, content_type=ctype, body=bytes(body), retry_after=retry_after)
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
            gate.in_flight -= 1
            gate.notify()

    async def _refused_agent(self, url: URL, resp: aiohttp.ClientResponse) -> None:
        """A 403 that names the User-Agent refuses every request this client will send."""
        excerpt = (await resp.content.read(2000)).decode("utf-8", "replace")
        if USER_AGENT_REFUSAL.search(excerpt):
            raise ConfigError(
                f"{url.host} refused the User-Agent {self.politeness.user_agent!r} (HTTP 403: "
                f"{' '.join(excerpt.split())[:300]}). Wikimedia asks for '<client>/<version> (<contact URL or "
                "e-mail>) <library>/<version>': set MLM_CONTACT (the resource's `contact`) to where you can be reached"
            )


def media_type(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _host(url: URL) -> str:
    return f"{url.host}:{url.port}" if url.port else str(url.host)
