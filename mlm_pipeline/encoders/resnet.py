"""ResNet backbones and the loading of published ResNet checkpoints onto them.

torchvision does not import beside the CPU torch we pin, so the backbone is transformers'
``ResNetModel``, which computes the same function as torchvision's ResNet (stride in the 3x3
convolution, 1x1 projection shortcuts, BatchNorm eps 1e-5) under other parameter names. The
published checkpoints the paper used keep torchvision's names, so loading is a key translation
followed by a strict check: every tensor of the checkpoint lands on exactly one parameter of the
right shape, every parameter gets a tensor, and only the documented classification heads are left
out. Anything else is an error that names the file and the keys, raised before any image is read.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import torch
from transformers import ResNetConfig, ResNetModel

from mlm_pipeline.encoders.settings import CheckpointFormat, ResNetArch

CHECKPOINT_FORMATS: tuple[str, ...] = get_args(CheckpointFormat)

# (block type, blocks per stage); channel widths follow from the block type.
ARCHITECTURES: dict[ResNetArch, tuple[str, tuple[int, int, int, int]]] = {
    "resnet18": ("basic", (2, 2, 2, 2)),
    "resnet34": ("basic", (3, 4, 6, 3)),
    "resnet50": ("bottleneck", (3, 4, 6, 3)),
    "resnet101": ("bottleneck", (3, 4, 23, 3)),
    "resnet152": ("bottleneck", (3, 8, 36, 3)),
}

# GeoEstimation stores its backbone as ``torch.nn.Sequential(*list(resnet.children())[:-2])``,
# so the torchvision module names become child indices.
SEQUENTIAL_CHILDREN = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4"}

# The parts of each format that are not backbone weights and are left out on purpose.
SKIPPED_HEADS: dict[str, re.Pattern[str]] = {
    "torchvision": re.compile(r"fc\.(weight|bias)"),  # the 365-way Places classifier
    "lightning": re.compile(r"classifier\.\d+\.(weight|bias)"),  # GeoEstimation's partitioning heads
}

MAX_KEYS_IN_ERROR = 12


class CheckpointError(ValueError):
    """A checkpoint that cannot be mapped onto the configured backbone, with the file and keys."""


def resnet_config(arch: str) -> ResNetConfig:
    if arch not in ARCHITECTURES:
        raise CheckpointError(f"unknown ResNet architecture {arch!r}: use one of {sorted(ARCHITECTURES)}")
    block, depths = ARCHITECTURES[arch]
    widths = [64, 128, 256, 512] if block == "basic" else [256, 512, 1024, 2048]
    return ResNetConfig(
        embedding_size=64,
        hidden_sizes=widths,
        depths=list(depths),
        layer_type=block,
        downsample_in_first_stage=False,
        downsample_in_bottleneck=False,
    )


def seeded_resnet(config: ResNetConfig, seed: int) -> ResNetModel:
    """A backbone whose random initialisation depends on ``seed`` only, not on global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ResNetModel(config)
    return model.eval()


_TV_STEM = re.compile(r"(conv1|bn1)\.(.+)")
_TV_BLOCK = re.compile(r"layer([1-4])\.(\d+)\.(conv|bn)([1-3])\.(.+)")
_TV_DOWNSAMPLE = re.compile(r"layer([1-4])\.(\d+)\.downsample\.([01])\.(.+)")


def torchvision_to_hf(key: str) -> str | None:
    """transformers' name for a torchvision ResNet parameter, None when the key is not one."""
    if m := _TV_STEM.fullmatch(key):
        part = "convolution" if m[1] == "conv1" else "normalization"
        return f"embedder.embedder.{part}.{m[2]}"
    if m := _TV_BLOCK.fullmatch(key):
        part = "convolution" if m[3] == "conv" else "normalization"
        return f"encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.layer.{int(m[4]) - 1}.{part}.{m[5]}"
    if m := _TV_DOWNSAMPLE.fullmatch(key):
        part = "convolution" if m[3] == "0" else "normalization"
        return f"encoder.stages.{int(m[1]) - 1}.layers.{m[2]}.shortcut.{part}.{m[4]}"
    return None


def _sequential_to_torchvision(key: str) -> str:
    """``0.weight`` -> ``conv1.weight``, ``4.0.conv1.weight`` -> ``layer1.0.conv1.weight``."""
    head, _, rest = key.partition(".")
    return f"{SEQUENTIAL_CHILDREN[head]}.{rest}" if head in SEQUENTIAL_CHILDREN and rest else key


@dataclass
class LoadReport:
    """What a checkpoint load did, for the asset's metadata."""

    path: str
    format: str
    arch: str
    mapped: int = 0
    skipped: list[str] = field(default_factory=list)  # documented heads left out
    absent_buffers: list[str] = field(default_factory=list)  # BatchNorm step counters the file predates


