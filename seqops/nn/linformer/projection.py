"""Linformer's sequence projections E and F (Wang et al. 2020, arXiv 2006.04768), batched.

A projection maps a sequence of length L <= input_size to R compressed rows. Sequences are laid
out (B, L, H, d) (the output of a fused Linear, unflattened into heads), compressed rows
(B, R, H, d). One ``SequenceProjection`` holds ``heads`` stacked projections: 1 = shared by all
heads (applied as one GEMM over the H * d columns), H = one per head (a batched GEMM).

Methods (the original's ``get_EF``):

- ``learnable``: weight (heads, dim_k, input_size), xavier-normal per head, and a per-row bias
  (heads, dim_k) added to every channel of its row (the original's Linear(n, k) applied along the
  sequence). R = dim_k; shorter inputs use the first L columns (as lucidrains/linformer slices).
- ``convolution``: Conv1d(head_dim, head_dim, kernel, stride=kernel) with kernel =
  input_size // dim_k, stored as weight (heads, head_dim, head_dim, kernel) and bias
  (heads, head_dim). Windows lie on the input_size grid: R = min(ceil(L / kernel),
  input_size // kernel), a last partial window is zero-padded (so a short input equals its
  padded-and-masked version), and as in the original the input_size % kernel positions past the
  last full window reach no compressed row (a causal model still sees them as local keys).
- ``no_params``: a fixed weight (heads, dim_k, input_size) ~ N(0, std = 1 / dim_k), no bias,
  registered as a **buffer**: saved in the state_dict and moved by ``.to()``.

Causal compression (no compressed row mixes future positions): see ``causal_chunks``. How these
differ from linformer-pytorch: docs/compat.md.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .tracing import leading

METHODS = ("learnable", "convolution", "no_params")


def check_choice(name: str, value: str, choices: Tuple[str, ...]) -> None:
    """ValueError naming the argument unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}, got {value!r}")


def conv_kernel(input_size: int, dim_k: int) -> int:
    """Kernel (= stride) of the convolution method: input_size // dim_k, which must be >= 1."""
    if dim_k > input_size:
        raise ValueError(f"method='convolution' needs dim_k <= input_size (kernel = input_size // dim_k), "
                         f"got dim_k={dim_k} > input_size={input_size}")
    return input_size // dim_k


class SequenceProjection(nn.Module):
    """One projection E or F from input_size positions to dim_k rows, for ``heads`` heads.

    ``weight`` (and ``bias``) layouts are given in the module docstring; ``kernel`` is the
    convolution's kernel (0 for the other methods). Use ``get_EF`` for the original's signature.
    """

    def __init__(self, input_size: int, dim_k: int, method: str = "learnable", head_dim: Optional[int] = None,
                 heads: int = 1, bias: bool = True, device=None, dtype=None) -> None:
        super().__init__()
        check_choice("method", method, METHODS)
        if input_size < 1 or dim_k < 1 or heads < 1:
            raise ValueError(f"input_size, dim_k and heads must be >= 1, got input_size={input_size}, "
                             f"dim_k={dim_k}, heads={heads}")
        factory = {"device": device, "dtype": dtype}
        self.method = method
        self.input_size = input_size
        self.dim_k = dim_k
        self.heads = heads
        self.kernel = 0
        if method == "convolution":
            if head_dim is None or head_dim < 1:
                raise ValueError(f"method='convolution' needs head_dim >= 1, got {head_dim}")
            self.kernel = conv_kernel(input_size, dim_k)
            bound = 1.0 / math.sqrt(head_dim * self.kernel)  # nn.Conv1d's default init
            self.weight = nn.Parameter(torch.empty(heads, head_dim, head_dim, self.kernel, **factory).uniform_(-bound, bound))
            self.bias = nn.Parameter(torch.empty(heads, head_dim, **factory).uniform_(-bound, bound)) if bias else None
        elif method == "learnable":
            self.weight = nn.Parameter(torch.empty(heads, dim_k, input_size, **factory))
            for w in self.weight.data:
                nn.init.xavier_normal_(w)
            bound = 1.0 / math.sqrt(input_size)  # nn.Linear's default bias init
            self.bias = nn.Parameter(torch.empty(heads, dim_k, **factory).uniform_(-bound, bound)) if bias else None
        else:
            self.register_buffer("weight", torch.empty(heads, dim_k, input_size, **factory).normal_(0.0, 1.0 / dim_k))
            self.bias = None

    def extra_repr(self) -> str:
        return (f"input_size={self.input_size}, dim_k={self.dim_k}, method={self.method!r}, heads={self.heads}, "
                f"bias={self.bias is not None}")


