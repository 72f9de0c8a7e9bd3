"""Sequence pooling modules: SeqPool (Compact Transformers), LAMA and its encoder/pooler.

All take batch-first x (B, L, D) and an optional bool mask (B, L), True = keep.
"""
import math
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops


def _check_sequence(x: Tensor, dim: int) -> None:
    # The original CVTSeqPool's checks and messages (ValueError), kept for compatibility.
    if x.dim() != 3:
        raise ValueError(f"Expected input to have 3 axes. Got {x.dim()}")
    if x.shape[-1] != dim:
        raise ValueError(f"Size of embedding dimension ({x.shape[-1]}) did not match expected ({dim})")


class SeqPool(nn.Module):
    """Multi-head attention pooling: per head, softmax over the sequence of ``x . w_h + b_h``.

    The general form of CCT's SeqPool (``num_heads=1, bias=True`` is exactly CCT's
    ``attention_pool``). Output (B, num_heads * dim); for one head that is (B, dim).
    """

    def __init__(self, dim: int, num_heads: int = 1, bias: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        if dim < 1 or num_heads < 1:
            raise ValueError(f"dim and num_heads must be >= 1, got dim={dim}, num_heads={num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.weight = nn.Parameter(torch.empty(num_heads, dim, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(num_heads, device=device, dtype=dtype)) if bias else None
        nn.init.trunc_normal_(self.weight, std=0.02)  # CCT's init

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        _check_sequence(x, self.dim)
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        return ops.seq_pool(x, self.weight.to(x.dtype), bias, mask).flatten(1)


class CVTSeqPool(nn.Module):
    """SeqPool as in the `seqpool` package: ``pool = Linear(in_dim, 1, bias=False)``.

    Same state_dict (``pool.weight`` (1, in_dim)) and input checks; adds an optional mask.
    (B, L, in_dim) -> (B, in_dim).
    """

    def __init__(self, in_dim: int) -> None:
        super().__init__()
        self.in_dim = in_dim
        self.pool = nn.Linear(in_dim, 1, bias=False)

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        _check_sequence(x, self.in_dim)
        return ops.seq_pool(x, self.pool.weight.to(x.dtype), None, mask).squeeze(1)


class MeanSeqPool(nn.Module):
    """Masked mean over the *sequence*: (B, L, D) -> (B, D); a row with nothing kept gives zeros.
    (How this differs from the `seqpool` package: docs/compat.md.)"""

    def forward(self, x: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        if x.dim() != 3:
            raise ValueError(f"Expected input to have 3 axes. Got {x.dim()}")
        return ops.masked_pool(x, mask, "mean")


_ACTIVATION_NAMES = {torch.tanh: "tanh", F.tanh: "tanh", torch.relu: "relu", F.relu: "relu",
                     torch.sigmoid: "sigmoid", F.sigmoid: "sigmoid"}
_ACTIVATION_MODULES = {nn.Tanh: "tanh", nn.ReLU: "relu", nn.Sigmoid: "sigmoid", nn.Identity: "identity"}


def activation_name(activation: Union[None, str, Callable]) -> str:
    """The fused kernel's name for a LAMA activation given as the original accepted it."""
    if activation is None:
        return "identity"
    if isinstance(activation, str):
        if activation not in ("identity", "tanh", "relu", "sigmoid"):
            raise ValueError(f"activation must be 'identity', 'tanh', 'relu' or 'sigmoid', got '{activation}'")
        return activation
    if type(activation) in _ACTIVATION_MODULES:
        return _ACTIVATION_MODULES[type(activation)]
    if activation in _ACTIVATION_NAMES:
        return _ACTIVATION_NAMES[activation]
    raise ValueError(
        f"activation {activation!r} has no fused kernel; use None, torch.tanh, torch.relu, "
        "torch.sigmoid (or their nn.Module / name forms)")


class LAMA(nn.Module):
    """Low-rank factorized multi-head attention weights (Mehta et al. 2019).

    Same parameters as the original (``_p``, ``_q`` of shape (input_dim, num_heads)), so its
    state_dict loads. ``forward(inputs, mask=None)`` -> weights (B, num_heads, L).

    The scores are L2-normalized over heads with ``eps`` (``a / max(||a||, eps)``), masked and,
    with ``normalize``, softmaxed over the sequence; with ``normalize=False`` masked positions get
    weight 0. A row with nothing kept gets zero weights. The mask must be bool. Differences
    from the original: docs/compat.md.
    """

    def __init__(self, num_heads: int, input_dim: int, activation: Union[None, str, Callable] = torch.tanh,
                 normalize: bool = True, eps: float = 1e-12, device=None, dtype=None) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.input_dim = input_dim
        self.activation = activation_name(activation)
        self._normalize = normalize
        self.eps = eps
        self._p = nn.Parameter(torch.empty(input_dim, num_heads, device=device, dtype=dtype))
        self._q = nn.Parameter(torch.empty(input_dim, num_heads, device=device, dtype=dtype))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The original's kaiming_uniform(a=sqrt(5)), fan-in along num_heads.
        nn.init.kaiming_uniform_(self._p, a=math.sqrt(5))
        nn.init.kaiming_uniform_(self._q, a=math.sqrt(5))

    def pool(self, inputs: Tensor, mask: Optional[Tensor] = None):
        """(pooled (B, H, D), weights (B, H, L))."""
        _check_sequence(inputs, self.input_dim)
        p = self._p.t().to(inputs.dtype)
        q = self._q.t().to(inputs.dtype)
        return ops.lama_pool(inputs, p, q, mask, self.activation, self._normalize, self.eps)

    def forward(self, inputs: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return self.pool(inputs, mask)[1]


class LAMAEncoder(nn.Module):
    """LAMA structured sentence embedding: M = weights @ inputs (B, H, D); with ``output_dim``
    a Linear(H * D -> output_dim) of the flattened M gives (B, output_dim).

    state_dict keys as the original: ``_attention._p``, ``_attention._q``,
    ``projection_layer.weight/bias``.
    """

    def __init__(self, num_heads: int, input_dim: int, activation: Union[None, str, Callable] = torch.tanh,
                 output_dim: Optional[int] = None, device=None, dtype=None) -> None:
        super().__init__()
        self._attention = LAMA(num_heads, input_dim, activation, normalize=True, device=device, dtype=dtype)
        self.projection_layer = (nn.Linear(num_heads * input_dim, output_dim, device=device, dtype=dtype)
                                 if output_dim else None)

    def forward(self, inputs: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        pooled = self._attention.pool(inputs, mask)[0]
        if self.projection_layer is not None:
            return self.projection_layer(pooled.flatten(1))
        return pooled


class LAMAPooler(LAMA):
    """The README's LAMAPooler: the flattened structured embedding (B, num_heads * input_dim).

    Each sequence is pooled with its own LAMA weights (docs/compat.md: the historical class's
    softmax ran over the batch axis).
    """

    def __init__(self, num_heads: int, input_dim: int, activation: Union[None, str, Callable] = torch.tanh,
                 device=None, dtype=None) -> None:
        super().__init__(num_heads, input_dim, activation, normalize=True, device=device, dtype=dtype)

    def forward(self, inputs: Tensor, mask: Optional[Tensor] = None) -> Tensor:
        return self.pool(inputs, mask)[0].flatten(1)
