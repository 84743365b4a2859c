"""Summaries from the embedded world's Wikipedias: complete, accounted, polite, resumable."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from pathlib import Path
from urllib.parse import parse_qsl

import pyarrow as pa
import pytest
import requests

from mlm_pipeline import schemas, sql
from mlm_pipeline.download.politeness import Politeness, PoliteSession
from mlm_pipeline.download.staging import Staging
from mlm_pipeline.download.summaries import STAGED_SUMMARIES, SummaryPlan, assemble, download_summaries, wanted_titles
from mlm_pipeline.endpoints import ConfigError, user_agent
from mlm_pipeline.world import Served, World, running_world
from mlm_pipeline.world.wiki_server import WikiIndex, normalize_title, served_counts

UA = user_agent("https://example.org/mlm-tests")
LANGS = ("en", "de", "fr")
FAULTS = ("http429=0.04,http5xx=0.08,timeout=0.04,truncate=0.05,corrupt=0.05,content_type=0.05,"
          "redirect_loop=0.05,garbage=0.05,hang=0.8,retry_after=0.2,seed=11")
log = logging.getLogger(__name__)


def entities_of(world: World) -> pa.Table:
    return pa.Table.from_pylist(list(world.truth.entities.values()), schema=schemas.ENTITIES)


def fast_politeness(**overrides: object) -> Politeness:
    settings: dict = dict(user_agent=UA, backoff_s=0.01, backoff_max_s=0.1, timeout_s=0.6, timeout_hold_s=0.6,
                          max_attempts=6)
    settings.update(overrides)
    return Politeness(**settings)


def keys_of(entities: pa.Table, plan: SummaryPlan = SummaryPlan()) -> list[str]:
    with sql.connect() as con:
        sql.register(con, entities=entities)
        return wanted_titles(con, plan.langs)


def run(entities: pa.Table, served: Served, folder: Path, plan: SummaryPlan = SummaryPlan(),
        politeness: Politeness | None = None) -> tuple[pa.Table, pa.Table]:
    """What the summaries stage does: download what is not staged, then the two tables from the
    staged outcomes."""
    staging = Staging(folder, STAGED_SUMMARIES)

    async def go() -> None:
        async with PoliteSession(politeness or fast_politeness()) as http:
            await download_summaries(keys_of(entities, plan), served.wikipedia_api, http, staging, plan, log.info)

    asyncio.run(go())
    with sql.connect() as con:
        sql.register(con, entities=entities)
        summaries, dropouts = assemble(con, staging, plan.langs)
        return sql.table(con, summaries, schemas.SUMMARIES), sql.table(con, dropouts, schemas.DROPOUTS)


def expected_texts(world: World) -> dict[tuple[str, str], str]:
    """(qid, lang) -> the intro the world's wiki holds for the entity's sitelink, following redirects."""
    index = WikiIndex(world)
    texts = {}
    for qid, row in world.truth.entities.items():
        for lang in LANGS:
            title = row[f"title_{lang}"]
            normal = normalize_title(title) if title else None
            normal = index.redirects[lang].get(normal, normal)
            if normal in index.pages[lang]:
                texts[(qid, lang)] = index.extract(lang, index.pages[lang][normal], whole=False)
    return texts


def wanted_pairs(world: World) -> set[tuple[str, str]]:
    return {(q, lang) for q, row in world.truth.entities.items() for lang in LANGS if row[f"title_{lang}"]}


def titles_asked(served: Served) -> Counter[str]:
    """Per lang|title: how often the wiki answered a request that asked for it (with a 200)."""
    asked: Counter[str] = Counter()
    for key, n in served_counts(served.servers["wiki"]).items():
        lang, _, query = key.partition("/api?")
        params = dict(parse_qsl(query, keep_blank_values=True))
        if "excontinue" in params:
            continue  # continuation rounds ask again by design; count each batch once
        for title in params.get("titles", "").split("|"):
            asked[f"{lang}|{title}"] += n
    return asked


def test_every_sitelink_ends_as_summary_or_dropout(tiny_world: World, tmp_path: Path) -> None:
    entities = entities_of(tiny_world)
    with running_world(tiny_world) as served:
        summaries, dropouts = run(entities, served, tmp_path)
        wiki = served.servers["wiki"].counters
        assert wiki.get("violations", 0) == 0  # in series per wiki, maxlag on every request
        assert wiki["max_inflight:api"] == 1
        # 20 titles a request: no more requests than the batches (plus none for continuation).
        titles = {(lang, row[f"title_{lang}"]) for row in tiny_world.truth.entities.values() for lang in LANGS
                  if row[f"title_{lang}"]}
        per_lang = Counter(lang for lang, _ in titles)
        assert wiki["requests"] == sum(-(-n // 20) for n in per_lang.values())
    assert summaries.schema == schemas.SUMMARIES and dropouts.schema == schemas.DROPOUTS
    got = {(q, lang): t for q, lang, t in zip(*(summaries[c].to_pylist() for c in ("qid", "lang", "text")))}
    dropped = {(q, lang): r for q, lang, r in zip(*(dropouts[c].to_pylist() for c in ("qid", "item", "reason")))}
    assert set(got) | set(dropped) == wanted_pairs(tiny_world) and not set(got) & set(dropped)
    assert got == expected_texts(tiny_world)
    # Each text names the revision it came from (prop=info in the same request): one per page.
    revisions = {(lang, title): r for lang, title, r in zip(*(summaries[c].to_pylist() for c in ("lang", "title", "revision")))}
    assert None not in revisions.values() and len(set(revisions.values())) == len(revisions)
    # The world's sitelink quirks: a title the wiki normalises and one that redirects still get
    # their summary under the title asked; a deleted article is a dropout with its reason.
    for place in tiny_world.places:
        if place.qid not in tiny_world.truth.entities:
            continue
        if "title_normalise" in place.edge_cases:
            assert (place.qid, "en") in got
        if "title_redirect" in place.edge_cases:
            assert (place.qid, "de") in got
        if "article_missing" in place.edge_cases:
            assert dropped[(place.qid, "fr")] == "missing_page"
    assert set(dropped.values()) <= {"missing_page"}
    titles = dict(zip(zip(summaries["qid"].to_pylist(), summaries["lang"].to_pylist()), summaries["title"].to_pylist()))
    assert all(titles[(q, lang)] == tiny_world.truth.entities[q][f"title_{lang}"] for q, lang in titles)


def test_faults_end_in_a_summary_or_an_accounted_failure(tiny_world: World, tmp_path: Path) -> None:
    entities = entities_of(tiny_world)
    with running_world(tiny_world, faults=FAULTS) as served:
        summaries, dropouts = run(entities, served, tmp_path, SummaryPlan(batch_size=7))
        wiki = served.servers["wiki"].counters
        assert wiki.get("violations", 0) == 0
        injected = {k.split(":", 1)[1] for k in wiki if k.startswith("fault:")}
    assert injected >= {"http429", "http5xx", "timeout", "truncate", "corrupt", "content_type", "redirect_loop",
                        "garbage"}
    got = {(q, lang): t for q, lang, t in zip(*(summaries[c].to_pylist() for c in ("qid", "lang", "text")))}
    dropped = dict(zip(zip(dropouts["qid"].to_pylist(), dropouts["item"].to_pylist()), dropouts["detail"].to_pylist()))
    assert set(got) | set(dropped) == wanted_pairs(tiny_world) and not set(got) & set(dropped)
    expected = expected_texts(tiny_world)
    assert all(expected[pair] == text for pair, text in got.items())  # what arrived is right
    assert len(got) > 0.9 * len(expected)  # retries got most of them through
    for reason, detail in zip(dropouts["reason"].to_pylist(), dropouts["detail"].to_pylist()):
        assert reason and detail and ("attempts=" in detail or reason == "missing_page")


def test_a_killed_download_resumes_without_fetching_anything_twice(tiny_world: World, tmp_path: Path) -> None:
    entities = entities_of(tiny_world)
    plan = SummaryPlan(batch_size=10, parallel_batches=2)
    with running_world(tiny_world) as clean:
        uninterrupted = run(entities, clean, tmp_path / "clean", plan)

    folder = tmp_path / "killed"
    with running_world(tiny_world, faults="latency=0.02") as served:
        async def killed_after(shards: int) -> None:
            async with PoliteSession(fast_politeness()) as http:
                task = asyncio.create_task(download_summaries(
                    keys_of(entities, plan), served.wikipedia_api, http, Staging(folder, STAGED_SUMMARIES), plan,
                    log.info))
                while len(list(folder.glob("*.results.parquet"))) < shards:
                    await asyncio.sleep(0.005)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

        asyncio.run(killed_after(6))
        stored = Staging(folder, STAGED_SUMMARIES).load()
        stored_keys = set(stored.results["key"].to_pylist())
        first = titles_asked(served)
        assert 0 < len(stored_keys) < len(wanted_pairs(tiny_world))

        resumed = run(entities, served, folder, plan)
        second = titles_asked(served) - first
        assert served.servers["wiki"].counters.get("violations", 0) == 0
    assert not stored_keys & set(second)  # nothing stored before the kill was asked for again
    assert max((first + second).values()) <= 2  # only batches in flight at the kill were asked twice
    assert resumed[0].equals(uninterrupted[0]) and resumed[1].equals(uninterrupted[1])
    assert resumed[0].num_rows == len(set(zip(resumed[0]["qid"].to_pylist(), resumed[0]["lang"].to_pylist())))


def test_a_second_run_fetches_nothing(tiny_world: World, tmp_path: Path) -> None:
    entities = entities_of(tiny_world).slice(0, 40)
    with running_world(tiny_world) as served:
        first = run(entities, served, tmp_path)
        before = served.servers["wiki"].counters["requests"]
        second = run(entities, served, tmp_path)
        assert served.servers["wiki"].counters["requests"] == before
    assert first[0].equals(second[0]) and first[1].equals(second[1])


def test_bad_plan_is_refused_before_any_request(tiny_world: World, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="batch_size=21"):
        run(entities_of(tiny_world), Served(tiny_world, "", "http://127.0.0.1:9/{lang}", "", ""), tmp_path,
            SummaryPlan(batch_size=21))
    with pytest.raises(ValueError, match="title_it"):
        run(entities_of(tiny_world), Served(tiny_world, "", "http://127.0.0.1:9/{lang}", "", ""), tmp_path,
            SummaryPlan(langs=("it",)))


def test_titles_that_cannot_be_asked_are_recorded_without_a_request(tiny_world: World, tmp_path: Path) -> None:
    rows = entities_of(tiny_world).slice(0, 2).to_pylist()
    rows[0].update(title_en="Pantin#History", title_de=None, title_fr=None)
    rows[1].update(title_en="A|B", title_de=None, title_fr=None)
    entities = pa.Table.from_pylist(rows, schema=schemas.ENTITIES)
    with running_world(tiny_world) as served:
        summaries, dropouts = run(entities, served, tmp_path)
        assert served.servers["wiki"].counters.get("requests", 0) == 0
    assert summaries.num_rows == 0
    assert dropouts["reason"].to_pylist() == ["invalid_title", "invalid_title"]


def single_answer_sizes(served: Served, keys: list[str]) -> dict[str, int]:
    """lang|title -> bytes of the API's answer when the title is asked alone, as the client asks."""
    sizes = {}
    for key in keys:
        lang, title = key.split("|", 1)
        params = {"action": "query", "format": "json", "formatversion": "2", "maxlag": "5", "prop": "extracts|info",
                  "exintro": "1", "explaintext": "1", "exlimit": "1", "redirects": "1", "titles": title}
        answer = requests.get(served.wikipedia_api.format(lang=lang), params=params, headers={"User-Agent": UA},
                              timeout=10)
        sizes[key] = len(answer.content)
    return sizes


