"""The attention family: the typed entry points, fake kernels, autograd and autocast rule of the
fused attention op. The fakes are registered here, the module csrc/attention/schema.cpp names
with set_python_module (torch requires the two to agree). The exact math is documented in
csrc/attention/attention.h and mirrored by seqops.reference.attention.

The op's options are described once, in C++ (SEQOPS_ATTENTION_OPTIONS, csrc/attention/attention.h),
which writes the schemas; OPTIONS below reads them back from the registered schema (names,
defaults, and which carry a gradient: those attention_backward returns a ``grad_<name>`` for),
and the fakes, the autograd's gradient positions and the backward call all derive from it. Only
the public functions spell the options out, as TorchScript needs typed signatures.

(``seqops.ops.attention`` is the function; this module is ``sys.modules["seqops.ops.attention"]``,
e.g. ``from seqops.ops.attention import OPTIONS``.)
"""
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import torch
from torch import Tensor

from ._fakes import acc_dtype, check_devices, contiguous_like
from .autocast import register_low_precision
from .dropout import dropout_rng

_ops = torch.ops.seqops


class Option(NamedTuple):
    name: str
    type: str      # the schema type, e.g. 'Tensor?', 'bool', 'float?', 'SymInt?'
    default: Any
    grad: bool     # attention_backward returns its gradient (grad_<name>)


# The options attention_backward returns gradients for, in its output order (after dq, dk, dv).
GRAD_OPTIONS: Tuple[str, ...] = tuple(
    r.name[len("grad_"):] for r in torch.ops.seqops.attention_backward.default._schema.returns[3:])
# The options after (q, k, v), in the schema's order.
OPTIONS: Tuple[Option, ...] = tuple(Option(a.name, str(a.type), a.default_value, a.name in GRAD_OPTIONS)
                                    for a in torch.ops.seqops.attention.default._schema.arguments[3:])
OPTION_NAMES: Tuple[str, ...] = tuple(o.name for o in OPTIONS)
_DEFAULTS: Dict[str, Any] = {o.name: o.default for o in OPTIONS}
# The gradient-carrying options' positions among the op's inputs (q, k, v, *options).
GRAD_POSITIONS: Tuple[int, ...] = tuple(3 + OPTION_NAMES.index(n) for n in GRAD_OPTIONS)


def _bind(args, kwargs) -> Dict[str, Any]:
    """The options of a call as a dict, given positionally (after q, k, v) and/or by name."""
    values = dict(_DEFAULTS)
    values.update(zip(OPTION_NAMES, args))
    values.update(kwargs)
    return values


def window_bounds(window: Optional[Tuple[int, int]]) -> Tuple[int, int]:
    """The op's (window_left, window_right) of a module's ``window=(left, right)`` (None: no
    window; -1 on a side: no limit there)."""
    if window is None:
        return -1, -1
    if len(window) != 2 or window[0] < -1 or window[1] < -1:
        raise ValueError(f"window must be (left, right) with each >= 0, or -1 for no limit, got {window}")
    return window[0], window[1]


