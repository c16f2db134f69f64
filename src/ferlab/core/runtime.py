"""Where and how tensors run: device choice (cuda > mps > cpu), precision, memory format.

Depends on: errors, torch.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .errors import InputError


def pick_device(name: str = "auto") -> torch.device:
    if name != "auto":
        try:
            device = torch.device(name)
        except RuntimeError as e:  # torch's message lists every backend torch knows
            raise InputError(f"device {name!r} is not a device name; "
                             "choose auto, cpu, cuda, cuda:N or mps") from e
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"device {name!r} requested but CUDA is not available")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise InputError(f"device {name!r} requested but MPS is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def cpu_has_bf16() -> bool:
    """True where the CPU has native bf16 matrix instructions (AVX-512 BF16 or AMX).

    Without them bf16 autocast is emulated and slower than fp32, so 'auto' stays fp32.
    """
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, c, lambda: False)() for c in checks)


def pick_precision(device: torch.device, name: str = "auto") -> torch.dtype | None:
    """The autocast dtype for this device, or None for plain fp32."""
    if name == "fp32":
        return None
    if name == "bf16":
        return torch.bfloat16
    if name == "fp16":
        return torch.float16
    if name != "auto":
        raise InputError(f"train.precision must be auto, fp32, bf16 or fp16, got {name!r}")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return None


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool = True

    @classmethod
    def create(cls, device: str = "auto", precision: str = "auto", channels_last: bool = True):
        dev = pick_device(device)
        return cls(dev, pick_precision(dev, precision), channels_last)

    @property
    def precision_name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def memory_format(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        model = model.to(self.device)
        if self.channels_last:
            model = model.to(memory_format=torch.channels_last)
        return model

    def describe(self) -> str:
        layout = "channels_last" if self.channels_last else "NCHW"
        return f"{self.device.type} {self.precision_name} {layout}"
