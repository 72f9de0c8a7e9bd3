"""Drop-in for LAMA (JohnGiorgi/compact-multi-head-self-attention-pytorch, HEAD 56358ea, 2020-01-12;
not on PyPI, imported there as ``modules.lama`` / ``modules.lama_encoder``; the README's
``modules.lama_pooler`` is the historical pooler): ``from seqops.compat.lama import LAMA``.

Names: ``LAMA`` (``modules.lama``), ``LAMAEncoder`` (``modules.lama_encoder``, HEAD) and
``LAMAPooler`` (``modules.lama_pooler``, the README's class, removed at HEAD) in one flat
namespace. Same constructor arguments and state_dict keys (``_p``, ``_q`` (input_dim, heads);
``_attention._p`` / ``_q``, ``projection_layer.*``) as the original.

Adapter (why these are subclasses, not seqops.nn's objects themselves): the original accepted a
float (or int) 0/1 mask as well as a bool one; seqops' modules take bool masks only. These
classes convert a numeric 0/1 mask to bool and raise ValueError for any other value (the
original used fractional values only as weights of its context mean -- that is not supported).
Everything else is seqops.nn's LAMA / LAMAEncoder / LAMAPooler (isinstance holds).

Differences (docs/compat.md): the backward works (the original's always failed), the head
normalization has an epsilon, fully masked rows give zero weights, ``normalize=False`` zeroes
masked positions, LAMAPooler pools each sequence (the historical class applied softmax over the
batch). Activations: tanh (default), None / identity, relu, sigmoid (callables or names);
others raise, since the kernel fuses the activation. Absent: nothing the original exported.
"""
from typing import Optional as _Optional

import torch as _torch
import seqops.nn as _nn

__all__ = ["LAMA", "LAMAEncoder", "LAMAPooler"]


def _bool_mask(mask: _Optional[_torch.Tensor]) -> _Optional[_torch.Tensor]:
    """The original's numeric 0/1 mask (1 = keep) as the bool mask seqops takes."""
    if mask is None or mask.dtype == _torch.bool:
        return mask
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("LAMA masks must be bool or 0/1 (1 = keep); fractional mask values are not supported")
    return mask != 0


class LAMA(_nn.LAMA):
    __doc__ = _nn.LAMA.__doc__

    def forward(self, inputs: _torch.Tensor, mask: _Optional[_torch.Tensor] = None) -> _torch.Tensor:
        return super().forward(inputs, _bool_mask(mask))


class LAMAEncoder(_nn.LAMAEncoder):
    __doc__ = _nn.LAMAEncoder.__doc__

    def forward(self, inputs: _torch.Tensor, mask: _Optional[_torch.Tensor] = None) -> _torch.Tensor:
        return super().forward(inputs, _bool_mask(mask))


class LAMAPooler(_nn.LAMAPooler):
    __doc__ = _nn.LAMAPooler.__doc__

    def forward(self, inputs: _torch.Tensor, mask: _Optional[_torch.Tensor] = None) -> _torch.Tensor:
        return super().forward(inputs, _bool_mask(mask))