def read_state_dict(path: Path, *, trust: bool = False) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file: its ``state_dict`` entry, or the file itself when flat.

    ``weights_only`` loading refuses arbitrary pickled objects; Lightning checkpoints may carry
    hyperparameter objects, which ``trust`` allows for files whose origin is known.
    """
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"checkpoint {path} holds Python objects beyond tensors and plain containers "
            f"({str(error).splitlines()[0]}); load it with trust_checkpoints=true only if you trust the file"
        ) from error
    except (RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"checkpoint {path} cannot be read by torch.load: {error}") from error
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state:
        raise CheckpointError(f"checkpoint {path} has no 'state_dict' of tensors (top level: {type(obj).__name__})")
    not_tensors = [str(k) for k, v in state.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(f"checkpoint {path}: state_dict entries that are not tensors: {_some(not_tensors)}")
    return state


def _backbone_name(key: str, fmt: str) -> str | None:
    """The torchvision name of a checkpoint key, or None when the format does not place it."""
    if fmt == "torchvision":
        return key.removeprefix("module.")
    if key.startswith("model."):
        return _sequential_to_torchvision(key.removeprefix("model."))
    return None


def map_resnet_state(
    state: dict[str, torch.Tensor], fmt: str, target: dict[str, torch.Tensor], path: str, arch: str
) -> tuple[dict[str, torch.Tensor], LoadReport]:
    """Translate and check every key; raise with the full list of problems, or return the mapping."""
    if fmt not in CHECKPOINT_FORMATS:
        raise CheckpointError(f"checkpoint {path}: unknown format {fmt!r}, use one of {CHECKPOINT_FORMATS}")
    report = LoadReport(path=path, format=fmt, arch=arch)
    mapped: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    mismatched: list[str] = []
    for key, tensor in state.items():
        if SKIPPED_HEADS[fmt].fullmatch(key.removeprefix("module.") if fmt == "torchvision" else key):
            report.skipped.append(key)
            continue
        name = _backbone_name(key, fmt)
        hf = torchvision_to_hf(name) if name is not None else None
        if hf is None or hf not in target:
            unexpected.append(key)
        elif hf in mapped:
            unexpected.append(f"{key} (a second tensor for {hf})")
        elif tuple(tensor.shape) != tuple(target[hf].shape):
            mismatched.append(f"{key}: {tuple(tensor.shape)} in the file, {tuple(target[hf].shape)} expected")
        else:
            mapped[hf] = tensor
    missing = [k for k in target if k not in mapped]
    report.absent_buffers = [k for k in missing if k.endswith("num_batches_tracked")]
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    problems = []
    if unexpected:
        problems.append(f"{len(unexpected)} keys that are no {arch} weight: {_some(unexpected)}")
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_some(mismatched)}")
    if missing:
        problems.append(f"{len(missing)} {arch} weights missing from the file: {_some(missing)}")
    if problems:
        raise CheckpointError(f"checkpoint {path} ({fmt} format) does not fit {arch}: " + "; ".join(problems))
    not_finite = [k for k, v in mapped.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if not_finite:
        raise CheckpointError(f"checkpoint {path}: tensors with NaN or infinite values: {_some(not_finite)}")
    report.mapped = len(mapped)
    return mapped, report


def load_resnet_checkpoint(
    path: str | Path, fmt: str, arch: str = "resnet50", *, trust: bool = False
) -> tuple[ResNetModel, LoadReport]:
    """A backbone carrying every weight of the checkpoint, or a :class:`CheckpointError`."""
    path = Path(path)
    if fmt not in CHECKPOINT_FORMATS:
        raise CheckpointError(f"checkpoint {path}: unknown format {fmt!r}, use one of {CHECKPOINT_FORMATS}")
    config = resnet_config(arch)
    state = read_state_dict(path, trust=trust)
    model = seeded_resnet(config, seed=0)
    target = model.state_dict()
    mapped, report = map_resnet_state(state, fmt, target, str(path), arch)
    result = model.load_state_dict(
        {k: v.to(dtype=target[k].dtype) for k, v in mapped.items()}, strict=False
    )
    left = sorted(set(result.missing_keys) - set(report.absent_buffers))
    if left or result.unexpected_keys:  # map_resnet_state already guarantees this; a guard against drift
        raise CheckpointError(f"checkpoint {path}: load left {left} unset and {result.unexpected_keys} unused")
    return model.eval(), report


def _some(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_KEYS_IN_ERROR])
    return shown + (f", ... ({len(keys) - MAX_KEYS_IN_ERROR} more)" if len(keys) > MAX_KEYS_IN_ERROR else "")
