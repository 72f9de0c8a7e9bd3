"""compress: mean / max / conv window compression against the float64 reference, the remainder
policy, gradients, opcheck, low precision, strides, autocast and errors."""
import pytest
import torch
from support import DEVICES, LOW_PRECISION_CASES, check_low_precision, noncontiguous

import seqops
from seqops import reference

MODES = ["mean", "max", "conv"]


def make_params(mode, D, rate, device, dtype=torch.float64, out_dim=None, bias=True):
    if mode != "conv":
        return None, None
    out_dim = out_dim or D
    w = torch.randn(out_dim, D, rate, dtype=dtype, device=device) / (D * rate) ** 0.5
    b = torch.randn(out_dim, dtype=dtype, device=device) if bias else None
    return w, b


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("rate,tail", [(1, 0), (2, 0), (2, 1), (3, 1), (3, 2), (4, 0), (4, 3), (7, 5)])
@pytest.mark.parametrize("D", [1, 33, 300])
def test_forward_backward_match_reference_float64(device, mode, rate, tail, D):
    L = 5 * rate + tail
    x = torch.randn(3, L, D, dtype=torch.float64, device=device, requires_grad=True)
    w, b = make_params(mode, D, rate, device, out_dim=None if D > 1 else 4)
    params = [t.requires_grad_() for t in (w, b) if t is not None]
    remainder = "keep" if tail else "error"
    got, got_tail = seqops.ops.compress(x, rate, mode, w, b, remainder)
    want, want_tail = reference.compress(x, rate, mode, w, b, remainder)
    assert got.shape == (3, 5, w.shape[0] if w is not None else D) and got_tail.shape == (3, tail, D)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert torch.equal(got_tail, x[:, 5 * rate:])
    grad = torch.randn_like(got)
    g_got = torch.autograd.grad(got, [x] + params, grad)
    g_want = torch.autograd.grad(want, [x] + params, grad)
    for a, e in zip(g_got, g_want):
        torch.testing.assert_close(a, e, rtol=1e-11, atol=1e-11)
    assert (g_got[0][:, 5 * rate:] == 0).all()  # the kept tail gets no gradient from the windows


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck(device, mode):
    x = torch.randn(2, 11, 5, dtype=torch.float64, device=device, requires_grad=True)
    w, b = make_params(mode, 5, 3, device, out_dim=4)
    params = tuple(t.requires_grad_() for t in (w, b) if t is not None)

    def fn(x, *p):
        return seqops.ops.compress(x, 3, mode, *(p or (None, None)), remainder="keep")[0]

    assert torch.autograd.gradcheck(fn, (x,) + params)


