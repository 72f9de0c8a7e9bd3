"""Modules built on the seqops ops, compatible with the originals' constructors: pooling,
attention and dropout here; the positional embeddings, Linformer and the Compressive Transformer
in their subpackages (every public name is re-exported here)."""
from .attention import MultiheadAttention
from .compressive import (AttentionReconstructionLoss, CompressiveFeedForward, CompressiveMemory,
                          CompressiveTransformer, CompressiveTransformerLayer,
                          CompressiveTransformerLM, Conv1dCompression, MaxCompression,
                          MeanCompression, PoolCompression, ReconstructionInputs,
                          RelativeMultiHeadAttention, from_labml_state_dict, load_labml_state_dict)
from .dropout import Dropout
from .kv_cache import KVCache
from .packing import pack_sequences, packed_positions, unpack_sequences
from .linformer import (FeedForward, LinearAttentionHead, Linformer, LinformerEncDec, LinformerLM,
                        MHAttention, Padder, SequenceProjection, Visualizer, get_EF,
                        load_linformer_pytorch)
from .linformer import PositionalEmbedding as LinformerPositionalEmbedding
from .pooling import CVTSeqPool, LAMA, LAMAEncoder, LAMAPooler, MeanSeqPool, SeqPool
from .positional import (EnformerPositionalEmbedding, LearnedPositionalEmbedding, PositionalEmbedding,
                         RotaryPositionalEmbedding, SinusoidalPositionalEmbedding, T5PositionalEmbedding,
                         TransformerXLPositionalEmbedding, UnifiedPositionalEmbedding)

__all__ = ["CVTSeqPool", "Dropout", "EnformerPositionalEmbedding", "KVCache", "LAMA", "LAMAEncoder", "LAMAPooler",
           "LearnedPositionalEmbedding", "MeanSeqPool", "MultiheadAttention", "PositionalEmbedding",
           "RotaryPositionalEmbedding", "SeqPool", "SinusoidalPositionalEmbedding", "T5PositionalEmbedding",
           "TransformerXLPositionalEmbedding", "UnifiedPositionalEmbedding",
           "FeedForward", "LinearAttentionHead", "Linformer", "LinformerEncDec", "LinformerLM",
           "LinformerPositionalEmbedding", "MHAttention", "Padder", "SequenceProjection", "Visualizer", "get_EF",
           "load_linformer_pytorch",
           "AttentionReconstructionLoss", "CompressiveFeedForward", "CompressiveMemory",
           "CompressiveTransformer", "CompressiveTransformerLayer", "CompressiveTransformerLM",
           "Conv1dCompression", "MaxCompression", "MeanCompression", "PoolCompression",
           "ReconstructionInputs", "RelativeMultiHeadAttention", "from_labml_state_dict",
           "load_labml_state_dict", "pack_sequences", "packed_positions", "unpack_sequences"]
