"""A SPARQL 1.1 client that a public query service tolerates and that never returns short results.

Built on ``requests`` rather than SPARQLWrapper. SPARQLWrapper does keep ``Retry-After``
readable (a 429 or 503 comes back as urllib's ``HTTPError`` with its headers), but it sends
through urllib's global opener, which follows a 301/302/303 answer to a POST by turning the
query into a GET without a body: the query is lost and the server's 400 reads as a bad query
(``test_sparql_client.py`` shows both). Here redirects are followed by posting the query again to
the new location (a bounded number of hops), every response is either complete and well formed
or it is retried, each attempt has a total deadline (not just a gap between bytes), and when
retries run out the error names the query (a short name plus a hash of its text), so a failed
page fails the asset instead of shrinking it.

Wikimedia's rules shape the defaults: one query at a time (a lock, even across threads), a
User-Agent with a contact (a 403 that names the User-Agent policy says which agent was refused),
``Retry-After`` obeyed (``mlm_pipeline.backoff``, shared with the download clients), and a
per-query deadline below the live service's 60 s limit.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, NamedTuple
from urllib.parse import urljoin

import requests

from mlm_pipeline.backoff import backoff_delay, parse_retry_after

RESULT_TYPES = ("application/sparql-results+json", "application/json")
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT_REFUSAL = re.compile(r"user[- ]?agent", re.IGNORECASE)


class QueryFailed(RuntimeError):
    """A query that did not give a complete, well-formed answer; names the query."""


class Term(NamedTuple):
    """One bound value of a SPARQL JSON result."""

    kind: str  # "uri", "literal" or "bnode"
    value: str
    lang: str | None = None
    datatype: str | None = None


Row = dict[str, Term]


@dataclass(frozen=True)
class Query:
    """A query text with the short name and hash under which logs and errors report it."""

    name: str
    text: str
    variables: tuple[str, ...]

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        return f"{self.name}#{self.digest}"


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries with exponential back-off and jitter.

    The deadline is per attempt and covers the whole response, not just the gap between bytes,
    so a server that trickles a body cannot hold a query past the live service's 60 s limit.
    """

    max_attempts: int = 6
    backoff_base_s: float = 2.0
    backoff_cap_s: float = 120.0
    timeout_s: float = 55.0
    connect_timeout_s: float = 10.0
    max_retry_after_s: float = 900.0
    max_redirects: int = 5  # hops per attempt; the query is posted again at each

    def backoff(self, attempt: int, rng: random.Random) -> float:
        return backoff_delay(attempt, self.backoff_base_s, self.backoff_cap_s, rng)


@dataclass
class ClientStats:
    """What the client did, for logs and materialisation metadata."""

    queries: int = 0
    requests: int = 0
    retries: int = 0
    redirects: int = 0
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0
    waited_s: float = 0.0
    by_name: Counter = field(default_factory=Counter)
    labels: dict[str, str] = field(default_factory=dict)  # label -> name, first seen first
    failures: Counter = field(default_factory=Counter)  # kind -> failed attempts


