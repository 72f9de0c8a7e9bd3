"""Positional embeddings with the API of positional-embeddings-pytorch (conventions in base.py):
absolute schemes (sinusoidal, learned), bucketed relative positions (T5, TUPE), relative keys
(Transformer-XL, Enformer) and rotary positions (RoFormer)."""
from .absolute import LearnedPositionalEmbedding, SinusoidalPositionalEmbedding
from .base import PositionalEmbedding
from .buckets import T5PositionalEmbedding, UnifiedPositionalEmbedding, t5_relative_position_bucket
from .relative import EnformerPositionalEmbedding, TransformerXLPositionalEmbedding
from .rotary import RotaryPositionalEmbedding

__all__ = ["EnformerPositionalEmbedding", "LearnedPositionalEmbedding", "PositionalEmbedding",
           "RotaryPositionalEmbedding", "SinusoidalPositionalEmbedding", "T5PositionalEmbedding",
           "TransformerXLPositionalEmbedding", "UnifiedPositionalEmbedding",
           "t5_relative_position_bucket"]
