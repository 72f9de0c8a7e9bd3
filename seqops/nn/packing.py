"""Packed variable-length batches: several sequences laid end to end in one row of tokens, with
the offsets ``cu_seqlens`` (num_sequences + 1,) that seqops.ops.attention (and
MultiheadAttention, the positional ``attend``) take so that no query attends across a sequence
boundary and positions restart at each sequence. Packing drops the padding of a batch of
sequences of different lengths, and with it the padded (query, key) pairs' work."""
from typing import List, Sequence, Tuple

import torch
from torch import Tensor


def pack_sequences(sequences: Sequence[Tensor]) -> Tuple[Tensor, Tensor]:
    """Sequences (L_i, ...) (same trailing sizes, dtype and device) -> (packed (1, sum L_i, ...),
    cu_seqlens int64 (len(sequences) + 1,) on the packed tensor's device)."""
    if len(sequences) == 0:
        raise ValueError("pack_sequences needs at least one sequence")
    for i, s in enumerate(sequences):
        if s.dim() < 1:
            raise ValueError(f"sequences[{i}] must have a length dimension, got shape {list(s.shape)}")
    lengths = torch.tensor([s.shape[0] for s in sequences])
    cu_seqlens = torch.cat([lengths.new_zeros(1), lengths.cumsum(0)]).to(sequences[0].device)
    return torch.cat(list(sequences), dim=0).unsqueeze(0), cu_seqlens


def unpack_sequences(packed: Tensor, cu_seqlens: Tensor) -> List[Tensor]:
    """The inverse of pack_sequences: packed (1, T, ...) -> [(L_i, ...)] (views)."""
    if packed.dim() < 2 or packed.shape[0] != 1:
        raise ValueError(f"packed must be (1, tokens, ...), got shape {list(packed.shape)}")
    offsets = cu_seqlens.tolist()
    return [packed[0, start:end] for start, end in zip(offsets, offsets[1:])]


def packed_positions(cu_seqlens: Tensor) -> Tensor:
    """Each token's position within its sequence, int64 (cu_seqlens[-1],): 0, 1, .., L_0 - 1, 0, 1, ...
    (the positions absolute schemes' forward_input and explicit positions take for a packed row)."""
    cu = cu_seqlens.to(torch.int64)
    lengths = cu[1:] - cu[:-1]
    total = int(cu[-1])
    return torch.arange(total, device=cu.device) - cu[:-1].repeat_interleave(lengths, output_size=total)
