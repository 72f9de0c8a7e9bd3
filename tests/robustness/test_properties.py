"""Property-based tests (hypothesis) for every op of the catalog, on every catalog device: random
batch, lengths, widths, heads, masks (with fully masked rows), strides and dtypes; the outputs
and the gradients agree with seqops.reference in float64 (float64 to 1e-9; float32 and the low
precisions by the rule of twice the error of the same reference run in that dtype, plus a floor
of a few ulps of the value's magnitude). 60 examples per op and device by default, 1000 in the
slow suite (the hypothesis profiles are in conftest.py)."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from support import NATIVE_DEVICES, assert_low_precision_close, kernel_device, low_precision
from support.op_cases import CASES, CATALOG_DEVICES, Sizes, as_float64, input_grads, with_grads

# Floors of the 2x rule, in units of the dtype's eps times the example's magnitude: max(1, the
# largest exact output or gradient of the example), and for the gradients also the largest sum
# of |terms| where the op's case sizes one (OpCase.gradient_terms). A gradient that cancels
# exactly, such as seq_pool's weight gradient at length 1, is 0 in the eager reference but a few
# eps of the terms that cancel in any other summation order. For float32 the kernels' excess
# over twice the eager error was at most 5.4 eps x magnitude on the attention shapes of
# tests/ops/test_attention.py and 59 eps of the result's magnitude in that cancellation (1000
# examples per op); bfloat16 keeps the project's 2e-2 (2.6 eps) per unit of magnitude (a score
# parameter's gradient, e.g. ALiBi's slopes summed over every pair, is not bounded by 1).
FLOOR_EPS = {torch.float32: 32, torch.bfloat16: 2.6, torch.float16: 20}


def sizes_for(device):
    return st.builds(Sizes, batch=st.integers(1, 3), length=st.integers(1, 40), length_q=st.integers(1, 40),
                     dim=st.integers(1, 20), heads=st.integers(1, 3), masked=st.booleans(),
                     noncontiguous=st.booleans(),
                     dtype=st.sampled_from([torch.float32, torch.float64] + low_precision(device)),
                     device=st.just(device))


def assert_agrees(got: torch.Tensor, exact: torch.Tensor, eager: torch.Tensor, what: str, scale: float,
                  input_dtype: torch.dtype, rounds_inputs: bool = False) -> None:
    assert got.shape == exact.shape, f"{what}: shape {tuple(got.shape)} vs {tuple(exact.shape)}"
    finite = torch.isfinite(exact)
    assert torch.equal(torch.isfinite(got), finite), f"{what}: non-finite entries differ"
    assert torch.equal(got.double()[~finite], exact[~finite]), f"{what}: infinities differ"
    g, x, e = got.double()[finite], exact[finite], eager.double()[finite]
    if g.numel() == 0:
        return
    if got.dtype == torch.float64:
        torch.testing.assert_close(g, x, atol=1e-9, rtol=1e-9, msg=lambda m: f"{what}: {m}")
        return
    if got.dtype != eager.dtype:  # a float32 lse of low-precision inputs: float32 accumulation of exact inputs
        # (or, where the kernel rounds derived inputs to their dtype, one rounding of the logits).
        tol = torch.finfo(input_dtype).eps * scale if rounds_inputs else 1e-4
        torch.testing.assert_close(g, x, atol=tol, rtol=1e-4, msg=lambda m: f"{what}: {m}")
        return
    floor = FLOOR_EPS[got.dtype] * torch.finfo(got.dtype).eps * scale
    try:
        assert_low_precision_close(g, e, x, floor=floor)
    except AssertionError as err:
        raise AssertionError(f"{what} ({got.dtype}): {err}") from None


def magnitude(exact) -> float:
    """max(1, the largest finite |value|) over the exact float tensors of an example."""
    values = [x[torch.isfinite(x)].abs().max().item() for x in exact
              if x.is_floating_point() and torch.isfinite(x).any()]
    return max([1.0] + values)


def check_op_matches_reference(device, name, data, seed):
    sizes = data.draw(sizes_for(device), label="sizes")
    case = CASES[name]
    rounds = case.rounds_derived_inputs and kernel_device(device) != "cpu"  # only the CUDA kernels round
    inputs = case.inputs(sizes, torch.Generator().manual_seed(seed))
    kw, exact_kw, eager_kw = with_grads(case, inputs), with_grads(case, as_float64(inputs)), with_grads(case, inputs)
    got, exact, eager = case.run(**kw), case.reference(**exact_kw), case.reference(**eager_kw)
    for i, (g, x) in enumerate(zip(got, exact)):
        assert g.dtype == sizes.dtype or not g.is_floating_point() or i > 0, f"output {i} dtype {g.dtype}"
        assert g.device == x.device, f"output {i} on {g.device}"
    outs = [i for i, o in enumerate(got) if o.requires_grad]
    if not outs:
        scale = magnitude(exact)
        for i, (g, x, e) in enumerate(zip(got, exact, eager)):
            assert_agrees(g, x, e, f"{name} output {i} at {sizes}", scale, sizes.dtype, rounds)
        return
    cot = [torch.randn(got[i].shape, generator=torch.Generator().manual_seed(seed + i), dtype=torch.float64)
           .to(device) for i in outs]

    def grads(result, args):
        # The outputs seqops differentiates (the reference's lse is differentiable, the op's is not).
        return input_grads(case, args, [result[i] for i in outs], [c.to(result[i].dtype) for i, c in zip(outs, cot)])

    (leaves, g_got), (_, g_exact), (_, g_eager) = grads(got, kw), grads(exact, exact_kw), grads(eager, eager_kw)
    scale = magnitude(list(exact) + [x for x in g_exact if x is not None])
    for i, (g, x, e) in enumerate(zip(got, exact, eager)):
        assert_agrees(g, x, e, f"{name} output {i} at {sizes}", scale, sizes.dtype, rounds)
    grad_scale = scale if case.gradient_terms is None else max(scale, case.gradient_terms(exact_kw, cot))
    for n, g, x, e in zip(leaves, g_got, g_exact, g_eager):
        if x is None:
            assert g is None or not g.any(), f"{name}: {n} should get no gradient"
            continue
        assert g is not None, f"{name}: no gradient for {n}"
        assert_agrees(g, x, e, f"{name} grad {n} at {sizes}", grad_scale, sizes.dtype)


def property_test(profile: str, devices=CATALOG_DEVICES):
    """check_op_matches_reference over every op and each of `devices`, with the examples of `profile`."""
    @pytest.mark.parametrize("device", devices)
    @pytest.mark.parametrize("name", list(CASES))
    @settings(settings.get_profile(profile))
    @given(data=st.data(), seed=st.integers(0, 2 ** 16))
    def test(device, name, data, seed):
        check_op_matches_reference(device, name, data, seed)
    return test


test_op_matches_reference = property_test("seqops-properties")
# 1000 examples per op on the native devices, in the slow suite (CI runs `--run-slow -m slow`).
# The emulator runs the 60 above: an emulated example costs two to three times a native one,
# and its 1000 took about 9 of CI's minutes (two workers).
test_op_matches_reference_1000_examples = pytest.mark.slow(property_test("seqops-properties-slow", NATIVE_DEVICES))
