"""The dataset stages as the world grows: seconds, peak memory and disk per stage and asset.

For one embedded-world size at a time, every dataset stage (settlement_classes through
dataset_stats, and release_diff) runs as its own process, as a Dagster step does: it
materialises that stage of the release from what the stages before it stored. The world is
served by a process of its own (``python -m mlm_pipeline.world serve``, reached as the
``endpoints`` source, with no added latency), so a stage's peak RSS is the pipeline's, not the
world's; the server's is reported apart. The feature stages run on a sample of MLM-irle's
entities over the full-size input tables (their memory is that of a full run: rounds of a fixed
size), and their time is extrapolated to every entity, which the report says.

Results accumulate in a JSON file under a label, so sizes, and other code (``PYTHONPATH`` set to
another checkout, ``--label before``), are measured in separate runs and printed together, with
the growth of each figure from one size to the next and the machine's load while it ran:

    .venv/bin/python benchmarks/scale.py run --size default 40000 mlm --data /tmp/scale
    PYTHONPATH=/path/to/main .venv/bin/python benchmarks/scale.py run --size 40000 --label before --data /tmp/before
    .venv/bin/python benchmarks/scale.py report
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

DATASET_STAGES = ("settlement_classes", "entities", "summaries", "images", "images_filtered", "geo_cells",
                  "dataset_versions", "splits", "dataset_stats", "release_diff")
FEATURE_STAGES = ("image_features", "text_features")
IMAGE_BEARING = ("images", "images_filtered", "blobs", "staging/images")
"""Where thumbnails' bytes may be stored (all of them, before blobs existed, held copies)."""
SIZES = ("default", "40000", "mlm")


def tree_bytes(path: Path) -> tuple[int, int]:
    """(apparent bytes, bytes allocated on disk) of every file under ``path``."""
    apparent = allocated = 0
    for root, _, files in os.walk(path):
        for name in files:
            stat = os.lstat(os.path.join(root, name))
            apparent += stat.st_size
            allocated += stat.st_blocks * 512
    return apparent, allocated


def table_paths(data: Path, asset: str, release: str) -> list[Path]:
    """The Parquet files of an asset's release, as shards or as one file (the earlier layout)."""
    folder = data / asset / f"release={release}"
    return sorted(folder.glob("part-*.parquet")) if folder.is_dir() else [data / asset / f"{release}.parquet"]


def read(data: Path, asset: str, release: str, columns: list[str] | None = None) -> pa.Table:
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in table_paths(data, asset, release)])


def asset_bytes(data: Path, release: str) -> dict[str, int]:
    """Allocated bytes per stored asset of the release, and per folder of other files."""
    sizes = {}
    for child in sorted(data.iterdir()):
        if child.name.startswith(".") or not child.is_dir():
            continue
        if child.name in ("blobs", "staging", "figures", "checkpoints"):
            for sub in sorted((child / release).iterdir()) if (child / release).is_dir() else []:
                if child.name == "staging":  # staging/<release>/<source>/<stage>/...
                    for stage in sorted(sub.iterdir()):
                        key = f"staging/{stage.name}"
                        sizes[key] = sizes.get(key, 0) + tree_bytes(stage)[1]
                else:
                    sizes[child.name] = sizes.get(child.name, 0) + tree_bytes(sub)[1]
            continue
        paths = [p for p in table_paths(data, child.name, release) if p.exists()]
        if paths:
            sizes[child.name] = sum(p.stat().st_blocks * 512 for p in paths)
    return sizes


def thumbnail_bytes(data: Path, release: str) -> int:
    """The thumbnails' own bytes: each distinct image once."""
    images = read(data, "images", release, ["sha256", "n_bytes"])
    distinct = images.group_by("sha256").aggregate([("n_bytes", "max")])
    return int(pa.compute.sum(distinct.column("n_bytes_max")).as_py() or 0)