def get_EF(input_size: int, dim: int, method: str = "learnable", head_dim: Optional[int] = None,
           bias: bool = True, device=None, dtype=None) -> SequenceProjection:
    """The original's ``get_EF``: one projection (shared by all heads) from input_size to dim rows.

    Returns a ``SequenceProjection`` for every method (the original returned nn.Linear, nn.Conv1d
    or a plain tensor); pass it as E_proj / F_proj of ``MHAttention`` with layerwise sharing.
    """
    return SequenceProjection(input_size, dim, method, head_dim, 1, bias, device=device, dtype=dtype)


# ----------------------------------------------------------------------------- functional core

def num_rows(weight: Tensor, rows: int, length: int, input_size: int) -> int:
    """Compressed rows for a length-``length`` input: ``rows`` (<= dim_k) for learnable/no_params
    weights (heads, dim_k, n); for convolution weights (heads, d, d, kernel) the windows of the
    input_size grid that overlap the input."""
    if weight.dim() == 3:
        return rows
    kernel = weight.shape[-1]
    return min(-(-length // kernel), input_size // kernel)


def project(x: Tensor, weight: Tensor, rows: int, block: Optional[Tensor] = None) -> Tensor:
    """Applies E (without its bias) along the sequence: x (B, L, H, d) -> (B, R, H, d), R = rows.

    weight has 1 or H stacked projections; learnable/no_params use rows ``:rows`` and columns
    ``:L`` of it (a span of a streamed sequence passes the span's columns), times ``block``
    (R, L) when given (the causal block-diagonal restriction); convolutions read windows
    [r * kernel, (r + 1) * kernel), zero-padded past L (a span starts on a window).
    """
    B, L, H, d = x.shape
    if weight.dim() == 3:
        w = leading(weight[:, :rows], 2, L)
        if block is not None:
            w = w * block.to(w.dtype)
        if w.shape[0] == 1:  # one GEMM over all heads' columns
            return torch.matmul(w[0], x.reshape(B, L, H * d)).view(B, rows, H, d)
        return torch.einsum("hrl,blhd->brhd", w, x)
    kernel = weight.shape[-1]
    windows = x[:, :rows * kernel]
    if rows * kernel > L:
        windows = F.pad(windows, (0, 0, 0, 0, 0, rows * kernel - L))
    windows = windows.reshape(B, rows, kernel, H, d)
    if weight.shape[0] == 1:
        return torch.einsum("brthc,oct->brho", windows, weight[0])
    return torch.einsum("brthc,hoct->brho", windows, weight)


def add_bias(compressed: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    """Adds E's bias to compressed rows (B, R, H, d): per row for learnable weights (the bias of
    the original's Linear(n, k), broadcast over channels), per channel for convolutions."""
    if bias is None:
        return compressed
    if weight.dim() == 3:
        return compressed + bias[:, :compressed.shape[1]].t()[None, :, :, None]
    return compressed + bias[None, None]


def causal_chunks(input_size: int, rows: int, kernel: int) -> Tuple[int, int]:
    """(rows per chunk m, positions per chunk c) of the causal projection.

    Causal Linformer (the fix): positions are cut into chunks of c, and compressed row r only
    reads chunk r // m (E restricted to a block diagonal; a convolution window already lies in one
    chunk since c is a multiple of its kernel). Query i in chunk g = i // c attends to the
    compressed rows of the finished chunks (r // m < g) and, exactly, to the keys of its own chunk
    up to i. So no output ever depends on a later position, and the cost per query is at most
    R + c keys. G ~ input_size / R chunks balance the two: c ~ R (for R >= sqrt(n)).
    The geometry depends on input_size only, so a shorter input's outputs equal those of any
    longer input with the same prefix.
    """
    units = rows if kernel == 0 else input_size // kernel  # compressed rows of a full-length input
    chunks = max(1, min(units, input_size // units))
    per_chunk = -(-units // chunks)
    length = -(-input_size // chunks) if kernel == 0 else per_chunk * kernel
    return per_chunk, length


def row_support(rows: int, length: int, kernel: int, chunks: Optional[Tuple[int, int]], device: torch.device,
                start: int = 0) -> Tensor:
    """(R, L) bool: which of the positions [start, start + L) compressed row r reads (its window,
    its causal chunk, or all)."""
    r = torch.arange(rows, device=device)[:, None]
    j = torch.arange(start, start + length, device=device)[None, :]
    if kernel > 0:
        return j // kernel == r
    if chunks is not None:
        return r // chunks[0] == j // chunks[1]
    return torch.ones(rows, length, dtype=torch.bool, device=device)


def valid_rows(mask: Tensor, support: Tensor) -> Tensor:
    """(B, R) bool: rows that read at least one kept position (the others carry only the bias and
    exist only because of padding, so they are not attended)."""
    return torch.matmul(mask.to(torch.float32), support.t().to(torch.float32)) > 0
