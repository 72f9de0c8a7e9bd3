"""seqops' fused attention as a Hugging Face transformers attention implementation.

    import seqops.integrations.transformers as seqops_hf
    seqops_hf.register()                                  # explicit and idempotent
    model.set_attn_implementation("seqops")               # or from_pretrained(..., attn_implementation="seqops")

Importing this module registers nothing; :func:`register` does, once per process (calling it
again is a no-op). It needs ``transformers>=5`` (the ``seqops[hf]`` extra). It registers

* an attention function named ``"seqops"`` in ``transformers.AttentionInterface``;
* a mask function of the same name in ``transformers.masking_utils.AttentionMaskInterface``
  (without one transformers passes no mask at all);
* for T5 and mT5 (``T5Attention`` / ``MT5Attention``): wrappers of ``compute_bias`` and
  ``forward`` that act only while the module's ``config._attn_implementation`` is ``"seqops"``.

What runs where:

* T5 / mT5 (fused path). Instead of the (1, H, Lq, Lk) ``position_bias``, layer 0's
  ``compute_bias`` hands on its ``relative_attention_bias.weight`` (num_buckets, H) -- the
  table itself -- and the stack passes it to every later layer, as it passes the bias. The
  attention function sees the 2-D table and calls ``seqops.ops.attention(t5_table=...)`` with
  T5's bucketing: bidirectional in the encoder, causal buckets in the decoder, the cache length
  as the query offset during cached generation. Cross-attention (no relative bias) gets an empty
  marker instead of its (1, H, Lq, Lk) zeros. The mask function turns a padding mask into the
  op's ``key_padding_mask`` and a causal mask into ``causal=True``. Gradients reach q, k, v and
  the table. No tensor of size Lq x Lk is built.
* Everything else (dense-bias path): other models; T5 with a mask that is not key-padding
  (x causal) -- a custom 4-D mask, a static cache, a mask with an offset; T5 configs whose
  float32 buckets (transformers) and float64 buckets (seqops) would differ. The mask is
  transformers' eager additive mask, the position bias is transformers' own, and the op gets
  ``bias=`` their sum: the eager computation through the fused kernel, never a different answer.

Differences from ``attn_implementation="eager"``: attention weights are not returned (None,
as with ``"sdpa"``); attention dropout uses seqops' Philox dropout (the same distribution, not
the same random mask); a query row that sees no key at all (a fully padded sequence, or a left
pad in the decoder) gets a zero output where eager averages all values uniformly -- those rows
are padding and masked out of every non-padded position.
"""
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from seqops import ops as _seqops_ops
from seqops.relative_position import relative_positions, t5_bucket

NAME = "seqops"
# The model types whose T5Attention / T5Stack code the fused path is written against (their
# stacks pass layer 0's position_bias to the other layers untouched).
T5_MODEL_TYPES = ("t5", "mt5")

_registered = False
_patched = []  # (class, attribute, original) of the wrapped T5 methods


class SeqopsMask(NamedTuple):
    """The mask the ``"seqops"`` mask function returns when it can be expressed exactly in the
    op's terms: key j visible to query i iff key_padding[b, j] (when given) and, when causal,
    j <= i + kv_length - q_length."""
    key_padding: Optional[Tensor]  # bool (B, kv_length), True = may attend
    causal: bool
    kv_length: int


def _is_fused_t5_module(module) -> bool:
    return any(isinstance(module, cls) for cls, attr, _ in _patched if attr == "forward")


def _active(module) -> bool:
    return getattr(module.config, "_attn_implementation", None) == NAME


def _is_int(x) -> bool:
    return isinstance(x, (int, torch.SymInt)) and not isinstance(x, bool)


# ----------------------------------------------------------------------------- bucket check

_buckets_checked = {}


@torch.compiler.assume_constant_result
def buckets_agree(bucket_fn, num_buckets: int, max_distance: int, bidirectional: bool) -> bool:
    """Whether transformers' bucket function (float32 log) and seqops' (float64 log, as the
    kernel) give the same bucket for every relative position. Only |r| < max_distance can
    differ: from max_distance on both clamp to the last bucket (the log term is >= its top
    value up to rounding far below 1), so checking |r| <= max_distance + 2 covers every length.
    Cached per configuration; under torch.compile it runs once at trace time."""
    key = (bucket_fn, num_buckets, max_distance, bidirectional)
    if key not in _buckets_checked:
        r = torch.arange(-max_distance - 2, max_distance + 3)
        theirs = bucket_fn(r, bidirectional=bidirectional, num_buckets=num_buckets, max_distance=max_distance)
        ours = t5_bucket(r, bidirectional, num_buckets, max_distance)
        _buckets_checked[key] = bool(torch.equal(theirs.long(), ours))
    return _buckets_checked[key]


