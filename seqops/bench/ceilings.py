"""The machine's ceilings right now, measured at the start of `seqops bench`: a square GEMM
(FLOP/s) and a large copy (bytes read + written per second), in the benchmark's dtype."""
from typing import Dict

import torch

from .timing import compare


def measure(device: str, dtype: torch.dtype, quick: bool) -> Dict[str, float]:
    n = 1024 if quick else 2048
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    src = torch.randn(32 * 2 ** 20 if quick else 128 * 2 ** 20, device=device).to(dtype)
    dst = torch.empty_like(src)
    t = compare({"gemm": lambda: torch.mm(a, b), "copy": lambda: dst.copy_(src)}, device, repeats=5, warmup=1)
    return {"gemm_gflops": 2 * n ** 3 / t["gemm"] / 1e9,
            "copy_gbs": 2 * src.numel() * src.element_size() / t["copy"] / 1e9}
