"""Thumbnails from the embedded world's Commons: right bytes, licences, limits, faults, resumption."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from mlm_pipeline import schemas, sql
from mlm_pipeline.blobs import BlobStore
from mlm_pipeline.download.images import (
    MEDIA_POOL, STAGED_IMAGES, ImageDownloader, ImagePlan, assemble, download_images, filepath_url,
    licence_and_attribution, plain_text, wanted_files,
)
from mlm_pipeline.download.politeness import Politeness, PoliteSession
from mlm_pipeline.download.staging import Staging
from mlm_pipeline.endpoints import ConfigError, user_agent
from mlm_pipeline.world import Served, World, expected, running_world
from mlm_pipeline.world.builder import FileInfo
from mlm_pipeline.world.commons_server import (
    LICENSES, NO_AUTHOR, NO_LICENCE, FileIndex, Source, file_sha1, hash_dirs, metadata_gap, thumb_name, url_name,
)
from mlm_pipeline.world.wiki_server import served_counts

TIMEOUT = 1.0
UA = user_agent("https://example.org/mlm-tests")
ALL_PROPS = ("P18", "P41", "P94", "P242", "P1943", "P948")
# Every fault kind but ``oversize``, which has its own test: one of its variants makes the
# server draw a multi-megapixel original, slower than these tests' short timeouts.
FAULTS = ("http429=0.015,http5xx=0.06,timeout=0.025,truncate=0.05,corrupt=0.06,content_type=0.05,"
          "redirect_loop=0.05,garbage=0.05,hang=1.2,retry_after=0.2,seed=5,"
          "commons.redirect_loop=0.3")  # only API requests can loop (thumbnail URLs come from imageinfo)
log = logging.getLogger(__name__)


def entities_of(world: World, props: tuple[str, ...] = ("P18",)) -> pa.Table:
    truth = world.truth if props == ("P18",) else expected(world, image_props=props)
    return pa.Table.from_pylist(list(truth.entities.values()), schema=schemas.ENTITIES)


def fast_politeness(**overrides: object) -> Politeness:
    settings: dict = dict(user_agent=UA, backoff_s=0.01, backoff_max_s=0.1, timeout_s=TIMEOUT, timeout_hold_s=TIMEOUT,
                          max_attempts=6)
    settings.update(overrides)
    return Politeness(**settings)


def blobs_beside(folder: Path) -> BlobStore:
    return BlobStore(folder.parent / f"{folder.name}-blobs")


def names_of(entities: pa.Table) -> list[str]:
    with sql.connect() as con:
        sql.register(con, entities=entities)
        return wanted_files(con)


def run(entities: pa.Table, served: Served, folder: Path, plan: ImagePlan = ImagePlan(),
        politeness: Politeness | None = None) -> tuple[pa.Table, pa.Table]:
    """What the images stage does: download what is not staged, then the two tables from the staged
    outcomes (the bytes in the blob store beside the staging folder)."""
    staging = Staging(folder, STAGED_IMAGES)

    async def go() -> None:
        async with PoliteSession(politeness or fast_politeness()) as http:
            await download_images(names_of(entities), served.commons_api, served.commons_filepath, http, staging,
                                  blobs_beside(folder), plan, log.info)

    asyncio.run(go())
    with sql.connect() as con:
        sql.register(con, entities=entities)
        images, failures = assemble(con, staging)
        return sql.table(con, images, schemas.IMAGES), sql.table(con, failures, schemas.DROPOUTS)


def expected_thumbnail(files: FileIndex, name: str, width: int = 250) -> bytes:
    """What Commons serves for ``Special:FilePath/<name>?width=W``: the thumbnail, or the original
    when that is narrower (MediaWiki does not scale up)."""
    source = files.find(name)
    assert source is not None
    if source.format != "svg" and source.size[0] <= width:
        return source.original()
    return source.thumbnail(width)[0]


def pairs(table: pa.Table, item: str) -> set[tuple[str, str]]:
    return set(zip(table["qid"].to_pylist(), table[item].to_pylist()))


def wanted_pairs(entities: pa.Table) -> set[tuple[str, str]]:
    return {(row["qid"], name) for row in entities.to_pylist() for name in row["images"] or []}


def assert_rights(row: dict, info: FileInfo, source: Source | None) -> None:
    """The row says what the file's description page says, and nothing where it is silent."""
    gap = metadata_gap(info.file_name)
    terms = LICENSES[info.license] if gap != NO_LICENCE else {}
    assert row["license"] == (info.license if gap != NO_LICENCE else None)
    assert row["license_url"] == terms.get("LicenseUrl")
    assert row["attribution_required"] == {"true": True, "false": False}.get(terms.get("AttributionRequired", ""))
    assert (row["artist"], row["attribution"]) == ((None, None) if gap == NO_AUTHOR else (info.author, info.author))
    assert row["credit"] == (None if gap == NO_AUTHOR else "Own work")
    assert source is not None and row["commons_sha1"] == file_sha1(source) and len(row["commons_sha1"]) == 40
    assert row["description_url"].endswith("/wiki/File:" + url_name(info.file_name))


