"""Modules built on the seqops ops, compatible with the originals' constructors."""
from .pooling import CVTSeqPool, LAMA, LAMAEncoder, LAMAPooler, MeanSeqPool, SeqPool

__all__ = ["CVTSeqPool", "LAMA", "LAMAEncoder", "LAMAPooler", "MeanSeqPool", "SeqPool"]