@pytest.mark.parametrize("device", DEVICES)
def test_conv_without_bias_and_only_parameter_gradients(device):
    x = torch.randn(2, 8, 6, dtype=torch.float64, device=device)
    w, _ = make_params("conv", 6, 4, device, out_dim=3)
    w.requires_grad_()
    out = seqops.ops.compress(x, 4, "conv", w)[0]
    torch.testing.assert_close(out, reference.compress(x, 4, "conv", w)[0])
    (gw,) = torch.autograd.grad(out.square().sum(), w)  # x needs no gradient: only the weight's
    torch.testing.assert_close(gw, torch.autograd.grad(reference.compress(x, 4, "conv", w)[0].square().sum(), w)[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
def test_keep_shorter_than_rate_gives_no_window(device, mode):
    x = torch.randn(2, 3, 5, device=device, requires_grad=True)
    w, b = make_params(mode, 5, 4, device, dtype=torch.float32)
    out, tail = seqops.ops.compress(x, 4, mode, w, b, "keep")
    assert out.shape == (2, 0, 5) and torch.equal(tail, x)
    # The empty windows are still x's function (their gradient is zeros, not missing), and the
    # kept tail passes its cotangent back unchanged.
    assert out.requires_grad and tail.requires_grad
    (from_windows,) = torch.autograd.grad(out.sum(), x, retain_graph=True)
    assert from_windows.shape == x.shape and (from_windows == 0).all()
    g_tail = torch.randn_like(tail)
    (gx,) = torch.autograd.grad((out, tail), x, (torch.randn_like(out), g_tail))
    assert torch.equal(gx, g_tail)


@pytest.mark.parametrize("device", DEVICES)
def test_max_ties_first_row_and_nan(device):
    x = torch.zeros(1, 4, 3, device=device, requires_grad=True)
    out, index = torch.ops.seqops.compress(x, 4, "max")
    assert (index == 0).all() and (out == 0).all()
    out.sum().backward()
    assert (x.grad[0, 0] == 1).all() and x.grad.sum() == 3
    y = torch.tensor([[[1.0], [float("nan")], [3.0], [2.0]]], device=device)
    assert torch.isnan(seqops.ops.compress(y, 4, "max")[0]).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
def test_strided_inputs_are_read_in_place_or_copied_correctly(device, mode):
    base = torch.randn(3, 30, 16, dtype=torch.float64, device=device)
    w, b = make_params(mode, 16, 4, device)
    cases = {
        "transposed storage": noncontiguous(base),
        "slice of a longer memory": base[:, 4:24],        # batch stride 30 * 16, not 20 * 16
        "sequence-first storage": base.transpose(0, 1).contiguous().transpose(0, 1),
    }
    for name, x in cases.items():
        got = seqops.ops.compress(x, 4, mode, w, b, "keep")[0]
        torch.testing.assert_close(got, reference.compress(x.contiguous(), 4, mode, w, b, "keep")[0], msg=name)


@pytest.mark.parametrize("device,dtype", LOW_PRECISION_CASES)
@pytest.mark.parametrize("mode", MODES)
def test_low_precision_rule(device, dtype, mode):
    # Distinct multiples of 1/64, exact in every dtype: no ties for 'max' (see test_masked_pool).
    columns = torch.stack([torch.randperm(48) for _ in range(2 * 24)], -1)
    x = ((columns.view(48, 2, 24).transpose(0, 1) - 24) / 64).to(torch.float64).to(device)
    w, b = make_params(mode, 24, 4, device)
    inputs = (x,) if mode != "conv" else (x, w, b)

    def run(impl):
        return lambda x, *p: impl(x, 4, mode, *(p or (None, None)), remainder="error")[0]

    check_low_precision(run(seqops.ops.compress), run(reference.compress), inputs, dtype,
                        grad_inputs=len(inputs))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for mode in MODES:
        for B, L, D, rate, remainder in [(2, 8, 3, 4, "error"), (3, 70, 260, 3, "keep"), (1, 2, 5, 4, "keep")]:
            x = torch.randn(B, L, D, device=device)
            w, b = make_params(mode, D, rate, device, dtype=torch.float32)
            for rg in (False, True):
                args = (x.clone().requires_grad_(rg), rate, mode,
                        None if w is None else w.clone().requires_grad_(rg), b, remainder)
                torch.library.opcheck(torch.ops.seqops.compress.default, args)
            out, index = torch.ops.seqops.compress(x, rate, mode, w, b, remainder)
            conv = mode == "conv"
            torch.library.opcheck(torch.ops.seqops.compress_backward.default,
                                  (torch.randn_like(out), x, rate, mode, w, index, True, conv, conv))


def test_autocast_runs_conv_in_low_precision_and_keeps_reductions():
    x = torch.randn(2, 8, 16)
    w, b = make_params("conv", 16, 4, "cpu", dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert seqops.ops.compress(x, 4, "conv", w, b)[0].dtype == torch.bfloat16
        assert seqops.ops.compress(x, 4, "mean")[0].dtype == torch.float32
        assert seqops.ops.compress(x, 4, "max")[0].dtype == torch.float32


def test_torch_compile_fullgraph():
    x = torch.randn(2, 10, 8, requires_grad=True)
    w, b = make_params("conv", 8, 4, "cpu", dtype=torch.float32)
    w.requires_grad_()

    def fn(x, w):
        c, tail = seqops.ops.compress(x, 4, "conv", w, b, remainder="keep")
        return c.sum() + seqops.ops.compress(x, 2, "max")[0].sum() + tail.sum()

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    got = compiled(x, w)
    gx, gw = torch.autograd.grad(got, (x, w))
    want = fn(x, w)
    ex, ew = torch.autograd.grad(want, (x, w))
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(gx, ex)
    torch.testing.assert_close(gw, ew)


@pytest.mark.parametrize("device", DEVICES)
def test_bad_inputs_raise_clear_errors(device):
    x = torch.randn(2, 10, 4, device=device)
    w = torch.randn(4, 4, 5, device=device)
    op = torch.ops.seqops.compress
    cases = [
        (lambda: op(x, 0, "mean"), r"rate must be >= 1, got 0"),
        (lambda: op(x, 4, "mean"), r"x's length \(10\) is not a multiple of rate \(4\) and remainder='error'; "
                                   r"remainder='keep' compresses the oldest 8 rows and keeps the newest 2"),
        (lambda: op(x, 11, "mean"), r"x's length \(10\) is shorter than rate \(11\)"),
        (lambda: op(x, 5, "median"), r"mode must be one of 'mean', 'max', 'conv', got 'median'"),
        (lambda: op(x, 5, "mean", None, None, "drop"), r"remainder must be 'error' or 'keep', got 'drop'"),
        (lambda: op(x[0], 5, "mean"), r"x must have 3 dimensions \(batch, length, dim\), got 2"),
        (lambda: op(x.long(), 5, "mean"), r"x on .* got Long"),
        (lambda: op(x, 5, "conv"), r"mode='conv' needs a weight of shape \(out_dim, dim, rate\) = \(\*, 4, 5\), got None"),
        (lambda: op(x, 5, "conv", w.transpose(1, 2)), r"weight must have shape \(out_dim, dim, rate\) = \(\*, 4, 5\).*got \[4, 5, 4\]"),
        (lambda: op(x, 5, "conv", w.double()), r"weight must have the same dtype as x"),
        (lambda: op(x, 5, "conv", w, torch.zeros(3, device=device)), r"bias must have shape \(out_dim,\) = \(4\), got \[3\]"),
        (lambda: op(x, 5, "mean", w), r"weight and bias are only used by mode='conv', got a weight for mode='mean'"),
    ]
    for call, message in cases:
        with pytest.raises(RuntimeError, match=message):
            call()
