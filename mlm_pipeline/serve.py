"""``mlm-pipeline serve``: a release's search index behind the search page, on loopback by default.

What a query needs is read from what the release recorded, not from today's defaults: the index
and the model it was made with (``search_index``'s metadata), that model's geo-cells, and the
settings the release's features were computed with (``text_features``' and ``image_features``'
``provenance/config``), turned into encoders by the same calls the feature assets make, so a
query lands in the same space as the items it is compared with. Tables are loaded through the
code location's IO manager, wherever it keeps them.
"""

from __future__ import annotations

import ipaddress
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
from dagster import AssetKey, DagsterInstance

from mlm_pipeline.assets.features import ImageFeaturesConfig, TextFeaturesConfig
from mlm_pipeline.assets.search_index import MODELS
from mlm_pipeline.assets.training import BENCHMARK_VERSIONS, CELL_TABLES, model_name
from mlm_pipeline.cli import Refused
from mlm_pipeline.model.tasks import TASKS
from mlm_pipeline.provenance import recorded_config, recorded_metadata
from mlm_pipeline.search.engine import EncodeImage, EncodeText, Release, Searcher
from mlm_pipeline.search.queries import QueryError, QueryLimits

VERSION_OF = {model_name(task, version): version for version in BENCHMARK_VERSIONS for task in TASKS}


def indexed_releases(instance: DagsterInstance) -> list[str]:
    """Releases whose search index is materialised, oldest first (keys are dates)."""
    return sorted(instance.get_materialized_partitions(AssetKey("search_index")))


def choose_release(instance: DagsterInstance, release: str | None) -> str:
    indexed = indexed_releases(instance)
    if release is None:
        if not indexed:
            raise Refused("no release has a search_index yet: build one with `mlm-pipeline main` first")
        return indexed[-1]
    if release not in indexed:
        have = ", ".join(indexed) or "none"
        raise Refused(f"release {release!r} has no search_index (releases with one: {have})")
    return release


def _recorded(instance: DagsterInstance, asset: str, release: str, config_class: type[Any]) -> Any:
    config = recorded_config(instance, asset, release, config_class)
    if config is None:
        raise Refused(f"{asset} of release {release} recorded no configuration: rematerialise it")
    return config


def text_encoder(instance: DagsterInstance, release: str) -> tuple[EncodeText, dict[str, Any]]:
    """The release's text encoder, built as ``text_features`` built it."""
    encoder = _recorded(instance, "text_features", release, TextFeaturesConfig).encoder()
    lock = threading.Lock()  # a fast tokenizer must not be used by two threads at once

    def encode(text: str) -> np.ndarray:
        with lock:
            return encoder.encode([text]).vectors[0]

    return encode, encoder.describe()


def image_encoder(instance: DagsterInstance, release: str) -> tuple[EncodeImage, dict[str, Any]]:
    """The release's image encoder, built as ``image_features`` built it."""
    from mlm_pipeline.encoders.device import resolve_device
    from mlm_pipeline.encoders.image import build_image_encoder, encode_images

    config = _recorded(instance, "image_features", release, ImageFeaturesConfig)
    device = resolve_device(config.device)
    encoder = build_image_encoder(config.branches()).to(device)

    def encode(content: bytes) -> np.ndarray:
        encoding = encode_images(encoder, [content], device=device, batch_size=1, workers=0)
        if encoding.failures:
            raise QueryError(422, f"the image does not decode: {encoding.failures[0][1]}")
        return encoding.vectors[0]

    return encode, encoder.describe()


def load_release(instance: DagsterInstance, release: str, encoders: dict[str, Any]) -> tuple[Release, Any]:
    """The release's model, classes and cells, and its search index table."""
    from mlm_pipeline.definitions import defs
    from mlm_pipeline.encoders.device import resolve_device
    from mlm_pipeline.model.train import load_checkpoint
    from mlm_pipeline.search.index import ClassVectors

    metadata = recorded_metadata(instance, "search_index", release) or {}
    if "model" not in metadata or "checkpoint" not in metadata:
        raise Refused(f"search_index of release {release} does not name its model: rematerialise it")
    model, checkpoint = metadata["model"].value, metadata["checkpoint"].value
    if model not in MODELS:
        raise Refused(f"search_index of release {release} names an unknown model {model!r}")

    net, _ = load_checkpoint(defs.resources["storage"].root() / checkpoint, resolve_device("cpu"))
    with defs.get_asset_value_loader(instance=instance) as loader:

        def table(asset: str, columns: list[str] | None = None) -> Any:
            wanted = {"columns": columns} if columns else None
            return loader.load_asset_value(asset, partition_key=release, input_definition_metadata=wanted)

        index = table("search_index")
        classes = ClassVectors(table("class_features"), table("mlm_irle", ["qid", "classes"]))
        cells = table(CELL_TABLES[VERSION_OF[model]]) if net.image_location is not None else None
    return Release(release, model, net, classes, cells, encoders), index


@dataclass(frozen=True)
class Served:
    app: Any  # starlette.applications.Starlette
    searcher: Searcher
    close: Any  # () -> None, stops the thumbnail reader and the rankers


def build_app(instance: DagsterInstance, release: str | None, limits: QueryLimits = QueryLimits()) -> Served:
    """The app for a release (the newest indexed one when ``release`` is None)."""
    from mlm_pipeline.definitions import defs
    from mlm_pipeline.search.app import create_app
    from mlm_pipeline.search.thumbnails import ThumbnailCache, blob_reader
    from mlm_pipeline.shards import stored_table

    key = choose_release(instance, release)
    encode_text, text_described = text_encoder(instance, key)
    encode_image, image_described = image_encoder(instance, key)
    loaded, index = load_release(instance, key, {"text": text_described, "image": image_described})
    searcher = Searcher(loaded, index, encode_text, encode_image)
    del index  # the searcher keeps arrays of it
    storage = defs.resources["storage"]
    thumbnails = ThumbnailCache(blob_reader(stored_table("images_filtered", key, storage.root()), storage.blobs(key)))

    def close() -> None:
        thumbnails.close()
        searcher.close()

    return Served(create_app(searcher, thumbnails, limits), searcher, close)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(release: str | None, host: str, port: int) -> None:
    import uvicorn

    served = build_app(DagsterInstance.get(), release)
    health = served.searcher.health()
    if not is_loopback(host):
        print(f"warning: listening on {host}: anyone who can reach this machine on port {port} can query it", flush=True)
    print(f"serving release {health['release']} ({health['model']}, {health['images']} images, "
          f"{health['texts']} summaries) at http://{host}:{port}/", flush=True)
    try:
        uvicorn.run(served.app, host=host, port=port, log_level="info", server_header=False)
    finally:
        served.close()
