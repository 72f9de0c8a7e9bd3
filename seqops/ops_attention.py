"""seqops.ops.attention: the typed entry points, fake kernels and autograd formula of the fused
attention op (seqops/ops.py registers them: torch requires the fakes to be registered from the
module named by the C++ set_python_module). The exact math is documented in
csrc/include/seqops/attention.h and mirrored by seqops.reference.attention.
"""
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .ops_dropout import dropout_rng

_ops = torch.ops.seqops


def attention_with_lse(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor] = None,
                       causal: bool = False, scale: Optional[float] = None, dropout_p: float = 0.0,
                       bias: Optional[Tensor] = None, t5_table: Optional[Tensor] = None,
                       t5_bidirectional: bool = True, t5_max_distance: int = 128,
                       alibi_slopes: Optional[Tensor] = None, rel_keys: Optional[Tensor] = None,
                       rel_scores: Optional[Tensor] = None, content_bias: Optional[Tensor] = None,
                       position_bias: Optional[Tensor] = None, rel_zero: Optional[int] = None,
                       query_offset: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """Fused attention ``softmax(scale * q k^T + term) v`` that never builds the (Lq, Lk) logits.

    Args:
        q: (B, Hq, Lq, d); k: (B, Hk, Lk, d); v: (B, Hk, Lk, dv); Hk divides Hq.
        key_padding_mask: bool (B, Lk), True = may attend.
        causal: query i sees keys j <= i + Lk - Lq (the queries end the keys' span).
        scale: defaults to 1/sqrt(d).
        dropout_p: attention dropout; the mask comes from a counter-based RNG seeded from torch's
            generator, so torch.manual_seed reproduces it and the backward regenerates it.
        One score term at most, with r = j - (i + query_offset) (query_offset defaults to
        Lk - Lq):
        bias: broadcastable to (B, Hq, Lq, Lk), added after scaling.
        t5_table: (Hq, num_buckets): adds t5_table[h, bucket(r)] (T5 bucketing with
            t5_bidirectional and t5_max_distance).
        alibi_slopes: (Hq,): adds -slope_h * |r|.
        rel_keys: R (L_rel, Hq, d), with optional rel_scores S (L_rel, Hq), content_bias u and
            position_bias v (Hq, d): the logit is scale * ((q_i + u).k_j + (q_i + v).R[n]
            + S[n]) with n = r + rel_zero (rel_zero defaults to L_rel - 1).
    Returns:
        out (B, Hq, Lq, dv) and lse (B, Hq, Lq), the log-sum-exp of each query's visible logits
        (float32, float64 for float64 inputs; -inf and a zero output row when nothing is visible).
    """
    rng = dropout_rng() if dropout_p > 0.0 else None
    return _ops.attention(q, k, v, key_padding_mask, causal, scale, dropout_p, rng, bias, t5_table,
                          t5_bidirectional, t5_max_distance, alibi_slopes, rel_keys, rel_scores,
                          content_bias, position_bias, rel_zero, query_offset)


def attention(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor] = None,
              causal: bool = False, scale: Optional[float] = None, dropout_p: float = 0.0,
              bias: Optional[Tensor] = None, t5_table: Optional[Tensor] = None,
              t5_bidirectional: bool = True, t5_max_distance: int = 128,
              alibi_slopes: Optional[Tensor] = None, rel_keys: Optional[Tensor] = None,
              rel_scores: Optional[Tensor] = None, content_bias: Optional[Tensor] = None,
              position_bias: Optional[Tensor] = None, rel_zero: Optional[int] = None,
              query_offset: Optional[int] = None) -> Tensor:
    """:func:`attention_with_lse` without the log-sum-exp: returns (B, Hq, Lq, dv)."""
    return attention_with_lse(q, k, v, key_padding_mask, causal, scale, dropout_p, bias, t5_table,
                              t5_bidirectional, t5_max_distance, alibi_slopes, rel_keys,
                              rel_scores, content_bias, position_bias, rel_zero, query_offset)[0]


