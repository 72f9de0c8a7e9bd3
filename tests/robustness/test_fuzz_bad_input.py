"""Bad-input fuzzer: every op of the catalog, fed systematic corruptions of a valid call -- wrong
ranks, mismatched and zero sizes, out-of-range integers and probabilities, NaN / Inf values, wrong
dtypes, tensors on another device, non-tensors. Each case must end in a Python exception whose message names an
argument of the call, or in a result that agrees with seqops.reference; never a crash, a hang or
silent garbage. The count of cases run is printed (pytest -s) and checked."""
import re
from dataclasses import replace
from typing import Dict, Iterator, Tuple

import pytest
import torch
from torch import Tensor

from support.op_cases import CASES, CATALOG_DEVICES, HOST_ARGS, Sizes, as_float64

BASE = Sizes(batch=2, length=6, length_q=5, dim=4, heads=2)
ERRORS = (RuntimeError, ValueError, TypeError, IndexError)


def resized(t: Tensor, dim: int, size: int) -> Tensor:
    """t with dimension dim cut or extended (by repeating its first slice) to size."""
    if size <= t.shape[dim]:
        return t.narrow(dim, 0, size)
    extra = t.narrow(dim, 0, 1).expand(*[size - t.shape[d] if d == dim else -1 for d in range(t.dim())])
    return torch.cat([t, extra], dim)


def poisoned(t: Tensor, value: float) -> Tensor:
    out = t.clone()
    out.view(-1)[out.numel() // 2] = value
    return out


def corruptions(kw: Dict[str, object]) -> Iterator[Tuple[str, Dict[str, object]]]:
    """(description, corrupted keyword arguments) for every corruption of every argument."""
    for name, value in kw.items():
        def with_(new, what):
            return f"{name}: {what}", {**kw, name: new}
        if isinstance(value, bool) or value is None or isinstance(value, str):
            if isinstance(value, str):
                yield with_("no-such-" + value, "unknown string")
            continue
        if isinstance(value, int):
            for bad in (0, -1, -(2 ** 40)):
                yield with_(bad, f"integer {bad}")
            continue
        if isinstance(value, float):  # a probability
            for bad in (-0.5, 1.0, float("nan")):
                yield with_(bad, f"float {bad}")
            continue
        t: Tensor = value
        yield with_(t.unsqueeze(0), "one more dimension")
        if t.dim() >= 1:
            yield with_(t[0] if t.shape[0] > 0 else t.sum(0), "one less dimension")
        yield with_(t.tolist(), "a Python list")
        for dim in range(t.dim()):
            for size in {0, 1, t.shape[dim] + 1, max(t.shape[dim] - 1, 0)}:
                if size != t.shape[dim]:
                    yield with_(resized(t, dim, size), f"dim {dim} of size {size}")
        if t.is_floating_point():
            yield with_(poisoned(t, float("nan")), "a NaN")
            yield with_(poisoned(t, float("inf")), "an Inf")
            yield with_(poisoned(t, float("-inf")), "a -Inf")
            yield with_(t.double(), "float64 among float32")
            yield with_(t.to(torch.int64), "int64")
        else:
            yield with_(t.float(), "float instead of " + str(t.dtype))
            yield with_(t.to(torch.int64), "int64 instead of " + str(t.dtype))
        yield with_(t.to("meta"), "on the meta device")
        if t.device.type != "cpu":
            yield with_(t.cpu(), "on the CPU among " + t.device.type)


def names_an_argument(message: str, kw: Dict[str, object]) -> bool:
    """The message names one of the call's arguments as a whole word (``x``, not the x of
    "Expected"), and is not an internal assertion (those name a source file, not the input)."""
    if "INTERNAL ASSERT" in message or re.search(r"\.(?:cpp|cu|cuh|h):\d+", message):
        return False
    return any(re.search(rf"(?<![\w.]){re.escape(arg)}(?!\w)", message) for arg in kw)


def agrees_with_reference(name: str, kw: Dict[str, object], got) -> str:
    """Empty when the result is right; else what is wrong."""
    devices = {v.device.type for k, v in kw.items() if isinstance(v, Tensor) and k not in HOST_ARGS}
    if len(devices) > 1:
        return f"returned a result for tensors on {sorted(devices)}"
    shapes_only = devices == {"meta"}  # shape propagation: the shapes must be the reference's
    if shapes_only:
        kw = {k: torch.zeros_like(v, device="cpu") if isinstance(v, Tensor) else v for k, v in kw.items()}
    try:
        want = CASES[name].reference(**as_float64(kw))
    except Exception as e:  # noqa: BLE001 -- any failure of the reference means the input is invalid
        return f"returned a result where the reference raises {type(e).__name__}: {e}"
    for g, w in zip(got, want):
        if g.shape != w.shape:
            return f"shape {tuple(g.shape)} vs reference {tuple(w.shape)}"
        if shapes_only:
            continue
        finite = torch.isfinite(w)
        if not (torch.isfinite(g) | ~finite).all():
            return "non-finite values where the reference is finite"
        if not torch.allclose(g.double()[finite], w[finite], atol=1e-4, rtol=1e-4):
            return "values differ from the reference"
    return ""


@pytest.mark.parametrize("device", CATALOG_DEVICES)
def test_every_bad_input_raises_a_clear_error_or_gives_the_right_result(device):
    ran, problems = 0, []
    for name, case in CASES.items():
        kw = case.inputs(replace(BASE, device=device), torch.Generator().manual_seed(0))
        for what, bad in corruptions(kw):
            ran += 1
            try:
                got = case.run(**bad)
            except ERRORS as e:
                if not names_an_argument(str(e), kw):
                    problems.append(f"{name} [{what}]: the error names no argument: {str(e)[:200]}")
                continue
            problem = agrees_with_reference(name, bad, got)
            if problem:
                problems.append(f"{name} [{what}]: {problem[:200]}")
    print(f"\nbad-input fuzzer ({device}): {ran} cases over {len(CASES)} ops, {len(problems)} problems")
    assert ran >= 500
    assert not problems, "\n".join(problems)


def test_an_argument_is_named_as_a_whole_word():
    kw = {"x": None, "p": None, "q": None, "mask": None}
    assert names_an_argument("x must have 3 dimensions (batch, length, dim), got 2", kw)
    assert names_an_argument("mask's length (7) must equal x's (6)", kw)
    assert names_an_argument("Expected a value of type 'Tensor' for argument 'q' but found 'list'", kw)
    # Letters inside words, attribute paths and internal assertions name no argument.
    assert not names_an_argument("Expected a tensor, got an invalid value", kw)
    assert not names_an_argument("torch.p is not supported", kw)
    assert not names_an_argument("INTERNAL ASSERT FAILED at csrc/pooling/checks.cpp:12: x", kw)
    assert not names_an_argument("check failed at attention.cpp:120 for q", kw)
