"""Rotary position embedding (RoFormer, Su et al. 2021) with the positional API of base.py.

logits[b, h, i, j] = rot(q_i, pq_i) . rot(k_j, pk_j), rot turning each feature pair by the
position times a per-pair frequency (seqops.relative_position.rotate), so the logit depends on
the positions only through pk_j - pq_i. There are no parameters. ``attend`` hands the rotation to
the attention kernel (the op's rotary_dim / rotary_base / rotary_interleaved, query_offset = the
positions' offset): q and k are rotated as the kernel loads them, no rotated copy is made; it
combines with masks, causal, windows, dropout, GQA and decoding with a KVCache. Positions that
are not shifted aranges fall back to rotated copies of q and k (the op's rotation only knows
query i + offset and key j).
"""
from typing import Optional, Tuple

from torch import Tensor

from ... import ops
from ...relative_position import rotate
from .base import PositionalEmbedding, positions_or_arange, resolve_scale


class RotaryPositionalEmbedding(PositionalEmbedding):
    """Rotary positions for heads of ``head_dim`` features, the first ``rotary_dim`` of them
    rotated (default: all; even). ``base`` sets the frequencies base^(-2p / rotary_dim);
    ``interleaved`` pairs features (2p, 2p + 1) as RoFormer and GPT-J do, otherwise (p, p +
    rotary_dim / 2) as GPT-NeoX and LLaMA do (the two layouts are a fixed permutation of the
    features apart). ``num_heads`` is optional (MultiheadAttention checks it when given)."""

    def __init__(self, *, head_dim: int, rotary_dim: Optional[int] = None, base: float = 10000.0,
                 interleaved: bool = False, num_heads: Optional[int] = None,
                 max_pos: Optional[int] = None, max_length: Optional[int] = None) -> None:
        super().__init__(num_heads=num_heads, head_dim=head_dim, max_pos=max_pos, max_length=max_length)
        dim = head_dim if rotary_dim is None else rotary_dim
        if head_dim < 1 or dim < 2 or dim % 2 != 0 or dim > head_dim:
            raise ValueError(f"rotary_dim must be even, >= 2 and <= head_dim ({head_dim}), got {dim}")
        if not base > 0 or base == float("inf"):
            raise ValueError(f"base must be finite and > 0, got {base}")
        self.rotary_dim = dim
        self.base = float(base)
        self.interleaved = interleaved

    def extra_repr(self) -> str:
        return (f"head_dim={self.head_dim}, rotary_dim={self.rotary_dim}, base={self.base}, "
                f"interleaved={self.interleaved}")

    def _check_head_dim(self, x: Tensor, name: str) -> None:
        if x.shape[-1] != self.head_dim:
            raise ValueError(f"{name} must have head_dim {self.head_dim} features, got shape {list(x.shape)}")

    def rotate(self, x: Tensor, positions: Optional[Tensor] = None) -> Tensor:
        """x (B, H, L, Dh) rotated to positions (L,) or (B, L) (default 0..L-1): a new tensor."""
        self._check_head_dim(x, "x")
        pos = positions_or_arange(positions, x.shape[-2], 0, x.device)
        return rotate(x, pos if pos.shape[0] > 1 else pos[0], self.rotary_dim, self.base, self.interleaved)

    def forward_attn(self, q: Tensor, k: Tensor, positions_q: Optional[Tensor] = None,
                     positions_k: Optional[Tensor] = None) -> Tensor:
        """Unscaled logits (B, H, Lq, Lk) of the rotated q (B, H, Lq, Dh) and k (B, H, Lk, Dh)."""
        pq, pk = self._positions(positions_q, positions_k, q.shape[-2], k.shape[-2], q.device)
        return self.rotate(q, pq) @ self.rotate(k, pk).transpose(-1, -2)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor] = None,
               causal: bool = False, scale: Optional[float] = None, dropout_p: float = 0.0,
               positions_q: Optional[Tensor] = None, positions_k: Optional[Tensor] = None,
               window: Optional[Tuple[int, int]] = None, query_start: Optional[int] = None,
               cu_seqlens: Optional[Tensor] = None) -> Tensor:
        self._check_head_dim(q, "q")
        self._check_head_dim(k, "k")
        window_left, window_right = ops.window_bounds(window)
        scale_ = resolve_scale(q, scale)
        len_q, len_k = q.shape[-2], k.shape[-2]
        offset = self._query_offset(positions_q, positions_k, len_q, len_k, q.device, query_start)
        if offset is None:
            pq, pk = self._positions(positions_q, positions_k, len_q, len_k, q.device)
            return ops.attention(self.rotate(q, pq), self.rotate(k, pk), v, key_padding_mask, causal, scale_,
                                 dropout_p, window_left=window_left, window_right=window_right, cu_seqlens=cu_seqlens)
        return ops.attention(q, k, v, key_padding_mask, causal, scale_, dropout_p, query_offset=offset,
                             window_left=window_left, window_right=window_right,
                             rotary_dim=self.rotary_dim, rotary_base=self.base,
                             rotary_interleaved=self.interleaved, cu_seqlens=cu_seqlens)
