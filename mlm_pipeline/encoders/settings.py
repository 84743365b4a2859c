"""What the encoders are configured with, importable without torch or transformers.

The feature assets' Config classes take their defaults and types from here: the Dagster code
location is imported by every step process, and it should not load the models' libraries to
learn a default crop size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# Crop size of the seeded offline image descriptor (encoders.image.OFFLINE_CONFIG).
OFFLINE_INPUT_SIZE = 64

MAX_CHUNK_CHARS = 500

CheckpointFormat = Literal["torchvision", "lightning"]
ResNetArch = Literal["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]  # encoders.resnet.ARCHITECTURES


@dataclass(frozen=True)
class BranchSpec:
    """One descriptor slot: a checkpoint to load, or empty for the seeded offline default."""

    slot: str
    checkpoint: str = ""
    format: str = "torchvision"
    arch: str = "resnet50"
    input_size: int = 224
    seed: int = 0
    trust: bool = False
