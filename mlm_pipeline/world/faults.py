"""Faults the embedded world's servers inject, so that clients prove they survive the real services.

A plan is written as one string, e.g.::

    latency=0.1,http429=0.05,http5xx=0.02,timeout=0.01,truncate=0.01,corrupt=0.02,
    content_type=0.01,redirect_loop=0.01,oversize=0.01,garbage=0.01,seed=7

Rates are probabilities per request (their sum must stay <= 1); ``latency`` is seconds added
to every answer. A rate can be limited to one server with its name as a prefix
(``sparql.http429=0.5`` overrides ``http429`` for the SPARQL server only). Settings that are not
rates: ``seed`` (default 0), ``retry_after`` (seconds sent with 429, default 1), ``hang``
(seconds a ``timeout`` fault keeps the connection silent before dropping it, default 3: longer
than the clients' test timeouts, short enough that tests stay fast).

The decision is a pure function of (seed, server, request key, attempt number), so a run with
the same plan sees the same faults, and a client that retries a request eventually gets through
(each attempt draws afresh). Servers use :meth:`FaultPlan.next` which numbers the attempts per
request key itself.

Fault kinds (what a server does with them is its own business; kinds a server cannot produce
are ignored by it):

- ``http429``: 429 Too Many Requests with ``Retry-After``.
- ``http5xx``: 500, 502, 503 or 504 (chosen from the same draw).
- ``timeout``: no answer for ``hang`` seconds, then the connection is closed.
- ``truncate``: a 200 whose body stops half way.
- ``corrupt``: a 200 whose body has bytes flipped (for images: undecodable bytes).
- ``content_type``: a 200 with the wrong ``Content-Type`` (e.g. an HTML error page).
- ``redirect_loop``: a redirect to itself, forever.
- ``oversize``: an answer far larger than asked for (e.g. an original instead of a thumbnail).
- ``garbage``: a 200 whose body is not the expected format at all.
- ``maxlag``: (MediaWiki Action API) the ``maxlag`` error a lagged wiki gives a client that sent
  ``maxlag``: HTTP 200, error code ``maxlag``, ``Retry-After`` and ``X-Database-Lag`` headers.
- ``redirect``: (SPARQL) a redirect to the same endpoint under another URL, as a moved or
  load-balanced service answers; a POST query must be sent again there, not turned into a GET.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import Iterable

FAULT_KINDS: tuple[str, ...] = (
    "http429",
    "http5xx",
    "timeout",
    "truncate",
    "corrupt",
    "content_type",
    "redirect_loop",
    "oversize",
    "garbage",
    "maxlag",  # kinds are drawn in this order: new ones go last, so older plans draw as before
    "redirect",
)
SETTINGS: dict[str, float] = {"latency": 0.0, "seed": 0, "retry_after": 1.0, "hang": 3.0}


def _draw(*parts: object) -> float:
    """A uniform number in [0, 1) fixed by ``parts``; stable across processes and platforms."""
    digest = hashlib.blake2b("\x1f".join(map(str, parts)).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


@dataclass
class FaultPlan:
    """Rates per fault kind (optionally per server) plus the settings that shape the faults."""

    rates: dict[str, float] = field(default_factory=dict)
    server_rates: dict[str, dict[str, float]] = field(default_factory=dict)
    latency: float = 0.0
    seed: int = 0
    retry_after: float = 1.0
    hang: float = 3.0
    _attempts: dict[tuple[str, str], int] = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def parse(cls, text: "str | FaultPlan | None") -> "FaultPlan":
        """Read a plan; an empty string means no faults. A plan passes through unchanged."""
        if isinstance(text, FaultPlan):
            return text
        plan = cls()
        for raw in (text or "").replace(";", ",").split(","):
            item = raw.strip()
            if not item:
                continue
            name, sep, value_text = item.partition("=")
            name = name.strip()
            if not sep:
                raise ValueError(f"faults: {item!r} is not name=value (in {text!r})")
            try:
                value = float(value_text)
            except ValueError:
                raise ValueError(f"faults: {name}={value_text!r} is not a number (in {text!r})") from None
            server, dot, kind = name.rpartition(".")
            if name in SETTINGS:
                if value < 0:
                    raise ValueError(f"faults: {name}={value} must not be negative")
                if name == "seed":
                    plan.seed = int(value)
                else:
                    setattr(plan, name, value)
            elif kind in FAULT_KINDS:
                if not 0.0 <= value <= 1.0:
                    raise ValueError(f"faults: {name}={value} is a rate and must lie in [0, 1]")
                if dot:
                    plan.server_rates.setdefault(server, {})[kind] = value
                else:
                    plan.rates[kind] = value
            else:
                known = ", ".join((*FAULT_KINDS, *SETTINGS))
                raise ValueError(f"faults: unknown name {name!r} (in {text!r}); known: {known}")
        for server in [None, *plan.server_rates]:
            total = sum(plan.rates_for(server).values())
            if total > 1.0 + 1e-9:
                where = f" for server {server!r}" if server else ""
                raise ValueError(f"faults: rates{where} add up to {total:.3f} > 1 (in {text!r})")
        return plan

    def __bool__(self) -> bool:
        return self.latency > 0 or any(self.rates.values()) or any(
            any(r.values()) for r in self.server_rates.values()
        )

    def rates_for(self, server: str | None) -> dict[str, float]:
        merged = dict(self.rates)
        if server is not None:
            merged.update(self.server_rates.get(server, {}))
        return merged

    def decide(self, server: str, key: str, attempt: int, kinds: Iterable[str] | None = None) -> str | None:
        """The fault for this attempt at this request, or None; ``kinds`` limits what can happen."""
        rates = self.rates_for(server)
        if not any(rates.values()):
            return None
        allowed = set(FAULT_KINDS if kinds is None else kinds)
        u = _draw(self.seed, server, key, attempt)
        edge = 0.0
        for kind in FAULT_KINDS:
            edge += rates.get(kind, 0.0)
            if u < edge:
                return kind if kind in allowed else None
        return None

    def next(self, server: str, key: str, kinds: Iterable[str] | None = None) -> str | None:
        """Decide for the next attempt at ``key`` (attempts are numbered from 0 per server and key)."""
        with self._lock:
            attempt = self._attempts.get((server, key), 0)
            self._attempts[(server, key)] = attempt + 1
        return self.decide(server, key, attempt, kinds)

    def pick(self, server: str, key: str, options: list) -> object:
        """A deterministic choice for a fault's details (e.g. which 5xx), independent of the decision."""
        return options[int(_draw(self.seed, server, key, "detail") * len(options))]
