"""Modules built on the seqops ops, compatible with the originals' constructors."""
from .attention import MultiheadAttention
from .pooling import CVTSeqPool, LAMA, LAMAEncoder, LAMAPooler, MeanSeqPool, SeqPool
from .positional import (EnformerPositionalEmbedding, LearnedPositionalEmbedding, PositionalEmbedding,
                         SinusoidalPositionalEmbedding, T5PositionalEmbedding,
                         TransformerXLPositionalEmbedding, UnifiedPositionalEmbedding)

__all__ = ["CVTSeqPool", "EnformerPositionalEmbedding", "LAMA", "LAMAEncoder", "LAMAPooler",
           "LearnedPositionalEmbedding", "MeanSeqPool", "MultiheadAttention", "PositionalEmbedding",
           "SeqPool", "SinusoidalPositionalEmbedding", "T5PositionalEmbedding",
           "TransformerXLPositionalEmbedding", "UnifiedPositionalEmbedding"]
