"""Linformer attention with fused heads: ``LinearAttentionHead`` and ``MHAttention``.

Layout: per-head tensors are (B, L, H, d) (a fused Linear's output unflattened), so one GEMM
projects every head, E/F act on all heads as one (shared projection) or a batched (per-head)
GEMM, and the softmax over the compressed keys runs through ``seqops.ops.attention``.

Behaviour (how it differs from linformer-pytorch, with the pinning tests: docs/compat.md):

- **Causal.** causal=True uses the chunked causal projection of ``projection.causal_chunks``:
  compressed row r only reads its own chunk, and a query sees the rows of finished chunks plus
  the exact causal keys of its own chunk. Full attention with causal=True is exact causal
  attention in the fused kernel.
- **Masks.** Masked positions are zeroed *before* E/F (so they contribute to no compressed row),
  excluded as keys in full attention and in the causal local chunk, and compressed rows that read
  no kept position (convolution windows or causal chunks made only of padding) are not attended.
- Heads are fused: one Linear projects every head.
- For a projection shared by all heads (headwise, kv, layerwise sharing; learnable or no_params)
  and no causality, E is applied to the input before the key/value Linear:
  E (x W^T) + b = (E x) W^T + b, which is R * L * D + R * D * 2Hd multiply-adds instead of
  L * D * 2Hd + 2 R * L * Hd, and kv sharing compresses x once for both keys and values.
"""
from typing import List, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ... import ops
from ..dropout import Dropout
from .folded import attend_folded, fold, folding_pays
from .projection import (METHODS, SequenceProjection, add_bias, causal_chunks, check_choice,
                                   get_EF, num_rows, project, row_support, valid_rows)
from .tracing import leading

SHARING = ("none", "headwise", "kv", "layerwise")
CHECKPOINT_LEVELS = ("C0", "C1", "C2")


def check_mask(name: str, mask: Optional[Tensor], batch: int, length: int) -> None:
    """Masks are bool (batch, length), True = keep."""
    if mask is None:
        return
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor (True = keep), got {mask.dtype}; use {name}.bool()")
    if mask.dim() != 2 or mask.shape[0] != batch or mask.shape[1] != length:
        raise ValueError(f"{name} must have shape ({batch}, {length}), got {list(mask.shape)}")


def causal_flag(causal_mask: Union[None, bool, Tensor]) -> bool:
    """The original passed an (n, k) bool tensor; here True/False (None = False)."""
    if isinstance(causal_mask, Tensor):
        raise TypeError("causal_mask must be True, False or None: the original's (n, k) mask tensor leaked "
                        "future positions through E/F; seqops builds true causal attention from causal_mask=True")
    return bool(causal_mask)


def masked_probs(q: Tensor, k: Tensor, keep: Tensor, scale: float) -> Tensor:
    """softmax over keys of scale * q.k for q (B, H, Lq, d), k (B, H, Lk, d), keep broadcastable
    to (B, H, Lq, Lk); queries that see no key get zeros. For visualization only."""
    logits = scale * torch.matmul(q, k.transpose(-1, -2))
    return torch.softmax(logits.masked_fill(~keep, float("-inf")), dim=-1).nan_to_num(0.0)


def attend(q: Tensor, k: Tensor, v: Tensor, key_mask: Optional[Tensor], causal: bool, scale: float,
           dropout_p: float, visualize: bool) -> Tuple[Tensor, Optional[Tensor]]:
    """seqops.ops.attention on (B, L, H, d) tensors: out (B, Lq, H, d), and the attention
    probabilities (B, H, Lq, Lk) (without dropout) when ``visualize``."""
    qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
    out = ops.attention(qh, kh, vh, key_mask, causal, scale, dropout_p).transpose(1, 2)
    if not visualize:
        return out, None
    Lq, Lk = q.shape[1], k.shape[1]
    keep = torch.ones(1, 1, Lq, Lk, dtype=torch.bool, device=q.device)
    if causal:
        keep = keep.tril(Lk - Lq)
    if key_mask is not None:
        keep = keep & key_mask[:, None, None, :]
    return out, masked_probs(qh, kh, keep, scale)


