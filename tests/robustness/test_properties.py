"""Property-based tests (hypothesis) for every op of the catalog: random batch, lengths, widths,
heads, masks (with fully masked rows), strides and dtypes; the outputs and the gradients agree
with seqops.reference in float64 (float32 to 1e-4; bfloat16 by the project's rule: at most twice
the error of the reference run in bfloat16)."""
import pytest
import torch
from hypothesis import HealthCheck, given, settings, strategies as st

from support import assert_low_precision_close
from support.op_cases import CASES, Sizes, as_float64, input_grads, with_grads

SIZES = st.builds(Sizes, batch=st.integers(1, 3), length=st.integers(1, 40), length_q=st.integers(1, 40),
                  dim=st.integers(1, 20), heads=st.integers(1, 3), masked=st.booleans(),
                  noncontiguous=st.booleans(), dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]))


def assert_agrees(got: torch.Tensor, exact: torch.Tensor, eager: torch.Tensor, what: str) -> None:
    assert got.shape == exact.shape, f"{what}: shape {tuple(got.shape)} vs {tuple(exact.shape)}"
    finite = torch.isfinite(exact)
    assert torch.equal(torch.isfinite(got), finite), f"{what}: non-finite entries differ"
    assert torch.equal(got.double()[~finite], exact[~finite]), f"{what}: infinities differ"
    g, x, e = got.double()[finite], exact[finite], eager.double()[finite]
    if g.numel() == 0:
        return
    if got.dtype == torch.bfloat16:
        assert_low_precision_close(g, e, x, floor=2e-2)
    else:
        tol = 1e-9 if got.dtype == torch.float64 else 1e-4
        torch.testing.assert_close(g, x, atol=tol, rtol=tol, msg=lambda m: f"{what}: {m}")


@pytest.mark.parametrize("name", list(CASES))
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=SIZES, seed=st.integers(0, 2 ** 16))
def test_op_matches_reference(name, sizes, seed):
    case = CASES[name]
    inputs = case.inputs(sizes, torch.Generator().manual_seed(seed))
    kw, exact_kw, eager_kw = with_grads(case, inputs), with_grads(case, as_float64(inputs)), with_grads(case, inputs)
    got, exact, eager = case.run(**kw), case.reference(**exact_kw), case.reference(**eager_kw)
    for i, (g, x, e) in enumerate(zip(got, exact, eager)):
        assert g.dtype == sizes.dtype or not g.is_floating_point() or i > 0, f"output {i} dtype {g.dtype}"
        assert_agrees(g, x, e, f"{name} output {i} at {sizes}")
    outs = [i for i, o in enumerate(got) if o.requires_grad]
    if not outs:
        return
    cot = [torch.randn(got[i].shape, generator=torch.Generator().manual_seed(seed + i), dtype=torch.float64)
           for i in outs]

    def grads(result, args):
        # The outputs seqops differentiates (the reference's lse is differentiable, the op's is not).
        return input_grads(case, args, [result[i] for i in outs], [c.to(result[i].dtype) for i, c in zip(outs, cot)])

    (leaves, g_got), (_, g_exact), (_, g_eager) = grads(got, kw), grads(exact, exact_kw), grads(eager, eager_kw)
    for n, g, x, e in zip(leaves, g_got, g_exact, g_eager):
        if x is None:
            assert g is None or not g.any(), f"{name}: {n} should get no gradient"
            continue
        assert g is not None, f"{name}: no gradient for {n}"
        assert_agrees(g, x, e, f"{name} grad {n} at {sizes}")
