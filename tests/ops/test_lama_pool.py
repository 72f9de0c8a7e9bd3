"""lama_pool: forward and gradients against the float64 reference, edge cases, opcheck, errors."""
import pytest
import torch
from support import DEVICES, LOW_PRECISION_CASES, check_low_precision, noncontiguous, random_mask

import seqops
from seqops import reference

F64 = torch.float64
ACTIVATIONS = ["tanh", "identity", "relu", "sigmoid"]


def make_inputs(B, L, D, H, device, dtype=F64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, L, D, generator=g, dtype=F64)
    p = torch.randn(H, D, generator=g, dtype=F64)
    q = torch.randn(H, D, generator=g, dtype=F64) / D ** 0.5
    return (t.to(device=device, dtype=dtype) for t in (x, p, q))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("L", [1, 7, 97, 1025])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_forward_backward_match_reference_float64(device, L, activation, normalize, masked):
    B, D, H = (1, 17, 3) if L == 1025 else (3, 21, 4)
    x, p, q = (t.requires_grad_() for t in make_inputs(B, L, D, H, device))
    mask = random_mask(B, L, device) if masked else None
    got = seqops.lama_pool(x, p, q, mask, activation, normalize)
    want = reference.lama_pool(x, p, q, mask, activation, normalize)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10)
    grads = [torch.randn_like(t) for t in want]
    g_got = torch.autograd.grad(got, (x, p, q), grads)
    g_want = torch.autograd.grad(want, (x, p, q), grads)
    for a, b in zip(g_got, g_want):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-9)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [F64, torch.float32])
