"""The positional schemes' test cases: each module built with its original's constructor
arguments (or, for the schemes without an original, typical ones) and every parameter random, and
the head sizes they share."""
import torch

from seqops.nn import (EnformerPositionalEmbedding, LearnedPositionalEmbedding, RotaryPositionalEmbedding,
                       SinusoidalPositionalEmbedding, T5PositionalEmbedding, TransformerXLPositionalEmbedding,
                       UnifiedPositionalEmbedding)
from seqops.nn.positional import PositionalEmbedding

H, DH = 2, 8

# The originals' constructor keyword arguments (seeds-api §3).
ORIGINAL_KWARGS = {
    "sinusoidal": (SinusoidalPositionalEmbedding, dict(embed_dim=16, max_length=64, padding_idx=0)),
    "learned": (LearnedPositionalEmbedding, dict(max_length=64, embed_dim=16, padding_idx=0)),
    "txl": (TransformerXLPositionalEmbedding, dict(embed_dim=12, num_heads=H, head_dim=DH, dropout_p=0.0)),
    "t5": (T5PositionalEmbedding, dict(num_heads=H, num_buckets=8, max_distance=20)),
    "tupe": (UnifiedPositionalEmbedding, dict(num_heads=H, head_dim=DH, max_length=128, dropout_p=0.0,
                                              has_cls_token=False, rel_pos_embed=True, num_buckets=8,
                                              max_distance=20, pos_scale_factor=1)),
    "enformer": (EnformerPositionalEmbedding, dict(num_heads=H, head_dim=DH, dropout_p=0.0)),
}
# Schemes beyond the originals: rotary (partial rotation, a small base so that every pair turns
# several times over the tests' lengths).
EXTRA_KWARGS = {
    "rotary": (RotaryPositionalEmbedding, dict(head_dim=DH, num_heads=H, rotary_dim=6, base=50.0)),
}
SCHEMES = {**ORIGINAL_KWARGS, **EXTRA_KWARGS}
RELATIVE = ["txl", "t5", "tupe", "enformer", "rotary"]


def make(kind: str, dtype=torch.float32) -> PositionalEmbedding:
    """A module with every parameter random (the originals zero-initialize some)."""
    cls, kwargs = SCHEMES[kind]
    m = cls(**kwargs).to(dtype)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name in ("content_bias", "pos_embed_bias", "r_w_bias", "r_r_bias"):
                p.normal_(0, 0.5)
    return m.eval()
