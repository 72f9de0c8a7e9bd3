"""Positional embeddings with the API of positional-embeddings-pytorch (conventions in base.py):
absolute schemes (sinusoidal, learned), bucketed relative positions (T5, TUPE) and relative keys
(Transformer-XL, Enformer)."""
from .absolute import LearnedPositionalEmbedding, SinusoidalPositionalEmbedding
from .base import PositionalEmbedding
from .buckets import T5PositionalEmbedding, UnifiedPositionalEmbedding, t5_relative_position_bucket
from .relative import EnformerPositionalEmbedding, TransformerXLPositionalEmbedding

__all__ = ["EnformerPositionalEmbedding", "LearnedPositionalEmbedding", "PositionalEmbedding",
           "SinusoidalPositionalEmbedding", "T5PositionalEmbedding",
           "TransformerXLPositionalEmbedding", "UnifiedPositionalEmbedding",
           "t5_relative_position_bucket"]
