"""The compress family: the typed entry point, fake kernels, autograd formula and autocast rule of
the memory-compression op. The fakes are registered here, the module csrc/compress/schema.cpp
names with set_python_module (torch requires the two to agree). The exact contract is in
csrc/compress/compress.h and mirrored by seqops.reference.compress.

(``seqops.ops.compress`` is the function; this module is ``sys.modules["seqops.ops.compress"]``.)
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from ._fakes import check_devices
from .autocast import register_low_precision

_ops = torch.ops.seqops

MODES = ("mean", "max", "conv")


def compress(x: Tensor, rate: int, mode: str = "mean", weight: Optional[Tensor] = None,
             bias: Optional[Tensor] = None, remainder: str = "error") -> Tuple[Tensor, Tensor]:
    """Compresses each window of ``rate`` consecutive rows of x into one row.

    Window w covers rows [w * rate, (w + 1) * rate), oldest first. Modes:
    'mean' and 'max' (elementwise; ties go to the first row, NaN propagates), and 'conv', the
    Compressive Transformer's strided convolution nn.Conv1d(D, Dout, rate, stride=rate) computed
    as one GEMM (weight (Dout, D, rate) in nn.Conv1d's layout, bias (Dout,) optional).

    Remainder policy, never silent: with remainder='error' the length must be a positive
    multiple of rate (anything else raises); with remainder='keep' the L // rate oldest windows
    are compressed and the newest L % rate rows come back uncompressed as ``tail`` (a view of
    x) for the caller to keep, e.g. in the memory FIFO until the next call fills the window.

    Args:
        x: (B, L, D), any strides.
        rate: window length, >= 1.
    Returns:
        compressed (B, L // rate, Dout) (Dout = D for 'mean' / 'max') and tail (B, L % rate, D)
        (empty under remainder='error').
    """
    out = _ops.compress(x, rate, mode, weight, bias, remainder)[0]
    return out, x[:, out.shape[1] * rate:]


# ----------------------------------------------------------------------------- fake kernels

@torch.library.register_fake("seqops::compress")
def compress_fake(x, rate, mode="mean", weight=None, bias=None, remainder="error"):
    torch._check(x.dim() == 3, lambda: f"x must have 3 dimensions (batch, length, dim), got {x.dim()}")
    torch._check(rate >= 1, lambda: f"rate must be >= 1, got {rate}")
    torch._check(mode in MODES, lambda: f"mode must be one of 'mean', 'max', 'conv', got '{mode}'")
    check_devices(x, weight=weight, bias=bias)
    B, L, D = x.shape
    if remainder == "error":
        torch._check(L >= rate and L % rate == 0,
                     lambda: f"x's length ({L}) must be a positive multiple of rate ({rate}) under remainder='error'")
    out_dim = weight.shape[0] if mode == "conv" and weight is not None else D
    index_shape = (B, L // rate, D) if mode == "max" else (0,)
    return x.new_empty((B, L // rate, out_dim)), x.new_empty(index_shape, dtype=torch.int64)


@torch.library.register_fake("seqops::compress_backward")
def compress_backward_fake(grad_out, x, rate, mode, weight, index, x_grad, weight_grad, bias_grad):
    grad_x = x.new_empty(x.shape if x_grad else (0,))
    grad_w = x.new_empty(weight.shape if weight_grad and weight is not None else (0,))
    grad_b = x.new_empty((grad_out.shape[2],) if bias_grad else (0,))
    return grad_x, grad_w, grad_b


# ----------------------------------------------------------------------------- autograd

def compress_setup_context(ctx, inputs, output):
    x, rate, mode, weight, bias, _remainder = inputs
    ctx.rate, ctx.mode, ctx.has_bias = rate, mode, bias is not None
    ctx.mark_non_differentiable(output[1])
    ctx.save_for_backward(x, weight, output[1])


def compress_autograd(ctx, grad_out, _grad_index):
    x, weight, index = ctx.saved_tensors
    # The dispatcher drops trailing arguments equal to their defaults from needs_input_grad.
    needs = tuple(ctx.needs_input_grad) + (False,) * 6
    need_x, need_w, need_b = needs[0], needs[3], needs[4]
    grad_x, grad_w, grad_b = _ops.compress_backward(grad_out, x, ctx.rate, ctx.mode, weight, index,
                                                    need_x, need_w, need_b and ctx.has_bias)
    return (grad_x if need_x else None, None, None, grad_w if need_w else None,
            grad_b if need_b and ctx.has_bias else None, None)


# ----------------------------------------------------------------------------- autocast
# 'conv' is a GEMM: under autocast it runs in the low-precision dtype, as F.conv1d does. 'mean'
# and 'max' are reductions and, like torch.mean / torch.amax, keep their input dtype.

def is_conv(args, kwargs) -> bool:
    return (args[2] if len(args) > 2 else kwargs.get("mode", "mean")) == "conv"


torch.library.register_autograd("seqops::compress", compress_autograd, setup_context=compress_setup_context)
register_low_precision("compress", only_if=is_conv)
