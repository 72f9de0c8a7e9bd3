"""The Compressive Transformer's sublayers with labml's parameter names, batch-first:
RelativeMultiHeadAttention (on the fused seqops.ops.attention) and CompressiveFeedForward.

labml (labml_nn.transformers.xl.relative_mha) computes, per head, with m = Lk - Lq memory slots
before the queries (query i sits at key position m + i):
    logit[i, j] = ((q_i + query_pos_bias) . k_j + q_i . R[P + j - (m + i)] + S[P + j - (m + i)]) / sqrt(d_k)
with R = key_pos_embeddings (2P, H, d_k), S = key_pos_bias (2P, H), P = 4096, and builds it from
two materialized (Lq, Lk + Lq) score tensors and a pad-and-reshape shift. Here the same logit is
the attention op's relative-keys policy (content_bias = query_pos_bias, rel_keys / rel_scores =
the rows of R / S the call can see, no position_bias): nothing of size Lq x Lk is materialized.

Differences from labml, all deliberate:
- The table size is a constructor argument (``max_distance`` = P, default 4096 = labml's, so a
  labml state_dict loads as is); distances beyond +-P are clamped to the table's edge rows
  instead of reading a wrong slice (labml silently breaks once c_mem + mem + seq > 4096).
- Batch-first (B, L, d_model) tensors; padding as a bool key mask (B, Lk) plus a ``causal`` flag
  instead of labml's (Lq, Lk, B) mask; the probabilities are not stored in ``self.attn`` and
  nothing is sent to labml.tracker.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ... import ops
from ..dropout import Dropout


class HeadProjection(nn.Module):
    """labml's PrepareForMultiHeadAttention (state_dict ``linear.*``), batch-first:
    (B, L, d_model) -> (B, heads, L, d_k)."""

    def __init__(self, d_model: int, heads: int, d_k: int, bias: bool, device=None, dtype=None) -> None:
        super().__init__()
        self.linear = nn.Linear(d_model, heads * d_k, bias=bias, device=device, dtype=dtype)
        self.heads = heads
        self.d_k = d_k

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x).unflatten(-1, (self.heads, self.d_k)).transpose(1, 2)


class RelativeMultiHeadAttention(nn.Module):
    """Transformer-XL relative multi-head attention, labml's parameters, fused (see module doc).

    forward(query (B, Lq, d_model), key (B, Lk, d_model), value (B, Lk, d_model),
    key_padding_mask=None, causal=False) -> (B, Lq, d_model). The queries are the last Lq of the
    Lk key positions (memory first). key_padding_mask: bool (B, Lk), True = may attend. causal:
    query i sees keys j <= i + Lk - Lq. A query that sees no key outputs the output bias.
    """

    def __init__(self, heads: int, d_model: int, dropout_prob: float = 0.1, max_distance: int = 4096,
                 device=None, dtype=None) -> None:
        super().__init__()
        if heads < 1 or d_model % heads != 0:
            raise ValueError(f"d_model ({d_model}) must be a positive multiple of heads ({heads})")
        if max_distance < 1:
            raise ValueError(f"max_distance must be >= 1, got {max_distance}")
        factory = {"device": device, "dtype": dtype}
        self.heads = heads
        self.d_k = d_model // heads
        self.dropout_prob = dropout_prob
        self.scale = 1.0 / math.sqrt(self.d_k)
        self.P = max_distance
        self.query = HeadProjection(d_model, heads, self.d_k, bias=False, **factory)
        self.key = HeadProjection(d_model, heads, self.d_k, bias=False, **factory)
        self.value = HeadProjection(d_model, heads, self.d_k, bias=True, **factory)
        self.output = nn.Linear(d_model, d_model, **factory)
        self.key_pos_embeddings = nn.Parameter(torch.empty(2 * max_distance, heads, self.d_k, **factory))
        self.key_pos_bias = nn.Parameter(torch.empty(2 * max_distance, heads, **factory))
        self.query_pos_bias = nn.Parameter(torch.empty(heads, self.d_k, **factory))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Zeros for the relative tables and the bias, as labml: the relative terms are learned
        from nothing (the projections reset themselves)."""
        for p in (self.key_pos_embeddings, self.key_pos_bias, self.query_pos_bias):
            nn.init.zeros_(p)

    def relative_tables(self, len_q: int, len_k: int, causal: bool) -> Tuple[Tensor, Tensor, int]:
        """The rows of R (key_pos_embeddings) and S (key_pos_bias) for every key-minus-query
        distance r a (len_q, len_k) call can see -- r in [-(len_k - 1), len_q - 1], or up to 0
        when causal -- clamped to the table; returns (R (U, H, d_k), S (U, H), rel_zero), where
        row rel_zero is r = 0."""
        count = len_k if causal else len_q + len_k - 1
        first = self.P - (len_k - 1)                    # table row of r = -(len_k - 1)
        if first >= 0 and first + count <= 2 * self.P:
            return (self.key_pos_embeddings.narrow(0, first, count),
                    self.key_pos_bias.narrow(0, first, count), len_k - 1)
        rows = (torch.arange(count, device=self.key_pos_bias.device) + first).clamp(0, 2 * self.P - 1)
        return self.key_pos_embeddings[rows], self.key_pos_bias[rows], len_k - 1

    def kv_weights(self, norm_weight: Optional[Tensor] = None,
                   norm_bias: Optional[Tensor] = None) -> Tuple[Tensor, Optional[Tensor]]:
        """The fused key/value projection: weight W (2 d_model, d_model) and bias b (keys first).
        Given a LayerNorm's gamma / beta, returns the projection of its output folded onto the
        standardized input: LN(x) W^T + b = x_hat (W diag(gamma))^T + (W beta + b)."""
        weight = torch.cat([self.key.linear.weight, self.value.linear.weight])
        bias = _fused_bias(self.key.linear.bias, self.value.linear.bias, self.heads * self.d_k)
        if norm_bias is not None:
            folded = weight @ norm_bias
            bias = folded if bias is None else bias + folded
        if norm_weight is not None:
            weight = weight * norm_weight
        return weight, bias

    def key_value(self, x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """Keys and values (B, H, L, d_k) of x (B, L, d_model) with kv_weights' (weight, bias)."""
        # unbind, not indexing: its backward stacks the two gradients instead of zero-filling.
        k, v = F.linear(x, weight, bias).unflatten(-1, (2, self.heads, self.d_k)).unbind(2)
        return k.transpose(1, 2), v.transpose(1, 2)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor] = None,
               causal: bool = False) -> Tensor:
        """The attention of projected heads q (B, H, Lq, d_k), k / v (B, H, Lk, d_k), then the
        output projection -> (B, Lq, d_model)."""
        rel_keys, rel_scores, rel_zero = self.relative_tables(q.shape[2], k.shape[2], causal)
        dropout_p = self.dropout_prob if self.training else 0.0
        out = ops.attention(q, k, v, key_padding_mask, causal, self.scale, dropout_p,
                            rel_keys=rel_keys, rel_scores=rel_scores,
                            content_bias=self.query_pos_bias, rel_zero=rel_zero)
        return self.output(out.transpose(1, 2).flatten(2))

    def forward(self, query: Tensor, key: Tensor, value: Tensor,
                key_padding_mask: Optional[Tensor] = None, causal: bool = False) -> Tensor:
        return self.attend(self.query(query), self.key(key), self.value(value), key_padding_mask, causal)


