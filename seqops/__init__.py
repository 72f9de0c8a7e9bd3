"""seqops: fused CPU/CUDA kernels for sequence pooling and attention, as torch custom ops."""
from ._build import build_info, load_library

_BUILD = load_library()
__version__ = _BUILD["version"]

from . import nn, ops, reference  # noqa: E402
from .ops import attention, dropout, lama_pool, masked_pool, seq_pool  # noqa: E402

__all__ = ["attention", "build_info", "dropout", "lama_pool", "masked_pool", "nn", "ops", "reference", "seq_pool"]
