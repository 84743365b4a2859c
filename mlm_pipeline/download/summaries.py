"""Wikipedia intro summaries through TextExtracts, 20 titles a request, resumable.

The reference fetched one page at a time through a third-party library; MediaWiki's TextExtracts
gives the plain-text intro of up to 20 pages in one request
(``action=query&prop=extracts&exintro=1&explaintext=1``), with continuation when it returns
fewer. The API may answer under another title than the one asked (normalisation such as a
lower-case first letter, redirects), so answers are mapped back through ``normalized``,
``converted`` and ``redirects`` to the sitelink title, and from there to every entity that
links it. Missing pages, invalid titles and empty intros are recorded, never dropped silently.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import pyarrow as pa

from mlm_pipeline import schemas
from mlm_pipeline.download.mediawiki import Answers, query_titles, title_problem
from mlm_pipeline.download.politeness import Politeness, PoliteSession
from mlm_pipeline.download.progress import Progress
from mlm_pipeline.download.staging import (
    STAGED_FAILURES, BatchOutcome, BatchRunner, Staging, Stored, chunks, pending_keys,
)

STAGE = "summaries"
MAX_TITLES_PER_REQUEST = 20  # TextExtracts' exlimit with exintro
STAGED_SUMMARIES = pa.schema([("key", pa.string()), ("lang", pa.string()), ("title", pa.string()),
                              ("text", pa.string())])


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
        another limit starts afresh."""
        return f"max{self.max_bytes}"


def key_of(lang: str, title: str) -> str:
    return f"{lang}|{title}"  # "|" cannot occur in a title


def split_key(key: str) -> tuple[str, str]:
    lang, title = key.split("|", 1)
    return lang, title


def wanted_titles(entities: pa.Table, langs: Sequence[str]) -> dict[str, list[str]]:
    """``lang|title`` -> the entities whose sitelink it is (two items can link one page)."""
    wanted: dict[str, list[str]] = {}
    for lang in langs:
        column = f"title_{lang}"
        if column not in entities.column_names:
            raise ValueError(f"entities table has no {column!r} column for language {lang!r}")
        for qid, title in zip(entities["qid"].to_pylist(), entities[column].to_pylist()):
            if title is not None:
                wanted.setdefault(key_of(lang, title), []).append(qid)
    return wanted


def title_outcomes(lang: str, titles: Sequence[str], answers: Answers) -> BatchOutcome:
    """A result or a (reason, detail, transient) failure for every asked title."""
    results: list[tuple[str, str]] = []
    failures: list[tuple[str, str, str, bool]] = []
    for asked in titles:
        final = answers.final_title(asked)
        page = answers.page(asked)
        via = f" (answered as {final!r})" if final != asked else ""
        text = str((page or {}).get("extract") or "").strip()
        if text:
            results.append((asked, text))
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
        params = {"prop": "extracts", "exintro": "1", "explaintext": "1", "exlimit": str(len(titles)),
                  "redirects": "1"}
        # Each language's wiki is its own API: requests to one go in series, the wikis in parallel.
        api = self.api_template.format(lang=lang)
        answers = await query_titles(self.session, api, params, titles, max_bytes=self.plan.max_bytes,
                                     max_continuations=self.plan.max_continuations)
        return title_outcomes(lang, titles, answers)


def _outcome(lang: str, results: list[tuple[str, str]], failures: list[tuple[str, str, str, bool]]) -> BatchOutcome:
    result_rows = {
        "key": [key_of(lang, title) for title, _ in results],
        "lang": [lang] * len(results),
        "title": [title for title, _ in results],
        "text": [text for _, text in results],
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
    entities: pa.Table, api_template: str, session: PoliteSession, staging: Staging,
    plan: SummaryPlan, log: Callable[[str], None],
) -> tuple[pa.Table, pa.Table]:
    """SUMMARIES and DROPOUTS tables for ``entities``, fetching only what ``staging`` lacks."""
    if problems := plan.problems():
        raise ValueError("summaries: " + "; ".join(problems))
    wanted = wanted_titles(entities, plan.langs)
    pending = pending_keys(sorted(wanted), staging.load(keys_only=True))
    progress = Progress("summaries", total=len(wanted), log=log, every_s=plan.progress_every_s,
                        already=len(wanted) - len(pending))
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
    return assemble(wanted, staging.load())


def assemble(wanted: dict[str, list[str]], stored: Stored) -> tuple[pa.Table, pa.Table]:
    """One summary row per entity and language, or one dropout row saying why not."""
    texts = dict(zip(stored.results["key"].to_pylist(), stored.results["text"].to_pylist()))
    f = stored.failures.to_pydict()
    failures = {k: (r, d) for k, r, d in zip(f["key"], f["reason"], f["detail"])}
    rows: dict[str, list[str]] = {"qid": [], "lang": [], "title": [], "text": []}
    drops: dict[str, list[str]] = {"qid": [], "item": [], "stage": [], "reason": [], "detail": []}
    for key, qids in wanted.items():
        lang, title = split_key(key)
        for qid in qids:
            if key in texts:
                for column, value in zip(rows, (qid, lang, title, texts[key])):
                    rows[column].append(value)
            else:
                reason, detail = failures.get(key, ("not_fetched", "no outcome stored (download interrupted)"))
                for column, value in zip(drops, (qid, lang, STAGE, reason, f"{title!r}: {detail}")):
                    drops[column].append(value)
    return (schemas.sort_table(pa.table(rows, schema=schemas.SUMMARIES), "summaries"),
            schemas.sort_table(pa.table(drops, schema=schemas.DROPOUTS), "summary_dropouts"))


def fetch_summaries(
    entities: pa.Table, api_template: str, politeness: Politeness, folder: Path, plan: SummaryPlan,
    log: Callable[[str], None],
) -> tuple[pa.Table, pa.Table, Counter[str]]:
    """``download_summaries`` for synchronous callers, with the client's request counts."""
    async def go() -> tuple[pa.Table, pa.Table, Counter[str]]:
        async with PoliteSession(politeness, log) as session:
            summaries, dropouts = await download_summaries(
                entities, api_template, session, Staging(folder, STAGED_SUMMARIES), plan, log)
            return summaries, dropouts, session.stats

    return asyncio.run(go())
