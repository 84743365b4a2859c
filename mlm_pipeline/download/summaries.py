"""Wikipedia intro summaries through TextExtracts, 20 titles a request, resumable.

The reference fetched one page at a time through a third-party library; MediaWiki's TextExtracts
gives the plain-text intro of up to 20 pages in one request
(``action=query&prop=extracts&exintro=1&explaintext=1``), with continuation when it returns
fewer; ``prop=info`` in the same request names the revision each text comes from, which the
release package records so that a text can be traced to its version of the article. The API may answer under another title than the one asked (normalisation such as a
lower-case first letter, redirects), so answers are mapped back through ``normalized``,
``converted`` and ``redirects`` to the sitelink title, and from there to every entity that
links it. Missing pages, invalid titles and empty intros are recorded, never dropped silently.
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Sequence

import duckdb
import pyarrow as pa

from mlm_pipeline.download.mediawiki import Answers, query_titles, title_problem
from mlm_pipeline.download.politeness import Politeness, PoliteSession
from mlm_pipeline.download.progress import Progress
from mlm_pipeline.download.staging import STAGED_FAILURES, BatchOutcome, BatchRunner, Staging, chunks, pending_keys

STAGE = "summaries"
MAX_TITLES_PER_REQUEST = 20  # TextExtracts' exlimit with exintro
STAGED_SUMMARIES = pa.schema([("key", pa.string()), ("lang", pa.string()), ("title", pa.string()),
                              ("text", pa.string()), ("revision", pa.int64())])


@dataclass(frozen=True)
class SummaryPlan:
    langs: tuple[str, ...] = ("en", "de", "fr")
    batch_size: int = MAX_TITLES_PER_REQUEST
    max_bytes: int = 16 << 20  # per API response
    parallel_batches: int = 8
    max_continuations: int = 50  # a server that keeps saying "continue" is not followed forever
    progress_every_s: float = 10.0

    def problems(self) -> list[str]:
        problems = []
        if not 1 <= self.batch_size <= MAX_TITLES_PER_REQUEST:
            problems.append(f"batch_size={self.batch_size}: TextExtracts answers 1..{MAX_TITLES_PER_REQUEST} titles")
        if not self.langs:
            problems.append("langs is empty")
        for name in ("max_bytes", "parallel_batches", "progress_every_s"):
            if getattr(self, name) <= 0:
                problems.append(f"{name}={getattr(self, name)} must be positive")
        return problems

    def fingerprint(self) -> str:
        """Names the staging folder: the limit behind a stored ``too_large`` verdict, so that
        another limit starts afresh (and the staged columns, which now carry revisions)."""
        return f"max{self.max_bytes}-rev"


def key_of(lang: str, title: str) -> str:
    return f"{lang}|{title}"  # "|" cannot occur in a title


def split_key(key: str) -> tuple[str, str]:
    lang, title = key.split("|", 1)
    return lang, title


LANGUAGE_CODE = re.compile(r"[a-z][a-z0-9-]{0,31}")


def _wanted(con: duckdb.DuckDBPyConnection, langs: Sequence[str]) -> str:
    """Every (entity, language, title, key) asked for, from the ``entities`` view (two items can
    link one page)."""
    columns = {row[0] for row in con.execute("DESCRIBE entities").fetchall()}
    parts = []
    for lang in langs:
        if not LANGUAGE_CODE.fullmatch(lang):
            raise ValueError(f"language {lang!r}: not a Wikipedia language code such as 'en' or 'zh-yue'")
        if f"title_{lang}" not in columns:
            raise ValueError(f"entities table has no 'title_{lang}' column for language {lang!r}")
        parts.append(f"""SELECT qid, '{lang}' AS lang, "title_{lang}" AS title, '{lang}|' || "title_{lang}" AS key
                         FROM entities WHERE "title_{lang}" IS NOT NULL""")
    if not parts:
        raise ValueError("no languages to take summaries from")
    return " UNION ALL ".join(parts)


def wanted_titles(con: duckdb.DuckDBPyConnection, langs: Sequence[str]) -> list[str]:
    """The distinct ``lang|title`` keys of the ``entities`` view, sorted."""
    return [key for (key,) in con.execute(f"SELECT DISTINCT key FROM ({_wanted(con, langs)}) ORDER BY 1").fetchall()]


def title_outcomes(lang: str, titles: Sequence[str], answers: Answers) -> BatchOutcome:
    """A result or a (reason, detail, transient) failure for every asked title."""
    results: list[tuple[str, str, int | None]] = []
    failures: list[tuple[str, str, str, bool]] = []
    for asked in titles:
        final = answers.final_title(asked)
        page = answers.page(asked)
        via = f" (answered as {final!r})" if final != asked else ""
        text = str((page or {}).get("extract") or "").strip()
        if text:
            revision = (page or {}).get("lastrevid")
            results.append((asked, text, revision if isinstance(revision, int) and revision > 0 else None))
        elif (failed := answers.failure(asked)) is not None:
            failures.append((asked, failed.reason, failed.record_detail, failed.transient))
        elif page is None:
            failures.append((asked, "no_answer", f"the API returned no page for it{via}", True))
        elif page.get("invalid") not in (None, False):
            failures.append((asked, "invalid_title", str(page.get("invalidreason", ""))[:200], False))
        elif page.get("missing") not in (None, False):
            failures.append((asked, "missing_page", f"no such page{via}", False))
        else:
            failures.append((asked, "empty_extract", f"the page has no intro text{via}", False))
    return _outcome(lang, results, failures)


class SummaryDownloader:
    def __init__(self, session: PoliteSession, api_template: str, plan: SummaryPlan) -> None:
        self.session = session
        self.api_template = api_template
        self.plan = plan

    async def batch(self, lang: str, titles: Sequence[str]) -> BatchOutcome:
        params = {"prop": "extracts|info", "exintro": "1", "explaintext": "1", "exlimit": str(len(titles)),
                  "redirects": "1"}
        # Each language's wiki is its own API: requests to one go in series, the wikis in parallel.
        api = self.api_template.format(lang=lang)
        answers = await query_titles(self.session, api, params, titles, max_bytes=self.plan.max_bytes,
                                     max_continuations=self.plan.max_continuations)
        return title_outcomes(lang, titles, answers)


def _outcome(lang: str, results: list[tuple[str, str, int | None]],
             failures: list[tuple[str, str, str, bool]]) -> BatchOutcome:
    result_rows = {
        "key": [key_of(lang, title) for title, _, _ in results],
        "lang": [lang] * len(results),
        "title": [title for title, _, _ in results],
        "text": [text for _, text, _ in results],
        "revision": [revision for _, _, revision in results],
    }
    failure_rows = {
        "key": [key_of(lang, f[0]) for f in failures],
        "reason": [f[1] for f in failures],
        "detail": [f[2] for f in failures],
        "transient": [f[3] for f in failures],
    }
    return BatchOutcome(pa.table(result_rows, schema=STAGED_SUMMARIES),
                        pa.table(failure_rows, schema=STAGED_FAILURES))


async def download_summaries(
    keys: Sequence[str], api_template: str, session: PoliteSession, staging: Staging,
    plan: SummaryPlan, log: Callable[[str], None],
) -> None:
    """Downloads every ``lang|title`` of ``keys`` that ``staging`` holds no outcome for."""
    if problems := plan.problems():
        raise ValueError("summaries: " + "; ".join(problems))
    pending = pending_keys(keys, staging.load(keys_only=True))
    progress = Progress("summaries", total=len(keys), log=log, every_s=plan.progress_every_s,
                        already=len(keys) - len(pending))
    unsendable = {k: problem for k in pending if (problem := title_problem(split_key(k)[1]))}
    for lang in sorted({split_key(k)[0] for k in unsendable}):
        staging.write(_outcome(lang, [], [(split_key(k)[1], "invalid_title", problem, False)
                                          for k, problem in unsendable.items() if split_key(k)[0] == lang]))
    progress.add(failed=len(unsendable))
    pending = [k for k in pending if k not in unsendable]
    per_lang = [[(lang, batch) for batch in chunks([split_key(k)[1] for k in pending if split_key(k)[0] == lang],
                                                    plan.batch_size)]
                for lang in plan.langs]
    # Interleaved, so that every language's wiki is busy from the start.
    batches = [b for group in itertools.zip_longest(*per_lang) for b in group if b is not None]
    downloader = SummaryDownloader(session, api_template, plan)
    await BatchRunner(staging, progress, plan.parallel_batches).run(
        batches, lambda b: downloader.batch(b[0], b[1]))


def assemble(con: duckdb.DuckDBPyConnection, staging: Staging, langs: Sequence[str]) -> tuple[str, str]:
    """Queries for the SUMMARIES rows, one per entity and language with a text, and the
    DROPOUTS rows, one per entity and language without, saying why: over the ``entities`` view
    and the staged outcomes, sorted, run out of core by DuckDB."""
    wanted = _wanted(con, langs)
    staging.register(con)
    summaries = f"""
        SELECT w.qid, w.lang, w.title, r.text, r.revision
        FROM ({wanted}) w JOIN staged_results r ON r.key = w.key
        ORDER BY w.qid, w.lang"""
    dropouts = f"""
        SELECT w.qid, w.lang AS item, '{STAGE}' AS stage,
               coalesce(f.reason, 'not_fetched') AS reason,
               '"' || w.title || '": ' || coalesce(f.detail, 'no outcome stored (download interrupted)') AS detail
        FROM ({wanted}) w ANTI JOIN staged_results r ON r.key = w.key
        LEFT JOIN staged_failures f ON f.key = w.key
        ORDER BY qid, item, stage, reason"""
    return summaries, dropouts


def fetch_summaries(
    keys: Sequence[str], api_template: str, politeness: Politeness, staging: Staging, plan: SummaryPlan,
    log: Callable[[str], None],
) -> Counter[str]:
    """``download_summaries`` for synchronous callers; returns the client's request counts."""
    async def go() -> Counter[str]:
        async with PoliteSession(politeness, log) as session:
            await download_summaries(keys, api_template, session, staging, plan, log)
            return session.stats

    return asyncio.run(go())
