"""MultiheadAttention with a pluggable positional scheme, on the fused seqops.ops.attention."""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import ops
from .kv_cache import KVCache
from .positional.base import PositionalEmbedding


class MultiheadAttention(nn.Module):
    """Multi-head attention whose scores come from a positional embedding's ``attend``.

    Parameters and state_dict keys are those of ``torch.nn.MultiheadAttention`` with equal
    query/key/value dims (``in_proj_weight`` (3E, E), ``in_proj_bias`` (3E,), ``out_proj``), so
    its weights load. ``positional`` is any of seqops.nn's positional embeddings (or None: plain
    attention); its num_heads / head_dim, where it has them, must match. Relative schemes (T5,
    TUPE, Transformer-XL, Enformer) act inside the attention; absolute ones (sinusoidal,
    learned) act on the token embeddings through their ``forward_input`` before the first layer,
    as in the original two-API design, and make the attention plain.

    forward(query, key=None, value=None, key_padding_mask=None, causal=False, positions_q=None,
    positions_k=None, cache=None, cache_layer=0, cu_seqlens=None):
        query (B, Lq, E), key/value (B, Lk, E) (key and value default to query: self-attention;
        (L, B, E) when batch_first=False); key_padding_mask bool (B, Lk), **True = may attend**
        (the opposite of torch.nn.MultiheadAttention's convention); causal: query i sees keys
        j <= i + Lk - Lq; positions (B, L) or (L,) go to the positional scheme.
        Returns (B, Lq, E) (or (Lq, B, E)). Queries that see no key get the output projection of
        a zero vector (its bias). Attention dropout ``dropout`` applies in training mode.

    Incremental decoding: with ``cache`` (a :class:`seqops.nn.KVCache`) the projected keys and
    values of this call are appended to the cache's layer ``cache_layer`` and the queries attend
    over every cached key, as the last Lq positions (the positional schemes get that offset, and
    causal is j <= i + Lk - Lq), so feeding a sequence token by token (no_grad) gives the same
    outputs as one causal call on the whole of it. key_padding_mask then covers all cached keys
    (B, Lk). Absolute schemes add positions to the inputs: pass them the tokens' positions.
    Enformer's features scale with the sequence length, so there each step equals the causal
    call on the prefix decoded so far, not on the final sequence.

    Packed sequences: ``cu_seqlens`` (num_sequences + 1,) offsets of several sequences laid end
    to end in each row (seqops.nn.pack_sequences; self-attention, query = key), no query attends
    across a boundary and positions restart per sequence: each sequence's output equals a call
    on it alone, without the padding a batch of unequal lengths would cost.

    ``window=(left, right)`` makes it sliding-window (local) attention: query i sees key j only
    when -left <= j - (i + Lk - Lq) <= right (-1: no limit on that side; with causal, right is
    0), in every positional scheme; the kernels skip the key tiles outside the window.
    """

    def __init__(self, embed_dim: int, num_heads: int, positional: Optional[PositionalEmbedding] = None,
                 dropout: float = 0.0, bias: bool = True, batch_first: bool = True,
                 window: Optional[Tuple[int, int]] = None, device=None, dtype=None) -> None:
        super().__init__()
        if embed_dim < 1 or num_heads < 1 or embed_dim % num_heads != 0:
            raise ValueError(f"embed_dim ({embed_dim}) must be a positive multiple of num_heads "
                             f"({num_heads})")
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        ops.window_bounds(window)  # checked here, where a bad window is written
        self.window = window
        if positional is not None:
            heads = getattr(positional, "num_heads", None)
            head_dim = getattr(positional, "head_dim", None)
            if heads is not None and heads != num_heads:
                raise ValueError(f"positional has num_heads={heads}, attention has {num_heads}")
            if head_dim is not None and head_dim != self.head_dim:
                raise ValueError(f"positional has head_dim={head_dim}, attention has {self.head_dim}")
        self.positional = positional
        factory = {"device": device, "dtype": dtype}
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim, **factory))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * embed_dim, **factory)) if bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # torch.nn.MultiheadAttention's init.
        nn.init.xavier_uniform_(self.in_proj_weight)
        if self.in_proj_bias is not None:
            nn.init.zeros_(self.in_proj_bias)
            nn.init.zeros_(self.out_proj.bias)

    def _heads(self, x: Tensor) -> Tensor:
        # (B, L, E) -> (B, H, L, Dh)
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)

    def forward(self, query: Tensor, key: Optional[Tensor] = None, value: Optional[Tensor] = None,
                key_padding_mask: Optional[Tensor] = None, causal: bool = False,
                positions_q: Optional[Tensor] = None, positions_k: Optional[Tensor] = None,
                cache: Optional[KVCache] = None, cache_layer: int = 0,
                cu_seqlens: Optional[Tensor] = None) -> Tensor:
        if key is None:
            key = query
        if value is None:
            value = key
        if not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        for name, t in (("query", query), ("key", key), ("value", value)):
            if t.dim() != 3 or t.shape[-1] != self.embed_dim:
                raise ValueError(f"{name} must be (batch, length, {self.embed_dim}), got "
                                 f"{list(t.shape)}")
        e = self.embed_dim
        w, b = self.in_proj_weight, self.in_proj_bias
        bq = b[:e] if b is not None else None
        bk = b[e:2 * e] if b is not None else None
        bv = b[2 * e:] if b is not None else None
        q = self._heads(F.linear(query, w[:e], bq))
        k = self._heads(F.linear(key, w[e:2 * e], bk))
        v = self._heads(F.linear(value, w[2 * e:], bv))
        query_start: Optional[int] = None
        if cache is not None and cu_seqlens is not None:
            raise ValueError("cu_seqlens (packed sequences) does not combine with cache: decode each sequence "
                             "with its own cache")
        if cache is not None:
            k, v = cache.update(cache_layer, k, v)
            query_start = k.shape[2] - q.shape[2]
        dropout_p = self.dropout if self.training else 0.0
        if self.positional is None:
            window_left, window_right = ops.window_bounds(self.window)
            out = ops.attention(q, k, v, key_padding_mask, causal, None, dropout_p,
                                window_left=window_left, window_right=window_right, cu_seqlens=cu_seqlens)
        else:
            out = self.positional.attend(q, k, v, key_padding_mask, causal, None, dropout_p,
                                         positions_q, positions_k, self.window, query_start, cu_seqlens)
        out = self.out_proj(out.transpose(1, 2).flatten(2))
        return out if self.batch_first else out.transpose(0, 1)
