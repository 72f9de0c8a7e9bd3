"""seq_pool: forward and gradients against the float64 reference, edge cases, opcheck, errors."""
import pytest
import torch
from support import DEVICES, LOW_PRECISION_CASES, check_low_precision, kernel_device, low_precision, noncontiguous, random_mask

import seqops
from seqops import reference

F64 = torch.float64


def make_inputs(B, L, D, H, device, dtype=F64, per_batch=False, bias=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, D, generator=g, dtype=F64)
    w = torch.randn(*((B,) if per_batch else ()), H, D, generator=g, dtype=F64) / D ** 0.5
    b = torch.randn(*w.shape[:-1], generator=g, dtype=F64) if bias else None
    to = lambda t: None if t is None else t.to(device=device, dtype=dtype)  # noqa: E731
    return to(x), to(w), to(b)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("L", [1, 7, 97, 1025])
@pytest.mark.parametrize("D,H", [(1, 1), (33, 1), (19, 3)])
@pytest.mark.parametrize("per_batch", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_forward_backward_match_reference_float64(device, L, D, H, per_batch, masked):
    B = 1 if L == 1025 else 3  # B=1 exercises the split-sequence (chunked) path
    x, w, b = make_inputs(B, L, D, H, device, per_batch=per_batch)
    mask = random_mask(B, L, device) if masked else None
    x, w, b = (t.requires_grad_() for t in (x, w, b))
    out = seqops.seq_pool(x, w, b, mask)
    ref = reference.seq_pool(x, w, b, mask)
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, w, b), grad)
    want = torch.autograd.grad(ref, (x, w, b), grad)
    for g_got, g_want in zip(got, want):
        torch.testing.assert_close(g_got, g_want, rtol=1e-9, atol=1e-10)
    assert_lse_matches(torch.ops.seqops.seq_pool(x, w, b, mask)[1], reference.seq_pool_lse(x, w, b, mask), 1e-10)


def assert_lse_matches(lse, want, tol):
    """The op's log-sum-exp against the reference's: -inf exactly where a row keeps nothing."""
    assert lse.shape == want.shape
    assert torch.equal(torch.isneginf(lse), torch.isneginf(want)) and torch.isfinite(want[~torch.isneginf(want)]).all()
    finite = torch.isfinite(want)
    torch.testing.assert_close(lse.double()[finite], want[finite], rtol=tol, atol=tol)


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck(device):
    x, w, b = make_inputs(2, 6, 5, 2, device)
    mask = torch.tensor([[1, 1, 0, 1, 0, 1], [0, 0, 0, 0, 0, 0]], dtype=torch.bool, device=device)
    for per_batch_w in (w, w.expand(2, 2, 5).contiguous()):
        inputs = tuple(t.clone().requires_grad_() for t in (x, per_batch_w))
        assert torch.autograd.gradcheck(lambda x, w: seqops.seq_pool(x, w, None, mask), inputs)
    assert torch.autograd.gradcheck(lambda x, w, b: seqops.seq_pool(x, w, b), (x.requires_grad_(), w.requires_grad_(), b.requires_grad_()))


