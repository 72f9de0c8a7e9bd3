"""Compressive Transformer layers (Rae et al. 2019, arXiv 1911.05507) with labml's constructor
arguments and state_dict keys, batch-first, on the fused seqops ops.

Each layer attends over [compressed memory; memory; current segment] with Transformer-XL relative
positions (RelativeMultiHeadAttention). A compressed slot counts as one position, as in labml
(the paper does not say otherwise). Pre-LayerNorm as labml (the paper is post-LN): memories are
stored un-normalized and normalized with the layer's current norm_self_attn when used.

Differences from labml_nn.transformers.compressive, all deliberate (each with its test in
docs/compat.md):
- batch-first (B, L, d_model); a bool key-padding mask (B, Lc + Lm + Lq) (True = may attend)
  plus ``causal`` instead of labml's (Lq, Lk, B) mask;
- CompressiveTransformer's layers are initialized independently: labml deep-copies one layer, so
  all layers start with identical weights; here copy 0 keeps the given layer's weights and every
  other copy is re-initialized (each submodule's reset_parameters);
- a compressed memory given without a memory is used (labml ignored c_mem when mem was None);
- compression, memory bookkeeping and the reconstruction loss live in CompressiveMemory and
  AttentionReconstructionLoss (labml leaves the first to its trainer).
"""
import copy
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import CompressiveFeedForward, RelativeMultiHeadAttention
from ..dropout import Dropout


class CompressiveTransformerLayer(nn.Module):
    """One pre-LN layer: x + attn(LN(x) over LN([c_mem; mem]) ++ LN(x)), then x + FFN(LN(x)).

    forward(x (B, Lq, d_model), mem (B, Lm, d_model) or None, c_mem (B, Lc, d_model) or None,
    mask bool (B, Lc + Lm + Lq) or None, causal=True) -> (B, Lq, d_model). Memories are the
    un-normalized inputs of this layer for earlier positions, oldest first. With causal, token i
    sees every memory slot and the current tokens up to i.
    """

    def __init__(self, *, d_model: int, self_attn: RelativeMultiHeadAttention,
                 feed_forward: CompressiveFeedForward, dropout_prob: float, compress: nn.Module,
                 device=None, dtype=None) -> None:
        super().__init__()
        self.compress = compress
        self.size = d_model
        self.self_attn = self_attn
        self.feed_forward = feed_forward
        self.dropout = Dropout(dropout_prob)
        self.norm_self_attn = nn.LayerNorm([d_model], device=device, dtype=dtype)
        self.norm_ff = nn.LayerNorm([d_model], device=device, dtype=dtype)

    def keys_values(self, z: Tensor, mem: Optional[Tensor], c_mem: Optional[Tensor]) -> Tuple[Tensor, Tensor]:
        """Keys and values (B, H, Lc + Lm + Lq, d_k) of [LN(c_mem); LN(mem); z], z = LN(x).

        The memories carry no gradient, so their LayerNorm is folded into the projection
        (RelativeMultiHeadAttention.kv_weights): the same values, and the backward spends no GEMM
        on the memories' input gradient, only on the weights'. Keys and values come out of one
        GEMM per part, and the concatenation leaves them contiguous for the attention op.
        """
        attn = self.self_attn
        weight, bias = attn.kv_weights()
        k, v = attn.key_value(z, weight, bias)
        if c_mem is None and mem is None:
            return k, v
        ln = self.norm_self_attn
        mem_weight, mem_bias = attn.kv_weights(ln.weight, ln.bias)
        keys: List[Tensor] = []
        values: List[Tensor] = []
        for m in (c_mem, mem):
            if m is not None:
                standardized = F.layer_norm(m, ln.normalized_shape, None, None, ln.eps)
                km, vm = attn.key_value(standardized, mem_weight, mem_bias)
                keys.append(km)
                values.append(vm)
        keys.append(k)
        values.append(v)
        return torch.cat(keys, 2), torch.cat(values, 2)

    def forward(self, x: Tensor, mem: Optional[Tensor] = None, c_mem: Optional[Tensor] = None,
                mask: Optional[Tensor] = None, causal: bool = True) -> Tensor:
        z = self.norm_self_attn(x)
        k, v = self.keys_values(z, mem, c_mem)
        x = x + self.dropout(self.self_attn.attend(self.self_attn.query(z), k, v, mask, causal))
        return x + self.dropout(self.feed_forward(self.norm_ff(x)))


def _reinitialize(module: nn.Module) -> None:
    """Fresh values for every parameter of `module` that its submodules know how to reset."""
    for m in module.modules():
        reset = getattr(m, "reset_parameters", None)
        if callable(reset):
            reset()


class CompressiveTransformer(nn.Module):
    """n_layers layers built from ``layer`` (independently initialized, see module doc) and a final
    LayerNorm ``norm``.

    forward(x (B, L, d_model), mem: list of n_layers (B, Lm, d_model) or None, c_mem: list or
    None, mask bool (B, Lc + Lm + L) or None, causal=True) -> (norm(out) (B, L, d_model),
    new_mem), new_mem[i] being the detached input of layer i (what CompressiveMemory.update
    stores).
    """

    def __init__(self, layer: CompressiveTransformerLayer, n_layers: int) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        copies = [copy.deepcopy(layer) for _ in range(n_layers)]
        for c in copies[1:]:
            _reinitialize(c)
        self.layers = nn.ModuleList(copies)
        self.norm = nn.LayerNorm([layer.size], device=layer.norm_ff.weight.device,
                                 dtype=layer.norm_ff.weight.dtype)

    def forward(self, x: Tensor, mem: Optional[List[Tensor]] = None, c_mem: Optional[List[Tensor]] = None,
                mask: Optional[Tensor] = None, causal: bool = True) -> Tuple[Tensor, List[Tensor]]:
        new_mem: List[Tensor] = []
        for i, layer in enumerate(self.layers):
            new_mem.append(x.detach())
            m = mem[i] if mem is not None and len(mem) > 0 else None
            cm = c_mem[i] if c_mem is not None and len(c_mem) > 0 else None
            x = layer(x, m, cm, mask, causal)
        return self.norm(x), new_mem
