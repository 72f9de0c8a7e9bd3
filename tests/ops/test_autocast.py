"""Autocast for every op: matmul-like ops (the attention poolers, attention with each score policy,
the 'conv' compression) run in the context's dtype -- bfloat16 on CPU, float16 and bfloat16 on
CUDA -- and match the same op called on explicitly cast inputs; reductions (masked_pool, 'mean' /
'max' compression) and dropout keep float32 and match the op outside autocast. Gradients flow back to the
float32 inputs in their dtype."""
import pytest
import torch

from support import HAS_CUDA
from support.op_cases import CASES, HOST_ARGS, Sizes, input_grads, with_grads

KEEP_DTYPE = {"masked_pool_mean", "masked_pool_max", "masked_pool_sum", "compress_mean", "compress_max", "dropout"}
CONTEXTS = [("cpu", torch.bfloat16)] + [
    pytest.param("cuda", dtype, marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device"))
    for dtype in (torch.float16, torch.bfloat16)]


def cast(kw, dtype):
    return {k: v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v for k, v in kw.items()}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("device, dtype", CONTEXTS)
def test_autocast_matches_the_explicit_cast(name, device, dtype):
    case = CASES[name]
    kw = {k: v.to(device) if isinstance(v, torch.Tensor) and k not in HOST_ARGS else v
          for k, v in case.inputs(Sizes(batch=2, length=37, length_q=11, dim=16, heads=2),
                                  torch.Generator().manual_seed(0)).items()}
    inputs = with_grads(case, kw)
    with torch.autocast(device, dtype=dtype):
        got = case.run(**inputs)
    want = case.run(**(kw if name in KEEP_DTYPE else cast(kw, dtype)))
    assert got[0].dtype == (torch.float32 if name in KEEP_DTYPE else dtype)
    if name.startswith("compress"):  # the uncompressed tail is a view of x: it keeps x's dtype
        torch.testing.assert_close(got[1], kw["x"][:, got[0].shape[1] * kw["rate"]:], atol=0, rtol=0)
        got, want = got[:1], want[:1]
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=0, rtol=0)
    names, grads = input_grads(case, inputs, got)
    for name_, grad in zip(names, grads):
        assert grad is None or (grad.dtype == inputs[name_].dtype and torch.isfinite(grad).all())
