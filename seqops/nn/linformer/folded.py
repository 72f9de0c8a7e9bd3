"""Linformer attention with the query and output projections folded into the compressed keys.

Over R compressed rows, head h's branch output is

    y = sum_h softmax(s (x W_q,h) kbar_h^T) (vbar_h W_o,h^T) = sum_h softmax(x K'_h^T) V'_h,

with K'_h = s kbar_h W_q,h (R, C) and V'_h = vbar_h W_o,h^T (R, C): the same function, grouped
the other way. Per query that is 2 H R C multiply-adds (scores against every head's R folded keys
in one GEMM, the weighted sum of the folded values, already summed over heads, in another)
instead of 2 H d (C + R) (query projection, scores, values, w_o). It wins when R C < d (C + R),
e.g. linformer-pytorch's README model (C 64, d 256, R 64) needs 8x fewer, and it never builds the
(L, H d) query and output tensors. Only for non-causal attention over compressed rows (the
causal local keys are exact per position).
"""
from typing import Optional, Tuple

import torch
from torch import Tensor

from ...ops import dropout as dropout_op


def folding_pays(channels: int, head_dim: int, rows: int) -> bool:
    """Whether the folded form needs fewer multiply-adds per query (see the module docstring)."""
    return rows * channels < head_dim * (channels + rows)


def fold(kbar: Tensor, vbar: Tensor, w_q: Tensor, w_o: Tensor, scale: float) -> Tuple[Tensor, Tensor]:
    """Folded keys and values (B, H * R, C): kbar, vbar (B, R, H, d); w_q (H d, C) the query
    projection; w_o (C, H d) the output projection (without its bias)."""
    B, R, H, d = kbar.shape
    C = w_q.shape[1]
    keys = torch.einsum("brhd,hdc->bhrc", kbar, w_q.view(H, d, C) * scale).reshape(B, H * R, C)
    values = torch.einsum("brhd,chd->bhrc", vbar, w_o.view(C, H, d)).reshape(B, H * R, C)
    return keys, values


def attend_folded(x: Tensor, keys: Tensor, values: Tensor, heads: int, valid: Optional[Tensor],
                  dropout_p: float) -> Tuple[Tensor, Tensor]:
    """x (B, L, C) over folded keys / values (B, H * R, C): (branch output (B, L, C) before the
    output bias, probabilities (B, L, H, R) before dropout). valid (B, R) marks the rows that
    read a kept position; a batch entry with none gets zero probabilities (its output is the
    bias), as the fused attention does for a query that sees no key."""
    B, L, _ = x.shape
    R = keys.shape[1] // heads
    logits = torch.matmul(x, keys.transpose(1, 2)).view(B, L, heads, R)
    if valid is not None:
        # Entries with no valid row attend everywhere and are zeroed after, so that no softmax sees
        # only -inf (its gradient would be NaN).
        usable = valid | ~valid.any(1, keepdim=True)
        logits = logits.masked_fill(~usable[:, None, None, :], float("-inf"))
    probs = torch.softmax(logits, -1)
    if valid is not None:
        probs = probs * valid[:, None, None, :].to(probs.dtype)
    return torch.matmul(dropout_op(probs, dropout_p).view(B, L, heads * R), values), probs
