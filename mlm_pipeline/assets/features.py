"""Stage 7: image, text and class features for the entities of MLM-irle (paper section 5.2).

Encoders are built, and every configured checkpoint or model folder checked, before any image
is decoded or text encoded, so a wrong file fails in seconds rather than after an hour of work.
Only MLM-irle's entities are encoded (MLM-irle-gr is a sample of it; nothing reads the rest).
"""


from collections import Counter
from typing import TYPE_CHECKING, Iterator, Optional

import pyarrow as pa
from dagster import AssetExecutionContext, AssetIn, AssetOut, Config, MetadataValue, Output, asset, multi_asset
from pydantic import Field

from mlm_pipeline import pools
from mlm_pipeline.config_rules import Device, ExistingPath
from mlm_pipeline.encoders.settings import MAX_CHUNK_CHARS, OFFLINE_INPUT_SIZE, BranchSpec, CheckpointFormat, ResNetArch
from mlm_pipeline.partitions import release_partitions
from mlm_pipeline.provenance import provenance

# The encoders (torch, transformers) are imported inside the functions that run them: every step
# process of a run imports the code location, and those imports would cost each one seconds.
if TYPE_CHECKING:
    from mlm_pipeline.encoders.text import TextEncoder


class ImageFeaturesConfig(Config):
    """The two descriptors; an empty checkpoint path selects the seeded offline default."""

    places_checkpoint: ExistingPath = Field("", description="Places365 ResNet checkpoint (torchvision format, e.g. resnet50_places365.pth.tar)")
    places_format: CheckpointFormat = Field(
        "torchvision", description="torchvision (keys module.conv1.weight, ...) or lightning"
    )
    places_arch: ResNetArch = Field("resnet50", description="resnet18/34/50/101/152")
    geo_checkpoint: ExistingPath = Field("", description="GeoEstimation base(M) checkpoint (PyTorch Lightning .ckpt)")
    geo_format: CheckpointFormat = Field("lightning", description="lightning (keys model.*, classifier.*) or torchvision")
    geo_arch: ResNetArch = Field("resnet50", description="resnet18/34/50/101/152")
    trust_checkpoints: bool = Field(False, description="allow full unpickling (Lightning hyperparameter objects)")
    image_size: int = Field(224, ge=1, description="crop size for checkpoint-loaded descriptors")
    offline_image_size: int = Field(OFFLINE_INPUT_SIZE, ge=1, description="crop size for the offline default")
    seed: int = Field(0, description="offline default: the two descriptors are initialised with seed and seed+1")
    batch_size: int = Field(128, ge=1)
    decode_workers: int = Field(2, ge=0, description="threads decoding images ahead of the model (0: inline)")
    device: Device = Field("auto", description="auto (CUDA when available), cpu, cuda, cuda:N")

    def branches(self) -> list[BranchSpec]:
        def spec(slot: str, checkpoint: str, fmt: str, arch: str, seed: int) -> BranchSpec:
            size = self.image_size if checkpoint else self.offline_image_size
            return BranchSpec(slot, checkpoint, fmt, arch, size, seed, self.trust_checkpoints)

        return [
            spec("places365", self.places_checkpoint, self.places_format, self.places_arch, self.seed),
            spec("geolocation", self.geo_checkpoint, self.geo_format, self.geo_arch, self.seed + 1),
        ]


# The packaged MiniLM's bottom two layers: a third of the full model's cost (about 7 against 22 ms
# of CPU per summary), which keeps the default world's ~10k summaries to about a minute on two
# cores; set layers=0 for all six.
DEFAULT_MODEL_LAYERS = 2


class TextFeaturesConfig(Config):
    """The text encoder; an empty model path selects the packaged all-MiniLM-L6-v2."""

    model_path: ExistingPath = Field("", description="a local transformers model folder (the paper: multilingual BERT)")
    layers: Optional[int] = Field(
        None,
        ge=0,
        description="transformer layers used, from the bottom; 0: all; unset: all for a configured model, "
        f"{DEFAULT_MODEL_LAYERS} of 6 for the packaged MiniLM (sized for the default world on two CPU cores)",
    )
    chunk_chars: int = Field(MAX_CHUNK_CHARS, ge=1, description="largest chunk, cut on word boundaries")
    batch_size: int = Field(64, ge=1)
    device: Device = Field("auto", description="auto (CUDA when available), cpu, cuda, cuda:N")

    def encoder(self) -> "TextEncoder":
        from mlm_pipeline.encoders.device import resolve_device
        from mlm_pipeline.encoders.text import TextEncoder

        device = resolve_device(self.device)
        layers = self.layers if self.layers is not None else (0 if self.model_path else DEFAULT_MODEL_LAYERS)
        return TextEncoder(
            self.model_path, device=device, batch_size=self.batch_size, max_chars=self.chunk_chars, layers=layers
        )