def _table_usable(module) -> bool:
    return buckets_agree(type(module)._relative_position_bucket, module.relative_attention_num_buckets,
                         module.relative_attention_max_distance, not module.is_decoder)


# ----------------------------------------------------------------------------- T5 wrappers

def _wrap_compute_bias(original):
    def compute_bias(self, query_length, key_length, device=None, past_seen_tokens=0):
        # The fused path needs query_offset = past_seen_tokens to be the op's default Lk - Lq
        # (a dynamic cache; a static cache's length is a tensor and the keys include its empty
        # slots) and the buckets to agree.
        if (_active(self) and _is_int(past_seen_tokens) and past_seen_tokens == key_length - query_length
                and _table_usable(self)):
            return self.relative_attention_bias.weight  # the marker: the (num_buckets, H) table
        return original(self, query_length, key_length, device=device, past_seen_tokens=past_seen_tokens)
    compute_bias.__wrapped__ = original
    compute_bias.__doc__ = original.__doc__
    return compute_bias


def _wrap_forward(original):
    def forward(self, *args, **kwargs):
        # A layer without a table and no position_bias handed in would build (1, H, Lq, Lk)
        # zeros (layer 0's cross-attention, whose output the other layers reuse): hand it an
        # empty marker instead, meaning "no position bias".
        if (_active(self) and not self.has_relative_attention_bias and len(args) < 4
                and kwargs.get("position_bias") is None):
            hidden_states = args[0] if args else kwargs["hidden_states"]
            kwargs["position_bias"] = hidden_states.new_zeros(0)
        return original(self, *args, **kwargs)
    forward.__wrapped__ = original
    forward.__doc__ = original.__doc__
    return forward


def _t5_classes():
    from transformers.models.t5.modeling_t5 import T5Attention
    classes = [T5Attention]
    try:
        from transformers.models.mt5.modeling_mt5 import MT5Attention
        classes.append(MT5Attention)
    except ImportError:  # pragma: no cover - mT5 ships with transformers
        pass
    return classes


def _patch_t5():
    for cls in _t5_classes():
        for attr, wrap in (("compute_bias", _wrap_compute_bias), ("forward", _wrap_forward)):
            original = cls.__dict__[attr]
            setattr(cls, attr, wrap(original))
            _patched.append((cls, attr, original))


# ----------------------------------------------------------------------------- mask function

def seqops_mask(batch_size, q_length, kv_length, q_offset=0, kv_offset=0, mask_function=None,
                attention_mask=None, config=None, **kwargs):
    """transformers' mask function for ``"seqops"``: a :class:`SeqopsMask` for a T5 / mT5
    padding (x causal) mask, transformers' eager additive mask for anything else."""
    from transformers.masking_utils import bidirectional_mask_function, causal_mask_function, eager_mask
    causal = mask_function is causal_mask_function
    expressible = (
        getattr(config, "model_type", None) in T5_MODEL_TYPES
        and (causal or mask_function is bidirectional_mask_function)
        and not kwargs.get("use_vmap", False)
        and _is_int(kv_offset) and kv_offset == 0
        and (not causal or (_is_int(q_offset) and q_offset == kv_length - q_length))
        and (attention_mask is None or (attention_mask.dim() == 2 and attention_mask.shape[0] in (1, batch_size)))
    )
    if not expressible:
        return eager_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, q_offset=q_offset,
                          kv_offset=kv_offset, mask_function=mask_function, attention_mask=attention_mask,
                          config=config, **kwargs)
    key_padding = None
    if attention_mask is not None:
        key_padding = attention_mask.to(torch.bool)
        if key_padding.shape[1] < kv_length:  # transformers pads a short mask with False
            key_padding = F.pad(key_padding, (0, kv_length - key_padding.shape[1]))
        key_padding = key_padding[:, :kv_length].expand(batch_size, kv_length)
    return SeqopsMask(key_padding, causal, kv_length)


