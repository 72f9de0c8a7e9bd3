"""`seqops bench`: seqops against eager PyTorch, SDPA, FlexAttention and the originals, per op family."""
from .families import FAMILIES, FAMILY_OF_OP, Case
from .runner import run

__all__ = ["Case", "FAMILIES", "FAMILY_OF_OP", "run"]
