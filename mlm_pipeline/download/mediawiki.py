"""MediaWiki Action API queries over many titles: continuation, renamed titles, Wikimedia's rules.

An ``action=query`` over a list of titles may answer across several requests (``continue``), and
under other titles than those asked: normalised (``a_b`` -> ``A b``), language-variant
converted, or followed through a redirect. ``Answers`` keeps all of that so each asked title
finds its page.

The API's etiquette is kept here for every caller: requests to one API go in series (a serial
pool per API URL), each carries ``maxlag=5`` (Wikimedia's convention for bulk clients), and a
``maxlag`` error makes the whole API wait as long as its Retry-After says before the request is
tried again. An answer too large to accept is no verdict on the titles in it: the titles are
asked again in halves, down to the one title whose answer is too large.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from mlm_pipeline.download.politeness import FetchFailed, Invalid, PoliteSession, Response, serial_pool

RENAMES = ("normalized", "converted", "redirects")  # the order MediaWiki applies them
RETRYABLE_ERRORS = ("maxlag", "ratelimited", "readonly", "internal_api_error")
MAXLAG_S = 5  # seconds of replication lag above which the API should refuse us (Manual:Maxlag_parameter)
# What cannot be sent in a ``titles=A|B`` list ('#' would silently ask for another page); any
# other doubt about a title is the wiki's to judge (it answers ``invalid``).
UNSENDABLE = re.compile(r"[#|\x00-\x1f\x7f]")


def title_problem(title: str) -> str | None:
    if not title.strip():
        return "empty title"
    if UNSENDABLE.search(title):
        return "contains '#', '|' or a control character"
    return None


def api_json(response: Response) -> dict[str, Any]:
    """The answer as a JSON object; an ``error`` answer (HTTP 200 all the same) is ``Invalid``."""
    try:
        data = json.loads(response.body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Invalid("bad_json", f"API answer is not JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise Invalid("bad_json", "API answer is not a JSON object")
    error = data.get("error")
    if isinstance(error, dict):
        code = str(error.get("code", "unknown"))
        pause = None
        if code == "maxlag":  # the lagged API asks everyone to pause: its Retry-After, else maxlag seconds
            pause = response.retry_after if response.retry_after is not None else float(MAXLAG_S)
        raise Invalid(f"api_{code}", str(error.get("info", ""))[:200], retry=code.startswith(RETRYABLE_ERRORS),
                      retry_after=pause)
    return data


@dataclass
class Answers:
    renamed: dict[str, dict[str, str]] = field(default_factory=lambda: {name: {} for name in RENAMES})
    pages: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Asked title -> why its request failed (part-way: pages of earlier rounds are kept).
    failures: dict[str, FetchFailed] = field(default_factory=dict)

    def add(self, query: Mapping[str, Any]) -> None:
        for name in RENAMES:
            self.renamed[name].update(
                {str(m["from"]): str(m["to"]) for m in query.get(name, []) if "from" in m and "to" in m})
        raw = query.get("pages", [])
        for page in raw.values() if isinstance(raw, dict) else raw:  # formatversion 1 or 2
            merged = self.pages.setdefault(str(page.get("title", "")), {})
            # Continuation rounds repeat every page; only the round that carries a value counts.
            merged.update({k: v for k, v in page.items() if v not in ("", None, [], {}) or k not in merged})

    def final_title(self, asked: str) -> str:
        title = asked
        for name in RENAMES:
            title = self.renamed[name].get(title, title)
        return title

    def page(self, asked: str) -> dict[str, Any] | None:
        return self.pages.get(self.final_title(asked))

    def failure(self, asked: str) -> FetchFailed | None:
        return self.failures.get(asked)


async def query_titles(
    session: PoliteSession, url: str, params: Mapping[str, str], titles: Sequence[str], *,
    max_bytes: int, max_continuations: int,
) -> Answers:
    """Run one ``action=query`` for ``titles`` through all its continuation rounds (in halves
    where an answer is too large), in series with every other request to ``url``."""
    answers = Answers()
    await _query(session, url, params, list(titles), answers, max_bytes, max_continuations)
    return answers


async def _query(
    session: PoliteSession, url: str, params: Mapping[str, str], titles: list[str], answers: Answers,
    max_bytes: int, max_continuations: int,
) -> None:
    current = {"action": "query", "format": "json", "formatversion": "2", "maxlag": str(MAXLAG_S), **params,
               "titles": "|".join(titles)}
    split = ("too_large",) if len(titles) > 1 else ()  # halving is the better retry for a batch
    try:
        for _round in range(max_continuations + 1):
            response = await session.get(url, params=current, accept=("application/json",), max_bytes=max_bytes,
                                         check=api_json, pool=serial_pool(url), final=split)
            data: dict[str, Any] = response.checked
            answers.add(data.get("query") or {})
            if not isinstance(data.get("continue"), dict):
                return
            current = {**current, **{k: str(v) for k, v in data["continue"].items()}}
        raise FetchFailed("continuation_loop", f"still continuing after {max_continuations} rounds", transient=True)
    except FetchFailed as failed:
        if failed.reason in split:
            half = len(titles) // 2
            for part in (titles[:half], titles[half:]):
                await _query(session, url, params, part, answers, max_bytes, max_continuations)
            return
        answers.failures.update({title: failed for title in titles})
