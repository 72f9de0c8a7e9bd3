"""seqops.ops.pooling: the pooling family (seq_pool, lama_pool, masked_pool): typed entry
points, fake kernels, autograd and autocast rules. Contract: csrc/pooling/pooling.h; mirrored by
seqops.reference. Fakes are registered here, the module csrc/pooling/schema.cpp names with
set_python_module.

Shape legend: B batch, L sequence length, D feature dim, H heads. Masks are bool (B, L) with
True = keep. Gradients never flow to masks.
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from ._fakes import acc_dtype, check_devices, contiguous_like
from .autocast import register_low_precision

_ops = torch.ops.seqops


def seq_pool(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
             mask: Optional[Tensor] = None) -> Tensor:
    """Attention pooling (SeqPool): per head h, ``softmax_t(x_t . weight_h + bias_h) @ x``.

    Args:
        x: (B, L, D).
        weight: (H, D), or per-batch (B, H, D).
        bias: weight's shape without its last dim, optional.
        mask: bool (B, L), True = keep. A row with nothing kept pools to zeros.
    Returns:
        (B, H, D).
    """
    return _ops.seq_pool(x, weight, bias, mask)[0]


def lama_pool(x: Tensor, p: Tensor, q: Tensor, mask: Optional[Tensor] = None,
              activation: str = "tanh", normalize: bool = True,
              eps: float = 1e-12) -> Tuple[Tensor, Tensor]:
    """LAMA attention pooling (Mehta et al. 2019).

    Scores ``a_ht = act((p_h . c)(q_h . x_t))`` with c the masked mean of x, L2-normalized over
    heads (``a / max(||a||, eps)``); with ``normalize`` a masked softmax over t, otherwise the
    normalized scores with masked positions zeroed.

    Args:
        x: (B, L, D). p, q: (H, D). mask: bool (B, L), True = keep.
        activation: 'tanh', 'identity', 'relu' or 'sigmoid'.
    Returns:
        pooled (B, H, D) = weights @ x, and weights (B, H, L).
    """
    pooled, weights = _ops.lama_pool(x, p, q, mask, activation, normalize, eps)
    return pooled, weights


def masked_pool(x: Tensor, mask: Optional[Tensor] = None, mode: str = "mean") -> Tensor:
    """Masked 'mean', 'max' or 'sum' of x (B, L, D) over the sequence -> (B, D).

    Rows with nothing kept give zeros (and zero gradients). 'max' sends the gradient to the
    first maximal position.
    """
    return _ops.masked_pool(x, mask, mode)[0]


# ----------------------------------------------------------------------------- fake kernels
# Shape-only twins of the C++ kernels for torch.compile / export.

@torch.library.register_fake("seqops::seq_pool")
def _seq_pool_fake(x, weight, bias=None, mask=None):
    check_devices(x, weight=weight, bias=bias, mask=mask)
    torch._check(x.dim() == 3, lambda: f"x must have 3 dimensions (batch, length, dim), got {x.dim()}")
    torch._check(weight.dim() in (2, 3), lambda: f"weight must be (heads, dim) or (batch, heads, dim), got {tuple(weight.shape)}")
    torch._check(weight.shape[-1] == x.shape[2], lambda: "weight's last dim must equal x's dim")
    B, _, D = x.shape
    H = weight.shape[-2]
    return x.new_empty((B, H, D)), x.new_empty((B, H), dtype=acc_dtype(x))


@torch.library.register_fake("seqops::seq_pool_backward")
def _seq_pool_backward_fake(grad_out, x, weight, bias, mask, out, lse):
    return contiguous_like(x), contiguous_like(weight)


@torch.library.register_fake("seqops::lama_pool")
def _lama_pool_fake(x, p, q, mask=None, activation="tanh", normalize=True, eps=1e-12):
    check_devices(x, p=p, q=q, mask=mask)
    torch._check(x.dim() == 3, lambda: f"x must have 3 dimensions (batch, length, dim), got {x.dim()}")
    torch._check(p.dim() == 2 and p.shape[1] == x.shape[2], lambda: "p must be (heads, dim)")
    B, L, D = x.shape
    H = p.shape[0]
    return x.new_empty((B, H, D)), x.new_empty((B, H, L))


@torch.library.register_fake("seqops::lama_pool_backward")
def _lama_pool_backward_fake(grad_pooled, grad_weights, x, p, q, mask, activation, normalize, eps):
    return contiguous_like(x), contiguous_like(p), contiguous_like(q)


@torch.library.register_fake("seqops::masked_pool")
def _masked_pool_fake(x, mask=None, mode="mean"):
    check_devices(x, mask=mask)
    torch._check(x.dim() == 3, lambda: f"x must have 3 dimensions (batch, length, dim), got {x.dim()}")
    B, _, D = x.shape
    index_shape = (B, D) if mode == "max" else (0,)
    return x.new_empty((B, D)), x.new_empty(index_shape, dtype=torch.int64)


@torch.library.register_fake("seqops::masked_pool_backward")
def _masked_pool_backward_fake(grad_out, mask, index, length, mode):
    return grad_out.new_empty((grad_out.shape[0], length, grad_out.shape[1]))


# ----------------------------------------------------------------------------- autograd

def _seq_pool_setup(ctx, inputs, output):
    x, weight, bias, mask = inputs
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.save_for_backward(x, weight, bias, mask, out, lse)


def _seq_pool_backward(ctx, grad_out, _grad_lse):
    x, weight, bias, mask, out, lse = ctx.saved_tensors
    grad_x, grad_w = _ops.seq_pool_backward(grad_out, x, weight, bias, mask, out, lse)
    # A per-head constant shifts every logit of the softmax equally: its gradient is exactly 0.
    grad_b = torch.zeros_like(bias) if bias is not None and ctx.needs_input_grad[2] else None
    return grad_x, grad_w, grad_b, None


def _lama_pool_setup(ctx, inputs, output):
    x, p, q, mask, activation, normalize, eps = inputs
    ctx.options = (activation, normalize, eps)
    ctx.save_for_backward(x, p, q, mask)


def _lama_pool_backward(ctx, grad_pooled, grad_weights):
    x, p, q, mask = ctx.saved_tensors
    grad_x, grad_p, grad_q = _ops.lama_pool_backward(grad_pooled, grad_weights, x, p, q, mask, *ctx.options)
    return grad_x, grad_p, grad_q, None, None, None, None


def _masked_pool_setup(ctx, inputs, output):
    x, mask, mode = inputs
    ctx.mode = mode
    ctx.length = x.shape[1]
    ctx.save_for_backward(mask, output[1])


def _masked_pool_backward(ctx, grad_out, _grad_index):
    mask, index = ctx.saved_tensors
    return _ops.masked_pool_backward(grad_out, mask, index, ctx.length, ctx.mode), None, None


torch.library.register_autograd("seqops::seq_pool", _seq_pool_backward, setup_context=_seq_pool_setup)
torch.library.register_autograd("seqops::lama_pool", _lama_pool_backward, setup_context=_lama_pool_setup)
torch.library.register_autograd("seqops::masked_pool", _masked_pool_backward, setup_context=_masked_pool_setup)


# ----------------------------------------------------------------------------- autocast
# The attention poolers are matmul-like and run in the autocast context's dtype; masked_pool is a
# reduction and, like torch.sum, keeps its input dtype.
register_low_precision("seq_pool")
register_low_precision("lama_pool")