def test_every_image_is_the_served_thumbnail_with_its_licence(tiny_world: World, tmp_path: Path) -> None:
    entities = entities_of(tiny_world)
    outside_before = sorted(p.name for p in tmp_path.parent.iterdir())
    with running_world(tiny_world) as served:
        images, failures = run(entities, served, tmp_path / "staging")
        commons = served.servers["commons"].counters
        assert commons.get("violations", 0) == 0  # imageinfo in series with maxlag, media two at a time
        assert commons["max_inflight:media"] <= 2 and commons["max_inflight:api"] == 1
        files = len(names_of(entities))
        # One imageinfo request per 50 files (it names each thumbnail), then one request per file.
        assert commons["requests"] == -(-files // 50) + files
    assert images.schema == schemas.IMAGES and failures.num_rows == 0
    assert pairs(images, "file_name") == wanted_pairs(entities)
    index, blobs = FileIndex(tiny_world), blobs_beside(tmp_path / "staging")
    for row in images.to_pylist():
        body = expected_thumbnail(index, row["file_name"])
        assert blobs.get(row["sha256"]) == body and row["sha256"] == hashlib.sha256(body).hexdigest()
        assert row["n_bytes"] == len(body) and row["width"] <= 250
        info = tiny_world.files[row["file_name"]]
        assert_rights(row, info, index.find(row["file_name"]))
        assert row["format"] == ("JPEG" if info.format == "jpeg" else "PNG")  # SVGs come as PNG renderings
        assert row["url"].startswith(served.commons_filepath.split("/wiki/")[0] + "/w/")
    gaps = Counter(metadata_gap(n) for n in set(images["file_name"].to_pylist()))
    assert gaps[NO_LICENCE] > 0 and gaps[NO_AUTHOR] > 0  # the tiny world has pages of both kinds
    # The world's tricky names ('../..', '/', '%', '?', '..jpg') arrive under their own names ...
    tricky = {n for n in images["file_name"].to_pylist() if "/" in n or ".." in n or "%" in n}
    assert {"../../Szombathely escape.jpg", "Rue de la Gare/Bahnhofstraße in Szombathely.jpg", "..jpg"} <= tricky
    # ... and nothing was written anywhere but the staging folder and the blob store, under
    # hash-derived names only: each file's bytes once, however many entities show it.
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == outside_before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["staging", "staging-blobs"]
    assert all(p.is_file() and p.name.split("-", 1)[0].isdigit() for p in (tmp_path / "staging").iterdir())
    stored = sorted(p.name for p in blobs.root.glob("*/*"))
    assert stored == sorted(set(images["sha256"].to_pylist()))
    assert all(p.parent.name == p.name[:2] for p in blobs.root.glob("*/*"))


def test_faults_end_in_an_image_or_an_accounted_failure(tiny_world: World, tmp_path: Path) -> None:
    entities = entities_of(tiny_world, ALL_PROPS).slice(0, 60)
    with running_world(tiny_world, faults=FAULTS) as served:
        images, failures = run(entities, served, tmp_path)
        commons = served.servers["commons"].counters
        assert commons.get("violations", 0) == 0
        injected = {k.split(":", 1)[1] for k in commons if k.startswith("fault:")}
    assert injected == {"http429", "http5xx", "timeout", "truncate", "corrupt", "content_type", "redirect_loop",
                        "garbage"}
    assert pairs(images, "file_name") | pairs(failures, "item") == wanted_pairs(entities)
    assert not pairs(images, "file_name") & pairs(failures, "item")
    index, blobs = FileIndex(tiny_world), blobs_beside(tmp_path)
    for row in images.to_pylist():  # what was stored is what Commons serves (or, damaged every time, undecodable)
        assert blobs.get(row["sha256"]) == expected_thumbnail(index, row["file_name"]) or row["width"] is None
    assert images.num_rows > 0.9 * len(wanted_pairs(entities))
    for reason, detail in zip(failures["reason"].to_pylist(), failures["detail"].to_pylist()):
        assert reason and "attempts=" in detail


def test_oversized_answers_and_bombs_at_every_attempt_are_final(tiny_world: World, tmp_path: Path) -> None:
    names = names_of(entities_of(tiny_world).slice(0, 12))

    async def fetch(served: Served) -> list:
        # Generous timeout: drawing a multi-megapixel original (one of the variants) takes a while.
        async with PoliteSession(fast_politeness(max_attempts=3, timeout_s=20.0, timeout_hold_s=20.0)) as http:
            downloader = ImageDownloader(http, served.commons_api, served.commons_filepath, ImagePlan(),
                                         BlobStore(tmp_path))
            # Through Special:FilePath, so that only media answers are oversized, not imageinfo.
            return [await downloader.file(name, {}) for name in names]

    with running_world(tiny_world, faults="commons.oversize=1,seed=2") as served:
        outcomes = asyncio.run(fetch(served))
        assert served.servers["commons"].counters.get("violations", 0) == 0
    assert all(isinstance(outcome, tuple) for outcome in outcomes)
    assert {reason for reason, _, _ in outcomes} == {"too_many_pixels", "too_large", "wrong_size"}  # bomb, padded, original
    # Asked again (a bomb is refused from its header, never decoded), and the same answer every
    # time: as far as a client can tell the file's own, final for this configuration.
    assert all("attempts=3" in detail and transient is False for _, detail, transient in outcomes)


def test_a_killed_download_resumes_without_fetching_anything_twice(tiny_world: World, tmp_path: Path) -> None:
    entities = entities_of(tiny_world)
    # Stored URLs must not carry the servers' ports, or two runs of one release would differ.
    plan = ImagePlan(metadata_batch=10, parallel_batches=2, public_origin="http://commons.test")
    with running_world(tiny_world) as clean:
        uninterrupted = run(entities, clean, tmp_path / "clean", plan)

    folder = tmp_path / "killed"
    with running_world(tiny_world) as served:
        async def killed_after(shards: int) -> None:
            async with PoliteSession(fast_politeness()) as http:
                task = asyncio.create_task(download_images(
                    names_of(entities), served.commons_api, served.commons_filepath, http,
                    Staging(folder, STAGED_IMAGES), blobs_beside(folder), plan, log.info))
                while len(list(folder.glob("*.results.parquet"))) < shards:
                    await asyncio.sleep(0.005)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task

        asyncio.run(killed_after(8))
        stored = set(Staging(folder, STAGED_IMAGES).load().results["key"].to_pylist())
        commons = served.servers["commons"]
        first = Counter({k: n for k, n in served_counts(commons).items() if k.startswith("thumb:")})
        assert 0 < len(stored) < len(names_of(entities))
        blobs_at_kill = {p.name: p.stat().st_mtime_ns for p in blobs_beside(folder).root.glob("*/*")}

        resumed = run(entities, served, folder, plan)
        second = Counter({k: n for k, n in served_counts(commons).items() if k.startswith("thumb:")}) - first
        assert commons.counters.get("violations", 0) == 0
    refetched = {k.split(":", 1)[1].rpartition(":")[0] for k in second}
    assert not stored & refetched  # nothing stored before the kill was downloaded again
    assert max((first + second).values()) <= 2  # only files in flight at the kill came twice
    assert resumed[0].equals(uninterrupted[0]) and resumed[1].equals(uninterrupted[1])
    # Every image's bytes are stored once, and no file stored before the kill was written again.
    after = {p.name: p.stat().st_mtime_ns for p in blobs_beside(folder).root.glob("*/*")}
    assert sorted(after) == sorted(set(resumed[0]["sha256"].to_pylist()))
    assert {name: after[name] for name in blobs_at_kill} == blobs_at_kill


def test_without_a_thumbnail_url_the_file_path_redirect_is_followed(tiny_world: World, tmp_path: Path) -> None:
    """MediaWiki scales at most 50 files per imageinfo request; beyond, Special:FilePath still works."""
    names = ["../../Szombathely escape.jpg", "Rue de la Gare/Bahnhofstraße in Szombathely.jpg", "..jpg"]
    index = FileIndex(tiny_world)

    async def fetch(served: Served) -> list:
        async with PoliteSession(fast_politeness()) as http:
            downloader = ImageDownloader(http, served.commons_api, served.commons_filepath, ImagePlan(), blobs)
            return [await downloader.file(name, {}) for name in names]

    blobs = BlobStore(tmp_path)

    with running_world(tiny_world) as served:
        rows = asyncio.run(fetch(served))
        commons = served.servers["commons"].counters
        assert commons["served:filepath"] == len(names) and commons.get("violations", 0) == 0
    assert [blobs.get(row["sha256"]) for row in rows] == [expected_thumbnail(index, name) for name in names]


def test_file_path_urls_keep_names_in_one_segment() -> None:
    base = "http://127.0.0.1:1/wiki/Special:FilePath/"
    assert filepath_url(base, "../../A b.jpg", 250) == base + "..%2F..%2FA_b.jpg?width=250"
    assert filepath_url(base, "100% view?.jpg", 330) == base + "100%25_view%3F.jpg?width=330"


def test_licence_and_attribution_are_plain_text() -> None:
    info = {"extmetadata": {
        "LicenseShortName": {"value": "CC BY-SA 4.0"},
        "Artist": {"value": '<a href="//commons.wikimedia.org/wiki/User:A_B" title="User:A B">A&nbsp;B &amp; C</a>'},
        "Credit": {"value": '<span class="int-own-work">Own work</span>'},
    }}
    assert licence_and_attribution(info) == ("CC BY-SA 4.0", "A B & C")
    assert licence_and_attribution({"extmetadata": {"Credit": {"value": "<i>Archive</i>"}}}) == (None, "Archive")
    assert plain_text("  two\n words ") == "two words"


def test_non_standard_width_is_refused_before_any_request(tiny_world: World, tmp_path: Path) -> None:
    served = Served(tiny_world, "", "", "http://127.0.0.1:9/w/api.php", "http://127.0.0.1:9/wiki/Special:FilePath/")
    with pytest.raises(ValueError, match="width=224 is not one of Commons' standard"):
        run(entities_of(tiny_world), served, tmp_path, ImagePlan(width=224))


def test_names_that_cannot_be_asked_are_recorded_without_a_request(tiny_world: World, tmp_path: Path) -> None:
    rows = entities_of(tiny_world).slice(0, 1).to_pylist()
    rows[0]["images"] = ["A|B.jpg", "Photo#1.jpg", " "]
    with running_world(tiny_world) as served:
        images, failures = run(pa.Table.from_pylist(rows, schema=schemas.ENTITIES), served, tmp_path)
        assert served.servers["commons"].counters.get("requests", 0) == 0
    assert images.num_rows == 0 and failures["reason"].to_pylist() == ["invalid_file_name"] * 3


def test_a_width_commons_refuses_is_a_configuration_error_not_throttling(tiny_world: World, tmp_path: Path) -> None:
    name = next(n for n, f in tiny_world.files.items() if f.format == "jpeg" and f.width > 500)
    a, ab = hash_dirs(name)

    async def fetch(served: Served) -> None:
        commons = served.commons_filepath.split("/wiki/")[0]
        thumb = f"{commons}/w/thumb/{a}/{ab}/{url_name(name)}/{url_name(thumb_name(name, 251, False))}"
        async with PoliteSession(fast_politeness()) as http:
            await ImageDownloader(http, served.commons_api, served.commons_filepath, ImagePlan(),
                                  BlobStore(tmp_path)).file(name, {"thumburl": thumb})

    with running_world(tiny_world) as served:
        with pytest.raises(ConfigError, match="429 and no Retry-After.*width=250"):
            asyncio.run(fetch(served))
        commons = served.servers["commons"].counters
        assert commons["requests"] == 1 and commons["violation:thumb_width"] == 1  # asked once, not hammered


def test_media_concurrency_above_what_commons_allows_is_lowered_on_429(tiny_world: World, tmp_path: Path) -> None:
    entities = entities_of(tiny_world).slice(0, 80)
    lines: list[str] = []
    staging = Staging(tmp_path / "staging", STAGED_IMAGES)
    with running_world(tiny_world, faults="latency=0.02") as served:
        async def go() -> PoliteSession:
            politeness = fast_politeness(pool_concurrency={MEDIA_POOL: 3}, recover_after=20)
            async with PoliteSession(politeness, lines.append) as http:
                await download_images(names_of(entities), served.commons_api, served.commons_filepath, http, staging,
                                      blobs_beside(staging.folder), ImagePlan(), log.info)
                return http

        http = asyncio.run(go())
        commons = served.servers["commons"].counters
    with sql.connect() as con:
        sql.register(con, entities=entities)
        images = sql.table(con, assemble(con, staging)[0], schemas.IMAGES)
    assert pairs(images, "file_name") == wanted_pairs(entities)
    assert http.stats["lowered@media"] >= 1 and http.stats["lowest@media"] == 2
    assert any("media: HTTP 429, concurrency lowered to 2 of 3" in line for line in lines)
    # Without lowering, every third request in flight is refused: about a third of them. With it,
    # the refused limit is probed after 20, 40, 80 ... quiet answers: a handful of 429s at most.
    assert commons["status:429"] == http.stats["status_429"] <= 5
    assert commons["max_inflight:media"] <= 3
