"""The attention-reconstruction loss of the Compressive Transformer (Rae et al. 2019, §3.2)."""
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ... import ops
from .model import CompressiveTransformerLayer
from .attention import detached_projection


class AttentionReconstructionLoss:
    """Sum over layers of MSE(attn(h, c_mem), attn(h, mem)) with c_mem = layer.compress(mem).

    attn is the layer's content attention -- its query/key/value projections and scale, no
    relative positions, no output projection, no dropout, as in the paper and labml -- computed
    with the fused seqops attention. h, mem and every parameter except the compression
    function's are cut from the graph (stop-gradient; layer norm and projections use detached
    weights), so the gradient reaches only layer.compress: the same optimizer can add this loss
    to the LM loss, as labml's trainer does.

    __call__(h, mem, mask=None, compressed=None): h[i] (B, Lq, D) layer i's inputs for the
    segment (the queries), mem[i] (B, n * rate, D) the memories that were just compressed, mask
    (B, n * rate) bool their valid entries (labml has no mask), compressed[i] = layer i's
    compress(mem[i]) if already computed with its graph (the fields of ReconstructionInputs from
    CompressiveMemory.update). Returns a scalar tensor.
    """

    def __init__(self, layers: nn.ModuleList) -> None:
        self.layers = layers

    @staticmethod
    def _norm(layer: CompressiveTransformerLayer, x: Tensor) -> Tensor:
        ln = layer.norm_self_attn
        weight = ln.weight.detach() if ln.weight is not None else None
        bias = ln.bias.detach() if ln.bias is not None else None
        return F.layer_norm(x, ln.normalized_shape, weight, bias, ln.eps)

    def calc_loss(self, layer: CompressiveTransformerLayer, h: Tensor, mem: Tensor,
                  mask: Optional[Tensor] = None, compressed: Optional[Tensor] = None) -> Tensor:
        h, mem = h.detach(), mem.detach()
        # The only path that carries a gradient: f_c(mem), or the same already computed.
        c_mem = layer.compress(mem) if compressed is None else compressed
        attn = layer.self_attn
        q = detached_projection(attn.query, self._norm(layer, h))
        with torch.no_grad():
            m = self._norm(layer, mem)
            target = ops.attention(q, detached_projection(attn.key, m), detached_projection(attn.value, m),
                                   mask, False, attn.scale)
        c_mask = None
        if mask is not None:
            c_mask = mask.view(mask.shape[0], c_mem.shape[1], -1).any(-1)
        c = self._norm(layer, c_mem)
        predicted = ops.attention(q, detached_projection(attn.key, c), detached_projection(attn.value, c),
                                  c_mask, False, attn.scale)
        return F.mse_loss(predicted, target)

    def __call__(self, h: List[Tensor], mem: List[Tensor], mask: Optional[Tensor] = None,
                 compressed: Optional[List[Tensor]] = None) -> Tensor:
        if len(h) != len(self.layers) or len(mem) != len(self.layers):
            raise ValueError(f"need one h and one mem per layer ({len(self.layers)}), got {len(h)} and {len(mem)}")
        losses = [self.calc_loss(layer, h[n], mem[n], mask, None if compressed is None else compressed[n])
                  for n, layer in enumerate(self.layers)]
        return torch.stack(losses).sum()
