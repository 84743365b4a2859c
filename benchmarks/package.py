"""Packaging a release: time, size and memory, against reading the same inputs once.

For each world size, the dataset stages of its release are materialised (once; ``--data``
keeps them between runs), then two fresh processes run one after the other:

- baseline: every table the package is made from read once, a batch at a time, and every
  image's bytes from the blob store (the I/O floor of any packaging);
- package: ``release_package.build.build_package`` writing the whole package.

Figures per size: entities (MLM), package bytes (data shards and the rest), seconds and CPU
seconds of each process, packaging seconds per 1,000 MLM entities, the ratio to the baseline,
and peak RSS of each process (flat memory: the package's peak should not grow with the
release). The machine's load (``uptime``) is printed before and after.

    .venv/bin/python benchmarks/package.py [--sizes tiny,default] [--data /tmp/mlm-bench-package]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from mlm_pipeline.world import WorldSpec, build_world


def materialise(base: Path, size: str) -> tuple[Path, str]:
    """The dataset stages of ``size``'s first release, built once under ``base``."""
    from dagster import AssetSelection, instance_for_test, load_assets_from_modules, materialize

    from mlm_pipeline.assets import classes, entities, filtering, geocells, images, package, summaries, versions
    from mlm_pipeline.parquet_io import ParquetIOManager
    from mlm_pipeline.resources import WikimediaResource
    from mlm_pipeline.run_profiles import run_config_for
    from mlm_pipeline.storage import StorageResource

    release = build_world(WorldSpec(size=size)).release
    data = base / size / "data"
    if (data / "dataset_stats" / f"release={release}").is_dir():
        return data, release
    shutil.rmtree(base / size, ignore_errors=True)
    (base / size / "home").mkdir(parents=True)
    source = WikimediaResource(source="embedded", world_size=size)
    ops = run_config_for(source)["ops"]
    with instance_for_test(temp_dir=str(base / size / "home")) as instance:
        instance.add_dynamic_partitions("release", [release])
        result = materialize(
            load_assets_from_modules([classes, entities, summaries, images, filtering, geocells, versions, package]),
            partition_key=release,
            instance=instance,
            selection=AssetSelection.assets("dataset_stats", "splits").upstream().required_multi_asset_neighbors(),
            resources={"io_manager": ParquetIOManager(base_dir=str(data)), "storage": StorageResource(base_dir=str(data)),
                       "wikimedia": source},
            run_config={"ops": {k: v for k, v in ops.items() if k in ("geo_cells", "dataset_versions")}},
        )
        assert result.success
    return data, release


def _tables(data: Path, release: str) -> dict[str, Any]:
    from mlm_pipeline.assets.package import stored_tables

    return stored_tables(data, release)


def _baseline(data: Path, release: str) -> dict[str, Any]:
    from mlm_pipeline.blobs import BlobStore

    rows, image_bytes = 0, 0
    blobs = BlobStore.of_release(data, release)
    for name, table in _tables(data, release).items():
        for batch in table.batches(batch_size=256):
            rows += batch.num_rows
            if name == "images":
                image_bytes += sum(len(blobs.get(sha)) for sha in batch.column("sha256").to_pylist())
    return {"rows_read": rows, "image_bytes_read": image_bytes}


def _package(data: Path, release: str, out: Path) -> dict[str, Any]:
    from mlm_pipeline.blobs import BlobStore
    from mlm_pipeline.release_package.build import build_package

    blobs = BlobStore.of_release(data, release)
    packaged = build_package(_tables(data, release), lambda image: blobs.get(image["sha256"]), release,
                             f"embedded world, release {release}", ["en", "de", "fr"], {}, out)
    sizes = dict(zip(packaged.manifest["path"].to_pylist(), packaged.manifest["bytes"].to_pylist()))
    return {
        "entities": sum(packaged.split_rows["mlm"].values()),
        "images": packaged.images,
        "bytes": sum(sizes.values()),
        "data_bytes": sum(n for p, n in sizes.items() if p.startswith("data/")),
        "files": len(sizes),
    }


def _measured(task: str, queue: multiprocessing.Queue, *args: Any) -> None:
    import duckdb  # noqa: F401  imported before measuring: the peak below is the task's own

    import mlm_pipeline.assets.package  # noqa: F401

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start, cpu = time.perf_counter(), time.process_time()
    figures = {"baseline": _baseline, "package": _package}[task](*args)
    figures.update(seconds=time.perf_counter() - start, cpu_seconds=time.process_time() - cpu,
                   rss_after_imports_mib=before, peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    queue.put(figures)


def measure(task: str, *args: Any) -> dict[str, Any]:
    """``task`` in a fresh process, so its peak RSS is its own."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measured, args=(task, queue, *args))
    process.start()
    figures = queue.get()
    process.join()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="tiny,default", help="world sizes, comma-separated")
    parser.add_argument("--data", default="/tmp/mlm-bench-package", help="where the built releases are kept")
    args = parser.parse_args()
    print("load before:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    results = {}
    for size in args.sizes.split(","):
        data, release = materialise(Path(args.data), size)
        out = Path(args.data) / size / "package"
        base = measure("baseline", data, release)
        built = measure("package", data, release, out)
        results[size] = {"baseline": base, "package": built}
        per_1000 = built["seconds"] / built["entities"] * 1000
        print(f"\n{size} world, release {release}: {built['entities']:,} MLM entities, "
              f"images per version {built['images']}")
        print(f"  package: {built['bytes'] / 2**20:.1f} MiB in {built['files']} files "
              f"({built['data_bytes'] / 2**20:.1f} MiB of shards)")
        print(f"  packaging: {built['seconds']:.1f} s wall, {built['cpu_seconds']:.1f} s CPU, "
              f"{per_1000:.2f} s per 1,000 entities, peak RSS {built['peak_rss_mib']:.0f} MiB "
              f"({built['rss_after_imports_mib']:.0f} MiB after imports)")
        print(f"  baseline (read every input once): {base['seconds']:.1f} s wall, {base['cpu_seconds']:.1f} s CPU, "
              f"peak RSS {base['peak_rss_mib']:.0f} MiB ({base['rss_after_imports_mib']:.0f} after imports); "
              f"packaging / baseline = {built['seconds'] / base['seconds']:.1f}x")
    print("\nload after:", subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    os.environ.setdefault("MLM_DATA_DIR", "/tmp/mlm-bench-package")
    main()
