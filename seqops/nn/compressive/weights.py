"""Loading labml_nn Compressive Transformer weights into the seqops modules.

Layout mapping: every parameter has labml's name and shape (query/key/value ``.linear``,
``output``, ``key_pos_embeddings`` (2P, H, d_k), ``key_pos_bias`` (2P, H), ``query_pos_bias``,
``compress.conv``, ``feed_forward.layer1/layer2``, ``norm_self_attn``, ``norm_ff``; the
AutoregressiveModel's ``src_embed`` / ``transformer`` / ``generator``), so the only conversion is
the relative tables' size when our ``max_distance`` differs from labml's P = 4096: row P + r of
labml's table becomes row max_distance + r of ours (distances beyond labml's range repeat its
edge rows). Activations are batch-first here, sequence-first in labml: feed ``x.transpose(0, 1)``;
labml's mask [Lq, Lk, B] of ones over the memory and a lower triangle over the segment is our
``causal=True`` (plus an optional (B, Lk) key-padding mask).
"""
from typing import Dict, Mapping

import torch
from torch import Tensor, nn

_TABLES = ("key_pos_embeddings", "key_pos_bias")


def _recenter(table: Tensor, rows: int) -> Tensor:
    """Table (2P, ...) indexed P + r -> (rows, ...) indexed rows / 2 + r, edges repeated."""
    src_p, dst_p = table.shape[0] // 2, rows // 2
    index = (torch.arange(rows, device=table.device) - dst_p + src_p).clamp(0, table.shape[0] - 1)
    return table[index]


def from_labml_state_dict(module: nn.Module, state_dict: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """labml's state_dict (of a layer, a CompressiveTransformer or an AutoregressiveModel)
    converted for ``module`` (the matching seqops module)."""
    ours = module.state_dict()
    converted: Dict[str, Tensor] = {}
    for name, value in state_dict.items():
        if name.rsplit(".", 1)[-1] in _TABLES and name in ours and ours[name].shape[0] != value.shape[0]:
            value = _recenter(value, ours[name].shape[0])
        converted[name] = value
    return converted


def load_labml_state_dict(module: nn.Module, state_dict: Mapping[str, Tensor], strict: bool = True):
    """module.load_state_dict(from_labml_state_dict(module, state_dict), strict)."""
    return module.load_state_dict(from_labml_state_dict(module, state_dict), strict=strict)
