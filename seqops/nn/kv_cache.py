"""The key / value cache of incremental decoding (seqops.nn.MultiheadAttention(..., cache=)).

Each layer's keys and values live in one (B, Hk, capacity, d) buffer per tensor; ``update``
writes the new tokens after the ones already there and returns the filled prefix as views, which
the CPU attention kernel reads in place (rows need unit-stride columns only), so a decoding step
reads the cache once and copies only the new tokens.
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor


@torch.jit.script
class KVCache:
    """Keys and values of every attention layer, appended to as tokens are decoded.

    ``update(layer, k, v)`` appends k (B, Hk, L_new, d) and v (B, Hk, L_new, dv) to layer
    ``layer``'s cache (layers are numbered 0, 1, ... in the order they first appear) and returns
    every key and value so far, (B, Hk, L, d) and (B, Hk, L, dv). Without ``capacity`` the
    buffers grow by doubling (amortized O(1) copies per token); with ``capacity`` they are
    allocated once at that length and never grow, the variant for torch.compile (no
    reallocation in the step), and appending past it raises.

    A TorchScript class: scripted models use it inside their scripted decoding loop (TorchScript
    copies a cache handed in from Python, so updates made in scripted code would not come back).
    """

    def __init__(self, capacity: Optional[int] = None):
        if capacity is not None and capacity < 1:
            raise ValueError("KVCache capacity must be >= 1 (or None to grow), got " + str(capacity))
        self.capacity = capacity
        self.keys: List[Tensor] = []
        self.values: List[Tensor] = []
        self.lengths: List[int] = []

    def num_layers(self) -> int:
        return len(self.lengths)

    def length(self, layer: int = 0) -> int:
        """Tokens cached in ``layer`` (0 before its first update)."""
        return self.lengths[layer] if layer < len(self.lengths) else 0

    def update(self, layer: int, k: Tensor, v: Tensor) -> Tuple[Tensor, Tensor]:
        if layer < 0 or layer > len(self.lengths):
            raise ValueError("KVCache.update: layer must be an existing layer or the next one ("
                             + str(len(self.lengths)) + "), got " + str(layer))
        if k.dim() != 4 or v.dim() != 4 or k.shape[:3] != v.shape[:3]:
            raise ValueError("KVCache.update: k and v must be (batch, heads, new tokens, head_dim) "
                             "with equal first three sizes, got " + str(k.shape) + " and " + str(v.shape))
        new = k.shape[2]
        capacity = self.capacity  # a local: TorchScript refines Optional locals, not attributes
        if layer == len(self.lengths):
            size = new if capacity is None else capacity
            self.keys.append(k.new_empty([k.shape[0], k.shape[1], max(size, 1), k.shape[3]]))
            self.values.append(v.new_empty([v.shape[0], v.shape[1], max(size, 1), v.shape[3]]))
            self.lengths.append(0)
        keys, values, n = self.keys[layer], self.values[layer], self.lengths[layer]
        for name, t, buf in (("k", k, keys), ("v", v, values)):
            if (t.shape[0] != buf.shape[0] or t.shape[1] != buf.shape[1] or t.shape[3] != buf.shape[3]
                    or t.dtype != buf.dtype or t.device != buf.device):
                raise ValueError("KVCache.update: " + name + " of layer " + str(layer) + " must be (" + str(buf.shape[0])
                                 + ", " + str(buf.shape[1]) + ", L, " + str(buf.shape[3]) + "), "
                                 + str(buf.dtype) + " on " + str(buf.device) + " like the cached ones, got "
                                 + str(t.shape) + ", " + str(t.dtype) + " on " + str(t.device))
        if n + new > keys.shape[2]:
            if capacity is not None:
                raise ValueError("KVCache: layer " + str(layer) + " holds " + str(n) + " of its capacity "
                                 + str(capacity) + " tokens; " + str(new) + " more do not fit")
            size = max(2 * keys.shape[2], n + new)
            grown_k = keys.new_empty([keys.shape[0], keys.shape[1], size, keys.shape[3]])
            grown_v = values.new_empty([values.shape[0], values.shape[1], size, values.shape[3]])
            grown_k[:, :, :n] = keys[:, :, :n]
            grown_v[:, :, :n] = values[:, :, :n]
            keys, values = grown_k, grown_v
            self.keys[layer], self.values[layer] = keys, values
        keys[:, :, n:n + new] = k
        values[:, :, n:n + new] = v
        self.lengths[layer] = n + new
        return keys[:, :, :n + new], values[:, :, :n + new]

    def reset(self) -> None:
        """Forgets every token (the buffers stay allocated)."""
        for i in range(len(self.lengths)):
            self.lengths[i] = 0