def test_one_oversized_summary_loses_only_itself(tiny_world: World, tmp_path: Path) -> None:
    """A batch whose answer is too large is asked again in halves, down to the one title whose
    own answer is too large: that title is a dropout, its 19 neighbours are not."""
    entities = entities_of(tiny_world).slice(0, 60)
    wanted = sorted(f"{lang}|{row[f'title_{lang}']}" for row in entities.to_pylist() for lang in LANGS
                    if row[f"title_{lang}"])
    with running_world(tiny_world) as served:
        sizes = single_answer_sizes(served, wanted)
        (largest, size), (_, second) = sorted(sizes.items(), key=lambda kv: -kv[1])[:2]
        assert second < size
        plan = SummaryPlan(max_bytes=size - 1)  # too small for that one title's answer, and for any batch
        summaries, dropouts = run(entities, served, tmp_path, plan)
        assert served.servers["wiki"].counters.get("violations", 0) == 0
    lang, title = largest.split("|", 1)
    dropped = {(lang_, r, d) for lang_, r, d in zip(*(dropouts[c].to_pylist() for c in ("item", "reason", "detail")))}
    too_large = [(lang_, d) for lang_, r, d in dropped if r == "too_large"]
    assert [lang_ for lang_, _ in too_large] == [lang] * len(too_large) and len(too_large) >= 1
    assert all(title in d for _, d in too_large)
    expected = {pair: text for pair, text in expected_texts(tiny_world).items() if pair[0] in entities["qid"].to_pylist()}
    got = {(q, lang_): t for q, lang_, t in zip(*(summaries[c].to_pylist() for c in ("qid", "lang", "text")))}
    assert set(expected) - set(got) == {(q, lang) for q in entities["qid"].to_pylist()
                                        if entities_row(entities, q)[f"title_{lang}"] == title}
    assert all(expected[pair] == text for pair, text in got.items())
    # Too large at every attempt: the page's own size, a permanent verdict a rerun keeps.
    stored = Staging(tmp_path, STAGED_SUMMARIES).load()
    assert dict(zip(stored.failures["key"].to_pylist(), stored.failures["transient"].to_pylist()))[largest] is False