@multi_asset(
    outs={
        "image_features": AssetOut(
            description="4096-d image descriptors (Places365 + geolocation ResNets, 2048 each) for every "
            "image of MLM-irle's entities (schemas.IMAGE_FEATURES)."
        ),
        "image_feature_dropouts": AssetOut(
            description="Images that would not decode here, with the decoder's error (schemas.DROPOUTS)."
        ),
    },
    ins={"images_filtered": AssetIn(), "mlm_irle": AssetIn()},
    partitions_def=release_partitions,
    code_version="1",
    pool=pools.COMPUTE,
)
def image_features(
    context: AssetExecutionContext, config: ImageFeaturesConfig, images_filtered: pa.Table, mlm_irle: pa.Table
) -> Iterator[Output]:
    from mlm_pipeline.encoders.device import device_label, resolve_device
    from mlm_pipeline.encoders.image import build_image_encoder
    from mlm_pipeline.encoders.tables import image_feature_table

    device = resolve_device(config.device)
    encoder = build_image_encoder(config.branches())
    described = encoder.describe()
    context.log.info(f"image encoder on {device_label(device)}: {described}")
    result = image_feature_table(
        images_filtered,
        mlm_irle,
        encoder,
        device=device,
        batch_size=config.batch_size,
        workers=config.decode_workers,
        log=context.log.info,
    )
    rows = result.table.num_rows
    common = provenance(release=context.partition_key, config=config)
    yield Output(
        result.table,
        output_name="image_features",
        metadata={
            **common,
            "rows": MetadataValue.int(rows),
            "dims": MetadataValue.int(described["dims"]),
            "pretrained": MetadataValue.bool(described["pretrained"]),
            "encoders": MetadataValue.json(described["branches"]),
            "device": MetadataValue.text(device_label(device)),
            "seconds": MetadataValue.float(round(result.seconds, 2)),
            "images_per_second": MetadataValue.float(round(rows / max(result.seconds, 1e-9), 1)),
            "undecodable": MetadataValue.int(result.dropouts.num_rows),
        },
    )
    reasons = Counter(result.dropouts.column("reason").to_pylist())
    yield Output(result.dropouts, output_name="image_feature_dropouts", metadata={**common, "by_reason": MetadataValue.json(dict(reasons))})


def _text_metadata(context: AssetExecutionContext, config: TextFeaturesConfig, encoder: "TextEncoder", table: pa.Table) -> dict:
    from mlm_pipeline.encoders.device import device_label

    described = encoder.describe()
    return {
        **provenance(release=context.partition_key, config=config),
        "rows": MetadataValue.int(table.num_rows),
        "dims": MetadataValue.int(encoder.dim),
        "encoder": MetadataValue.text(described["encoder"]),
        "pretrained": MetadataValue.bool(described["pretrained"]),
        "text_encoder": MetadataValue.json(described),
        "device": MetadataValue.text(device_label(encoder.device)),
    }


@asset(
    ins={"summaries": AssetIn(), "mlm_irle": AssetIn()},
    partitions_def=release_partitions,
    code_version="1",
    pool=pools.COMPUTE,
    description="One vector per summary (entity, language) of MLM-irle: 500-character chunks on word "
    "boundaries, token vectors mean-pooled per chunk, chunk vectors averaged.",
)
def text_features(
    context: AssetExecutionContext, config: TextFeaturesConfig, summaries: pa.Table, mlm_irle: pa.Table
) -> Output[pa.Table]:
    from mlm_pipeline.encoders.device import device_label
    from mlm_pipeline.encoders.tables import text_feature_table

    encoder = config.encoder()
    context.log.info(f"text encoder on {device_label(encoder.device)}: {encoder.describe()}")
    table = text_feature_table(summaries, mlm_irle, encoder, log=context.log.info)
    return Output(table, metadata=_text_metadata(context, config, encoder, table))


@asset(
    ins={"entities": AssetIn(), "mlm_irle": AssetIn()},
    partitions_def=release_partitions,
    code_version="1",
    pool=pools.COMPUTE,
    description="One vector per triple class of MLM-irle's entities: its English label through the text encoder.",
)
def class_features(
    context: AssetExecutionContext, config: TextFeaturesConfig, entities: pa.Table, mlm_irle: pa.Table
) -> Output[pa.Table]:
    from mlm_pipeline.encoders.tables import class_feature_table

    encoder = config.encoder()
    table = class_feature_table(entities, mlm_irle, encoder, log=context.log.info)
    unlabelled = sum(1 for label in table.column("label").to_pylist() if not label)
    metadata = _text_metadata(context, config, encoder, table)
    return Output(table, metadata={**metadata, "classes_without_label": MetadataValue.int(unlabelled)})