@pytest.mark.parametrize("B,L,D,H", [(2, 13, 70, 5), (1, 9, 130, 8), (3, 4, 64, 4)])
def test_register_tiles_match_reference(device, dtype, B, L, D, H):
    # Widths past one register tile (4 vectors) with and without a tail, head counts with a
    # block of 4 plus a rest, and row counts with and without a rest of the 4-row tiles.
    x, p, q = (t.requires_grad_() for t in make_inputs(B, L, D, H, device, dtype))
    x64, p64, q64 = (t.detach().double().requires_grad_() for t in (x, p, q))
    mask = random_mask(B, L, device, fully_masked_row=False)
    for m in (None, mask):
        got = seqops.lama_pool(x, p, q, m)
        want = reference.lama_pool(x64, p64, q64, m)
        tol = dict(rtol=1e-9, atol=1e-10) if dtype == F64 else dict(rtol=1e-4, atol=2e-5)
        for a, b in zip(got, want):
            torch.testing.assert_close(a.double(), b, **tol)
        grads = [torch.randn_like(t) for t in want]
        g_got = torch.autograd.grad(got, (x, p, q), [g.to(dtype) for g in grads])
        g_want = torch.autograd.grad(want, (x64, p64, q64), grads)
        for a, b in zip(g_got, g_want):
            torch.testing.assert_close(a.double(), b, **tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_gradcheck(device, activation):
    x, p, q = (t.requires_grad_() for t in make_inputs(2, 6, 5, 3, device))
    mask = torch.tensor([[1, 0, 1, 1, 0, 1], [1, 1, 1, 1, 1, 1]], dtype=torch.bool, device=device)
    for normalize in (True, False):
        assert torch.autograd.gradcheck(lambda x, p, q: seqops.lama_pool(x, p, q, mask, activation, normalize), (x, p, q))


@pytest.mark.parametrize("device", DEVICES)
def test_eps_clamp_branch_gradcheck(device):
    # relu of a negative-only product leaves whole columns at 0: the clamped branch of the norm.
    x, p, q = make_inputs(2, 5, 4, 2, device)
    x = x.abs().requires_grad_()
    q = q.abs().requires_grad_()
    p = (-p.abs()).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, p, q: seqops.lama_pool(x, p, q, None, "relu", False, 1e-3), (x, p, q))
    pooled, weights = seqops.lama_pool(x, p, q, None, "relu", False)
    assert torch.isfinite(weights).all() and (weights == 0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_fully_masked_rows_give_zeros(device):
    x, p, q = make_inputs(3, 9, 6, 2, device)
    x.requires_grad_()
    mask = random_mask(3, 9, device)  # row 1 fully masked
    for normalize in (True, False):
        pooled, weights = seqops.lama_pool(x, p, q, mask, "tanh", normalize)
        assert (pooled[1] == 0).all() and (weights[1] == 0).all() and (weights[~mask[:, None, :].expand_as(weights)] == 0).all()
        (gx,) = torch.autograd.grad(pooled.sum() + weights.sum(), x)
        assert torch.isfinite(gx).all() and (gx[1] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_matches_original_lama_where_sound(device):
    x, p, q = make_inputs(3, 40, 16, 4, device)
    mask = random_mask(3, 40, device, fully_masked_row=False)
    for m in (None, mask):
        for activation, fn in (("tanh", torch.tanh), ("identity", None), ("sigmoid", torch.sigmoid)):
            want = reference.lama_original(x, p.t(), q.t(), m, fn)
            torch.testing.assert_close(seqops.lama_pool(x, p, q, m, activation)[1], want)
    want = reference.lama_original(x, p.t(), q.t(), None, torch.tanh, normalize=False)
    torch.testing.assert_close(seqops.lama_pool(x, p, q, None, "tanh", False)[1], want)


@pytest.mark.parametrize("device", DEVICES)
def test_noncontiguous_inputs(device):
    x, p, q = make_inputs(2, 33, 10, 3, device, dtype=torch.float32)
    mask = random_mask(2, 33, device)
    want = seqops.lama_pool(x, p, q, mask)
    got = seqops.lama_pool(noncontiguous(x), noncontiguous(p), q.t().contiguous().t(), mask)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("device,dtype", LOW_PRECISION_CASES)
def test_low_precision_rule(device, dtype):
    x, p, q = make_inputs(3, 129, 40, 4, device)
    mask = random_mask(3, 129, device)
    check_low_precision(lambda x, p, q: seqops.lama_pool(x, p, q, mask),
                        lambda x, p, q: reference.lama_pool(x, p, q, mask), (x, p, q), dtype, grad_inputs=3)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for B, L, D, H, masked, activation, normalize in [(2, 5, 3, 1, False, "tanh", True),
                                                      (3, 70, 9, 2, True, "relu", False),
                                                      (1, 300, 4, 3, True, "sigmoid", True)]:
        x, p, q = make_inputs(B, L, D, H, device, dtype=torch.float32)
        mask = random_mask(B, L, device) if masked else None
        for rg in (False, True):
            args = (x.clone().requires_grad_(rg), p.clone().requires_grad_(rg), q, mask, activation, normalize, 1e-12)
            torch.library.opcheck(torch.ops.seqops.lama_pool.default, args)
        pooled, weights = torch.ops.seqops.lama_pool(x, p, q, mask, activation, normalize, 1e-12)
        torch.library.opcheck(torch.ops.seqops.lama_pool_backward.default,
                              (torch.randn_like(pooled), torch.randn_like(weights), x, p, q, mask, activation, normalize, 1e-12))


@pytest.mark.parametrize("device", DEVICES)
def test_deterministic(device):
    x, p, q = (t.requires_grad_() for t in make_inputs(1, 3000, 24, 4, device, dtype=torch.float32))
    runs = []
    for _ in range(2):
        pooled, weights = seqops.lama_pool(x, p, q)
        runs.append((pooled, weights, *torch.autograd.grad(pooled.sum() + weights.pow(2).sum(), (x, p, q))))
    for a, c in zip(*runs):
        assert torch.equal(a, c)


@pytest.mark.parametrize("device", DEVICES)
def test_bad_inputs_raise_clear_errors(device):
    x, p, q = make_inputs(2, 5, 4, 3, device, dtype=torch.float32)
    op = torch.ops.seqops.lama_pool
    cases = [
        ((x[0], p, q), r"x must have 3 dimensions"),
        ((x, p[:, :2], q), r"p.size\(1\) must equal dim of x = 4, got 2"),
        ((x, p, q[:2]), r"q must have the same shape as p"),
        ((x, p.double(), q), r"p must have the same dtype as x"),
        ((x, p, q, torch.ones(2, 5, device=device)), r"mask must be a bool tensor"),
        ((x, p, q, None, "gelu"), r"activation must be one of 'identity', 'tanh', 'relu', 'sigmoid', got 'gelu'"),
        ((x, p, q, None, "tanh", True, 0.0), r"eps must be > 0, got 0"),
        ((x.int(), p.int(), q.int()), r"must be .*float.*got Int"),
    ]
    for args, pattern in cases:
        with pytest.raises(RuntimeError, match=pattern):
            op(*args)
