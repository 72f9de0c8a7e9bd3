"""Positional embeddings with the API of positional-embeddings-pytorch (whatever60).

Every module has the original two methods plus a fused one:

- ``forward_input(input_, positions=None)``: input_ (B, L, D) with absolute position
  information added (relative schemes return input_ unchanged);
- ``forward_attn(q, k, positions_q=None, positions_k=None)``: the *unscaled* attention logits
  (B, H, Lq, Lk), materialized as the originals did (q (B, H, Lq, Dh), k (B, H, Lk, Dh));
- ``attend(q, k, v, key_padding_mask=None, causal=False, scale=None, dropout_p=0.0,
  positions_q=None, positions_k=None, window=None)`` -> (B, H, Lq, dv): equals
  ``softmax(scale * forward_attn(q, k, ...) + mask) @ v`` (scale defaults to Dh^-1/2 and, as in
  the original convention, multiplies the positional terms too), computed by
  ``seqops.ops.attention`` without building the (Lq, Lk) logits. Masks are bool, True = may
  attend; a query that sees no key gets a zero row. ``dropout_p`` is attention dropout.
  ``query_start`` (decoding with a cache) places the queries at positions query_start.. when
  no positions are given (the keys at 0..); ``window=(left, right)`` is sliding-window attention (the op's window_left / window_right:
  key j visible to query i iff -left <= j - (i + Lk - Lq) <= right; -1 = no limit), skipping
  the key tiles outside it. ``cu_seqlens`` packs several sequences into each row
  (seqops.nn.packing; self-attention): no query sees another sequence's keys and every position
  restarts at its sequence's first token, as if each sequence were attended alone (absolute
  schemes: give forward_input ``packed_positions(cu_seqlens)``).

Positions are integer tensors (B, L) or (L,) (shared by the batch). ``None`` means the
original's implicit positions: queries 0..Lq-1 and keys 0..Lk-1 (Transformer-XL: the queries are
the last Lq of the keys, memory first). Relative schemes honour the given positions: when they
are shifted aranges with one common query-minus-key offset, the fused path uses that offset (the
op's query_offset for T5 and TUPE; the choice of R's rows for Transformer-XL and Enformer), at the
cost of one host sync to check them; any other positions fall back to a materialized
(B, H, Lq, Lk) bias through the op's ``bias`` policy (correct, but n^2 memory). Passing None
keeps the fused path sync-free (and torch.compile-friendly).

Every class accepts both ``max_length`` and ``max_pos``; ``dropout_p=None`` means no
dropout. How each class differs from positional-embeddings-pytorch, with the pinning tests:
docs/compat.md.
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor, nn

from ... import ops
from ..dropout import Dropout
from ..packing import packed_positions


# ----------------------------------------------------------------------------- helpers

def positions_or_arange(positions: Optional[Tensor], length: int, start: int,
                        device: torch.device) -> Tensor:
    """(B, L) or (1, L) long positions; ``None`` gives start..start+L-1."""
    if positions is None:
        return torch.arange(start, start + length, device=device).unsqueeze(0)
    if positions.dim() == 1:
        positions = positions.unsqueeze(0)
    if positions.dim() != 2 or positions.shape[1] != length:
        raise ValueError(f"positions must have shape (batch, {length}) or ({length},), got "
                         f"{list(positions.shape)}")
    return positions.to(device=device, dtype=torch.long)


def uniform_query_offset(positions_q: Tensor, positions_k: Tensor) -> Optional[int]:
    """``c`` if every row is positions_q[b] = arange(Lq) + c + s_b and positions_k[b] =
    arange(Lk) + s_b (shifted aranges with one query-minus-key offset), else None. One sync."""
    ar_q = torch.arange(positions_q.shape[1], device=positions_q.device)
    ar_k = torch.arange(positions_k.shape[1], device=positions_k.device)
    start_q, start_k = positions_q[:, :1], positions_k[:, :1]
    offset = start_q - start_k
    ok = ((positions_q - start_q) == ar_q).all() & ((positions_k - start_k) == ar_k).all()
    ok = ok & (offset == offset[0, 0]).all()
    ok_offset: List[int] = torch.stack([ok.long(), offset[0, 0]]).tolist()
    return ok_offset[1] if ok_offset[0] != 0 else None


def resolve_scale(q: Tensor, scale: Optional[float]) -> float:
    return float(q.shape[-1]) ** -0.5 if scale is None else float(scale)


# ----------------------------------------------------------------------------- base class

class PositionalEmbedding(nn.Module):
    """Base class: stores the original base's attributes; plain attention by default.

    Accepts ``max_pos`` and ``max_length`` (the same number; both attributes are stored).
    Subclasses override ``forward_input`` (absolute schemes) or ``score_terms`` and ``attend``
    (relative schemes)."""

    # state_dict keys of the original that hold derived data, dropped when loading.
    _legacy_state_keys: Tuple[str, ...] = ()

    def __init__(self, *, embed_dim: Optional[int] = None, num_heads: Optional[int] = None,
                 head_dim: Optional[int] = None, max_pos: Optional[int] = None,
                 max_length: Optional[int] = None, padding_idx: Optional[int] = None,
                 dropout_p: Optional[float] = None) -> None:
        super().__init__()
        if max_pos is not None and max_length is not None and max_pos != max_length:
            raise ValueError(f"max_pos ({max_pos}) and max_length ({max_length}) disagree")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = head_dim
        self.max_pos = max_pos if max_pos is not None else max_length
        self.max_length = self.max_pos
        self.padding_idx = padding_idx
        self.positional_embedding_dropout = Dropout(dropout_p if dropout_p is not None else 0.0)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        for key in self._legacy_state_keys:
            state_dict.pop(prefix + key, None)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    # Start of the implicit query positions (keys start at 0).
    def _query_start(self, len_q: int, len_k: int) -> int:
        return 0

    def _positions(self, positions_q: Optional[Tensor], positions_k: Optional[Tensor],
                   len_q: int, len_k: int, device: torch.device) -> Tuple[Tensor, Tensor]:
        start = self._query_start(len_q, len_k)
        return (positions_or_arange(positions_q, len_q, start, device),
                positions_or_arange(positions_k, len_k, 0, device))

    def _query_offset(self, positions_q: Optional[Tensor], positions_k: Optional[Tensor],
                      len_q: int, len_k: int, device: torch.device,
                      query_start: Optional[int] = None) -> Optional[int]:
        """The op's query_offset for these positions, or None when they are not shifted aranges."""
        if positions_q is None and positions_k is None:
            return self._query_start(len_q, len_k) if query_start is None else query_start
        pq, pk = self._positions(positions_q, positions_k, len_q, len_k, device)
        return uniform_query_offset(pq, pk)

    def _explicit_positions(self, positions_q: Optional[Tensor], positions_k: Optional[Tensor],
                            len_q: int, len_k: int, device: torch.device,
                            query_start: Optional[int],
                            cu_seqlens: Optional[Tensor] = None) -> Tuple[Optional[Tensor], Optional[Tensor]]:
        """The positions as given, or, none given, for the paths that read position tensors:
        with packed sequences (cu_seqlens) each token's position in its sequence; with
        query_start (decoding) the aranges query_start.. and 0.. ."""
        if positions_q is not None or positions_k is not None:
            return positions_q, positions_k
        if cu_seqlens is not None:
            positions = packed_positions(cu_seqlens).to(device)
            return positions, positions
        if query_start is None:
            return None, None
        return (torch.arange(query_start, query_start + len_q, device=device),
                torch.arange(len_k, device=device))

    def _relative(self, positions_q: Optional[Tensor], positions_k: Optional[Tensor],
                  len_q: int, len_k: int, device: torch.device) -> Tensor:
        """(B or 1, Lq, Lk) key position minus query position."""
        pq, pk = self._positions(positions_q, positions_k, len_q, len_k, device)
        return pk[:, None, :] - pq[:, :, None]

    def forward(self, q: Tensor, k: Tensor, positions_q: Optional[Tensor] = None,
                positions_k: Optional[Tensor] = None) -> Tensor:
        """The relative schemes' forward is forward_attn (absolute ones override it)."""
        return self.forward_attn(q, k, positions_q, positions_k)

    def forward_input(self, input_: Tensor, positions: Optional[Tensor] = None) -> Tensor:
        """input_ (B, L, D) -> the same with absolute positions added (identity here)."""
        return input_

    def score_terms(self, q: Tensor, k: Tensor, positions_q: Optional[Tensor] = None,
                    positions_k: Optional[Tensor] = None) -> Optional[Tensor]:
        """The unscaled logits beyond q.k^T, broadcastable to (B, H, Lq, Lk); None if none."""
        return None

    def forward_attn(self, q: Tensor, k: Tensor, positions_q: Optional[Tensor] = None,
                     positions_k: Optional[Tensor] = None) -> Tensor:
        """Unscaled logits (B, H, Lq, Lk) of q (B, H, Lq, Dh) and k (B, H, Lk, Dh)."""
        logits = q @ k.transpose(-1, -2)
        extra = self.score_terms(q, k, positions_q, positions_k)
        return logits if extra is None else logits + extra

    def _attend_dense(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor],
                      causal: bool, scale: float, dropout_p: float,
                      positions_q: Optional[Tensor], positions_k: Optional[Tensor],
                      window: Optional[Tuple[int, int]], query_start: Optional[int],
                      cu_seqlens: Optional[Tensor] = None) -> Tensor:
        # Fallback: the positional terms materialized as a (B, H, Lq, Lk) bias.
        positions_q, positions_k = self._explicit_positions(positions_q, positions_k, q.shape[-2], k.shape[-2],
                                                            q.device, query_start, cu_seqlens)
        extra = self.score_terms(q, k, positions_q, positions_k)
        bias = None if extra is None else (extra * scale).to(q.dtype)
        window_left, window_right = ops.window_bounds(window)
        return ops.attention(q, k, v, key_padding_mask, causal, scale, dropout_p, bias=bias,
                             window_left=window_left, window_right=window_right, cu_seqlens=cu_seqlens)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor] = None,
               causal: bool = False, scale: Optional[float] = None, dropout_p: float = 0.0,
               positions_q: Optional[Tensor] = None, positions_k: Optional[Tensor] = None,
               window: Optional[Tuple[int, int]] = None, query_start: Optional[int] = None,
               cu_seqlens: Optional[Tensor] = None) -> Tensor:
        """softmax(scale * forward_attn + mask) @ v, fused: q (B, H, Lq, Dh), k (B, H, Lk, Dh),
        v (B, H, Lk, dv) -> (B, H, Lq, dv). Plain attention for absolute schemes."""
        window_left, window_right = ops.window_bounds(window)
        return ops.attention(q, k, v, key_padding_mask, causal, resolve_scale(q, scale), dropout_p,
                             window_left=window_left, window_right=window_right, cu_seqlens=cu_seqlens)
