"""The Compressive Transformer (labml-nn's API): relative attention over memory and compressed
memory, the compressions, the memory FIFO, the attention-reconstruction loss, the LM, and loading
of labml-nn weights."""
from .attention import CompressiveFeedForward, RelativeMultiHeadAttention
from .compression import Conv1dCompression, MaxCompression, MeanCompression, PoolCompression
from .lm import CompressiveTransformerLM
from .loss import AttentionReconstructionLoss
from .memory import CompressiveMemory, ReconstructionInputs
from .model import CompressiveTransformer, CompressiveTransformerLayer
from .weights import from_labml_state_dict, load_labml_state_dict

__all__ = ["AttentionReconstructionLoss", "CompressiveFeedForward", "CompressiveMemory",
           "CompressiveTransformer", "CompressiveTransformerLayer", "CompressiveTransformerLM",
           "Conv1dCompression", "MaxCompression", "MeanCompression", "PoolCompression",
           "ReconstructionInputs", "RelativeMultiHeadAttention", "from_labml_state_dict",
           "load_labml_state_dict"]
