"""Dropout on seqops' dropout op."""
from torch import Tensor, nn

from ..ops import dropout


class Dropout(nn.Dropout):
    """``torch.nn.Dropout`` with seqops' counter-based mask: the same module (``p``, train / eval,
    no parameters, so state dicts are unchanged), whose mask is drawn by a vectorized kernel
    and redrawn in the backward instead of being stored. Not in place."""

    def __init__(self, p: float = 0.5, inplace: bool = False):
        if inplace:
            raise ValueError("seqops.nn.Dropout does not work in place: pass inplace=False")
        super().__init__(p, inplace)

    def forward(self, input: Tensor) -> Tensor:
        return dropout(input, self.p, self.training)
