"""Downloads under Wikimedia's rules: ours (batched, pooled, async) versus the reference's way.

The default embedded world is served with 100 ms added to every answer (``latency=0.1``), so
the figures are about round trips, as on the real services. Ours runs with the pipeline's
defaults: 20 titles a TextExtracts request, each wiki's API called in series (Wikimedia's rule:
one request in flight per API, so at 100 ms at most 10 requests, 200 titles, a second per wiki);
50 files an imageinfo request (which also names each thumbnail's URL) and 2 media downloads in
flight. The reference's approach, measured in the same run on the same servers with the same
client code: one title (one file) per request, one request at a time (the reference also fetched
full-size originals; here the baseline gets the same thumbnails, so only the request pattern
differs). The baseline runs on a sample and reports its rate.

Figures: items per second (summaries: entity-language rows; images: files); requests per item;
the share of the request budget the rules allow that was used, in the pools that bound the rate
(the budget: ``limit x elapsed / latency`` requests per pool, since no request finishes faster
than the latency; ours: the three wikis' serial APIs, Commons' media pool; the baseline: its one
request at a time); for summaries, how close ours comes to the serial ceiling (the busiest
wiki's requests, one after another, bound the run: its requests x latency is the least time any
client keeping the rule can take); 429s received; rule violations the servers counted (must be 0). ``--media-concurrency 3`` asks for more media
downloads than Commons allows (2): the row then shows the 429s met and how far the client
lowered its concurrency.

    .venv/bin/python benchmarks/download.py [--size default] [--latency 0.1] [--image-entities 400]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Awaitable, Callable

import pyarrow as pa

from mlm_pipeline import schemas, sql
from mlm_pipeline.blobs import BlobStore
from mlm_pipeline.download.images import MEDIA_POOL, STAGED_IMAGES, ImageDownloader, ImagePlan, download_images, wanted_files
from mlm_pipeline.download.politeness import Politeness, PoliteSession
from mlm_pipeline.download.staging import Staging
from mlm_pipeline.download.summaries import (
    STAGED_SUMMARIES, SummaryDownloader, SummaryPlan, download_summaries, split_key, wanted_titles,
)
from mlm_pipeline.endpoints import user_agent
from mlm_pipeline.world import Served, WorldSpec, build_world, running_world

UA = user_agent("https://github.com/mlm-pipeline/mlm-pipeline (benchmark)")


@dataclass
class Figures:
    what: str
    items: int
    seconds: float
    requests: int
    limited: int  # requests in the pools that bound the rate (the wikis; Commons' media pool)
    slots: int  # concurrency the rules allow in those pools together
    http_429: int
    violations: int
    busiest: int = 0  # requests to the busiest serial API: no run can take less than this x latency

    def row(self, latency: float) -> str:
        budget = self.slots * self.seconds / latency
        return (f"| {self.what} | {self.items} | {self.seconds:.1f} | {self.items / self.seconds:.1f} | "
                f"{self.requests / max(self.items, 1):.3f} | {self.limited / budget:.0%} | {self.http_429} | "
                f"{self.violations} |")


def violations(served: Served) -> int:
    return sum(s.counters.get("violations", 0) for s in served.servers.values())


async def timed(served: Served, politeness: Politeness,
                work: Callable[[PoliteSession], Awaitable[int]]) -> tuple[int, float, Counter[str], int]:
    before = violations(served)
    async with PoliteSession(politeness) as session:
        start = time.perf_counter()
        items = await work(session)
        elapsed = time.perf_counter() - start
    return items, elapsed, session.stats, violations(served) - before


def wanted(entities: pa.Table) -> tuple[list[str], list[str]]:
    """The ``lang|title`` keys and the file names the download stages ask for."""
    with sql.connect() as con:
        sql.register(con, entities=entities)
        return wanted_titles(con, ("en", "de", "fr")), wanted_files(con)


def summaries_ours(served: Served, entities: pa.Table, folder: Path) -> Figures:
    plan = SummaryPlan(progress_every_s=30.0)
    staging, keys = Staging(folder, STAGED_SUMMARIES), wanted(entities)[0]

    async def work(session: PoliteSession) -> int:
        await download_summaries(keys, served.wikipedia_api, session, staging, plan, print)
        return staging.load(keys_only=True).results.num_rows

    items, seconds, stats, bad = asyncio.run(timed(served, Politeness(user_agent=UA), work))
    busiest = max(n for key, n in stats.items() if key.startswith("requests@serial:"))
    return Figures("summaries, ours (20 titles/request, each wiki in series)", items, seconds, stats["requests"],
                   stats["requests"], len(plan.langs), stats["status_429"], bad, busiest)


def summaries_reference(served: Served, entities: pa.Table, sample: int, seed: int) -> Figures:
    keys = wanted(entities)[0]
    keys = random.Random(seed).sample(keys, min(sample, len(keys)))
    downloader = SummaryDownloader(None, served.wikipedia_api, SummaryPlan())  # type: ignore[arg-type]

    async def work(session: PoliteSession) -> int:
        downloader.session = session
        got = 0
        for key in keys:  # one title per request, one request at a time
            lang, title = split_key(key)
            got += (await downloader.batch(lang, [title])).results.num_rows
        return got

    items, seconds, stats, bad = asyncio.run(timed(served, Politeness(user_agent=UA, concurrency=1), work))
    return Figures(f"summaries, reference's way (sample of {len(keys)})", items, seconds, stats["requests"],
                   stats["requests"], 1, stats["status_429"], bad)


def images_ours(served: Served, entities: pa.Table, folder: Path, media: int) -> Figures:
    plan = ImagePlan(progress_every_s=30.0)
    staging, names = Staging(folder, STAGED_IMAGES), wanted(entities)[1]

    async def work(session: PoliteSession) -> int:
        await download_images(names, served.commons_api, served.commons_filepath, session, staging,
                              BlobStore(folder / "blobs"), plan, print)
        return staging.load(keys_only=True).results.num_rows

    politeness = Politeness(user_agent=UA, pool_concurrency={MEDIA_POOL: media})
    items, seconds, stats, bad = asyncio.run(timed(served, politeness, work))
    lowered = (f"; 429s lowered it {stats[f'lowered@{MEDIA_POOL}']}x, to {stats[f'lowest@{MEDIA_POOL}']} at the lowest"
               if stats[f"lowered@{MEDIA_POOL}"] else "")
    return Figures(f"images, ours ({plan.metadata_batch} files/imageinfo request, media pool of {media}{lowered})",
                   items, seconds, stats["requests"], stats[f"requests@{MEDIA_POOL}"], min(media, 2),
                   stats["status_429"], bad)


def images_reference(served: Served, entities: pa.Table, folder: Path, sample: int, seed: int) -> Figures:
    names = wanted(entities)[1]
    names = random.Random(seed).sample(names, min(sample, len(names)))
    downloader = ImageDownloader(None, served.commons_api, served.commons_filepath, ImagePlan(),  # type: ignore[arg-type]
                                 BlobStore(folder / "blobs"))

    async def work(session: PoliteSession) -> int:
        downloader.session = session
        got = 0
        for name in names:  # one file per request, one request at a time
            got += (await downloader.batch([name])).results.num_rows
        return got

    politeness = Politeness(user_agent=UA, concurrency=1, pool_concurrency={MEDIA_POOL: 1})
    items, seconds, stats, bad = asyncio.run(timed(served, politeness, work))
    return Figures(f"images, reference's way (sample of {len(names)})", items, seconds, stats["requests"],
                   stats["requests"], 1, stats["status_429"], bad)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="default", help="world size (tiny, default, mlm or a number)")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the servers add to every answer")
    parser.add_argument("--summary-sample", type=int, default=200, help="titles for the reference's way")
    parser.add_argument("--image-entities", type=int, default=800,
                        help="entities whose images ours downloads (0: all; 2 media requests in flight at 100 ms "
                             "allow 20 images/s at most)")
    parser.add_argument("--image-sample", type=int, default=60, help="files for the reference's way")
    parser.add_argument("--media-concurrency", type=int, default=2,
                        help="media downloads ours asks for (Commons allows 2; more meets 429s, which lower it)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-images", action="store_true")
    args = parser.parse_args(argv)

    world = build_world(WorldSpec.from_config(size=args.size))
    entities = pa.Table.from_pylist(list(world.truth.entities.values()), schema=schemas.ENTITIES)
    rows: list[Figures] = []
    with tempfile.TemporaryDirectory() as tmp, running_world(world, faults=f"latency={args.latency}") as served:
        rows.append(summaries_ours(served, entities, Path(tmp) / "summaries"))
        rows.append(summaries_reference(served, entities, args.summary_sample, args.seed))
        if not args.skip_images:
            subset = entities if args.image_entities <= 0 else entities.slice(0, args.image_entities)
            rows.append(images_ours(served, subset, Path(tmp) / "images", args.media_concurrency))
            rows.append(images_reference(served, subset, Path(tmp) / "reference", args.image_sample, args.seed))
        counters: dict[str, Any] = {name: dict(s.counters) for name, s in served.servers.items()}

    print(f"\nworld {world.spec.label()}: {len(world.truth.entities)} entities; latency {args.latency * 1000:.0f} ms")
    print("| run | items | seconds | items/s | requests/item | request budget used | 429s | violations |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for figures in rows:
        print(figures.row(args.latency))
    floor = rows[0].busiest * args.latency
    print(f"summaries: the busiest wiki needs {rows[0].busiest} requests in series, {floor:.1f} s at "
          f"{args.latency * 1000:.0f} ms; ours took {rows[0].seconds:.1f} s: {floor / rows[0].seconds:.0%} of the "
          "serial ceiling")
    for a, b in ((0, 1), (2, 3)):
        if b < len(rows):
            speedup = (rows[a].items / rows[a].seconds) / (rows[b].items / rows[b].seconds)
            print(f"{rows[a].what.split(',')[0]}: ours is {speedup:.1f}x the reference's rate")
    print("peak in flight per server bucket:",
          {f"{n}.{k}": v for n, c in counters.items() for k, v in c.items() if k.startswith("max_inflight")})


if __name__ == "__main__":
    main()
