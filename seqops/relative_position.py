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
