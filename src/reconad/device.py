"""Where tensors live: choosing the torch device, sending batches to it, mixed precision.

>>> resolve_device("cpu")
device(type='cpu')
>>> amp_dtype("auto", torch.device("cpu")) is None   # never on the CPU
True

Batches are always built on the CPU from stored arrays (indexing, augmentation, noise, so a
seed gives the same batches on every device) and sent with :func:`to_device`: from pinned
memory and without blocking when the device is a GPU, so the copy overlaps the GPU's work.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

from reconad.errors import ReconadError

DEVICES = ("auto", "cpu", "cuda", "mps")


def available_devices() -> list[str]:
    """The device kinds this machine can use, ``cpu`` always first."""
    found = ["cpu"]
    if torch.cuda.is_available():
        found.append("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        found.append("mps")
    return found


def device_name(name: str | torch.device | None = "auto") -> str:
    """``name`` checked and normalised (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``), not
    resolved: for a device chosen elsewhere (a Ray actor on its own node).

    Raises:
        ReconadError: an unknown name.
    """
    name = "auto" if name is None else str(name).strip().lower()
    kind, _, index = name.partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise ReconadError(f"unknown device {name!r}; choose one of {', '.join(DEVICES)}")
    return name


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """The torch device for ``name``: ``auto`` (or None) picks cuda if available, else mps,
    else cpu; ``cpu``, ``cuda`` (also ``cuda:N``), ``mps`` must be available here.

    Raises:
        ReconadError: an unknown name or a device this machine does not have.
    """
    name = device_name(name)
    found = available_devices()
    if name == "auto":
        return torch.device(found[1] if len(found) > 1 else "cpu")
    kind, _, index = name.partition(":")
    if kind not in found:
        raise ReconadError(f"device {name} is not available on this machine (available: "
                           f"{', '.join(found)}); use --device auto or cpu")
    if index and int(index) >= torch.cuda.device_count():
        raise ReconadError(f"device {name} does not exist; this machine has "
                           f"{torch.cuda.device_count()} CUDA device(s)")
    return torch.device(name)


def model_device(model: nn.Module) -> torch.device:
    """The device ``model``'s weights are on (cpu for a model without weights)."""
    for param in model.parameters():
        return param.device
    return torch.device("cpu")


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` (built on the CPU) on ``device``: pinned and copied without blocking for CUDA,
    unchanged for the CPU."""
    if device.type == "cpu":
        return tensor
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def amp_dtype(amp: bool | str, device: torch.device) -> torch.dtype | None:
    """The mixed-precision dtype for ``train.amp`` on ``device``, or None (full float32).

    ``auto`` turns it on for CUDA only; it is never used on the CPU or mps (``true`` there
    is ignored). bfloat16 where the GPU supports it (no loss scaling needed), else float16.
    """
    if device.type != "cuda" or amp is False or amp == "false":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op context when dtype is None."""
    if dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def grad_scaler(device: torch.device, dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """A loss scaler, enabled only for float16 (bfloat16 and float32 need none)."""
    return torch.amp.GradScaler(device.type if device.type == "cuda" else "cpu",
                                enabled=dtype == torch.float16)


def pass_size(image_shape: tuple[int, ...], images: int, values: int) -> int:
    """Images per forward pass for images of ``image_shape`` (C, H, W): ``images``, fewer for
    large images so that a pass holds at most ``values`` input values; at least 1."""
    return max(1, min(images, values // max(1, math.prod(image_shape))))
