"""Drop-in for ``positional-embeddings-pytorch`` (whatever60/w_positional_embeddings_pytorch):
``from seqops.compat.positional_embeddings_pytorch import T5PositionalEmbedding``.

Mirrors the GitHub HEAD API (commit e2176031, 2022-01-13), the one the README documents and
seqops implements: ``forward_input(input_, positions)`` returns ``input_`` plus the position
information, ``forward_attn(q, k, positions_q, positions_k)`` the unscaled logits
(B, H, Lq, Lk); seqops adds the fused ``attend(q, k, v, ...)``.

Names: ``PositionalEmbedding`` (the base class), ``SinusoidalPositionalEmbedding``,
``LearnedPositionalEmbedding``, ``TransformerXLPositionalEmbedding``, ``T5PositionalEmbedding``,
``UnifiedPositionalEmbedding`` (TUPE), ``EnformerPositionalEmbedding`` -- seqops.nn's classes
themselves -- and ``TUPE``, the name PyPI 0.0.1 (2021-12, older than HEAD) exported for TUPE.
``TUPE`` is the one adapter here: 0.0.1's constructor took ``embed_dim`` and no ``head_dim``
(and crashed building ``in_proj`` from head_dim=None); it builds the UnifiedPositionalEmbedding
with head_dim = embed_dim // num_heads (0.0.1's scaling used embed_dim / num_heads too).

Not supported: PyPI 0.0.1's other API drift -- its ``forward_input(positions, input_)`` (arguments
swapped, and it returned the bare embedding; call ``forward(positions)`` for that here).
Absent: ``DountUnifiedPositionalEmbedding`` (HEAD's 3-D-position TUPE variant: not implemented
in seqops), the helpers ``make_positions`` (utils.py) and ``relative_position_bucket`` (tupe.py),
which neither version exports from its ``__init__``, and the submodules.

Differences where the original was broken (every class constructs, Learned no longer recurses,
Transformer-XL shifts per batch and head, T5 / TUPE honour max_distance, Enformer returns
(B, H, Lq, Lk)): docs/compat.md, with the tests that pin them.
"""
from typing import Optional as _Optional

from seqops.nn import (EnformerPositionalEmbedding, LearnedPositionalEmbedding, PositionalEmbedding,
                       SinusoidalPositionalEmbedding, T5PositionalEmbedding, TransformerXLPositionalEmbedding,
                       UnifiedPositionalEmbedding)

__all__ = ["EnformerPositionalEmbedding", "LearnedPositionalEmbedding", "PositionalEmbedding",
           "SinusoidalPositionalEmbedding", "T5PositionalEmbedding", "TUPE", "TransformerXLPositionalEmbedding",
           "UnifiedPositionalEmbedding"]


class TUPE(UnifiedPositionalEmbedding):
    """UnifiedPositionalEmbedding with PyPI 0.0.1's constructor: ``embed_dim`` = num_heads * head_dim.

    Adapter (the only one in this namespace) because 0.0.1's ``TUPE`` took ``embed_dim`` where
    seqops' (and HEAD's) UnifiedPositionalEmbedding takes ``head_dim``; everything else (state_dict,
    forward_attn, attend) is UnifiedPositionalEmbedding's.
    """

    def __init__(self, *, embed_dim: int, num_heads: int, max_length: int, dropout_p: _Optional[float],
                 has_cls_token: bool = False, rel_pos_embed: bool = True, num_buckets: int = 32,
                 max_distance: int = 128, pos_scale_factor: float = 1, device=None, dtype=None) -> None:
        if num_heads <= 0 or embed_dim % num_heads != 0:
            raise ValueError(f"TUPE: embed_dim ({embed_dim}) must be a positive multiple of num_heads ({num_heads})")
        super().__init__(num_heads=num_heads, head_dim=embed_dim // num_heads, max_length=max_length,
                         dropout_p=dropout_p, has_cls_token=has_cls_token, rel_pos_embed=rel_pos_embed,
                         num_buckets=num_buckets, max_distance=max_distance, pos_scale_factor=pos_scale_factor,
                         device=device, dtype=dtype)
