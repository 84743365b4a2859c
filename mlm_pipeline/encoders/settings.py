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