def start_world(size: str, log: Path) -> tuple[subprocess.Popen, dict[str, str], float]:
    """The world's servers in their own process; their URLs and the release they serve."""
    started = time.perf_counter()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlm_pipeline.world", "serve", "--size", size],
        stdout=subprocess.PIPE, stderr=log.open("w"), text=True, start_new_session=True,
    )
    served: dict[str, str] = {}
    assert server.stdout is not None
    for line in server.stdout:
        if match := re.search(r"release (\S+)", line):
            served["release"] = match.group(1)
        for key, label in (("MLM_SPARQL_ENDPOINT", "SPARQL endpoint"), ("MLM_WIKIPEDIA_API", "Wikipedia API"),
                           ("MLM_COMMONS_API", "Commons API"), ("MLM_COMMONS_FILEPATH", "Commons files")):
            if line.startswith(label):
                served[key] = line.split()[-1]
        if line.startswith("Ctrl-C"):
            return server, served, time.perf_counter() - started
    raise RuntimeError(f"the world server stopped before serving; see {log}")


def peak_rss_mib(pid: int) -> float:
    """Peak resident memory of a running process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_process(command: list[str], env: dict[str, str], log: Path) -> dict[str, float]:
    """Seconds, peak RSS (MiB) and exit status of one process, with the load before and after."""
    load = os.getloadavg()[0]
    started = time.perf_counter()
    with log.open("a") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
        "ok": os.waitstatus_to_exitcode(status) == 0,
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def sample_release(data: Path, sample: Path, release: str, entities: int) -> tuple[int, int]:
    """A copy of the release for the feature stages: the full tables they read (linked, not
    copied) and MLM-irle cut to every k-th of its entities. Returns (sample, all) entities."""
    sample.mkdir(parents=True)
    for child in data.iterdir():
        if child.name not in ("mlm_irle", ".incoming", "mlm.duckdb"):
            (sample / child.name).symlink_to(child.resolve(), target_is_directory=child.is_dir())
    version = read(data, "mlm_irle", release)
    step = max(1, version.num_rows // max(entities, 1))
    cut = version.take(pa.array(range(0, version.num_rows, step)))
    first = table_paths(data, "mlm_irle", release)[0]  # the cut, in one file, where the first one lies
    target = sample / "mlm_irle" / first.relative_to(data / "mlm_irle")
    target.parent.mkdir(parents=True)
    pq.write_table(cut, target)
    return cut.num_rows, version.num_rows


def features(stage: str, data: Path, release: str, entities: int, env: dict[str, str], logs: Path) -> dict:
    """A feature stage on two samples of MLM-irle (a quarter and all of ``entities``), over the
    full-size inputs; its time for every row is extrapolated from the two, a fixed start-up
    cost plus a cost per row (so the samples must be large enough for their difference to
    stand out of the machine's noise)."""
    runs = []
    for share in (entities // 4, entities):
        sample = data.with_name(f"{data.name}.features-{share}")
        shutil.rmtree(sample, ignore_errors=True)
        taken, total = sample_release(data, sample, release, share)
        cut = set(read(sample, "mlm_irle", release, ["qid"]).column("qid").to_pylist())
        version = set(read(data, "mlm_irle", release, ["qid"]).column("qid").to_pylist())
        source = read(data, "images_filtered" if stage == "image_features" else "summaries", release, ["qid"])
        qids = source.column("qid").to_pylist()
        figures = run_process([sys.executable, __file__, "stage", stage, "--release", release],
                              {**env, "MLM_DATA_DIR": str(sample)}, logs / f"{stage}-{share}.log")
        figures.update(sample_rows=sum(q in cut for q in qids), rows=sum(q in version for q in qids),
                       sample_entities=taken, entities=total)
        runs.append(figures)
        print(f"  {stage:<20} {figures['seconds']:>8.1f} s for {figures['sample_rows']} of {figures['rows']} rows  "
              f"{figures['peak_rss_mib']:>8.1f} MiB peak RSS  load {figures['load_before']}->{figures['load_after']}",
              flush=True)
        if not figures["ok"]:
            raise SystemExit(f"{stage} failed: see {logs / f'{stage}-{share}.log'}")
        shutil.rmtree(sample)
    small, large = runs
    per_row = (large["seconds"] - small["seconds"]) / max(large["sample_rows"] - small["sample_rows"], 1)
    fixed = large["seconds"] - per_row * large["sample_rows"]
    return {**large, "peak_rss_mib": max(r["peak_rss_mib"] for r in runs), "samples": runs,
            "extrapolated_seconds": round(fixed + per_row * large["rows"], 1)}


def run(args: argparse.Namespace) -> None:
    for size in args.size:
        measure(args, size, Path(args.data).resolve() / size)
    report(args)


def measure(args: argparse.Namespace, size: str, data: Path) -> None:
    if data.exists() and any(data.iterdir()) and not args.resume:
        raise SystemExit(f"{data} is not empty: give a fresh folder, or --resume to continue there")
    data.mkdir(parents=True, exist_ok=True)
    home = data.with_name(data.name + ".home")
    home.mkdir(exist_ok=True)
    logs = data.with_name(data.name + ".logs")
    logs.mkdir(exist_ok=True)
    print(f"world {size}: starting its servers (the first start of a size builds and caches the world)")
    server, served, startup = start_world(size, logs / "world.log")
    release = served.pop("release")
    print(f"  release {release} served after {startup:.0f} s; load {os.getloadavg()}")
    env = {**os.environ, **served, "MLM_SOURCE": "endpoints", "MLM_CONTACT": "scale-benchmark@localhost",
           "MLM_DATA_DIR": str(data), "DAGSTER_HOME": str(home)}
    results = load_results(Path(args.results))
    entry = results.setdefault(args.label, {}).setdefault(size, {"stages": {}})
    entry.update(release=release, world_startup_s=round(startup, 1), python_path=os.environ.get("PYTHONPATH", ""))
    try:
        register = subprocess.run([sys.executable, "-m", "mlm_pipeline.cli", "register", "--release", release],
                                  env=env, capture_output=True, text=True)
        if register.returncode:
            raise SystemExit(register.stderr)
        stages = [s for s in DATASET_STAGES if not args.stages or s in args.stages]
        for stage in stages:
            if args.resume and not args.stages and entry["stages"].get(stage, {}).get("ok"):
                continue
            figures = run_process([sys.executable, __file__, "stage", stage, "--release", release], env,
                                  logs / f"{stage}.log")
            entry["stages"][stage] = figures
            save_results(Path(args.results), results)
            print(f"  {stage:<20} {figures['seconds']:>8.1f} s  {figures['peak_rss_mib']:>8.1f} MiB peak RSS  "
                  f"load {figures['load_before']}->{figures['load_after']}", flush=True)
            if not figures["ok"]:
                raise SystemExit(f"{stage} failed: see {logs / f'{stage}.log'}")
        for stage in FEATURE_STAGES:
            if not args.stages or stage in args.stages:
                entry["stages"][stage] = features(stage, data, release, args.features_sample, env, logs)
                save_results(Path(args.results), results)
        entry["world_server_peak_rss_mib"] = round(peak_rss_mib(server.pid), 1)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=120)
    sizes = asset_bytes(data, release)
    thumbnails = thumbnail_bytes(data, release)
    entry.update(bytes=sizes, thumbnail_bytes=thumbnails,
                 image_bytes_stored=sum(v for k, v in sizes.items() if k in IMAGE_BEARING))
    save_results(Path(args.results), results)
    print(f"  thumbnails {thumbnails / 2**20:.1f} MiB; stored for images {entry['image_bytes_stored'] / 2**20:.1f} MiB "
          f"({entry['image_bytes_stored'] / max(thumbnails, 1):.2f}x); world server peak "
          f"{entry['world_server_peak_rss_mib']:.0f} MiB")


def stage(args: argparse.Namespace) -> int:
    """One stage of the release, in this process, from the stored tables of the stages before."""
    from dagster import AssetsDefinition, DagsterInstance, materialize

    from mlm_pipeline.definitions import assets
    from mlm_pipeline.parquet_io import ParquetIOManager
    from mlm_pipeline.resources import wikimedia_from_env
    from mlm_pipeline.storage import StorageResource

    (target,) = [a for a in assets if isinstance(a, AssetsDefinition) and a.node_def.name == args.name]
    data = os.environ["MLM_DATA_DIR"]
    with DagsterInstance.get() as instance:
        result = materialize(
            assets,
            selection=list(target.keys),
            partition_key=args.release,
            instance=instance,
            resources={
                "io_manager": ParquetIOManager(base_dir=data),
                "storage": StorageResource(base_dir=data),
                "wikimedia": wikimedia_from_env(),
            },
        )
    return 0 if result.success else 1


def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def save_results(path: Path, results: dict) -> None:
    path.write_text(json.dumps(results, indent=1, sort_keys=True))


def growth(values: list[float | None]) -> str:
    pairs = [f"{b / a:.2f}x" if a and b else "-" for a, b in zip(values, values[1:])]
    return " ".join(pairs)


def report(args: argparse.Namespace) -> None:
    results = load_results(Path(args.results))
    for label, by_size in results.items():
        sizes = [s for s in SIZES if s in by_size] + [s for s in by_size if s not in SIZES]
        print(f"\n== {label}: " + ", ".join(f"{s} (release {by_size[s].get('release')})" for s in sizes))
        header = "".join(f"{s:>28}" for s in sizes)
        print(f"{'stage':<20}{header}   growth of wall s / of RSS")
        for name in (*DATASET_STAGES, *FEATURE_STAGES):
            cells, seconds, rss = [], [], []
            for size in sizes:
                figures = by_size[size]["stages"].get(name)
                if figures is None:
                    cells.append("-".rjust(28))
                    seconds.append(None)
                    rss.append(None)
                    continue
                time_s = figures.get("extrapolated_seconds", figures["seconds"])
                mark = "~" if "extrapolated_seconds" in figures else " "
                fail = "" if figures["ok"] else "!"
                cell = f"{mark}{time_s:.0f} s {figures['cpu_seconds']:.0f} cpu {figures['peak_rss_mib']:.0f} MiB{fail}"
                cells.append(cell.rjust(28))
                seconds.append(time_s)
                rss.append(figures["peak_rss_mib"])
            print(f"{name:<20}{''.join(cells)}   {growth(seconds)} / {growth(rss)}")
        print("(wall seconds, CPU seconds of the process, peak RSS. ~: feature stages run on samples of "
              "MLM-irle's entities over the full-size inputs; wall seconds extrapolated to all rows, CPU and "
              "RSS of the larger sample's run. ! failed)")
        print(f"{'load (1-min)':<20}" + "".join(
            f"{'%.1f-%.1f' % load_range(by_size[s]):>28}" for s in sizes))
        assets = sorted({a for s in sizes for a in by_size[s].get("bytes", {})})
        print(f"\n{'bytes on disk (MiB)':<20}{header}   growth")
        for asset in assets:
            values = [by_size[s].get("bytes", {}).get(asset) for s in sizes]
            cells = "".join(f"{v / 2**20:>28.1f}" if v is not None else f"{'-':>28}" for v in values)
            print(f"{asset:<20}{cells}   {growth(values)}")
        for key, title in (("thumbnail_bytes", "thumbnails' bytes"), ("image_bytes_stored", "stored for images")):
            values = [by_size[s].get(key) for s in sizes]
            print(f"{title:<20}" + "".join(f"{(v or 0) / 2**20:>28.1f}" for v in values) + f"   {growth(values)}")
        print(f"{'stored / thumbnails':<20}" + "".join(
            f"{by_size[s].get('image_bytes_stored', 0) / max(by_size[s].get('thumbnail_bytes', 0), 1):>27.2f}x"
            for s in sizes))
        print(f"{'world server RSS':<20}" + "".join(
            f"{by_size[s].get('world_server_peak_rss_mib', 0):>24.0f} MiB" for s in sizes) + "   (not a pipeline stage)")


def load_range(entry: dict) -> tuple[float, float]:
    loads = [v for f in entry["stages"].values() for v in (f["load_before"], f["load_after"])]
    return (min(loads), max(loads)) if loads else (0.0, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    go = commands.add_parser("run", help="measure world sizes one after the other, then print the report")
    go.add_argument("--size", nargs="+", default=list(SIZES), help="embedded world sizes: default, 40000, mlm, ...")
    go.add_argument("--data", required=True, help="a folder for the releases' data (one fresh folder per size in it)")
    go.add_argument("--label", default="after", help="results are kept under this label (e.g. before/after)")
    go.add_argument("--results", default="scale-results.json")
    go.add_argument("--features-sample", type=int, default=8000, help="MLM-irle entities the feature stages encode")
    go.add_argument("--stages", nargs="*", help="only these stages (default: all)")
    go.add_argument("--resume", action="store_true",
                    help="continue in --data, skipping stages that succeeded (unless named in --stages)")
    show = commands.add_parser("report", help="print the table of every measured size and label")
    show.add_argument("--results", default="scale-results.json")
    one = commands.add_parser("stage", help=argparse.SUPPRESS)
    one.add_argument("name")
    one.add_argument("--release", required=True)
    args = parser.parse_args()
    if args.command == "run":
        run(args)
    elif args.command == "report":
        report(args)
    else:
        sys.exit(stage(args))


if __name__ == "__main__":
    main()
