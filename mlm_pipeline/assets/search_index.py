"""The paper's use case (section 1.2): every image and summary of a release, embedded for search.

``search_index`` embeds each image and each summary that has features with the chosen model's
image and text branches (search.index); ``mlm-pipeline serve`` answers text and image queries
from it. Every model of the release is an input, so the config can choose any of them; the
default is the multitask model on MLM-irle, the paper's system.
"""

from typing import TYPE_CHECKING

import pyarrow as pa
import pyarrow.compute as pc
from dagster import AssetExecutionContext, AssetIn, Config, MetadataValue, asset
from pydantic import Field

from mlm_pipeline.assets.training import BENCHMARK_VERSIONS, model_name
from mlm_pipeline.model.tasks import TASKS
from mlm_pipeline.release import release_partitions
from mlm_pipeline.provenance import provenance
from mlm_pipeline.storage import StorageResource

# torch is imported inside the asset: every step process of a run imports the code location.
if TYPE_CHECKING:
    from mlm_pipeline.model.networks import MLMNet

MODELS = [model_name(task, version) for version in BENCHMARK_VERSIONS for task in TASKS]
DEFAULT_MODEL = model_name("multitask", "mlm_irle")


class SearchIndexConfig(Config):
    model: str = Field(DEFAULT_MODEL, description=f"the model whose embeddings are indexed: one of {MODELS}")
    batch_size: int = Field(4096, ge=1, description="rows embedded at a time (does not change any number)")
    device: str = Field("cpu", description="cpu, or auto (CUDA when available), cuda, cuda:N")


def best_checkpoint(name: str, curve: pa.Table) -> tuple[str, int]:
    """The checkpoint path (relative to the storage root) and epoch of the model's best epoch."""
    best = curve.filter(curve.column("best"))
    if best.num_rows != 1:
        raise ValueError(f"{name}: its learning curve marks {best.num_rows} best epochs, expected 1")
    return best.column("checkpoint")[0].as_py(), int(best.column("epoch")[0].as_py())


def _load(storage: StorageResource, name: str, curve: pa.Table, device: str) -> tuple["MLMNet", str, int]:
    from mlm_pipeline.encoders.device import resolve_device
    from mlm_pipeline.model.train import load_checkpoint

    checkpoint, epoch = best_checkpoint(name, curve)
    net, _ = load_checkpoint(storage.root() / checkpoint, resolve_device(device))
    return net, checkpoint, epoch


@asset(
    partitions_def=release_partitions,
    ins={
        "images_filtered": AssetIn(metadata={"columns": ["qid", "file_name", "sha256"]}),
        "mlm_irle": AssetIn(metadata={"columns": ["qid", "lat", "lon", "classes"]}),
        "entities": AssetIn(metadata={"columns": ["qid", "label_en", "label_de", "label_fr"]}),
        **{name: AssetIn(key=name) for name in MODELS},
    },
    description="Every image and summary with features, embedded by the chosen model (default: multitask on "
    "MLM-irle), with labels, coordinates and sha256 for showing and recognising them "
    "(schemas.search_index_schema); what `mlm-pipeline serve` searches.",
)
def search_index(
    context: AssetExecutionContext,
    config: SearchIndexConfig,
    storage: StorageResource,
    image_features: pa.Table,
    text_features: pa.Table,
    class_features: pa.Table,
    summaries: pa.Table,
    images_filtered: pa.Table,
    mlm_irle: pa.Table,
    entities: pa.Table,
    **models: pa.Table,
) -> pa.Table:
    from mlm_pipeline.search.index import IMAGE, build_search_index

    if config.model not in MODELS:
        raise ValueError(f"search_index: model={config.model!r} is not one of {MODELS}")
    net, checkpoint, epoch = _load(storage, config.model, models[config.model], config.device)
    table = build_search_index(
        image_features=image_features,
        text_features=text_features,
        images=images_filtered,
        summaries=summaries,
        entities=entities,
        version=mlm_irle,
        class_features=class_features,
        net=net,
        batch_size=config.batch_size,
    )
    images = pc.sum(pc.equal(table.column("kind"), IMAGE)).as_py() or 0
    context.add_output_metadata(
        {
            **provenance(release=context.partition_key, config=config),
            "model": MetadataValue.text(config.model),
            "checkpoint": MetadataValue.text(checkpoint),
            "best_epoch": MetadataValue.int(epoch),
            "dims": MetadataValue.int(net.shape.emb_dim),
            "images": MetadataValue.int(images),
            "texts": MetadataValue.int(table.num_rows - images),
            "location_heads": MetadataValue.bool(net.image_location is not None),
        }
    )
    return table
