"""Drop-in for ``linformer-pytorch`` 0.19.3 (tatp22/linformer-pytorch, last code commit f10226a,
2020-10): ``from seqops.compat.linformer_pytorch import Linformer``.

Names (the original package's ``__init__``, all of them): ``Linformer``, ``LinformerLM``,
``LinformerEncDec``, ``MHAttention``, ``LinearAttentionHead``, ``FeedForward``,
``PositionalEmbedding`` (Linformer's sinusoidal table, ``seqops.nn.LinformerPositionalEmbedding``
-- not the positional-embeddings base class), ``get_EF``, ``Padder``, ``Visualizer``. They are
seqops.nn's objects themselves, with the original's constructor arguments and defaults.

Differences (details and pinning tests in docs/compat.md): ``causal=True`` is truly causal;
masks are real attention masks (``input_mask`` / ``embeddings_mask`` bool, True = keep); inputs
shorter than ``input_size`` are accepted; ``get_EF`` returns a ``SequenceProjection`` (the
original returned nn.Linear / nn.Conv1d / a plain tensor) and ``MHAttention``'s
``causal_mask`` is True/False (a mask tensor raises); C1/C2 checkpointing accepts keyword
arguments. Weights of an original model load with ``seqops.nn.load_linformer_pytorch``.

Absent: the original's internal helpers that its ``__init__`` does not export
(``Residual``, ``ProjectInOut``, ``gen_causal_mask``, ``get_act``, ``identity``) and its
submodules ``linformer_pytorch.linformer_pytorch`` / ``.padder`` / ``.visualizer``.
"""
from seqops.nn import (FeedForward, LinearAttentionHead, Linformer, LinformerEncDec, LinformerLM, MHAttention,
                       Padder, Visualizer, get_EF)
from seqops.nn import LinformerPositionalEmbedding as PositionalEmbedding

__all__ = ["FeedForward", "LinearAttentionHead", "Linformer", "LinformerEncDec", "LinformerLM", "MHAttention",
           "Padder", "PositionalEmbedding", "Visualizer", "get_EF"]
