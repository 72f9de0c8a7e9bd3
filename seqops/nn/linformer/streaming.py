"""Streamed Linformer layers: long sequences without full-length intermediates.

A stage is one attention block and the position-wise (feed-forward) blocks after it. Its keys
are prepared once: E K and F V accumulated over spans of the source, so the full K and V are
never held (E applied to the source first where one E serves every head), then folded into the
query / output projections where that is cheaper (folded.py); full attention keeps K and V.
Then each span of queries runs query projection -> attention -> w_o -> residual + norm ->
feed-forward blocks, and only the stage's (B, L, C) output is kept. Causal spans start on chunk
boundaries, so a span's own keys and the finished chunks' compressed rows are all it needs.

Under autograd (checkpoint levels C1 and C2) every span, and every span of the key
compression, is a non-reentrant checkpoint: the backward recomputes it from its input span, so
training keeps O(L * C) per stage instead of the layers' activations, for the recomputation
C1 already pays. Outputs equal the unstreamed layers' up to float rounding.
"""
from dataclasses import dataclass
from typing import List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .attention import MHAttention, attend, chunked_causal_attend

# Bytes of one span's widest intermediates: small next to a long sequence's activations, and
# about 1000 rows for a 512-wide model (256-row spans ran its training step 25 % slower).
SPAN_BYTES = 32 << 20
MIN_SPAN = 256


@dataclass
class StageKeys:
    """What every query span of one attention reads. kind: "folded" (keys / values (B, H R, C)),
    "compressed" or "causal" (kbar / vbar (B, R, H, d)), "full" (K / V (B, M, H, d));
    valid: the compressed rows that read a kept position (B, R), or full attention's key mask."""
    kind: str
    keys: Tensor
    values: Tensor
    valid: Optional[Tensor]


def stage_keys(mha: MHAttention, src: Tensor, src_mask: Optional[Tensor], shared_weight: Optional[Tensor],
               shared_bias: Optional[Tensor], span: int, checkpointed: bool) -> StageKeys:
    heads = mha.heads
    if heads.full_attention:
        B, M = src.shape[0], src.shape[1]
        H, d = mha.nhead, mha.dim
        kv = F.linear(src, mha.in_proj_weight[H * d:]).view(B, M, 2 * H, d)
        return StageKeys("full", kv[:, :, :H], kv[:, :, H:], src_mask)
    kbar, vbar, valid = mha.compress(src, src_mask, shared_weight, shared_bias, span, checkpointed)
    if mha.folds():
        keys, values = mha.fold(kbar, vbar)
        return StageKeys("folded", keys, values, valid)
    return StageKeys("causal" if heads.causal else "compressed", kbar, vbar, valid)


def attend_span(mha: MHAttention, keys: StageKeys, x: Tensor, start: int, src_mask: Optional[Tensor],
                shared_weight: Optional[Tensor]) -> Tensor:
    """The attention branch (before its dropout) for the queries x (B, S, C) at positions
    [start, start + S)."""
    if keys.kind == "folded":
        return mha.attend_folded(x, keys.keys, keys.values, keys.valid, False)
    heads = mha.heads
    q = mha.queries(x)
    if keys.kind == "compressed":
        out = heads.attend_compressed(q, keys.keys, keys.values, keys.valid, False)
    elif keys.kind == "causal":
        H, d, S = mha.nhead, mha.dim, x.shape[1]
        kv = F.linear(x, mha.in_proj_weight[H * d:]).view(x.shape[0], S, 2 * H, d)
        rows_per_chunk, chunk = heads.chunks(shared_weight)
        span_mask = None if src_mask is None else src_mask[:, start:start + S]
        out, _ = chunked_causal_attend(q, kv[:, :, :H], kv[:, :, H:], keys.keys, keys.values, rows_per_chunk, chunk,
                                       keys.valid, span_mask, heads.scale, heads._dropout(), False, start // chunk)
    elif heads.causal:  # exact causal attention: the keys up to the span's last query
        end = start + x.shape[1]
        mask = None if keys.valid is None else keys.valid[:, :end]
        out, _ = attend(q, keys.keys[:, :end], keys.values[:, :end], mask, True, heads.scale, heads._dropout(), False)
    else:
        out, _ = attend(q, keys.keys, keys.values, keys.valid, False, heads.scale, heads._dropout(), False)
    return mha.project_out(out)


def span_length(mha: MHAttention, feed_forward_width: int, requested: Optional[int], shared_weight: Optional[Tensor],
                dtype: torch.dtype) -> int:
    """Queries per span: ``requested``, or about SPAN_BYTES of the widest per-query intermediates
    (a power of two, at least MIN_SPAN); rounded up to whole causal chunks, or convolution
    windows, which a span must not cut."""
    if requested is None:
        H, C = mha.nhead, mha.channels
        widest = 2 * H * mha.dim_k if mha.folds() else 4 * H * mha.dim
        row_bytes = (widest + feed_forward_width + 4 * C) * torch.empty((), dtype=dtype).element_size()
        requested = max(MIN_SPAN, 1 << max(0, (SPAN_BYTES // row_bytes).bit_length() - 1))
    align = 1
    if not mha.heads.full_attention:
        align = mha.heads.chunks(shared_weight)[1] if mha.heads.causal else max(1, mha.heads.kernel(shared_weight))
    return -(-requested // align) * align


def run_stage(blocks: List[nn.Module], tensor: Tensor, input_mask: Optional[Tensor], embeddings: Optional[Tensor],
              embeddings_mask: Optional[Tensor], shared_weight: Optional[Tensor], shared_bias: Optional[Tensor],
              requested_span: Optional[int], checkpointed: bool) -> Tensor:
    """One stage (an AttentionResidual, then FeedForwardResidual blocks) over tensor (B, L, C)."""
    attention, tail = blocks[0], blocks[1:]
    mha = attention.fn
    if attention.cross:
        src, src_mask = mha.source(tensor, None, embeddings, embeddings_mask)
    else:
        src, src_mask = mha.source(tensor, input_mask, None, None)
    ff_width = max([block.fn.w_1.out_features for block in tail], default=0)
    span = span_length(mha, ff_width, requested_span, shared_weight, tensor.dtype)
    keys = stage_keys(mha, src, src_mask, shared_weight, shared_bias, span, checkpointed)

    def stage_span(x: Tensor, start: int) -> Tensor:
        y = attention.combine(x, mha.mh_dropout(attend_span(mha, keys, x, start, src_mask, shared_weight)))
        for block in tail:
            y = block.combine(y, block.fn(y))
        return y

    outputs = []
    # One split, not a slice per span: its backward concatenates the span gradients once, where
    # each slice's would scatter into a zero tensor of the full length.
    for index, x in enumerate(torch.split(tensor, span, 1)):
        start = index * span
        outputs.append(checkpoint(stage_span, x, start, use_reentrant=False) if checkpointed else stage_span(x, start))
    return torch.cat(outputs, 1)


def stages(layers: nn.ModuleList) -> List[List[nn.Module]]:
    """The residual blocks grouped into stages: each attention block with the blocks after it."""
    grouped: List[List[nn.Module]] = []
    for block in layers:
        if isinstance(block.fn, MHAttention) or not grouped:
            grouped.append([block])
        else:
            grouped[-1].append(block)
    return grouped
