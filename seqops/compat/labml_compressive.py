"""Drop-in for labml_nn's Compressive Transformer (``labml_nn.transformers.compressive``,
labml-nn 0.5.1, 2025-08; repo snapshot e6b3c8a): ``from seqops.compat.labml_compressive import
CompressiveTransformer``.

Names, in one flat namespace:

- from ``labml_nn.transformers.compressive`` (the classes it defines): ``Conv1dCompression``,
  ``CompressiveTransformerLayer``, ``CompressiveTransformer``, ``AttentionReconstructionLoss``;
- the two sublayers a layer is built from, which that module imports and users import from
  ``labml_nn.transformers.xl`` / ``labml_nn.transformers.feed_forward``:
  ``RelativeMultiHeadAttention`` and ``FeedForward`` (= ``seqops.nn.CompressiveFeedForward``).

All are seqops.nn's objects themselves, with labml's constructor arguments (the layer's are
keyword-only, as labml's) and state_dict keys; labml weights load with
``seqops.nn.load_labml_state_dict``. So labml's model-building code runs unchanged.

**The forward layout differs** (no adapter: seqops is batch-first throughout, and the loss calls
each layer's ``compress`` on batch-first memories): tensors are (B, L, d_model), not labml's
(L, B, d_model), and the mask is a bool key-padding mask (B, Lc + Lm + Lq) plus ``causal=True``
(default) instead of labml's [Lq, Lk, B] mask; passing labml's 3-D mask raises. labml's usual
mask (ones over the memories, a lower triangle over the segment) is ``mask=None, causal=True``.

Absent: ``PrepareForMultiHeadAttention`` and ``clone_module_list`` (imported helpers, not part of
the Compressive API), and experiment.py's ``CompressedMemory``, ``AutoregressiveModel`` and
``Configs`` (labml's trainer). seqops' counterparts have their own APIs:
``seqops.nn.CompressiveMemory`` (the memory FIFO and compression labml leaves to its trainer) and
``seqops.nn.CompressiveTransformerLM`` (state_dict keys of labml's AutoregressiveModel).
Behaviour differences (docs/compat.md): layers start independently initialized, compression
never drops the L mod c remainder, relative positions have no 4096 cap, c_mem is used without mem.
"""
from seqops.nn import (AttentionReconstructionLoss, CompressiveTransformer, CompressiveTransformerLayer,
                       Conv1dCompression, RelativeMultiHeadAttention)
from seqops.nn import CompressiveFeedForward as FeedForward

__all__ = ["AttentionReconstructionLoss", "CompressiveTransformer", "CompressiveTransformerLayer",
           "Conv1dCompression", "FeedForward", "RelativeMultiHeadAttention"]