def _fused_bias(key_bias: Optional[Tensor], value_bias: Optional[Tensor], width: int) -> Optional[Tensor]:
    """[key_bias; value_bias] with zeros for a missing one, or None when both are missing."""
    if key_bias is None and value_bias is None:
        return None
    if key_bias is None:
        assert value_bias is not None
        key_bias = value_bias.new_zeros(width)
    if value_bias is None:
        value_bias = key_bias.new_zeros(width)
    return torch.cat([key_bias, value_bias])


class CompressiveFeedForward(nn.Module):
    """labml's FeedForward(d_model, d_ff, dropout, activation, is_gated, bias1, bias2, bias_gate):
    layer2(dropout(act(layer1(x)) [* linear_v(x) when gated])), state_dict keys as labml's."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.1, activation: nn.Module = nn.ReLU(),
                 is_gated: bool = False, bias1: bool = True, bias2: bool = True, bias_gate: bool = True,
                 device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.layer1 = nn.Linear(d_model, d_ff, bias=bias1, **factory)
        self.layer2 = nn.Linear(d_ff, d_model, bias=bias2, **factory)
        self.linear_v = nn.Linear(d_model, d_ff, bias=bias_gate, **factory) if is_gated else None
        self.dropout = Dropout(dropout)
        self.activation = activation
        self.is_gated = is_gated

    def forward(self, x: Tensor) -> Tensor:
        hidden = self.activation(self.layer1(x))
        if self.linear_v is not None:
            hidden = hidden * self.linear_v(x)
        return self.layer2(self.dropout(hidden))


def detached_projection(proj: HeadProjection, x: Tensor) -> Tensor:
    """proj(x) with its weight and bias detached (the reconstruction loss's stop-gradient)."""
    bias = proj.linear.bias
    out = F.linear(x, proj.linear.weight.detach(), None if bias is None else bias.detach())
    return out.unflatten(-1, (proj.heads, proj.d_k)).transpose(1, 2)
