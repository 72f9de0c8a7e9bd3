"""Modules built on the seqops ops, compatible with the originals' constructors."""
from .attention import MultiheadAttention
from .dropout import Dropout
from .linformer import FeedForward, Linformer, LinformerEncDec, LinformerLM
from .linformer import PositionalEmbedding as LinformerPositionalEmbedding
from .linformer_attention import LinearAttentionHead, MHAttention
from .linformer_compat import load_linformer_pytorch
from .linformer_projection import SequenceProjection, get_EF
from .linformer_tools import Padder, Visualizer
from .pooling import CVTSeqPool, LAMA, LAMAEncoder, LAMAPooler, MeanSeqPool, SeqPool
from .positional import (EnformerPositionalEmbedding, LearnedPositionalEmbedding, PositionalEmbedding,
                         SinusoidalPositionalEmbedding, T5PositionalEmbedding,
                         TransformerXLPositionalEmbedding, UnifiedPositionalEmbedding)

__all__ = ["CVTSeqPool", "Dropout", "EnformerPositionalEmbedding", "LAMA", "LAMAEncoder", "LAMAPooler",
           "LearnedPositionalEmbedding", "MeanSeqPool", "MultiheadAttention", "PositionalEmbedding",
           "SeqPool", "SinusoidalPositionalEmbedding", "T5PositionalEmbedding",
           "TransformerXLPositionalEmbedding", "UnifiedPositionalEmbedding",
           "FeedForward", "LinearAttentionHead", "Linformer", "LinformerEncDec", "LinformerLM",
           "LinformerPositionalEmbedding", "MHAttention", "Padder", "SequenceProjection", "Visualizer", "get_EF",
           "load_linformer_pytorch"]
from .compressive import CompressiveTransformer, CompressiveTransformerLayer
from .compressive_attention import CompressiveFeedForward, RelativeMultiHeadAttention
from .compressive_compression import Conv1dCompression, MaxCompression, MeanCompression, PoolCompression
from .compressive_labml import from_labml_state_dict, load_labml_state_dict
from .compressive_lm import CompressiveTransformerLM
from .compressive_loss import AttentionReconstructionLoss
from .compressive_memory import CompressiveMemory, ReconstructionInputs

__all__ += ["AttentionReconstructionLoss", "CompressiveFeedForward", "CompressiveMemory",
            "CompressiveTransformer", "CompressiveTransformerLayer", "CompressiveTransformerLM",
            "Conv1dCompression", "MaxCompression", "MeanCompression", "PoolCompression",
            "ReconstructionInputs", "RelativeMultiHeadAttention", "from_labml_state_dict",
            "load_labml_state_dict"]