def chunked_causal_attend(q: Tensor, k: Tensor, v: Tensor, kbar: Tensor, vbar: Tensor, rows_per_chunk: int,
                          chunk: int, kbar_valid: Optional[Tensor], mask: Optional[Tensor], scale: float,
                          dropout_p: float, visualize: bool, first_chunk: int = 0) -> Tuple[Tensor, Optional[Tensor]]:
    """Causal Linformer attention (see causal_chunks): q, k, v (B, L, H, d), compressed kbar, vbar
    (B, R, H, d) whose row r reads chunk r // rows_per_chunk only. Each chunk of queries becomes one
    batch entry of the fused op, with keys [kbar ; the chunk's own keys], the rows of unfinished
    chunks masked out and causal=True on the local part. Returns (B, L, H, d) and, when
    ``visualize``, probabilities (B, H, L, R + chunk): compressed rows, then the query's chunk.
    q, k, v may be one span of the sequence starting at chunk ``first_chunk`` (streamed layers)."""
    B, L, H, d = q.shape
    R = kbar.shape[1]
    G = -(-L // chunk)
    pad = G * chunk - L
    # Padded unconditionally (pad may be 0): a branch on the length would be a guard under export.
    q, k, v = F.pad(q, (0, 0, 0, 0, 0, pad)), F.pad(k, (0, 0, 0, 0, 0, pad)), F.pad(v, (0, 0, 0, 0, 0, pad))
    queries = q.reshape(B * G, chunk, H, d)
    keys = torch.cat([kbar[:, None].expand(B, G, R, H, d), k.view(B, G, chunk, H, d)], 2).view(B * G, R + chunk, H, d)
    values = torch.cat([vbar[:, None].expand(B, G, R, H, d), v.view(B, G, chunk, H, d)], 2).view(B * G, R + chunk, H, d)
    row_chunk = torch.arange(R, device=q.device) // rows_per_chunk
    seen = (row_chunk[None, :] < torch.arange(first_chunk, first_chunk + G, device=q.device)[:, None])[None]
    seen = seen.expand(B, G, R)
    if kbar_valid is not None:
        seen = seen & kbar_valid[:, None, :]
    if mask is None:
        local = torch.ones(B, G, chunk, dtype=torch.bool, device=q.device)
    else:
        local = F.pad(mask, (0, pad), value=False).view(B, G, chunk)
    key_mask = torch.cat([seen, local], 2).view(B * G, R + chunk)
    out, probs = attend(queries, keys, values, key_mask, True, scale, dropout_p, visualize)
    out = leading(out.reshape(B, G * chunk, H, d), 1, L)
    if probs is not None:
        probs = probs.view(B, G, H, chunk, R + chunk).transpose(1, 2).reshape(B, H, G * chunk, R + chunk)[:, :, :L]
    return out, probs


class LinearAttentionHead(nn.Module):
    """Linformer attention over the compressed keys E K and values F V, for one head or H fused.

    Args (the original's):
        dim: head width d (scale 1/sqrt(d)). dropout: attention dropout (training mode).
        E_proj, F_proj: ``SequenceProjection`` (``get_EF``); F_proj may be E_proj (kv sharing);
            None with full_attention, or when the projection is shared across layers and passed to
            forward as ``shared_weight`` / ``shared_bias`` (then give input_size and dim_k).
        causal_mask: True for causal attention (see module docstring); a tensor is refused.
        full_attention: plain softmax attention over all keys, no E/F.
    forward(Q, K, V, input_mask=None, visualize=False, shared_weight=None, shared_bias=None):
        Q (B, Lq, d) as in the original, or (B, Lq, H, d); K, V the same with Lk <= input_size
        (Lk = Lq when causal). input_mask bool (B, Lk), True = keep. Returns Q's shape. With
        ``visualize`` the attention probabilities (B, H, Lq, keys) are kept in ``P_bar`` (keys: R
        compressed rows; Lk with full attention; R + chunk when causal, see chunked_causal_attend).
    """

    P_bar: Optional[Tensor]

    def __init__(self, dim: int, dropout: float, E_proj: Optional[SequenceProjection],
                 F_proj: Optional[SequenceProjection], causal_mask: Union[None, bool, Tensor] = None,
                 full_attention: bool = False, input_size: Optional[int] = None,
                 dim_k: Optional[int] = None) -> None:
        super().__init__()
        for name, proj in (("E_proj", E_proj), ("F_proj", F_proj)):
            if proj is not None and not isinstance(proj, SequenceProjection):
                raise TypeError(f"{name} must be a seqops.nn.linformer SequenceProjection (from get_EF), got "
                                f"{type(proj).__name__}")
        if E_proj is None and F_proj is not None:
            raise ValueError("F_proj without E_proj: give E_proj (F_proj alone is not a sharing mode)")
        self.dim = dim
        self.dropout_p = float(dropout)
        self.scale = dim ** -0.5
        self.causal = causal_flag(causal_mask)
        self.full_attention = full_attention
        self.E = None if full_attention else E_proj
        self.F = None if full_attention or F_proj is E_proj else F_proj  # None: F = E
        if self.E is not None:
            input_size, dim_k = self.E.input_size, self.E.dim_k
        if self.E is not None and self.F is not None and (
                (self.F.input_size, self.F.dim_k, self.F.method) != (input_size, dim_k, self.E.method)):
            raise ValueError(f"E_proj and F_proj differ: input_size/dim_k/method {input_size}/{dim_k}/"
                             f"{self.E.method} vs {self.F.input_size}/{self.F.dim_k}/{self.F.method}")
        if not full_attention and (input_size is None or dim_k is None):
            raise ValueError("LinearAttentionHead without E_proj needs input_size and dim_k (the projection "
                             "shared across layers is passed to forward)")
        self.input_size = input_size if input_size is not None else 0
        self.dim_k = dim_k if dim_k is not None else 0
        self.P_bar = None

    def _projections(self, shared_weight: Optional[Tensor], shared_bias: Optional[Tensor]
                     ) -> Tuple[Tensor, Optional[Tensor], Tensor, Optional[Tensor]]:
        """(E weight, E bias, F weight, F bias), own or shared across layers."""
        if self.E is not None:
            e_w, e_b = self.E.weight, self.E.bias
        elif shared_weight is not None:
            e_w, e_b = shared_weight, shared_bias
        else:
            raise ValueError("this attention's E/F projection is shared across layers: pass shared_weight "
                             "(Linformer does)")
        if self.F is not None:
            return e_w, e_b, self.F.weight, self.F.bias
        return e_w, e_b, e_w, e_b

    def _check_length(self, length: int) -> None:
        if not self.full_attention and length > self.input_size:
            raise ValueError(f"sequence length {length} is longer than input_size={self.input_size} "
                             f"(E/F project at most input_size positions)")

    def forward(self, Q: Tensor, K: Tensor, V: Tensor, input_mask: Optional[Tensor] = None,
                visualize: bool = False, shared_weight: Optional[Tensor] = None,
                shared_bias: Optional[Tensor] = None) -> Tensor:
        one_head = Q.dim() == 3
        if one_head:
            Q, K, V = Q.unsqueeze(2), K.unsqueeze(2), V.unsqueeze(2)
        if Q.dim() != 4 or K.shape != V.shape or Q.shape[-1] != self.dim or K.shape[-1] != self.dim:
            raise ValueError(f"Q, K, V must be (batch, length, {self.dim}) or (batch, length, heads, {self.dim}) "
                             f"with K and V alike, got {list(Q.shape)}, {list(K.shape)}, {list(V.shape)}")
        out = self.attend_keys(Q, K, V, input_mask, visualize, shared_weight, shared_bias)
        return out.squeeze(2) if one_head else out

    def attend_keys(self, q: Tensor, k: Tensor, v: Tensor, mask: Optional[Tensor], visualize: bool,
                    shared_weight: Optional[Tensor], shared_bias: Optional[Tensor]) -> Tensor:
        """q (B, Lq, H, d), k, v (B, Lk, H, d) -> (B, Lq, H, d)."""
        B, L = k.shape[0], k.shape[1]
        self._check_length(L)
        check_mask("input_mask", mask, B, L)
        if self.causal and q.shape[1] != L:
            raise ValueError(f"causal attention needs as many queries as keys, got {q.shape[1]} and {L}")
        if self.full_attention:
            out, probs = attend(q, k, v, mask, self.causal, self.scale, self._dropout(), visualize)
            return self._keep(out, probs, visualize)
        kbar, vbar = self.compressed_span(k, v, mask, 0, L, shared_weight, shared_bias)
        kbar, vbar, valid = self.finish_compressed(kbar, vbar, mask, L, shared_weight, shared_bias)
        if not self.causal:
            return self.attend_compressed(q, kbar, vbar, valid, visualize)
        rows_per_chunk, chunk = self.chunks(shared_weight)
        out, probs = chunked_causal_attend(q, k, v, kbar, vbar, rows_per_chunk, chunk, valid, mask, self.scale,
                                           self._dropout(), visualize)
        return self._keep(out, probs, visualize)

    def kernel(self, shared_weight: Optional[Tensor]) -> int:
        """The convolution's kernel (= stride), 0 for learnable / no_params projections."""
        e_w = self._projections(shared_weight, None)[0]
        return e_w.shape[-1] if e_w.dim() == 4 else 0

    def chunks(self, shared_weight: Optional[Tensor]) -> Tuple[int, int]:
        """(rows per chunk, positions per chunk) of the causal projection (see causal_chunks)."""
        return causal_chunks(self.input_size, self.dim_k, self.kernel(shared_weight))

    def compressed_span(self, k: Tensor, v: Tensor, mask: Optional[Tensor], start: int, length: int,
                        shared_weight: Optional[Tensor], shared_bias: Optional[Tensor],
                        span_weights: Optional[Tuple[Tensor, Tensor]] = None) -> Tuple[Tensor, Tensor]:
        """The share of positions [start, start + S) of a length-``length`` sequence in E K and F V,
        without the biases: k, v (B, S, H, d), mask (B, S) or None. Learnable / no_params: partial
        sums of all R rows (B, R, H, d), to be added over spans; convolution: the rows of the
        span's own windows (start is a multiple of the kernel), to be concatenated.
        span_weights: E and F (learnable / no_params) cut to the span's columns already, by one
        split over all spans (one slice per span would scatter each span's weight gradient into
        a zero tensor of the full width); needed for such weights when start > 0."""
        e_w, _, f_w, _ = self._projections(shared_weight, shared_bias)
        if span_weights is not None:
            e_w, f_w = span_weights
        if mask is not None:
            keep = mask[:, :, None, None].to(k.dtype)
            k, v = k * keep, v * keep
        span = k.shape[1]
        rows = num_rows(e_w, self.dim_k, length, self.input_size)
        kernel = self.kernel(shared_weight)
        support: Optional[Tensor] = None
        if kernel > 0:
            rows = max(0, min(rows - start // kernel, -(-span // kernel)))
        else:
            assert start == 0 or span_weights is not None, "a later span needs its columns of E / F"
            if self.causal:
                support = row_support(rows, span, 0, self.chunks(shared_weight), k.device, start)
        return project(k, e_w, rows, support), project(v, f_w, rows, support)

    def finish_compressed(self, kbar: Tensor, vbar: Tensor, mask: Optional[Tensor], length: int,
                          shared_weight: Optional[Tensor], shared_bias: Optional[Tensor]
                          ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """E K and F V with their biases, and which rows read a kept position (None: all)."""
        e_w, e_b, f_w, f_b = self._projections(shared_weight, shared_bias)
        kernel = self.kernel(shared_weight)
        chunks = self.chunks(shared_weight) if self.causal else None
        valid = self._valid(mask, kbar.shape[1], length, kernel, chunks)
        return add_bias(kbar, e_w, e_b), add_bias(vbar, f_w, f_b), valid

    def compress_source(self, src: Tensor, kv_weight: Tensor, mask: Optional[Tensor], shared_weight: Optional[Tensor],
                        shared_bias: Optional[Tensor], span: int, checkpointed: bool = False
                        ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """Compressed keys and values (B, R, H, d) of ``src @ kv_weight.T`` (kv_weight (2Hd, C), keys
        first; src (B, L, C)) and their valid rows (B, R) (None: all), reading ``span`` positions
        at a time so that the full-length keys and values are never held (``checkpointed``: each
        span is a checkpoint, so the backward does not hold them either). A learnable / no_params
        projection shared by all heads, without causality, is applied to src before kv_weight
        (see the module docstring): src is then read once, whatever span."""
        B, L, C = src.shape
        self._check_length(L)
        check_mask("input_mask", mask, B, L)
        e_w, e_b, f_w, f_b = self._projections(shared_weight, shared_bias)
        if not self.causal and e_w.dim() == 3 and e_w.shape[0] == 1 and f_w.dim() == 3 and f_w.shape[0] == 1:
            H, d = kv_weight.shape[0] // (2 * self.dim), self.dim
            x = src if mask is None else src * mask[:, :, None].to(src.dtype)
            x = x.unsqueeze(2)
            e_x = project(x, e_w, self.dim_k).squeeze(2)
            if self.F is None:  # F = E: one compressed input for keys and values
                kv = F.linear(e_x, kv_weight).view(B, self.dim_k, 2 * H, d)
                kbar, vbar = kv[:, :, :H], kv[:, :, H:]
            else:
                kbar = F.linear(e_x, kv_weight[:H * d]).view(B, self.dim_k, H, d)
                f_x = project(x, f_w, self.dim_k).squeeze(2)
                vbar = F.linear(f_x, kv_weight[H * d:]).view(B, self.dim_k, H, d)
            return self.finish_compressed(kbar, vbar, mask, L, shared_weight, shared_bias)
        kernel = self.kernel(shared_weight)
        # Splits, not slices per span: their backwards concatenate the span gradients once.
        src_spans = torch.split(src, span, 1)
        e_spans: List[Tensor] = []
        f_spans: List[Tensor] = []
        if kernel == 0:
            e_spans = torch.split(leading(e_w[:, :self.dim_k], 2, L), span, 2)
            f_spans = e_spans if self.F is None else torch.split(leading(f_w[:, :self.dim_k], 2, L), span, 2)
        k_parts: List[Tensor] = []
        v_parts: List[Tensor] = []
        for index, src_span in enumerate(src_spans):
            start = index * span
            span_mask = None if mask is None else mask.narrow(1, start, src_span.shape[1])
            span_weights = (e_spans[index], f_spans[index]) if kernel == 0 else None
            if checkpointed and not torch.jit.is_scripting():
                kb, vb = self._source_span_checkpointed(src_span, kv_weight, span_mask, start, L, shared_weight,
                                                        shared_bias, span_weights)
            else:
                kb, vb = self.source_span(src_span, kv_weight, span_mask, start, L, shared_weight, shared_bias,
                                          span_weights)
            k_parts.append(kb)
            v_parts.append(vb)
        if kernel > 0:
            kbar, vbar = torch.cat(k_parts, 1), torch.cat(v_parts, 1)
        else:
            kbar, vbar = k_parts[0], v_parts[0]
            for i in range(1, len(k_parts)):
                kbar, vbar = kbar + k_parts[i], vbar + v_parts[i]
        return self.finish_compressed(kbar, vbar, mask, L, shared_weight, shared_bias)

    def source_span(self, src: Tensor, kv_weight: Tensor, mask: Optional[Tensor], start: int, length: int,
                    shared_weight: Optional[Tensor], shared_bias: Optional[Tensor],
                    span_weights: Optional[Tuple[Tensor, Tensor]]) -> Tuple[Tensor, Tensor]:
        """compressed_span of the keys / values of src (B, S, C), positions [start, start + S)."""
        B, S = src.shape[0], src.shape[1]
        H = kv_weight.shape[0] // (2 * self.dim)
        kv = F.linear(src, kv_weight).view(B, S, 2 * H, self.dim)
        return self.compressed_span(kv[:, :, :H], kv[:, :, H:], mask, start, length, shared_weight, shared_bias,
                                    span_weights)

    @torch.jit.unused
    def _source_span_checkpointed(self, src: Tensor, kv_weight: Tensor, mask: Optional[Tensor], start: int,
                                  length: int, shared_weight: Optional[Tensor], shared_bias: Optional[Tensor],
                                  span_weights: Optional[Tuple[Tensor, Tensor]]) -> Tuple[Tensor, Tensor]:
        return checkpoint(self.source_span, src, kv_weight, mask, start, length, shared_weight, shared_bias,
                          span_weights, use_reentrant=False)

    def attend_source(self, q: Tensor, src: Tensor, kv_weight: Tensor, mask: Optional[Tensor], visualize: bool,
                      shared_weight: Optional[Tensor], shared_bias: Optional[Tensor]) -> Tensor:
        """Attention of q (B, Lq, H, d) over keys/values ``src @ kv_weight.T`` (kv_weight (2Hd, C),
        keys first) for src (B, Lk, C)."""
        B, L, C = src.shape
        H, d = q.shape[2], q.shape[3]
        if not self.full_attention and not self.causal:
            kbar, vbar, valid = self.compress_source(src, kv_weight, mask, shared_weight, shared_bias, L)
            return self.attend_compressed(q, kbar, vbar, valid, visualize)
        kv = F.linear(src, kv_weight).view(B, L, 2 * H, d)
        return self.attend_keys(q, kv[:, :, :H], kv[:, :, H:], mask, visualize, shared_weight, shared_bias)

    def attend_compressed(self, q: Tensor, kbar: Tensor, vbar: Tensor, kbar_valid: Optional[Tensor],
                          visualize: bool) -> Tensor:
        """Non-causal attention of q (B, L, H, d) over compressed kbar, vbar (B, R, H, d)."""
        out, probs = attend(q, kbar, vbar, kbar_valid, False, self.scale, self._dropout(), visualize)
        return self._keep(out, probs, visualize)

    def _valid(self, mask: Optional[Tensor], rows: int, length: int, kernel: int,
               chunks: Optional[Tuple[int, int]]) -> Optional[Tensor]:
        if mask is None:
            return None
        return valid_rows(mask, row_support(rows, length, kernel, chunks, mask.device))

    def _dropout(self) -> float:
        return self.dropout_p if self.training else 0.0

    def _keep(self, out: Tensor, probs: Optional[Tensor], visualize: bool) -> Tensor:
        if visualize:
            self.P_bar = probs
        return out


class MHAttention(nn.Module):
    """Multi-head Linformer attention with the original's arguments, heads fused.

    Args (the original's; ``dim`` is the head width, ``channels`` the model width D):
        input_size, dim, channels, dim_k, nhead, dropout, checkpoint_level ('C2' checkpoints the
        fused heads, non-reentrant), parameter_sharing ('none': E/F per head; 'headwise': one E and
        one F; 'kv': one E = F; 'layerwise': E_proj = F_proj given, shared with other layers, or
        None when the owner passes it to forward), E_proj, F_proj (used only by 'layerwise', as in
        the original), full_attention, causal_mask (True/False, see LinearAttentionHead),
        w_o_intermediate_dim (two output matrices, no nonlinearity between, as in the original),
        decoder_mode (cross-attention: keys/values from ``embeddings``), method.
    Parameters: ``in_proj_weight`` (3 * nhead * dim, channels), rows [h*dim, (h+1)*dim) of its
    query/key/value thirds are the original's to_q[h] / to_k[h] / to_v[h]; ``heads`` (the fused
    LinearAttentionHead, holding E/F); ``w_o`` or ``w_o_1``, ``w_o_2``.
    forward(tensor, input_mask=None, embeddings=None, embeddings_mask=None, visualize=False,
    shared_weight=None, shared_bias=None):
        tensor (B, L, channels), L <= input_size. input_mask bool (B, L), True = keep: the keys of
        self-attention. decoder_mode: embeddings (B, M, channels), M <= input_size, and
        embeddings_mask (B, M) for its keys. Returns (B, L, channels).
    """

    def __init__(self, input_size: int, dim: int, channels: int, dim_k: int, nhead: int, dropout: float,
                 checkpoint_level: str, parameter_sharing: str, E_proj: Optional[SequenceProjection],
                 F_proj: Optional[SequenceProjection], full_attention: bool,
                 causal_mask: Union[None, bool, Tensor], w_o_intermediate_dim: Optional[int] = None,
                 decoder_mode: bool = False, method: str = "learnable", device=None, dtype=None) -> None:
        super().__init__()
        check_choice("checkpoint_level", checkpoint_level, CHECKPOINT_LEVELS)
        check_choice("parameter_sharing", parameter_sharing, SHARING)
        check_choice("method", method, METHODS)
        for name, value in (("input_size", input_size), ("dim", dim), ("channels", channels), ("dim_k", dim_k),
                            ("nhead", nhead)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        factory = {"device": device, "dtype": dtype}
        self.input_size = input_size
        self.channels = channels
        self.dim_k = dim_k
        self.nhead = nhead
        self.dim = dim
        self.decoder_mode = decoder_mode
        self.checkpoint_level = checkpoint_level
        if full_attention or parameter_sharing == "layerwise":
            E, Fp = E_proj, F_proj
        elif parameter_sharing == "none":
            E = SequenceProjection(input_size, dim_k, method, dim, heads=nhead, **factory)
            Fp = SequenceProjection(input_size, dim_k, method, dim, heads=nhead, **factory)
        else:
            E = get_EF(input_size, dim_k, method, dim, **factory)
            Fp = E if parameter_sharing == "kv" else get_EF(input_size, dim_k, method, dim, **factory)
        self.heads = LinearAttentionHead(dim, dropout, E, Fp, causal_mask, full_attention, input_size, dim_k)
        self.in_proj_weight = nn.Parameter(torch.empty(3 * nhead * dim, channels, **factory))
        nn.init.uniform_(self.in_proj_weight, -channels ** -0.5, channels ** -0.5)  # nn.Linear's default
        if w_o_intermediate_dim is None:
            self.w_o = nn.Linear(dim * nhead, channels, **factory)
            self.w_o_1 = self.w_o_2 = None
        else:
            self.w_o = None
            self.w_o_1 = nn.Linear(dim * nhead, w_o_intermediate_dim, **factory)
            self.w_o_2 = nn.Linear(w_o_intermediate_dim, channels, **factory)
        self.mh_dropout = Dropout(dropout)

    def forward(self, tensor: Tensor, input_mask: Optional[Tensor] = None, embeddings: Optional[Tensor] = None,
                embeddings_mask: Optional[Tensor] = None, visualize: bool = False,
                shared_weight: Optional[Tensor] = None, shared_bias: Optional[Tensor] = None) -> Tensor:
        src, src_mask = self.source(tensor, input_mask, embeddings, embeddings_mask)
        if self.checkpoint_level == "C2" and torch.is_grad_enabled() and not torch.jit.is_scripting():
            out = self._branch_checkpointed(tensor, src, src_mask, visualize, shared_weight, shared_bias)
        else:
            out = self._branch(tensor, src, src_mask, visualize, shared_weight, shared_bias)
        return self.mh_dropout(out)

    def source(self, tensor: Tensor, input_mask: Optional[Tensor], embeddings: Optional[Tensor],
               embeddings_mask: Optional[Tensor]) -> Tuple[Tensor, Optional[Tensor]]:
        """The keys' source and its mask: the input (self-attention) or the encoder output."""
        if tensor.dim() != 3 or tensor.shape[2] != self.channels:
            raise ValueError(f"tensor must be (batch, length, {self.channels}), got {list(tensor.shape)}")
        if self.decoder_mode:
            if embeddings is None:
                raise ValueError("decoder_mode=True: embeddings (the encoder output) must be given")
            if embeddings.dim() != 3 or embeddings.shape[0] != tensor.shape[0] or embeddings.shape[2] != self.channels:
                raise ValueError(f"embeddings must be ({tensor.shape[0]}, length, {self.channels}), got "
                                 f"{list(embeddings.shape)}")
            return embeddings, embeddings_mask
        if embeddings is not None or embeddings_mask is not None:
            raise ValueError("embeddings / embeddings_mask need decoder_mode=True")
        return tensor, input_mask

    def folds(self) -> bool:
        """Whether attention over the compressed rows runs folded (folded.py): non-causal, and
        fewer multiply-adds that way."""
        return (not self.heads.full_attention and not self.heads.causal
                and folding_pays(self.channels, self.dim, self.dim_k))

    def _branch(self, tensor: Tensor, src: Tensor, src_mask: Optional[Tensor], visualize: bool,
                shared_weight: Optional[Tensor], shared_bias: Optional[Tensor]) -> Tensor:
        """The attention branch before its dropout: (B, L, channels)."""
        if self.folds():
            kbar, vbar, valid = self.compress(src, src_mask, shared_weight, shared_bias, src.shape[1])
            keys, values = self.fold(kbar, vbar)
            return self.attend_folded(tensor, keys, values, valid, visualize)
        hd = self.nhead * self.dim
        out = self.heads.attend_source(self.queries(tensor), src, self.in_proj_weight[hd:], src_mask, visualize,
                                       shared_weight, shared_bias)
        return self.project_out(out)

    @torch.jit.unused
    def _branch_checkpointed(self, tensor: Tensor, src: Tensor, src_mask: Optional[Tensor], visualize: bool,
                             shared_weight: Optional[Tensor], shared_bias: Optional[Tensor]) -> Tensor:
        return checkpoint(self._branch, tensor, src, src_mask, visualize, shared_weight, shared_bias,
                          use_reentrant=False)

    def queries(self, tensor: Tensor) -> Tensor:
        """Every head's queries (B, L, H, d) of tensor (B, L, channels)."""
        hd = self.nhead * self.dim
        return F.linear(tensor, self.in_proj_weight[:hd]).view(tensor.shape[0], tensor.shape[1], self.nhead, self.dim)

    def compress(self, src: Tensor, src_mask: Optional[Tensor], shared_weight: Optional[Tensor],
                 shared_bias: Optional[Tensor], span: int, checkpointed: bool = False
                 ) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """Compressed keys, values (B, R, H, d) of src and their valid rows (heads.compress_source)."""
        hd = self.nhead * self.dim
        return self.heads.compress_source(src, self.in_proj_weight[hd:], src_mask, shared_weight, shared_bias, span,
                                          checkpointed)

    def output_weight(self) -> Tensor:
        """The output projection as one (channels, H d) matrix (w_o, or w_o_2 w_o_1), no bias."""
        if self.w_o is not None:
            return self.w_o.weight
        assert self.w_o_1 is not None and self.w_o_2 is not None
        return torch.matmul(self.w_o_2.weight, self.w_o_1.weight)

    def output_bias(self) -> Optional[Tensor]:
        """The output projection's bias (w_o's, or w_o_2(w_o_1's bias))."""
        if self.w_o is not None:
            return self.w_o.bias
        assert self.w_o_1 is not None and self.w_o_2 is not None
        if self.w_o_1.bias is None:
            return self.w_o_2.bias
        return F.linear(self.w_o_1.bias, self.w_o_2.weight, self.w_o_2.bias)

    def project_out(self, heads_out: Tensor) -> Tensor:
        """(B, L, H, d) attention output -> (B, L, channels) through w_o (or w_o_1, w_o_2)."""
        out = heads_out.reshape(heads_out.shape[0], heads_out.shape[1], self.nhead * self.dim)
        if self.w_o is not None:
            return self.w_o(out)
        assert self.w_o_1 is not None and self.w_o_2 is not None
        return self.w_o_2(self.w_o_1(out))

    def fold(self, kbar: Tensor, vbar: Tensor) -> Tuple[Tensor, Tensor]:
        """Folded keys and values (B, H R, C) of compressed ones (folded.fold)."""
        return fold(kbar, vbar, self.in_proj_weight[:self.nhead * self.dim], self.output_weight(), self.heads.scale)

    def attend_folded(self, tensor: Tensor, keys: Tensor, values: Tensor, valid: Optional[Tensor],
                      visualize: bool) -> Tensor:
        """The attention branch (before dropout) of tensor (B, L, channels) over folded keys."""
        out, probs = attend_folded(tensor, keys, values, self.nhead, valid, self.heads._dropout())
        bias = self.output_bias()
        if visualize:
            self.heads.P_bar = probs.permute(0, 2, 1, 3)
        return out if bias is None else out + bias