@pytest.mark.parametrize("device", DEVICES)
def test_fully_masked_rows_give_zeros_and_zero_grads(device):
    x, w, b = make_inputs(3, 9, 8, 2, device)
    mask = torch.zeros(3, 9, dtype=torch.bool, device=device)
    mask[0, 3] = True
    x.requires_grad_()
    out, lse = torch.ops.seqops.seq_pool(x, w, b, mask)
    assert torch.isfinite(out).all() and (out[1:] == 0).all()
    assert torch.isneginf(lse[1:]).all() and torch.isfinite(lse[0]).all()
    assert_lse_matches(lse, reference.seq_pool_lse(x, w, b, mask), 1e-12)
    # One kept row: its logit itself.
    torch.testing.assert_close(lse[0], x[0, 3] @ w.t() + b, rtol=1e-12, atol=1e-12)
    # One kept row: the pool returns exactly that row.
    torch.testing.assert_close(out[0], x[0, 3].expand(2, 8))
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad[1:] == 0).all() and (x.grad[:, :3] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_noncontiguous_inputs(device):
    x, w, b = make_inputs(2, 37, 12, 2, device, dtype=torch.float32)
    mask = random_mask(2, 37, device)
    want = seqops.seq_pool(x, w, b, mask)
    x_nc, w_nc = noncontiguous(x), noncontiguous(w)
    mask_nc = torch.stack([mask, mask], -1)[..., 0]
    assert not x_nc.is_contiguous() and not w_nc.is_contiguous() and not mask_nc.is_contiguous()
    torch.testing.assert_close(seqops.seq_pool(x_nc, w_nc, b, mask_nc), want)
    x_slice = torch.randn(2, 37, 24, device=device)[..., ::2]
    torch.testing.assert_close(seqops.seq_pool(x_slice, w, b), seqops.seq_pool(x_slice.contiguous(), w, b))


@pytest.mark.parametrize("device", DEVICES)
def test_float32_close_to_float64(device):
    x, w, b = make_inputs(4, 300, 64, 2, device)
    mask = random_mask(4, 300, device)
    exact = reference.seq_pool(x, w, b, mask)
    out, lse = torch.ops.seqops.seq_pool(x.float(), w.float(), b.float(), mask)
    torch.testing.assert_close(out.double(), exact, rtol=1e-5, atol=1e-5)
    assert lse.dtype == torch.float32
    assert_lse_matches(lse, reference.seq_pool_lse(x, w, b, mask), 1e-5)


ROW_LAYOUT_TOL = {torch.float64: 1e-10, torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-2}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("L,D", [(1025, 2), (1025, 8), (300, 72), (300, 200), (97, 1030), (33, 8192), (7, 8191)])
def test_row_groups_and_vector_loads(device, L, D):
    """Row widths that take each layout of the CUDA forward: several row groups per warp
    (D = 2, 8), a group per warp, groups spanning warps (D = 72 in float64, 200), one group per
    block with several runs per thread (D = 1030, 8192), the most elements a thread holds
    (D = 8191 in scalar loads), 16-byte loads wherever D allows; every dtype against float64 on
    the rounded inputs, and an input off the 16-byte grid (scalar loads) against the aligned one.
    In float64 and float32 the gradients too (the backward's row kernels in both load paths)."""
    x, w, b = make_inputs(2, L, D, 2, device, seed=D)
    mask = random_mask(2, L, device)
    for dtype in (torch.float64, torch.float32, *low_precision(device)):
        xd, wd, bd = (t.to(dtype) for t in (x, w, b))
        tol = ROW_LAYOUT_TOL[dtype]
        out, lse = torch.ops.seqops.seq_pool(xd, wd, bd, mask)
        exact = reference.seq_pool(xd.double(), wd.double(), bd.double(), mask)
        torch.testing.assert_close(out.double(), exact, rtol=tol, atol=tol, msg=lambda m: f"{dtype}: {m}")
        if dtype in (torch.float64, torch.float32):
            # dlogit takes differences of dy . x dots of size ~sqrt(D): its rounding grows with them.
            assert_grads_match_reference(xd, wd, bd, mask, tol * D ** 0.5)
        assert_lse_matches(lse, reference.seq_pool_lse(xd.double(), wd.double(), bd.double(), mask), tol)
        shifted = torch.empty(xd.numel() + 1, dtype=dtype, device=device)[1:].view(xd.shape)
        shifted.copy_(xd)
        out_shifted, lse_shifted = torch.ops.seqops.seq_pool(shifted, wd, bd, mask)
        torch.testing.assert_close(out_shifted, out, rtol=tol, atol=tol)
        torch.testing.assert_close(lse_shifted, lse, rtol=tol, atol=tol)


def assert_grads_match_reference(x, w, b, mask, tol):
    """Gradients of x, w and b through seq_pool, against the float64 reference's; the input off
    the 16-byte grid gives the same gradients to within tol."""
    grad = torch.randn(x.shape[0], *w.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).to(x)
    exact_in = [t.double().requires_grad_() for t in (x, w, b)]
    want = torch.autograd.grad(reference.seq_pool(*exact_in, mask), exact_in, grad.double())
    shifted = torch.empty(x.numel() + 1, dtype=x.dtype, device=x.device)[1:].view(x.shape).copy_(x)
    for x_in in (x, shifted):
        inputs = [t.detach().requires_grad_() for t in (x_in, w, b)]
        got = torch.autograd.grad(seqops.seq_pool(*inputs, mask), inputs, grad)
        for name, g_got, g_want in zip("xwb", got, want):
            torch.testing.assert_close(g_got.double(), g_want, rtol=tol, atol=tol, msg=lambda m: f"d{name} {x.dtype}: {m}")


@pytest.mark.parametrize("device,dtype", LOW_PRECISION_CASES)
def test_low_precision_rule(device, dtype):
    x, w, b = make_inputs(3, 257, 48, 2, device)
    mask = random_mask(3, 257, device)
    check_low_precision(lambda x, w, b: seqops.seq_pool(x, w, b, mask),
                        lambda x, w, b: reference.seq_pool(x, w, b, mask), (x, w, b), dtype, grad_inputs=2)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for B, L, D, H, per_batch, masked in [(2, 5, 3, 1, False, False), (3, 70, 9, 2, True, True), (1, 300, 4, 1, False, True)]:
        x, w, b = make_inputs(B, L, D, H, device, dtype=torch.float32, per_batch=per_batch)
        mask = random_mask(B, L, device) if masked else None
        for rg in (False, True):
            args = (x.clone().requires_grad_(rg), w.clone().requires_grad_(rg), b, mask)
            torch.library.opcheck(torch.ops.seqops.seq_pool.default, args)
        out, lse = torch.ops.seqops.seq_pool(x, w, b, mask)
        torch.library.opcheck(torch.ops.seqops.seq_pool_backward.default, (torch.randn_like(out), x, w, b, mask, out, lse))


@pytest.mark.parametrize("device", DEVICES)
def test_deterministic(device):
    x, w, b = make_inputs(1, 2000, 40, 2, device, dtype=torch.float32)
    x.requires_grad_(), w.requires_grad_()
    runs = []
    for _ in range(2):
        out = seqops.seq_pool(x, w, b)
        runs.append((out, *torch.autograd.grad(out.sum(), (x, w))))
    for a, c in zip(*runs):
        assert torch.equal(a, c)


@pytest.mark.parametrize("device", DEVICES)
def test_bad_inputs_raise_clear_errors(device):
    x, w, b = make_inputs(2, 5, 4, 2, device, dtype=torch.float32)
    op = torch.ops.seqops.seq_pool
    cases = [
        ((x[0], w, b, None), r"x must have 3 dimensions \(batch, length, dim\), got 2"),
        ((x, w[:, :3], b, None), r"weight.size\(1\) must equal dim of x = 4, got 3"),
        ((x, w.unsqueeze(0).expand(3, 2, 4), b, None), r"weight.size\(0\) must equal batch of x = 2, got 3"),
        ((x, w, b[:1], None), r"bias must have shape \[2\]"),
        ((x, w.double(), b, None), r"weight must have the same dtype as x \(Float\), got Double"),
        ((x, w, b, torch.ones(2, 5, device=device)), r"mask must be a bool tensor"),
        ((x, w, b, torch.ones(2, 6, dtype=torch.bool, device=device)), r"mask must have shape \(batch, length\) = \(2, 5\)"),
        ((x.long(), w.long(), None, None), r"x on (CPU|CUDA) must be .*float.*got Long"),
        ((x[:, :0], w, b, None), r"x must have length >= 1"),
        ((x, w.new_empty(0, 4), None, None), r"at least one head"),
    ]
    if device == "cpu":
        cases.append(((x, w.to("meta"), b, None), r"weight must be on the same device as x"))
    if kernel_device(device) == "cpu":
        cases.append(((x.half(), w.half(), None, None), r"x on CPU must be bfloat16, float32 or float64, got Half"))
    for args, pattern in cases:
        with pytest.raises(RuntimeError, match=pattern):
            op(*args)
