"""A fault run and its clean rerun against a clean build: does the rerun converge to the same bytes?

Three download runs of every summary and image of an embedded world (the pipeline's plain
functions with the download stages' default politeness): a clean build into its own staging
folder; a run under injected faults (the world's ``FaultPlan``) into another; then a rerun
without faults on the faulty run's staging, as an operator would rerun after a bad day. The
final tables (``summaries``, ``summary_dropouts``, ``images``, ``image_failures`` and the
filter's ``images_filtered`` / ``image_dropouts``) are written with the pipeline's Parquet writer
and compared by sha256 with the clean build's.

Figures: faults the servers injected (by kind); after the fault run, items (entity-language
summaries, entity-file images) lost compared with the clean build, by reason; after the rerun,
items recovered, items still lost (by reason), and which tables differ from the clean build.

    .venv/bin/python benchmarks/faults.py [--size default] [--faults PLAN]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa

from mlm_pipeline import schemas, sql
from mlm_pipeline.blobs import BlobStore
from mlm_pipeline.download.filtering import filter_images
from mlm_pipeline.download.images import STAGED_IMAGES, ImagePlan, download_images, wanted_files
from mlm_pipeline.download.images import assemble as assemble_images
from mlm_pipeline.download.politeness import Politeness, PoliteSession
from mlm_pipeline.download.staging import Staging
from mlm_pipeline.download.summaries import STAGED_SUMMARIES, SummaryPlan, download_summaries, wanted_titles
from mlm_pipeline.download.summaries import assemble as assemble_summaries
from mlm_pipeline.endpoints import user_agent
from mlm_pipeline.shards import write_parquet
from mlm_pipeline.world import Served, WorldSpec, build_world, running_world

UA = user_agent("https://github.com/mlm-pipeline/mlm-pipeline (fault run)")
# 27% of the answers of the Wikipedias and Commons are faulty, every kind the servers know.
DEFAULT_FAULTS = ("http429=0.03,http5xx=0.05,timeout=0.02,truncate=0.03,corrupt=0.04,content_type=0.03,"
                  "redirect_loop=0.02,oversize=0.02,garbage=0.03,seed=7")
ORIGIN = "http://commons.fault-run.invalid"  # stored URLs must not name the servers' ports


def build(served: Served, entities: pa.Table, folder: Path, out: Path) -> dict[str, pa.Table]:
    """The download stages' tables for ``entities``, resuming from ``folder`` (staging and the
    blob store, as the stages keep them); each written to ``out``."""
    texts, files = Staging(folder / "summaries", STAGED_SUMMARIES), Staging(folder / "images", STAGED_IMAGES)
    blobs = BlobStore(folder / "blobs")
    summary_plan = SummaryPlan(progress_every_s=60.0)
    with sql.connect() as con:
        sql.register(con, entities=entities)

        async def go() -> None:
            async with PoliteSession(Politeness(user_agent=UA)) as session:
                await download_summaries(wanted_titles(con, summary_plan.langs), served.wikipedia_api, session, texts,
                                         summary_plan, logging.info)
            async with PoliteSession(Politeness(user_agent=UA)) as session:
                await download_images(wanted_files(con), served.commons_api, served.commons_filepath, session, files,
                                      blobs, ImagePlan(public_origin=ORIGIN, progress_every_s=60.0), logging.info)

        asyncio.run(go())
        summaries, summary_dropouts = assemble_summaries(con, texts, summary_plan.langs)
        tables = {"summaries": sql.table(con, summaries, schemas.SUMMARIES),
                  "summary_dropouts": sql.table(con, summary_dropouts, schemas.DROPOUTS)}
        images, image_failures = assemble_images(con, files)  # its staging replaces the summaries' views
        tables.update(images=sql.table(con, images, schemas.IMAGES),
                      image_failures=sql.table(con, image_failures, schemas.DROPOUTS))
        sql.register(con, images=tables["images"])
        filtered = filter_images(con, blobs.get, ImagePlan().max_pixels)
        tables["images_filtered"] = sql.table(con, filtered.kept, schemas.IMAGES)
        tables["image_dropouts"] = sql.table(con, filtered.dropouts, schemas.DROPOUTS)
    for name, table in tables.items():
        write_parquet(table, out / f"{name}.parquet")
    return tables


def digests(out: Path) -> dict[str, str]:
    return {p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.glob("*.parquet"))}


def items(tables: dict[str, pa.Table]) -> dict[str, set[tuple[str, str]]]:
    """What a build delivers: (qid, lang) summaries and (qid, file) images kept by the filter."""
    return {
        "summaries": set(zip(tables["summaries"]["qid"].to_pylist(), tables["summaries"]["lang"].to_pylist())),
        "images": set(zip(tables["images_filtered"]["qid"].to_pylist(),
                          tables["images_filtered"]["file_name"].to_pylist())),
    }


def reasons(tables: dict[str, pa.Table], missing: dict[str, set[tuple[str, str]]]) -> dict[str, Counter[str]]:
    """Why each item missing from a build (compared with the clean one) is missing."""
    why: dict[str, Counter[str]] = {}
    for kind, sources in (("summaries", ("summary_dropouts",)), ("images", ("image_failures", "image_dropouts"))):
        found: dict[tuple[str, str], str] = {}
        for name in sources:
            t = tables[name]
            for qid, item, stage, reason in zip(*(t[c].to_pylist() for c in ("qid", "item", "stage", "reason"))):
                found.setdefault((qid, item), f"{stage}:{reason}")
        why[kind] = Counter(found.get(pair, "not in any dropout table") for pair in missing[kind])
    return why


def lost(clean: dict[str, set[tuple[str, str]]], got: dict[str, set[tuple[str, str]]]) -> dict[str, set[tuple[str, str]]]:
    return {kind: clean[kind] - got[kind] for kind in clean}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="default", help="world size (tiny, default, mlm or a number)")
    parser.add_argument("--faults", default=DEFAULT_FAULTS, help="the FaultPlan of the faulty run")
    parser.add_argument("--keep", help="keep the staging folders and tables here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    world = build_world(WorldSpec.from_config(size=args.size))
    entities = pa.Table.from_pylist(list(world.truth.entities.values()), schema=schemas.ENTITIES)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        seconds: dict[str, float] = {}
        started = time.perf_counter()
        with running_world(world) as served:
            clean = build(served, entities, root / "clean-staging", root / "clean")
        seconds["clean build"] = time.perf_counter() - started
        started = time.perf_counter()
        with running_world(world, faults=args.faults) as served:
            faulty = build(served, entities, root / "staging", root / "faulty")
            injected: Counter[str] = Counter()
            for server in served.servers.values():
                injected.update({k.split(":", 1)[1]: v for k, v in server.counters.items() if k.startswith("fault:")})
            violations = sum(s.counters.get("violations", 0) for s in served.servers.values())
        seconds["fault run"] = time.perf_counter() - started
        started = time.perf_counter()
        with running_world(world) as served:
            rerun = build(served, entities, root / "staging", root / "rerun")
        seconds["rerun"] = time.perf_counter() - started
        same = {name: digests(root / "clean")[name] == digest for name, digest in digests(root / "rerun").items()}

    want = items(clean)
    after_faults, after_rerun = lost(want, items(faulty)), lost(want, items(rerun))
    summary: dict[str, Any] = {
        "world": world.spec.label(), "entities": entities.num_rows,
        "clean items": {k: len(v) for k, v in want.items()},
        "faults injected": dict(sorted(injected.items())), "faults total": sum(injected.values()),
        "rule violations counted by the servers (fault run)": violations,
    }
    print()
    for key, value in summary.items():
        print(f"{key}: {value}")
    for kind in want:
        recovered = len(after_faults[kind] - after_rerun[kind])
        print(f"{kind}: lost after the fault run {len(after_faults[kind])} "
              f"({len(after_faults[kind]) / max(len(want[kind]), 1):.2%}) "
              f"{dict(reasons(faulty, after_faults)[kind].most_common())}; "
              f"recovered by the rerun {recovered}; still lost {len(after_rerun[kind])} "
              f"{dict(reasons(rerun, after_rerun)[kind].most_common())}")
    print("tables identical to the clean build after the rerun:", same)
    print("seconds:", {k: round(v, 1) for k, v in seconds.items()})


if __name__ == "__main__":
    main()