# ----------------------------------------------------------------------------- attention

_UNSUPPORTED_KWARGS = ("softcap", "s_aux", "sinks", "head_mask")


def _t5_dense_bias(module, table: Tensor, q_length: int, k_length: int) -> Tensor:
    """What compute_bias would have returned, from the table a layer was handed."""
    buckets = type(module)._relative_position_bucket(
        relative_positions(q_length, k_length, device=table.device), bidirectional=not module.is_decoder,
        num_buckets=module.relative_attention_num_buckets, max_distance=module.relative_attention_max_distance)
    return F.embedding(buckets, table).permute(2, 0, 1).unsqueeze(0)


def _additive(mask, q: Tensor) -> Tensor:
    """A 4-D attention mask as eager adds it: a float mask as is, a bool mask as 0 where True
    and the dtype's minimum elsewhere."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"seqops attention: cannot use an attention mask of type {type(mask).__name__}")
    if mask.dtype == torch.bool:
        return torch.zeros((), dtype=q.dtype, device=q.device).masked_fill(~mask, torch.finfo(q.dtype).min)
    return mask.to(q.dtype)


def seqops_attention_forward(module, query: Tensor, key: Tensor, value: Tensor, attention_mask,
                             dropout: float = 0.0, scaling: Optional[float] = None,
                             position_bias: Optional[Tensor] = None, **kwargs):
    """transformers' attention function for ``"seqops"``: q (B, Hq, Lq, d), k / v (B, Hk, Lk, d)
    in; (out (B, Lq, Hq, d), None) out."""
    for name in _UNSUPPORTED_KWARGS:
        if kwargs.get(name) is not None:
            raise NotImplementedError(f"seqops attention does not support `{name}`; use another attn_implementation")
    q_length, k_length = query.shape[2], key.shape[2]
    table = None
    if position_bias is not None and position_bias.dim() < 4 and _is_fused_t5_module(module):
        # A marker from the wrapped T5 methods: the (num_buckets, H) table, or empty (no bias).
        table = position_bias if position_bias.dim() == 2 else None
        position_bias = None
    if isinstance(attention_mask, SeqopsMask) and attention_mask.kv_length != k_length:
        raise ValueError(f"seqops attention: the mask was made for {attention_mask.kv_length} keys, got {k_length}")

    if attention_mask is None or isinstance(attention_mask, SeqopsMask):
        # The mask is the op's key_padding_mask / causal; the position term is the table
        # (fused T5) or a dense position bias handed in by the model.
        padding = attention_mask.key_padding if attention_mask is not None else None
        causal = attention_mask.causal if attention_mask is not None else False
        if table is not None:
            out = _seqops_ops.attention(query, key, value, key_padding_mask=padding, causal=causal, scale=scaling,
                                        dropout_p=dropout, t5_table=table.t(), t5_bidirectional=not module.is_decoder,
                                        t5_max_distance=module.relative_attention_max_distance)
        else:
            out = _seqops_ops.attention(query, key, value, key_padding_mask=padding, causal=causal, scale=scaling,
                                        dropout_p=dropout, bias=position_bias)
    else:
        # Dense bias: transformers' additive mask plus the position bias, as eager adds them.
        if table is not None:
            position_bias = _t5_dense_bias(module, table, q_length, k_length)
        bias = _additive(attention_mask, query)
        if position_bias is not None:
            bias = position_bias + bias
        out = _seqops_ops.attention(query, key, value, scale=scaling, dropout_p=dropout, bias=bias)
    return out.transpose(1, 2).contiguous(), None


# ----------------------------------------------------------------------------- registration

def register() -> str:
    """Registers the ``"seqops"`` attention implementation with transformers (idempotent) and
    returns its name. Needs transformers >= 5."""
    global _registered
    if _registered:
        return NAME
    import transformers
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface
    if int(transformers.__version__.split(".")[0]) < 5:
        raise ImportError(f"seqops.integrations.transformers needs transformers>=5, found {transformers.__version__}")
    AttentionInterface.register(NAME, seqops_attention_forward)
    AttentionMaskInterface.register(NAME, seqops_mask)
    _patch_t5()
    _registered = True
    return NAME


def is_registered() -> bool:
    return _registered


__all__ = ["NAME", "SeqopsMask", "buckets_agree", "is_registered", "register", "seqops_attention_forward",
           "seqops_mask"]
