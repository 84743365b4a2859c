"""Search latency and throughput of ``mlm-pipeline serve``, beside the bare encoder + ranking time.

The server runs in its own process on 127.0.0.1 with a built release (its index, model and
encoders, as ``mlm-pipeline serve`` loads them); clients are threads with keep-alive HTTP
connections sending the release's own summaries (``GET /api/search?text=``) and images
(``POST /api/search``). Two indexes:

- ``release``: the release's own search_index (build the default world first:
  ``mlm-pipeline main``; pass ``--home`` for another DAGSTER_HOME);
- ``MLM size``: the same model and encoders over random unit vectors for MLM's 412,422 images
  and 497,899 summaries (the paper's Table 2), the size that exact ranking must handle.

For each, one client (latency median and p95) and ``--clients`` concurrent clients (latency and
queries/s), text and image; the baseline is the same queries through the bare encoder, the
model's branch and the exact ranking in the server process, without HTTP (median). Targets:
p95 <= 150 ms for a text query on the default world's index, <= 500 ms at MLM's size.

    .venv/bin/python benchmarks/serve.py                   # the project's instance, newest release
    .venv/bin/python benchmarks/serve.py --home /tmp/home --release 2026-01-05 --clients 4
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

from mlm_pipeline.cli import SERVE_ENVIRONMENT

MLM_IMAGES = 412_422
MLM_SUMMARIES = 497_899


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def synthetic_index(n_images: int, n_texts: int, dim: int, seed: int = 0) -> Any:
    """An index table of MLM's size: random unit vectors, about two images and summaries per entity."""
    import pyarrow as pa

    from mlm_pipeline import schemas
    from mlm_pipeline.encoders.vectors import to_vector_array

    rng = np.random.default_rng(seed)
    parts = []
    for kind, n in (("image", n_images), ("text", n_texts)):
        vectors = rng.standard_normal((n, dim), dtype=np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        qids = pa.array([f"Q{9_000_000_000 + i // 2}" for i in range(n)])
        parts.append(pa.Table.from_arrays(
            [pa.array([kind] * n), qids, pa.array([f"{i % 2}" for i in range(n)]), qids,
             pa.array(rng.uniform(-60, 70, n)), pa.array(rng.uniform(-180, 180, n)),
             pa.array([f"{i:064x}" for i in range(n)]),
             pa.array([f"summary {i}" for i in range(n)] if kind == "text" else [None] * n, pa.string()),
             to_vector_array(vectors)],
            schema=schemas.search_index_schema(dim)))
    return pa.concat_tables(parts)


def queries(home: str, release: str, n: int) -> tuple[list[str], list[bytes]]:
    """The release's own summaries and images, ``n`` of each (cycled)."""
    from dagster import DagsterInstance

    from mlm_pipeline.definitions import defs

    os.environ["DAGSTER_HOME"] = home
    with DagsterInstance.from_config(home) as instance, defs.get_asset_value_loader(instance=instance) as loader:
        summaries = loader.load_asset_value("summaries", partition_key=release, input_definition_metadata={"columns": ["text"]})
        images = loader.load_asset_value("images_filtered", partition_key=release,
                                         input_definition_metadata={"columns": ["sha256"]})
    texts = [t for t in summaries.column("text").to_pylist() if t and t.strip()][:n]
    blobs = defs.resources["storage"].blobs(release)
    contents = [blobs.get(sha256) for sha256 in images.column("sha256").to_pylist()[:n]]
    return [texts[i % len(texts)] for i in range(n)], [contents[i % len(contents)] for i in range(n)]


def bare(searcher: Any, texts: list[str], images: list[bytes], k: int) -> dict[str, float]:
    """Median ms of encoder + model branch + exact ranking, without HTTP or JSON."""
    from mlm_pipeline.search.index import embed_images, embed_texts

    classes = searcher.release.classes
    times: dict[str, list[float]] = {"text": [], "image": []}
    for text in texts:
        started = time.perf_counter()
        features = searcher.encode_text(text)[None]
        searcher.images.top(embed_texts(searcher.net, features, classes.prior[None])[0], k)
        times["text"].append(time.perf_counter() - started)
    for content in images:
        started = time.perf_counter()
        searcher.texts.top(embed_images(searcher.net, searcher.encode_image(content)[None])[0], k)
        times["image"].append(time.perf_counter() - started)
    return {kind: 1000 * statistics.median(values) for kind, values in times.items()}


def server_main(home: str, release: str, port: int, mlm_size: bool, baseline: str, n: int, k: int) -> None:
    """The server process: load the release like ``mlm-pipeline serve``, optionally swap in an
    index of MLM's size, measure the bare path, then serve until terminated."""
    import uvicorn
    from dagster import DagsterInstance

    from mlm_pipeline.search.app import create_app
    from mlm_pipeline.search.engine import Searcher
    from mlm_pipeline.search.thumbnails import ThumbnailCache
    from mlm_pipeline.serve import build_app

    os.environ["DAGSTER_HOME"] = home
    with DagsterInstance.from_config(home) as instance:
        served = build_app(instance, release)
    searcher, app = served.searcher, served.app
    if mlm_size:  # the same model and encoders over an index of MLM's size (no thumbnails to show)
        index = synthetic_index(MLM_IMAGES, MLM_SUMMARIES, searcher.net.shape.emb_dim)
        served.close()
        searcher = Searcher(searcher.release, index, searcher.encode_text, searcher.encode_image)
        app = create_app(searcher, ThumbnailCache(lambda keys: {}))
        del index
    texts, images = queries(home, release, n)
    figures = bare(searcher, texts[: min(n, 50)], images[: min(n, 50)], k)
    figures |= {"images": len(searcher.images), "texts": len(searcher.texts)}
    Path(baseline).write_text(json.dumps(figures))
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


class Client(threading.Thread):
    def __init__(self, port: int, work: list[tuple[str, Any]], k: int) -> None:
        super().__init__(daemon=True)
        self.port, self.work, self.k = port, work, k
        self.latencies: list[float] = []
        self.failures = 0

    def run(self) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        for kind, query in self.work:
            started = time.perf_counter()
            if kind == "text":
                connection.request("GET", "/api/search?" + urllib.parse.urlencode({"text": query, "k": self.k}))
            else:
                connection.request("POST", f"/api/search?k={self.k}", body=query, headers={"Content-Type": "image/jpeg"})
            answer = connection.getresponse()
            answer.read()
            self.latencies.append(time.perf_counter() - started)
            self.failures += answer.status != 200
        connection.close()


def load(port: int, kind: str, items: list[Any], clients: int, k: int) -> dict[str, float]:
    shares = [[(kind, q) for q in items[c::clients]] for c in range(clients)]
    threads = [Client(port, share, k) for share in shares]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    latencies = sorted(x for t in threads for x in t.latencies)
    failures = sum(t.failures for t in threads)
    if failures:
        raise RuntimeError(f"{failures} of {len(latencies)} {kind} queries failed")
    return {
        "median_ms": 1000 * statistics.median(latencies),
        "p95_ms": 1000 * latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
        "qps": len(latencies) / seconds,
    }


def measure(home: str, release: str, mlm_size: bool, n: int, clients: int, k: int) -> dict[str, Any]:
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        baseline = Path(folder) / "baseline.json"
        context = multiprocessing.get_context("spawn")
        server = context.Process(target=server_main, args=(home, release, port, mlm_size, str(baseline), n, k))
        server.start()
        try:
            deadline = time.monotonic() + 900
            while not baseline.exists() or not _answers(port):
                if not server.is_alive() or time.monotonic() > deadline:
                    raise RuntimeError("the server process did not come up")
                time.sleep(0.5)
            figures: dict[str, Any] = json.loads(baseline.read_text())
            texts, images = queries(home, release, n)
            load(port, "text", texts[:8], 1, k)  # warm-up
            for kind, items in (("text", texts), ("image", images)):
                figures[f"{kind} 1 client"] = load(port, kind, items, 1, k)
                figures[f"{kind} {clients} clients"] = load(port, kind, items, clients, k)
            return figures
        finally:
            server.terminate()
            server.join(30)
            if server.is_alive():
                server.kill()


def _answers(port: int) -> bool:
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        connection.request("GET", "/api/health")
        ok = connection.getresponse().status == 200
        connection.close()
        return ok
    except OSError:
        return False


def newest_release(home: str) -> str:
    from dagster import DagsterInstance

    from mlm_pipeline.serve import choose_release

    with DagsterInstance.from_config(home) as instance:
        return choose_release(instance, None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--home", default=str(Path(__file__).resolve().parent.parent), help="DAGSTER_HOME with a built release")
    parser.add_argument("--release", help="release to serve (default: the newest with a search_index)")
    parser.add_argument("--queries", type=int, default=200, help="queries per kind and load")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("-k", type=int, default=10)
    args = parser.parse_args()
    for name, value in SERVE_ENVIRONMENT.items():  # as `mlm-pipeline serve` runs; the server process inherits it
        os.environ.setdefault(name, value)
    release = args.release or newest_release(args.home)
    print(f"release {release} from {args.home}; load: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print(f"| index | rows (images / summaries) | query | bare encoder + ranking, median ms | 1 client median / p95 ms "
          f"| {args.clients} clients median / p95 ms | {args.clients} clients queries/s |")
    print("|---|---|---|---|---|---|---|")
    for name, mlm_size in (("release", False), ("MLM size (random vectors)", True)):
        figures = measure(args.home, release, mlm_size, args.queries, args.clients, args.k)
        for kind in ("text", "image"):
            one, many = figures[f"{kind} 1 client"], figures[f"{kind} {args.clients} clients"]
            print(f"| {name} | {figures['images']:,} / {figures['texts']:,} | {kind} | {figures[kind]:.1f} "
                  f"| {one['median_ms']:.1f} / {one['p95_ms']:.1f} | {many['median_ms']:.1f} / {many['p95_ms']:.1f} "
                  f"| {many['qps']:.1f} |", flush=True)
    print(f"load after: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")


if __name__ == "__main__":
    main()
