"""Shared timing helpers for the benchmark scripts: warm-up, interleaved repeats, median."""
import statistics
import time
from typing import Callable, Dict, List

import torch


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def compare(fns: Dict[str, Callable[[], object]], device: str = "cpu", repeats: int = 15,
            warmup: int = 3) -> Dict[str, float]:
    """Median seconds per call of each fn, measured interleaved so drift hits all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    sync(device)
    samples: Dict[str, List[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            fn()
            sync(device)
            samples[name].append(time.perf_counter() - t0)
    return {name: statistics.median(s) for name, s in samples.items()}


def markdown_table(header: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)