class TransientFailure(Exception):
    """A failed attempt worth repeating: the next one may well succeed."""

    def __init__(self, reason: str, kind: str = "garbage", retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind  # garbage, timeout, transport, http_<status>
        self.retry_after = retry_after


TERM_KINDS = {"uri": "uri", "literal": "literal", "typed-literal": "literal", "bnode": "bnode"}


def parse_results(body: bytes, variables: tuple[str, ...]) -> list[Row]:
    """Decode SPARQL 1.1 JSON results, rejecting anything not complete and well formed.

    A body cut off mid-stream fails to decode; a body that decodes but projects other variables
    than the query asked for is someone else's answer. Both are retried, never returned.
    """
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise TransientFailure(f"body is not complete JSON ({len(body)} bytes: {error})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("head"), dict):
        raise TransientFailure("JSON without a results head")
    head_vars = doc["head"].get("vars")
    results = doc.get("results")
    if not isinstance(head_vars, list) or not isinstance(results, dict):
        raise TransientFailure("JSON without head.vars or results")
    if set(head_vars) != set(variables):
        raise TransientFailure(f"answer projects {sorted(head_vars)}, query asked for {sorted(variables)}")
    bindings = results.get("bindings")
    if not isinstance(bindings, list):
        raise TransientFailure("JSON without results.bindings")
    allowed = set(variables)
    rows: list[Row] = []
    for binding in bindings:  # the hot loop of every extraction: plain lookups, no helpers
        if type(binding) is not dict or not binding.keys() <= allowed:
            raise TransientFailure(f"malformed result row: {str(binding)[:80]}")
        row: Row = {}
        for var, raw in binding.items():
            try:
                kind, value = TERM_KINDS[raw["type"]], raw["value"]
            except (KeyError, TypeError):
                raise TransientFailure(f"malformed binding for ?{var}: {str(raw)[:80]}") from None
            if type(value) is not str:
                raise TransientFailure(f"binding for ?{var} has a non-string value")
            row[var] = Term(kind, value, raw.get("xml:lang"), raw.get("datatype"))
        rows.append(row)
    return rows


class SparqlClient:
    """Sends SELECT queries one at a time and returns complete rows or raises ``QueryFailed``."""

    def __init__(
        self,
        endpoint_url: str,
        user_agent: str,
        policy: RetryPolicy | None = None,
        log: logging.Logger | logging.LoggerAdapter | None = None,
        sleep: Callable[[float], None] = time.sleep,
        seed: int | None = None,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.policy = policy or RetryPolicy()
        self.log = log or logging.getLogger(__name__)
        self.stats = ClientStats()
        self._sleep = sleep
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._session = requests.Session()
        self._session.headers.update(
            {
                "User-Agent": user_agent,
                "Accept": ", ".join(RESULT_TYPES),
                "Accept-Encoding": "gzip, deflate",
            }
        )

    def __enter__(self) -> SparqlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._session.close()

    def select(self, query: Query) -> list[Row]:
        """The complete answer to ``query``; retries transient failures, raises ``QueryFailed``."""
        with self._lock:
            started = time.monotonic()
            self.stats.labels.setdefault(query.label, query.name)
            last = ""
            for attempt in range(1, self.policy.max_attempts + 1):
                self.stats.requests += 1
                try:
                    rows = self._attempt(query)
                except TransientFailure as failure:
                    last = failure.reason
                    self.stats.failures[failure.kind] += 1
                    if attempt == self.policy.max_attempts:
                        break
                    wait = self.policy.backoff(attempt, self._rng)
                    if failure.retry_after is not None:
                        if failure.retry_after > self.policy.max_retry_after_s:
                            raise QueryFailed(
                                f"query {query.label} against {self.endpoint_url}: server asked "
                                f"to retry after {failure.retry_after:.0f} s (more than "
                                f"{self.policy.max_retry_after_s:.0f} s); last error: {last}"
                            ) from None
                        wait = max(wait, failure.retry_after)
                    self.stats.retries += 1
                    self.stats.waited_s += wait
                    self.log.warning(
                        "query %s attempt %d/%d failed (%s); retrying in %.1f s",
                        query.label,
                        attempt,
                        self.policy.max_attempts,
                        last,
                        wait,
                    )
                    self._sleep(wait)
                    continue
                self.stats.queries += 1
                self.stats.rows += len(rows)
                self.stats.by_name[query.name] += 1
                self.stats.seconds += time.monotonic() - started
                return rows
            raise QueryFailed(
                f"query {query.label} against {self.endpoint_url} failed after "
                f"{self.policy.max_attempts} attempts; last error: {last}"
            )

    def _post(self, query: Query) -> requests.Response:
        """POST the query, and again to wherever a redirect points (never as a GET without it)."""
        url = self.endpoint_url
        for _hop in range(self.policy.max_redirects + 1):
            response = self._session.post(
                url,
                data={"query": query.text},
                timeout=(self.policy.connect_timeout_s, self.policy.timeout_s),
                stream=True,
                allow_redirects=False,
            )
            location = response.headers.get("Location")
            if response.status_code not in REDIRECT_STATUSES or not location:
                return response
            response.close()
            url = urljoin(url, location)
            self.stats.redirects += 1
        raise TransientFailure(f"more than {self.policy.max_redirects} redirects (last to {url})", "redirect")

    def _attempt(self, query: Query) -> list[Row]:
        policy = self.policy
        deadline = time.monotonic() + policy.timeout_s
        try:
            response = self._post(query)
            try:
                if response.status_code != 200:
                    self._refuse(query, response)
                content_type = response.headers.get("Content-Type", "").split(";")[0].strip()
                if content_type not in RESULT_TYPES:
                    raise TransientFailure(f"unexpected content type {content_type or 'none'!r}")
                chunks = []
                for chunk in response.iter_content(1 << 16):
                    chunks.append(chunk)
                    if time.monotonic() > deadline:
                        raise TransientFailure(f"no complete answer within {policy.timeout_s:.0f} s", "timeout")
                body = b"".join(chunks)
            finally:
                response.close()
        except requests.Timeout:
            raise TransientFailure(f"no answer within {policy.timeout_s:.0f} s", "timeout") from None
        except requests.RequestException as error:
            # A connection reset or a body shorter than its Content-Length lands here.
            raise TransientFailure(f"{type(error).__name__}: {str(error)[:120]}", "transport") from None
        self.stats.bytes += len(body)
        return parse_results(body, query.variables)

    def _refuse(self, query: Query, response: requests.Response) -> None:
        status = response.status_code
        if status in RETRY_STATUSES:
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            raise TransientFailure(f"HTTP {status}", f"http_{status}", retry_after)
        excerpt = " ".join(response.raw.read(300, decode_content=True).decode("utf-8", "replace").split())
        if status == 403 and USER_AGENT_REFUSAL.search(excerpt):
            raise QueryFailed(
                f"query {query.label} against {self.endpoint_url} was refused with HTTP 403 for the User-Agent "
                f"{self._session.headers['User-Agent']!r} ({excerpt}); Wikimedia asks for '<client>/<version> "
                "(<contact URL or e-mail>) <library>/<version>': set MLM_CONTACT to where you can be reached"
            )
        raise QueryFailed(
            f"query {query.label} against {self.endpoint_url} was refused with HTTP {status} "
            f"(not retried: the query or the endpoint URL is wrong): {excerpt}"
        )
