"""Typed entry points over torch.ops.seqops, with their fake kernels, autograd and autocast.

Shape legend: B batch, L sequence length, D feature dim, H heads. Masks are bool (B, L) with
True = keep. Gradients never flow to masks.
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor

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
# Shape-only twins of the C++ kernels for torch.compile / export. The C++ entry points check
# every argument; the fakes check what determines the output shapes.

def _acc_dtype(x: Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def _check_devices(x: Tensor, **others: Optional[Tensor]) -> None:
    for name, t in others.items():
        if t is not None:
            torch._check(t.device == x.device,
                         lambda: f"{name} must be on the same device as x ({x.device}), got {t.device}")


@torch.library.register_fake("seqops::seq_pool")
def _seq_pool_fake(x, weight, bias=None, mask=None):
    _check_devices(x, weight=weight, bias=bias, mask=mask)
    torch._check(x.dim() == 3, lambda: f"x must have 3 dimensions (batch, length, dim), got {x.dim()}")
    torch._check(weight.dim() in (2, 3), lambda: f"weight must be (heads, dim) or (batch, heads, dim), got {tuple(weight.shape)}")
    torch._check(weight.shape[-1] == x.shape[2], lambda: "weight's last dim must equal x's dim")
    B, _, D = x.shape
    H = weight.shape[-2]
    return x.new_empty((B, H, D)), x.new_empty((B, H), dtype=_acc_dtype(x))


@torch.library.register_fake("seqops::seq_pool_backward")
def _seq_pool_backward_fake(grad_out, x, weight, bias, mask, out, lse):
    return torch.empty_like(x, memory_format=torch.contiguous_format), torch.empty_like(weight, memory_format=torch.contiguous_format)


@torch.library.register_fake("seqops::lama_pool")
def _lama_pool_fake(x, p, q, mask=None, activation="tanh", normalize=True, eps=1e-12):
    _check_devices(x, p=p, q=q, mask=mask)
    torch._check(x.dim() == 3, lambda: f"x must have 3 dimensions (batch, length, dim), got {x.dim()}")
    torch._check(p.dim() == 2 and p.shape[1] == x.shape[2], lambda: "p must be (heads, dim)")
    B, L, D = x.shape
    H = p.shape[0]
    return x.new_empty((B, H, D)), x.new_empty((B, H, L))


@torch.library.register_fake("seqops::lama_pool_backward")
def _lama_pool_backward_fake(grad_pooled, grad_weights, x, p, q, mask, activation, normalize, eps):
    return (torch.empty_like(x, memory_format=torch.contiguous_format),
            torch.empty_like(p, memory_format=torch.contiguous_format),
            torch.empty_like(q, memory_format=torch.contiguous_format))


@torch.library.register_fake("seqops::masked_pool")
def _masked_pool_fake(x, mask=None, mode="mean"):
    _check_devices(x, mask=mask)
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


def registered_devices(op: str) -> List[str]:
    """Dispatch keys among CPU/CUDA that have a kernel for ``seqops::<op>``."""
    return [k for k in ("CPU", "CUDA") if torch._C._dispatch_has_kernel_for_dispatch_key(f"seqops::{op}", k)]


OP_NAMES = ("seq_pool", "seq_pool_backward", "lama_pool", "lama_pool_backward", "masked_pool",
            "masked_pool_backward", "attention", "attention_backward")

# ----------------------------------------------------------------------------- attention
from . import ops_attention as _attn  # noqa: E402
from .ops_attention import attention, attention_with_lse  # noqa: E402,F401

torch.library.register_fake("seqops::attention", _attn.attention_fake)
torch.library.register_fake("seqops::attention_backward", _attn.attention_backward_fake)
torch.library.register_autograd("seqops::attention", _attn.attention_autograd,
                                setup_context=_attn.attention_setup_context)

# ----------------------------------------------------------------------------- compress
from . import ops_compress as _compress  # noqa: E402
from .ops_compress import compress  # noqa: E402,F401

OP_NAMES = OP_NAMES + ("compress", "compress_backward")
torch.library.register_fake("seqops::compress", _compress.compress_fake)
torch.library.register_fake("seqops::compress_backward", _compress.compress_backward_fake)
torch.library.register_autograd("seqops::compress", _compress.compress_autograd,
                                setup_context=_compress.compress_setup_context)

# ----------------------------------------------------------------------------- dropout
from . import ops_dropout as _dropout  # noqa: E402
from .ops_dropout import dropout  # noqa: E402,F401

OP_NAMES = OP_NAMES + ("dropout",)
torch.library.register_fake("seqops::dropout", _dropout.dropout_fake)
torch.library.register_autograd("seqops::dropout", _dropout.dropout_autograd,
                                setup_context=_dropout.dropout_setup_context)

# ----------------------------------------------------------------------------- autocast
# Matmul-like ops run in the autocast context's dtype; masked_pool and the 'mean' / 'max'
# compressions are reductions and, like torch.sum, keep their input dtype, as dropout does, like
# torch's (seqops/autocast.py).
_autocast_lib = torch.library.Library("seqops", "FRAGMENT")  # keeps the rules alive
for _name in ("seq_pool", "lama_pool", "attention"):
    register_low_precision(_autocast_lib, _name)
register_low_precision(_autocast_lib, "compress", only_if=_compress.is_conv)
