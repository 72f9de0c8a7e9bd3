"""Helpers the fake (meta) kernels of every family share: the accumulate-dtype rule and the
device check. The C++ entry points check every argument; the fakes check what determines the
output shapes (and that the tensors share a device, which turns a call mixing CPU and meta
tensors, one the dispatcher routes to the fake, into an error).
"""
from typing import Optional

import torch
from torch import Tensor


def acc_dtype(x: Tensor) -> torch.dtype:
    """The dtype the kernels accumulate in for x's (csrc/common/dtype.h): float64 for float64
    inputs, else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def check_devices(ref: Tensor, ref_name: str = "x", **others: Optional[Tensor]) -> None:
    """Every tensor of ``others`` that is given lives on ``ref``'s device."""
    for name, t in others.items():
        if t is not None:
            torch._check(t.device == ref.device,
                         lambda: f"{name} must be on the same device as {ref_name} ({ref.device}), got {t.device}")


def contiguous_like(t: Tensor) -> Tensor:
    return torch.empty_like(t, memory_format=torch.contiguous_format)
