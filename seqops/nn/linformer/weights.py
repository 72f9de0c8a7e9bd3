"""Loading weights trained with linformer-pytorch (tatp22, 0.19.x) into seqops' fused modules.

Key mapping (original -> seqops), per MHAttention at prefix p:
- ``p.to_q.{h}.weight``, ``p.to_k.{h}.weight``, ``p.to_v.{h}.weight`` (dim, channels), stacked by
  head into the thirds of ``p.in_proj_weight`` (3 * nhead * dim, channels);
- ``p.heads.{h}.E.*`` / ``.F.*``: Linear(n, k) weight (k, n) + bias (k), Conv1d weight (d, d, kernel)
  + bias (d), or a plain (n, k) tensor (no_params; it is not in the original's state_dict, so pass
  the original *module* for no_params models) -> ``p.heads.E.weight`` (heads, ...) stacked over
  the heads for sharing 'none', head 0 otherwise; layerwise -> the Linformer's ``E.*``;
- ``p.w_o*``, ``seq.{j}.norm``, ``seq.{j}.resample``, FeedForward ``w_1`` / ``w_2`` keep their names;
- LinformerLM: ``linformer.fn.`` (when wrapped in ProjectInOut) -> ``linformer.``,
  ``linformer.project_in/out`` -> ``project_in/out``.
Outputs match the original's in eval mode for non-causal models (the configurations where the
original is sound; its causal masks leaked, see linformer.py).
"""
from typing import Dict, List, Mapping, Union

import torch
from torch import Tensor, nn

from .model import FeedForward, Linformer, LinformerEncDec, LinformerLM
from .attention import MHAttention
from .projection import SequenceProjection

StateDict = Dict[str, Tensor]


def _original_state(source: Union[nn.Module, Mapping[str, Tensor]]) -> StateDict:
    """The original's state_dict, plus ``<head>.E`` / ``<head>.F`` for no_params tensors when a
    module is given."""
    if not isinstance(source, nn.Module):
        return dict(source)
    state = dict(source.state_dict())
    for name, module in source.named_modules():
        if getattr(module, "is_proj_tensor", False):
            state[f"{name}.E"], state[f"{name}.F"] = module.E, module.F
    return state


def _get(state: StateDict, key: str) -> Tensor:
    if key not in state:
        raise KeyError(f"linformer-pytorch weight {key!r} not found (is the model built with the same arguments?)")
    return state[key]


def _projection(proj: SequenceProjection, state: StateDict, heads: List[str], which: str, out: StateDict,
                prefix: str) -> None:
    """Fills ``prefix.weight`` / ``prefix.bias`` of proj from the original heads' E or F."""
    sources = heads if proj.heads > 1 else heads[:1]
    if proj.method == "no_params":
        key = f"{sources[0]}.{which}"
        if key not in state:
            raise ValueError("method='no_params': the original keeps E/F out of its state_dict (re-drawn at "
                             "construction); pass the original module itself to load_linformer_pytorch")
        out[prefix + "weight"] = torch.stack([_get(state, f"{s}.{which}").t() for s in sources])
        return
    out[prefix + "weight"] = torch.stack([_get(state, f"{s}.{which}.weight") for s in sources])
    if proj.bias is not None:
        out[prefix + "bias"] = torch.stack([_get(state, f"{s}.{which}.bias") for s in sources])


def _mh_attention(model: MHAttention, state: StateDict, src: str, dst: str, out: StateDict) -> None:
    out[dst + "in_proj_weight"] = torch.cat([_get(state, f"{src}to_{part}.{h}.weight")
                                             for part in "qkv" for h in range(model.nhead)])
    heads = [f"{src}heads.{h}" for h in range(model.nhead)]
    if model.heads.E is not None:
        _projection(model.heads.E, state, heads, "E", out, dst + "heads.E.")
    if model.heads.F is not None:
        _projection(model.heads.F, state, heads, "F", out, dst + "heads.F.")
    for name in ("w_o", "w_o_1", "w_o_2"):
        if getattr(model, name) is not None:
            for p in ("weight", "bias"):
                out[f"{dst}{name}.{p}"] = _get(state, f"{src}{name}.{p}")


def _same_names(module: nn.Module, state: StateDict, src: str, dst: str, out: StateDict) -> None:
    for name in module.state_dict():
        out[dst + name] = _get(state, src + name)


def _linformer(model: Linformer, state: StateDict, src: str, dst: str, out: StateDict) -> None:
    for j, block in enumerate(model.seq):
        for name in ("norm", "resample"):
            if getattr(block, name) is not None:
                _same_names(getattr(block, name), state, f"{src}seq.{j}.{name}.", f"{dst}seq.{j}.{name}.", out)
        if isinstance(block.fn, MHAttention):
            _mh_attention(block.fn, state, f"{src}seq.{j}.fn.", f"{dst}seq.{j}.fn.", out)
        else:
            assert isinstance(block.fn, FeedForward)
            _same_names(block.fn, state, f"{src}seq.{j}.fn.", f"{dst}seq.{j}.fn.", out)
    if model.E is not None:
        _projection(model.E, state, [f"{src}seq.0.fn.heads.0"], "E", out, dst + "E.")


def _linformer_lm(model: LinformerLM, state: StateDict, src: str, dst: str, out: StateDict) -> None:
    for name in ("to_token_emb", "pos_emb", "to_logits"):
        if getattr(model, name) is not None:
            _same_names(getattr(model, name), state, f"{src}{name}.", f"{dst}{name}.", out)
    inner = src + "linformer."
    if model.project_in is not None:
        for name in ("project_in", "project_out"):
            _same_names(getattr(model, name), state, f"{inner}{name}.", f"{dst}{name}.", out)
        inner += "fn."
    _linformer(model.linformer, state, inner, dst + "linformer.", out)


def convert_linformer_pytorch(model: nn.Module, source: Union[nn.Module, Mapping[str, Tensor]]) -> StateDict:
    """seqops state_dict for ``model`` (Linformer, LinformerLM, LinformerEncDec or MHAttention)
    from a linformer-pytorch model of the same configuration (its module, or its state_dict)."""
    state, out = _original_state(source), {}
    if isinstance(model, LinformerEncDec):
        _linformer_lm(model.encoder, state, "encoder.", "encoder.", out)
        _linformer_lm(model.decoder, state, "decoder.", "decoder.", out)
    elif isinstance(model, LinformerLM):
        _linformer_lm(model, state, "", "", out)
    elif isinstance(model, Linformer):
        _linformer(model, state, "", "", out)
    elif isinstance(model, MHAttention):
        _mh_attention(model, state, "", "", out)
    else:
        raise TypeError(f"model must be a Linformer, LinformerLM, LinformerEncDec or MHAttention, got "
                        f"{type(model).__name__}")
    return out


def load_linformer_pytorch(model: nn.Module, source: Union[nn.Module, Mapping[str, Tensor]]) -> None:
    """Loads a linformer-pytorch model's weights (module or state_dict) into ``model`` (strict)."""
    model.load_state_dict(convert_linformer_pytorch(model, source))