def entities_row(entities: pa.Table, qid: str) -> dict:
    return next(row for row in entities.to_pylist() if row["qid"] == qid)


def test_a_lagged_wiki_is_waited_for_as_it_asks(tiny_world: World, tmp_path: Path) -> None:
    entities = entities_of(tiny_world).slice(0, 60)
    staging = Staging(tmp_path, STAGED_SUMMARIES)
    with running_world(tiny_world, faults="wiki.maxlag=0.3,retry_after=0.2,seed=4") as served:
        async def go() -> PoliteSession:
            async with PoliteSession(fast_politeness()) as http:
                await download_summaries(keys_of(entities), served.wikipedia_api, http, staging, SummaryPlan(), log.info)
                return http

        http = asyncio.run(go())
        wiki = served.servers["wiki"].counters
        assert wiki["fault:maxlag"] >= 1 and http.stats["trouble_api_maxlag"] == wiki["fault:maxlag"]
        assert wiki.get("violations", 0) == 0  # never back before the Retry-After ran out
    with sql.connect() as con:
        sql.register(con, entities=entities)
        summaries = sql.table(con, assemble(con, staging, SummaryPlan().langs)[0], schemas.SUMMARIES)
    expected = {pair: text for pair, text in expected_texts(tiny_world).items() if pair[0] in entities["qid"].to_pylist()}
    got = {(q, lang): t for q, lang, t in zip(*(summaries[c].to_pylist() for c in ("qid", "lang", "text")))}
    assert got == expected


def test_a_refused_user_agent_stops_the_download_and_names_the_agent(tiny_world: World, tmp_path: Path) -> None:
    entities = entities_of(tiny_world).slice(0, 30)
    with running_world(tiny_world) as served:
        with pytest.raises(ConfigError, match=r"refused the User-Agent 'python-requests/2\.32\.0'.*MLM_CONTACT"):
            run(entities, served, tmp_path, politeness=fast_politeness(user_agent="python-requests/2.32.0"))
        wiki = served.servers["wiki"].counters
        # Stopped at the first refusal: at most the batches already in flight asked, none twice.
        assert wiki["violation:user_agent"] == wiki["requests"] <= SummaryPlan().parallel_batches
