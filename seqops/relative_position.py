"""Relative-position math shared by the modules and the float64 reference: the T5 bucket of a
relative position, and the relative positions of a (query, key) grid. The kernels implement the
same functions (csrc: relative_position.h)."""
import math
from typing import Optional

import torch
from torch import Tensor


def t5_bucket(relative_position: Tensor, bidirectional: bool = True, num_buckets: int = 32,
              max_distance: int = 128) -> Tensor:
    """T5's bucket of r = key position - query position (long tensor in, long tensor out).

    The log-spaced part is computed in float64, as the kernels do (the T5 codebases use
    float32; the two agree except where float32 rounding crosses a bucket edge)."""
    n = -relative_position
    bucket = torch.zeros_like(n)
    if bidirectional:
        num_buckets = num_buckets // 2
        bucket = bucket + (n < 0).long() * num_buckets
        n = n.abs()
    else:
        n = n.clamp(min=0)
    max_exact = num_buckets // 2
    ratio = torch.log(n.double().clamp(min=1) / max_exact) / math.log(max_distance / max_exact)
    large = (max_exact + (ratio * (num_buckets - max_exact)).long()).clamp(max=num_buckets - 1)
    return bucket + torch.where(n < max_exact, n, large)


def relative_positions(len_q: int, len_k: int, query_offset: Optional[int] = None,
                       device=None) -> Tensor:
    """(Lq, Lk) long tensor r[i, j] = j - (i + query_offset); query_offset defaults to Lk - Lq."""
    if query_offset is None:
        query_offset = len_k - len_q
    i = torch.arange(len_q, device=device)[:, None]
    j = torch.arange(len_k, device=device)[None, :]
    return j - (i + query_offset)



def rotate(x: Tensor, positions: Tensor, rotary_dim: int, base: float = 10000.0,
           interleaved: bool = False) -> Tensor:
    """Rotary position embedding (RoFormer) of x (..., L, D) at positions (L,), or (B, L) for x
    (B, H, L, D): each pair of the first rotary_dim features turned by the angle
    position * base^(-2p / rotary_dim), p the pair's index; pairs (2p, 2p + 1) when interleaved
    (RoFormer, GPT-J), (p, p + rotary_dim / 2) otherwise (GPT-NeoX, LLaMA). The angles are
    computed in float64, as the kernels' tables are (csrc: attention/rotary.h); the rotation in
    x's dtype."""
    half = rotary_dim // 2
    exponent = torch.arange(half, dtype=torch.float64, device=x.device) * (-2.0 / rotary_dim)
    theta = torch.pow(torch.full_like(exponent, base), exponent)
    angle = positions.to(device=x.device, dtype=torch.float64).unsqueeze(-1) * theta  # (.., L, half)
    if angle.dim() == 3:  # (B, L, half) -> (B, 1, L, half) against (B, H, L, D)
        angle = angle.unsqueeze(1)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    rot, rest = x[..., :rotary_dim], x[..., rotary_dim:]
    if interleaved:
        a, b = rot[..., 0::2], rot[..., 1::2]
        turned = torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)
    else:
        a, b = rot[..., :half], rot[..., half:]
        turned = torch.cat([a * cos - b * sin, a * sin + b * cos], dim=-1)
    return torch.cat([turned, rest], dim=-1)