# ----------------------------------------------------------------------------- fake kernels
# Positions of the op's arguments (after q, k, v) that carry gradients, and their names.
_SCORE_GRADS = (("bias", 8), ("t5_table", 9), ("alibi_slopes", 12), ("rel_keys", 13),
                ("rel_scores", 14), ("content_bias", 15), ("position_bias", 16))


def attention_fake(q, k, v, key_padding_mask=None, causal=False, scale=None, dropout_p=0.0,
                   dropout_rng=None, bias=None, t5_table=None, t5_bidirectional=True, t5_max_distance=128,
                   alibi_slopes=None, rel_keys=None, rel_scores=None, content_bias=None, position_bias=None,
                   rel_zero=None, query_offset=None):
    torch._check(q.dim() == 4 and k.dim() == 4 and v.dim() == 4,
                 lambda: "q, k and v must have 4 dimensions (batch, heads, length, head_dim)")
    # Every tensor but dropout_rng (a CPU pair for any device) lives with q. This also turns a
    # call mixing CPU and meta tensors, which the dispatcher routes here, into an error.
    for name, t in (("k", k), ("v", v), ("key_padding_mask", key_padding_mask), ("bias", bias),
                    ("t5_table", t5_table), ("alibi_slopes", alibi_slopes), ("rel_keys", rel_keys),
                    ("rel_scores", rel_scores), ("content_bias", content_bias), ("position_bias", position_bias)):
        if t is not None:
            torch._check(t.device == q.device,
                         lambda: f"{name} must be on the same device as q ({q.device}), got {t.device}")
    B, Hq, Lq, _ = q.shape
    acc = torch.float64 if q.dtype == torch.float64 else torch.float32
    return q.new_empty((B, Hq, Lq, v.shape[3])), q.new_empty((B, Hq, Lq), dtype=acc)


def attention_backward_fake(grad_out, q, k, v, out, lse, bias_grad, key_padding_mask=None, causal=False,
                            scale=None, dropout_p=0.0, dropout_rng=None, bias=None, t5_table=None,
                            t5_bidirectional=True, t5_max_distance=128, alibi_slopes=None, rel_keys=None,
                            rel_scores=None, content_bias=None, position_bias=None, rel_zero=None,
                            query_offset=None):
    score = {"bias": bias if bias_grad else None, "t5_table": t5_table, "alibi_slopes": alibi_slopes,
             "rel_keys": rel_keys, "rel_scores": rel_scores, "content_bias": content_bias,
             "position_bias": position_bias}
    like = lambda t: torch.empty_like(t, memory_format=torch.contiguous_format)  # noqa: E731
    return tuple([like(q), like(k), like(v)] +
                 [like(score[name]) if score[name] is not None else q.new_empty((0,)) for name, _ in _SCORE_GRADS])


# ----------------------------------------------------------------------------- autograd

def attention_setup_context(ctx, inputs, output):
    q, k, v = inputs[:3]
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.options = inputs[3:]
    ctx.tensor_slots = [i for i, t in enumerate(inputs[3:]) if isinstance(t, Tensor)]
    ctx.save_for_backward(q, k, v, out, lse, *[inputs[3 + i] for i in ctx.tensor_slots])


def attention_autograd(ctx, grad_out, _grad_lse):
    q, k, v, out, lse, *saved = ctx.saved_tensors
    options = list(ctx.options)
    for i, t in zip(ctx.tensor_slots, saved):
        options[i] = t
    bias_grad = options[5] is not None and ctx.needs_input_grad[8]
    grads = _ops.attention_backward(grad_out.contiguous(), q, k, v, out, lse, bias_grad, *options)
    result: List[Optional[Tensor]] = [None] * (3 + len(options))
    result[:3] = grads[:3]
    for (_, i), g in zip(_SCORE_GRADS, grads[3:]):
        if g.numel() > 0 and ctx.needs_input_grad[i]:
            result[i] = g
    return tuple(result)

