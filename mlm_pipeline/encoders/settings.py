"""What the encoders are configured with, importable without torch or transformers.

The feature assets' Config classes take their defaults and types from here: the Dagster code
location is imported by every step process, and it should not load the models' libraries to
learn a default crop size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Crop size of the offline scene descriptor (EfficientNet-Lite0): at 128 px it encodes about four
# times as many images per second as at its native 224 on CPU (benchmarks/features.py), and the
# embedded world's drawn scenes keep their content at that size.
OFFLINE_INPUT_SIZE = 128
OFFLINE_MODELS = ("efficientnet-lite0", "none")

MAX_CHUNK_CHARS = 500

CheckpointFormat = Literal["torchvision", "lightning"]
ResNetArch = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]  # encoders.resnet.ARCHITECTURES


@dataclass(frozen=True)
class BranchSpec:
    """One descriptor slot: a checkpoint to load, or else the offline model named by ``offline``."""

    slot: str
    checkpoint: str = ""
    format: str = "torchvision"
    arch: str = "resnet50"
    input_size: int = 224
    trust: bool = False
    offline: str = "none"  # without a checkpoint: efficientnet-lite0 (pretrained, packaged) or none (zeros)


def branch_specs(
    *,
    places_checkpoint: str = "",
    places_format: str = "torchvision",
    places_arch: str = "resnet50",
    geo_checkpoint: str = "",
    geo_format: str = "lightning",
    geo_arch: str = "resnet50",
    trust_checkpoints: bool = False,
    image_size: int = 224,
    offline_image_size: int = OFFLINE_INPUT_SIZE,
    **_: object,
) -> list[BranchSpec]:
    """The two slots from ``image_features`` settings (the asset's config, or the settings a
    release recorded in its metadata: other keys are ignored): a slot without a checkpoint gets
    its offline default, EfficientNet-Lite0 for the scene slot, nothing for the geolocation one."""

    def spec(slot: str, checkpoint: str, fmt: str, arch: str, offline: str) -> BranchSpec:
        return BranchSpec(slot, checkpoint, fmt, arch, image_size if checkpoint else offline_image_size, trust_checkpoints, offline)

    return [
        spec("places365", places_checkpoint, places_format, places_arch, "efficientnet-lite0"),
        spec("geolocation", geo_checkpoint, geo_format, geo_arch, "none"),
    ]
