"""What the tests share: devices, dtypes, masks, strides and the low-precision rule; the op and
module catalogs are in op_cases.py and public_modules.py, the deployment helpers in deployment.py."""
import contextlib
import functools
import math
import os
from typing import Sequence

import pytest
import torch

from support import emulator

HAS_CUDA = torch.cuda.is_available()
SEED = int(os.environ.get("SEQOPS_TEST_SEED", "0"))

# The devices the tests run on: name -> (available, why not, low-precision dtypes it supports
# (float32 / float64 are checked everywhere), the torch device its tensors live on). This is the
# one place a device plugs in: DEVICES, LOW_PRECISION and LOW_PRECISION_CASES (and through them
# the op catalog of op_cases.py and every test parametrized by device) derive from it. "emu" is
# the CUDA host emulator (support/emulator.py): its tests get CPU tensors and the marker
# `emulated`, under which conftest.py runs every seqops op on the CUDA kernels, emulated.
DEVICE_TABLE = {
    "cpu": (True, "", [torch.bfloat16], "cpu"),
    "cuda": (HAS_CUDA, "no CUDA device", [torch.float16, torch.bfloat16], "cuda"),
    "emu": (emulator.AVAILABLE, emulator.WHY, [torch.float16, torch.bfloat16], "cpu"),
}


def _on(device: str, *values):
    available, why, _, torch_device = DEVICE_TABLE[device]
    marks = [pytest.mark.skipif(not available, reason=why)]
    if device == "emu":
        marks.append(pytest.mark.emulated)
    return pytest.param(torch_device, *values, marks=marks, id="-".join(map(str, (device,) + values)))


DEVICES = [_on(device) for device in DEVICE_TABLE]
# The devices with a torch backend of their own: where torch.compile / export / script tests run
# (the emulator is a TorchDispatchMode, under which Dynamo does not trace), and the tests at sizes
# the emulator cannot run in CI's time.
NATIVE_DEVICES = [_on(device) for device in DEVICE_TABLE if device != "emu"]


def kernel_context(orders: Sequence[str]):
    """What a new Python thread enters to run the kernels this thread runs (the emulator's
    dispatch mode is per thread; it runs each op in every one of `orders`)."""
    return functools.partial(emulator.emulated, orders) if emulator.active() else contextlib.nullcontext


def kernel_device(device: str) -> str:
    """Whose kernels a test on `device` runs: "cpu", "cuda" or "emu" (the CUDA kernels, emulated,
    on CPU tensors)."""
    return "emu" if emulator.active() else device


_LOW_PRECISION = {device: dtypes for device, (_, _, dtypes, _) in DEVICE_TABLE.items()}
LOW_PRECISION_CASES = [_on(device, dtype) for device, dtypes in _LOW_PRECISION.items() for dtype in dtypes]


def low_precision(device: str):
    """The low-precision dtypes of the kernels a test on `device` runs."""
    return _LOW_PRECISION[kernel_device(device)]


def random_mask(batch: int, length: int, device, fully_masked_row: bool = True) -> torch.Tensor:
    """Random keep-mask with at least one kept position per row, and (optionally) row 1 fully masked."""
    g = torch.Generator().manual_seed(batch * 1000 + length)
    mask = torch.rand(batch, length, generator=g) > 0.35
    mask[:, 0] = True
    if fully_masked_row and batch > 1:
        mask[1] = False
    return mask.to(device)


def noncontiguous(t: torch.Tensor) -> torch.Tensor:
    """The same values through a non-contiguous view (last two dims stored transposed)."""
    out = t.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not out.is_contiguous() or t.shape[-1] == 1 or t.shape[-2] == 1
    return out


def assert_low_precision_close(kernel: torch.Tensor, eager: torch.Tensor, exact: torch.Tensor, floor: float):
    """The project's low-precision rule: the kernel's error against float64 is at most twice
    the error of the eager reference run in the same low precision (plus a small floor for
    outputs whose eager error happens to be ~0)."""
    k_err = (kernel.double() - exact).abs().max().item()
    e_err = (eager.double() - exact).abs().max().item()
    if not math.isfinite(e_err):
        # The eager reference overflowed in this dtype and bounds nothing: the bound becomes the
        # error of rounding the exact result to the dtype, the least any kernel can have.
        assert torch.isfinite(exact).all()
        e_err = (exact.to(kernel.dtype).double() - exact).abs().max().item()
    assert k_err <= 2 * e_err + floor, f"kernel error {k_err:.3e} > 2 x eager error {e_err:.3e} + {floor}"


def check_low_precision(kernel_fn, eager_fn, inputs, dtype, grad_inputs: int, floor: float = 1e-3):
    """Runs kernel_fn and eager_fn on `inputs` cast to `dtype`, and the eager fn in float64;
    outputs (a tensor or a tuple) and the gradients of the first `grad_inputs` inputs must
    satisfy the low-precision rule."""
    low = [t.to(dtype).requires_grad_(i < grad_inputs) for i, t in enumerate(inputs)]
    exact_in = [t.detach().double().requires_grad_(i < grad_inputs) for i, t in enumerate(low)]
    as_tuple = lambda out: out if isinstance(out, tuple) else (out,)  # noqa: E731
    exact, kernel, eager = as_tuple(eager_fn(*exact_in)), as_tuple(kernel_fn(*low)), as_tuple(eager_fn(*low))
    for k, e, x in zip(kernel, eager, exact):
        assert k.dtype == dtype
        assert_low_precision_close(k, e, x, floor)
    grads = [torch.randn_like(t) for t in exact]
    low_grads = [g.to(dtype) for g in grads]
    g_exact = torch.autograd.grad(exact, exact_in[:grad_inputs], grads)
    g_kernel = torch.autograd.grad(kernel, low[:grad_inputs], low_grads)
    g_eager = torch.autograd.grad(eager, low[:grad_inputs], low_grads)
    for k, e, x in zip(g_kernel, g_eager, g_exact):
        assert_low_precision_close(k, e, x, floor)
