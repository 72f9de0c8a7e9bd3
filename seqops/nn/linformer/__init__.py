"""Linformer (linformer-pytorch's API): the model, its attention, the E/F projections, the Padder
and the Visualizer, and loading of linformer-pytorch weights."""
from .attention import LinearAttentionHead, MHAttention
from .model import FeedForward, Linformer, LinformerEncDec, LinformerLM, PositionalEmbedding
from .projection import SequenceProjection, get_EF
from .tools import Padder, Visualizer
from .weights import convert_linformer_pytorch, load_linformer_pytorch

__all__ = ["FeedForward", "LinearAttentionHead", "Linformer", "LinformerEncDec", "LinformerLM",
           "MHAttention", "Padder", "PositionalEmbedding", "SequenceProjection", "Visualizer",
           "convert_linformer_pytorch", "get_EF", "load_linformer_pytorch"]
