"""Compression functions f_c of the Compressive Transformer (Rae et al. 2019), on seqops.ops.compress.

Each maps a memory (B, L, d_model), L a positive multiple of compression_rate, to
(B, L / compression_rate, d_model), window by window, oldest first. A length that is not a
multiple raises (labml's Conv1dCompression silently dropped the last L mod c memories);
CompressiveMemory only ever hands whole windows over and keeps the remainder uncompressed.
"""
from torch import Tensor, nn

from ... import ops


def _check_rate(compression_rate: int) -> None:
    if compression_rate < 1:
        raise ValueError(f"compression_rate must be >= 1, got {compression_rate}")


class Conv1dCompression(nn.Module):
    """The paper's best f_c: nn.Conv1d(d_model, d_model, kernel_size=c, stride=c) over the
    sequence, run as one GEMM inside seqops.ops.compress.

    State dict ``conv.weight`` (d_model, d_model, c) and ``conv.bias`` (d_model,), as labml's.
    forward(mem (B, L, d_model)) -> (B, L / c, d_model).
    """

    def __init__(self, compression_rate: int, d_model: int, device=None, dtype=None) -> None:
        super().__init__()
        _check_rate(compression_rate)
        self.compression_rate = compression_rate
        self.conv = nn.Conv1d(d_model, d_model, kernel_size=compression_rate, stride=compression_rate,
                              device=device, dtype=dtype)

    def forward(self, mem: Tensor) -> Tensor:
        return ops.compress(mem, self.compression_rate, "conv", self.conv.weight, self.conv.bias)[0]


class PoolCompression(nn.Module):
    """Parameter-free f_c: the 'mean' or 'max' of each window of c memories (paper, Table 5).

    ``d_model`` is accepted for a constructor interchangeable with Conv1dCompression, and unused.
    forward(mem (B, L, D)) -> (B, L / c, D).
    """

    def __init__(self, compression_rate: int, d_model: int = 0, mode: str = "mean") -> None:
        super().__init__()
        _check_rate(compression_rate)
        if mode not in ("mean", "max"):
            raise ValueError(f"mode must be 'mean' or 'max', got {mode!r}")
        self.compression_rate = compression_rate
        self.mode = mode

    def forward(self, mem: Tensor) -> Tensor:
        return ops.compress(mem, self.compression_rate, self.mode)[0]


class MeanCompression(PoolCompression):
    """Mean-pool f_c over windows of compression_rate memories."""

    def __init__(self, compression_rate: int, d_model: int = 0) -> None:
        super().__init__(compression_rate, d_model, "mean")


class MaxCompression(PoolCompression):
    """Max-pool f_c over windows of compression_rate memories."""

    def __init__(self, compression_rate: int, d_model: int = 0) -> None:
        super().__init__(compression_rate, d_model, "max")
