"""Timing and memory helpers shared by `seqops bench` and benchmarks/*.py: warm-up, interleaved
repeats, median; peak memory of one call."""
import ctypes
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence

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


def forward_call(fn: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> Callable[[], None]:
    """A timed call of fn(*inputs) without autograd (on the inputs detached)."""
    detached = [t.detach() for t in inputs]

    def run() -> None:
        with torch.no_grad():
            fn(*detached)
    return run


def training_call(fn: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> Callable[[], None]:
    """A timed forward + backward of fn(*inputs): the gradients of every input (which must
    require them) for an output gradient of ones."""
    def run() -> None:
        out = fn(*inputs)
        torch.autograd.grad(out, inputs, torch.ones_like(out))
    return run


def pass_rows(fns: Dict[str, Callable[..., torch.Tensor]], inputs_of: Callable[[str], Sequence[torch.Tensor]],
              base: str, repeats: int, forward_only: Sequence[str] = ()) -> List[List[str]]:
    """Rows [pass, method, ms, x base] of a benchmark table: each fn(*inputs_of(name)) timed
    interleaved (compare) forward (forward_call) and forward + backward (training_call, but for
    the names in forward_only), with its time over base's."""
    rows = []
    for label, wrap in (("forward", forward_call), ("forward + backward", training_call)):
        cases = {name: wrap(fn, *inputs_of(name)) for name, fn in fns.items()
                 if wrap is forward_call or name not in forward_only}
        times = compare(cases, repeats=repeats, warmup=1)
        for name, t in times.items():
            rows.append([label, name, f"{t * 1e3:.1f}", f"{t / times[base]:.2f}"])
    return rows


def _rss_peak_reset() -> Optional[int]:
    """Returns the current RSS after resetting the kernel's peak-RSS mark (Linux), or None."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back so the baseline is honest
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return _status_kib("VmRSS") * 1024
    except OSError:
        return None


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def peak_memory(fn: Callable[[], object], device: str = "cpu") -> Optional[int]:
    """Bytes of memory one call of fn needs above what was in use before it: the CUDA caching
    allocator's peak on CUDA, the process's peak RSS on CPU (Linux only; None elsewhere)."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        fn()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    before = _rss_peak_reset()
    if before is None:
        return None
    fn()
    return max(_status_kib("VmHWM") * 1024 - before, 0)


def markdown_table(header: List[str], rows: List[List[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def run_script(main: Callable[[], None]) -> None:
    """A benchmark script's entry point: runs main, then prints the load average (other jobs on
    the machine skew the timings); a closed pipe (``| head``) ends it quietly."""
    try:
        main()
        print("load average after:", open("/proc/loadavg").read().split()[:3])
    except BrokenPipeError:
        sys.stderr.close()
