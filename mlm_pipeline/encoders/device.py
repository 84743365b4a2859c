"""Where inference runs: the configured device, checked before any model is built."""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A configured device that this machine does not have."""


def resolve_device(name: str) -> torch.device:
    """``auto`` picks the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise DeviceError(f"device={name!r} is not a torch device name (use auto, cpu, cuda, cuda:N)") from error
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device={name!r}: this machine has no usable CUDA device (use auto or cpu)")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"device={name!r}: only {torch.cuda.device_count()} CUDA devices here")
    elif device.type != "cpu":
        raise DeviceError(f"device={name!r}: only auto, cpu and cuda devices are supported")
    return device


def device_label(device: torch.device) -> str:
    """For metadata: the device and, on CUDA, the card's name."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({torch.get_num_threads()} threads)"
