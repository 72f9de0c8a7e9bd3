"""Drop-in for ``seqpool`` 0.0.1 (vvvm23/seqpool, PyPI 2022-06): ``from seqops.compat.seqpool import CVTSeqPool``.

Names: ``CVTSeqPool``, ``MeanSeqPool`` -- the package's whole public API (its ``__init__``), here
seqops.nn's modules themselves.

- ``CVTSeqPool(in_dim)``: same state_dict (``pool.weight`` (1, in_dim)), same input checks and
  error messages, same output (B, in_dim); adds an optional bool mask ``forward(x, mask=None)``.
- ``MeanSeqPool()``: **differs on purpose** -- averages over the sequence, (B, L, D) -> (B, D)
  (the original averaged over the embedding axis and returned (B, L), a bug).

Absent: the submodules ``seqpool.cvt`` / ``seqpool.mean`` / ``seqpool.utils`` and the base class
``HelperModule`` (an implementation detail of the original: constructor arguments forwarded to a
``build`` method); seqops' modules are plain ``nn.Module`` subclasses.
"""
from seqops.nn import CVTSeqPool, MeanSeqPool

__all__ = ["CVTSeqPool", "MeanSeqPool"]
