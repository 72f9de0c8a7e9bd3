"""Bucketed relative positions: T5 and TUPE (API and conventions in base.py).

T5 honours the constructor's ``max_distance`` and takes ``bidirectional`` as a keyword; TUPE
buckets with ``max_distance`` and computes its bucket table per call (an original state_dict's
stored table is dropped on load); ``has_cls_token=True`` raises NotImplementedError. Differences
from the original: docs/compat.md.

T5 buckets compute their logarithm in float64 (as the fused kernel does); the T5 codebases use
float32, and the two can differ only where float32 rounding crosses a bucket edge.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ... import ops
from ...relative_position import t5_bucket
from .base import PositionalEmbedding, resolve_scale


# T5's bucket of relative_position = key position - query position (Mesh-TF bucketing), the
# function the op's T5 policy computes in its kernels.
t5_relative_position_bucket = t5_bucket


# ----------------------------------------------------------------------------- T5

class T5PositionalEmbedding(PositionalEmbedding):
    """T5 relative-position buckets: logits[b, h, i, j] = q_i.k_j + W[bucket(pk_j - pq_i), h].

    ``relative_attention_bias`` = nn.Embedding(num_buckets, num_heads) (state_dict compatible).
    ``attend`` uses the op's T5 policy (the table scaled by ``scale``, so the positional term is
    scaled like the rest of forward_attn, as in the original convention; pass scale=1.0 for
    T5's own unscaled attention) with query_offset = the positions' offset; other positions fall
    back to a materialized bias. ``max_distance`` is the constructor's.
    """

    def __init__(self, *, num_heads: int, num_buckets: int = 32, max_distance: int = 128,
                 bidirectional: bool = True, device=None, dtype=None) -> None:
        super().__init__(num_heads=num_heads)
        self.bidirectional = bidirectional
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.relative_attention_bias = nn.Embedding(num_buckets, num_heads, device=device, dtype=dtype)

    def relative_position_bucket(self, relative_position: Tensor) -> Tensor:
        return t5_relative_position_bucket(relative_position, self.bidirectional,
                                           self.num_buckets, self.max_distance)

    def compute_bias(self, relative_position: Tensor) -> Tensor:
        """relative_position (..., Lq, Lk) long (key - query) -> bias (..., H, Lq, Lk);
        (Lq, Lk) gives (1, H, Lq, Lk) as in the original."""
        values = self.relative_attention_bias(self.relative_position_bucket(relative_position))
        if values.dim() == 3:
            values = values.unsqueeze(0)
        return values.movedim(-1, -3)

    def score_terms(self, q: Tensor, k: Tensor, positions_q: Optional[Tensor] = None,
                    positions_k: Optional[Tensor] = None) -> Optional[Tensor]:
        rel = self._relative(positions_q, positions_k, q.shape[-2], k.shape[-2], q.device)
        return self.compute_bias(rel).to(q.dtype)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor] = None,
               causal: bool = False, scale: Optional[float] = None, dropout_p: float = 0.0,
               positions_q: Optional[Tensor] = None, positions_k: Optional[Tensor] = None,
               window: Optional[Tuple[int, int]] = None, query_start: Optional[int] = None,
               cu_seqlens: Optional[Tensor] = None) -> Tensor:
        window_left, window_right = ops.window_bounds(window)
        scale_ = resolve_scale(q, scale)
        offset = self._query_offset(positions_q, positions_k, q.shape[-2], k.shape[-2], q.device, query_start)
        if offset is None:
            return self._attend_dense(q, k, v, key_padding_mask, causal, scale_, dropout_p,
                                      positions_q, positions_k, window, query_start, cu_seqlens)
        table = (self.relative_attention_bias.weight.t() * scale_).contiguous()
        return ops.attention(q, k, v, key_padding_mask, causal, scale_, dropout_p, t5_table=table,
                             t5_bidirectional=self.bidirectional,
                             t5_max_distance=self.max_distance, query_offset=offset,
                             window_left=window_left, window_right=window_right, cu_seqlens=cu_seqlens)


# ----------------------------------------------------------------------------- TUPE

class UnifiedPositionalEmbedding(PositionalEmbedding):
    """TUPE (Ke et al. 2021): untied absolute position correlations plus T5-style buckets.

    logits[b, h, i, j] = q_i.k_j + s * Uq[h, pq_i].Uk[h, pk_j] + E[bucket(pk_j - pq_i), h], with
    P = LayerNorm(abs_pos_embed[p]), [Uq | Uk] = in_proj(P) (query part first, head-major),
    s = (head_dim * pos_scale_factor)^-1/2 and the positional dropout on the positional part.
    Parameters and state_dict keys as the original (``abs_pos_embed``, ``ln``, ``in_proj``,
    ``rel_pos_embed``; an original's ``rel_pos_embed_bucket`` is dropped when loading).
    Positions must lie in [0, max_length).

    ``attend`` concatenates [q | s Uq] and [k | Uk] (the absolute term becomes part of the dot
    product, for any positions) and adds the buckets through the op's T5 policy; for positions
    that are not shifted aranges the buckets come as a materialized bias, and in training with
    positional dropout > 0 the whole positional part does (dropout acts on the (Lq, Lk) bias).
    Buckets use max_distance; dropout_p=None means no dropout.
    """

    _legacy_state_keys = ("rel_pos_embed_bucket",)

    def __init__(self, *, num_heads: int, head_dim: int, max_length: Optional[int] = None,
                 dropout_p: Optional[float] = None, has_cls_token: bool = False,
                 rel_pos_embed: bool = True, num_buckets: int = 32, max_distance: int = 128,
                 pos_scale_factor: float = 1, max_pos: Optional[int] = None,
                 device=None, dtype=None) -> None:
        super().__init__(num_heads=num_heads, head_dim=head_dim, max_pos=max_pos,
                         max_length=max_length, dropout_p=dropout_p)
        if has_cls_token:
            raise NotImplementedError("UnifiedPositionalEmbedding: has_cls_token=True is not "
                                      "supported (the original asserts it is False)")
        if self.max_length is None:
            raise TypeError("UnifiedPositionalEmbedding needs max_length")
        if rel_pos_embed and num_buckets % 2 != 0:
            raise ValueError(f"num_buckets must be even, got {num_buckets}")
        self.has_cls_token = has_cls_token
        self.use_rel_pos_embed = rel_pos_embed
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.pos_scale_factor = pos_scale_factor
        self.scaling = (head_dim * pos_scale_factor) ** -0.5
        hd = num_heads * head_dim
        factory = {"device": device, "dtype": dtype}
        self.abs_pos_embed = nn.Parameter(torch.randn(self.max_length, hd, **factory))
        self.ln = nn.LayerNorm(hd, **factory)
        self.in_proj = nn.Linear(hd, 2 * hd, **factory)
        # One extra row, as in the original (reserved for [CLS]; never read).
        self.rel_pos_embed: Optional[nn.Embedding] = (
            nn.Embedding(num_buckets + 1, num_heads, **factory) if rel_pos_embed else None)

    def _check_positions(self, pq: Tensor, pk: Tensor) -> None:
        lo = int(torch.minimum(pq.min(), pk.min()))
        hi = int(torch.maximum(pq.max(), pk.max()))
        if lo < 0 or hi >= self.max_length:
            raise ValueError(f"UnifiedPositionalEmbedding: positions must lie in [0, "
                             f"{self.max_length}) (max_length), got [{lo}, {hi}]")

    def _projected(self, positions: Tensor, part: int) -> Tensor:
        # (B or 1, L) -> (B or 1, H, L, Dh): the query (part 0) or key (part 1) projection.
        hd = self.num_heads * self.head_dim
        p = self.ln(self.abs_pos_embed[positions])
        w = self.in_proj.weight[part * hd:(part + 1) * hd]
        b = self.in_proj.bias[part * hd:(part + 1) * hd]
        u = F.linear(p, w, b)
        return u.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def absolute_terms(self, positions_q: Optional[Tensor], positions_k: Optional[Tensor],
                       len_q: int, len_k: int, device: torch.device) -> Tuple[Tensor, Tensor]:
        """(s * Uq (B or 1, H, Lq, Dh), Uk (B or 1, H, Lk, Dh))."""
        pq, pk = self._positions(positions_q, positions_k, len_q, len_k, device)
        if positions_q is not None or positions_k is not None or max(len_q, len_k) > self.max_length:
            self._check_positions(pq, pk)
        return self._projected(pq, 0) * self.scaling, self._projected(pk, 1)

    def _bucket_bias(self, positions_q: Optional[Tensor], positions_k: Optional[Tensor],
                     len_q: int, len_k: int, device: torch.device) -> Tensor:
        rel = self._relative(positions_q, positions_k, len_q, len_k, device)
        buckets = t5_relative_position_bucket(rel, True, self.num_buckets, self.max_distance)
        assert self.rel_pos_embed is not None
        return self.rel_pos_embed(buckets).movedim(-1, -3)  # (B or 1, H, Lq, Lk)

    def compute_bias(self, q: Tensor, k: Tensor, positions_q: Optional[Tensor] = None,
                     positions_k: Optional[Tensor] = None) -> Tensor:
        """The positional part of the logits, (B, H, Lq, Lk), dropout applied."""
        return self.score_terms(q, k, positions_q, positions_k).expand(
            q.shape[0], -1, -1, -1)

    def score_terms(self, q: Tensor, k: Tensor, positions_q: Optional[Tensor] = None,
                    positions_k: Optional[Tensor] = None) -> Tensor:
        len_q, len_k = q.shape[-2], k.shape[-2]
        uq, uk = self.absolute_terms(positions_q, positions_k, len_q, len_k, q.device)
        bias = uq @ uk.transpose(-1, -2)
        if self.rel_pos_embed is not None:
            bias = bias + self._bucket_bias(positions_q, positions_k, len_q, len_k, q.device)
        return self.positional_embedding_dropout(bias).to(q.dtype)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor] = None,
               causal: bool = False, scale: Optional[float] = None, dropout_p: float = 0.0,
               positions_q: Optional[Tensor] = None, positions_k: Optional[Tensor] = None,
               window: Optional[Tuple[int, int]] = None, query_start: Optional[int] = None,
               cu_seqlens: Optional[Tensor] = None) -> Tensor:
        window_left, window_right = ops.window_bounds(window)
        scale_ = resolve_scale(q, scale)
        len_q, len_k = q.shape[-2], k.shape[-2]
        if self.training and self.positional_embedding_dropout.p > 0:
            return self._attend_dense(q, k, v, key_padding_mask, causal, scale_, dropout_p,
                                      positions_q, positions_k, window, query_start, cu_seqlens)
        # The offset first: from query_start without a sync; the absolute terms need positions.
        offset: Optional[int] = None
        if self.rel_pos_embed is not None:
            offset = self._query_offset(positions_q, positions_k, len_q, len_k, q.device, query_start)
        explicit_q, explicit_k = self._explicit_positions(positions_q, positions_k, len_q, len_k, q.device,
                                                          query_start, cu_seqlens)
        uq, uk = self.absolute_terms(explicit_q, explicit_k, len_q, len_k, q.device)
        q2 = torch.cat([q, uq.to(q.dtype).expand(q.shape[0], -1, -1, -1)], dim=-1)
        k2 = torch.cat([k, uk.to(k.dtype).expand(k.shape[0], -1, -1, -1)], dim=-1)
        if self.rel_pos_embed is None:
            return ops.attention(q2, k2, v, key_padding_mask, causal, scale_, dropout_p,
                                 window_left=window_left, window_right=window_right, cu_seqlens=cu_seqlens)
        if offset is None:
            bias = self._bucket_bias(positions_q, positions_k, len_q, len_k, q.device)
            return ops.attention(q2, k2, v, key_padding_mask, causal, scale_, dropout_p,
                                 bias=(bias * scale_).to(q.dtype),
                                 window_left=window_left, window_right=window_right, cu_seqlens=cu_seqlens)
        table = (self.rel_pos_embed.weight[:self.num_buckets].t() * scale_).contiguous()
        return ops.attention(q2, k2, v, key_padding_mask, causal, scale_, dropout_p, t5_table=table,
                             t5_bidirectional=True, t5_max_distance=self.max_distance,
                             query_offset=offset, window_left=window_left,
                             window_right=window_right, cu_seqlens=cu_seqlens)