def attention_with_lse(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor] = None,
                       causal: bool = False, scale: Optional[float] = None, dropout_p: float = 0.0,
                       bias: Optional[Tensor] = None, t5_table: Optional[Tensor] = None,
                       t5_bidirectional: bool = True, t5_max_distance: int = 128,
                       alibi_slopes: Optional[Tensor] = None, rel_keys: Optional[Tensor] = None,
                       rel_scores: Optional[Tensor] = None, content_bias: Optional[Tensor] = None,
                       position_bias: Optional[Tensor] = None, rel_zero: Optional[int] = None,
                       query_offset: Optional[int] = None, window_left: int = -1,
                       window_right: int = -1, rotary_dim: int = 0, rotary_base: float = 10000.0,
                       rotary_interleaved: bool = False,
                       cu_seqlens: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
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
        window_left, window_right: sliding-window (local) attention: query i sees key j only
            when -window_left <= j - (i + Lk - Lq) <= window_right (-1: no limit on that side;
            causal caps the right side at 0). Key tiles outside every query's window are skipped,
            so the cost grows as Lq * (window_left + window_right + 1), not Lq * Lk.
        rotary_dim, rotary_base, rotary_interleaved: rotary position embedding (RoFormer) of the
            first rotary_dim features of q and k (even, <= head_dim; 0: none), applied inside the
            kernel as tiles are loaded: query i sits at position i + query_offset, key j at j,
            and each feature pair turns by position * rotary_base^(-2p / rotary_dim); pairs
            (2p, 2p + 1) when interleaved (RoFormer, GPT-J), else (p, p + rotary_dim / 2)
            (GPT-NeoX, LLaMA). seqops.relative_position.rotate is the same map. Combines with
            every score term but rel_keys.
        cu_seqlens: packed sequences (FlashAttention's varlen layout): int32 / int64
            (num_sequences + 1,) offsets, 0 = cu_seqlens[0] <= ... <= cu_seqlens[-1] = Lq = Lk,
            on the CPU or q's device. Sequence s holds tokens cu_seqlens[s] .. cu_seqlens[s + 1] - 1
            of every row (q and k packed alike); a query sees only its own sequence's keys, and
            every position restarts there (r = j - i within the sequence, rotary positions,
            causal, window). query_offset must stay None. The offsets are read on the host (a
            CUDA tensor costs one synchronization). seqops.nn.pack_sequences builds them.
    Returns:
        out (B, Hq, Lq, dv) and lse (B, Hq, Lq), the log-sum-exp of each query's visible logits
        (float32, float64 for float64 inputs; -inf and a zero output row when nothing is visible).
    """
    rng = dropout_rng() if dropout_p > 0.0 else None
    # By name: the op's argument order is the schema's (OPTIONS), not restated here.
    return _ops.attention(q, k, v, key_padding_mask=key_padding_mask, causal=causal, scale=scale,
                          dropout_p=dropout_p, dropout_rng=rng, bias=bias, t5_table=t5_table,
                          t5_bidirectional=t5_bidirectional, t5_max_distance=t5_max_distance,
                          alibi_slopes=alibi_slopes, rel_keys=rel_keys, rel_scores=rel_scores,
                          content_bias=content_bias, position_bias=position_bias,
                          rel_zero=rel_zero, query_offset=query_offset,
                          window_left=window_left, window_right=window_right,
                          rotary_dim=rotary_dim, rotary_base=rotary_base,
                          rotary_interleaved=rotary_interleaved, cu_seqlens=cu_seqlens)


def attention(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor] = None,
              causal: bool = False, scale: Optional[float] = None, dropout_p: float = 0.0,
              bias: Optional[Tensor] = None, t5_table: Optional[Tensor] = None,
              t5_bidirectional: bool = True, t5_max_distance: int = 128,
              alibi_slopes: Optional[Tensor] = None, rel_keys: Optional[Tensor] = None,
              rel_scores: Optional[Tensor] = None, content_bias: Optional[Tensor] = None,
              position_bias: Optional[Tensor] = None, rel_zero: Optional[int] = None,
              query_offset: Optional[int] = None, window_left: int = -1,
              window_right: int = -1, rotary_dim: int = 0, rotary_base: float = 10000.0,
              rotary_interleaved: bool = False, cu_seqlens: Optional[Tensor] = None) -> Tensor:
    """:func:`attention_with_lse` without the log-sum-exp: returns (B, Hq, Lq, dv)."""
    return attention_with_lse(q, k, v, key_padding_mask=key_padding_mask, causal=causal,
                              scale=scale, dropout_p=dropout_p, bias=bias, t5_table=t5_table,
                              t5_bidirectional=t5_bidirectional, t5_max_distance=t5_max_distance,
                              alibi_slopes=alibi_slopes, rel_keys=rel_keys, rel_scores=rel_scores,
                              content_bias=content_bias, position_bias=position_bias,
                              rel_zero=rel_zero, query_offset=query_offset,
                              window_left=window_left, window_right=window_right,
                              rotary_dim=rotary_dim, rotary_base=rotary_base,
                              rotary_interleaved=rotary_interleaved, cu_seqlens=cu_seqlens)[0]


# ----------------------------------------------------------------------------- fake kernels

@torch.library.register_fake("seqops::attention")
def attention_fake(q, k, v, *args, **kwargs):
    o = _bind(args, kwargs)
    torch._check(q.dim() == 4 and k.dim() == 4 and v.dim() == 4,
                 lambda: "q, k and v must have 4 dimensions (batch, heads, length, head_dim)")
    # Every tensor but dropout_rng (a CPU pair for any device) and cu_seqlens (either) lives with q.
    check_devices(q, "q", k=k, v=v, **{name: t for name, t in o.items()
                                         if isinstance(t, Tensor) and name not in ("dropout_rng", "cu_seqlens")})
    cu = o.get("cu_seqlens")
    torch._check(cu is None or cu.device.type == "cpu" or cu.device == q.device,
                 lambda: f"cu_seqlens must be on the CPU or q's device ({q.device}), got {cu.device}")
    B, Hq, Lq, _ = q.shape
    return q.new_empty((B, Hq, Lq, v.shape[3])), q.new_empty((B, Hq, Lq), dtype=acc_dtype(q))


@torch.library.register_fake("seqops::attention_backward")
def attention_backward_fake(grad_out, q, k, v, out, lse, bias_grad, *args, **kwargs):
    o = _bind(args, kwargs)
    if not bias_grad:
        o["bias"] = None
    return tuple([contiguous_like(q), contiguous_like(k), contiguous_like(v)] +
                 [contiguous_like(o[name]) if o[name] is not None else q.new_empty((0,))
                  for name in GRAD_OPTIONS])


# ----------------------------------------------------------------------------- autograd

def attention_setup_context(ctx, inputs, output):
    q, k, v = inputs[:3]
    out, lse = output
    ctx.mark_non_differentiable(lse)
    ctx.num_inputs = len(inputs)  # trailing arguments equal to their defaults may be dropped
    options = _bind(inputs[3:], {})
    ctx.tensor_names = [name for name, t in options.items() if isinstance(t, Tensor)]
    ctx.options = {name: t for name, t in options.items() if not isinstance(t, Tensor)}
    ctx.save_for_backward(q, k, v, out, lse, *[options[name] for name in ctx.tensor_names])


def attention_autograd(ctx, grad_out, _grad_lse):
    q, k, v, out, lse, *saved = ctx.saved_tensors
    options = dict(ctx.options)
    options.update(zip(ctx.tensor_names, saved))
    needs = tuple(ctx.needs_input_grad) + (False,) * (3 + len(OPTIONS))
    bias_grad = options["bias"] is not None and needs[3 + OPTION_NAMES.index("bias")]
    # grad_out as autograd gives it (often a transposed view): the kernels read strided rows.
    grads = _ops.attention_backward(grad_out, q, k, v, out, lse, bias_grad,
                                    *[options[name] for name in OPTION_NAMES])
    result: List[Optional[Tensor]] = [None] * ctx.num_inputs
    result[:3] = grads[:3]
    for i, g in zip(GRAD_POSITIONS, grads[3:]):
        if i < ctx.num_inputs and g.numel() > 0 and needs[i]:
            result[i] = g
    return tuple(result)


torch.library.register_autograd("seqops::attention", attention_autograd,
                                setup_context=attention_setup_context)
register_low_precision("attention")
