"""masked_pool: mean / max / sum against the float64 reference, edge cases, opcheck, errors."""
import pytest
import torch
from support import DEVICES, LOW_PRECISION_CASES, check_low_precision, low_precision, noncontiguous, random_mask

import seqops
from seqops import reference

MODES = ["mean", "max", "sum"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("L", [1, 7, 97, 1025])
@pytest.mark.parametrize("D", [1, 33, 300])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("masked", [False, True])
def test_forward_backward_match_reference_float64(device, L, D, mode, masked):
    x = torch.randn(3, L, D, dtype=torch.float64, device=device, requires_grad=True)
    mask = random_mask(3, L, device) if masked else None
    got = seqops.masked_pool(x, mask, mode)
    want = reference.masked_pool(x, mask, mode)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(got)
    torch.testing.assert_close(torch.autograd.grad(got, x, grad)[0], torch.autograd.grad(want, x, grad)[0])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
def test_gradcheck(device, mode):
    x = torch.randn(2, 6, 5, dtype=torch.float64, device=device, requires_grad=True)
    mask = torch.tensor([[1, 0, 1, 1, 0, 1], [0, 0, 0, 0, 0, 0]], dtype=torch.bool, device=device)
    assert torch.autograd.gradcheck(lambda x: seqops.masked_pool(x, mask, mode), (x,))


@pytest.mark.parametrize("device", DEVICES)
def test_max_ties_nan_and_empty_rows(device):
    x = torch.zeros(2, 4, 3, device=device, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1], [0, 0, 0, 0]], dtype=torch.bool, device=device)
    out, index = torch.ops.seqops.masked_pool(x, mask, "max")
    assert (index[0] == 0).all() and (index[1] == -1).all() and (out == 0).all()
    out.sum().backward()
    assert (x.grad[0, 0] == 1).all() and x.grad.sum() == 3  # ties: first position only
    y = torch.tensor([[[1.0], [float("nan")], [3.0]]], device=device)
    assert torch.isnan(seqops.masked_pool(y, None, "max")).all()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("D", [8, 64, 72, 300])
def test_row_groups_vector_loads_and_ties(device, D):
    """Integer values with many ties (every sum exact): each dtype's 16-byte path when D allows
    (on CUDA a thread reads 16 bytes of a row, and a block holds several row groups when D is
    small), the same bits from an input whose data are off the 16-byte grid, and 'max' keeps
    the first index of the maximum across chunk boundaries."""
    L = 1025
    values = torch.randint(-3, 4, (2, L, D), generator=torch.Generator().manual_seed(D)).double().to(device)
    mask = random_mask(2, L, device, fully_masked_row=False)
    first = torch.where(mask[..., None], values, -torch.inf)
    first_index = (first == first.amax(1, keepdim=True)).double().argmax(1)
    for dtype in (torch.float32, *low_precision(device)):
        x = values.to(dtype)
        shifted = torch.empty(x.numel() + 1, dtype=dtype, device=device)[1:].view(x.shape)
        shifted.copy_(x)
        for mode in MODES:
            got, index = torch.ops.seqops.masked_pool(x, mask, mode)
            torch.testing.assert_close(got.double(), reference.masked_pool(values, mask, mode), rtol=1e-2, atol=0,
                                       msg=lambda m: f"{dtype} {mode}: {m}")
            if mode == "max":
                assert torch.equal(index, first_index)
            got_shifted, index_shifted = torch.ops.seqops.masked_pool(shifted, mask, mode)
            assert torch.equal(got_shifted, got) and torch.equal(index_shifted, index)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", MODES)
def test_noncontiguous(device, mode):
    x = torch.randn(2, 50, 16, dtype=torch.float64, device=device)
    mask = random_mask(2, 50, device)
    torch.testing.assert_close(seqops.masked_pool(noncontiguous(x), mask, mode), reference.masked_pool(x, mask, mode))


@pytest.mark.parametrize("device,dtype", LOW_PRECISION_CASES)
@pytest.mark.parametrize("mode", MODES)
def test_low_precision_rule(device, dtype, mode):
    # Distinct multiples of 1/64, exact in every dtype: rounding must not create ties, where
    # 'max' (first position) and eager amax (split between ties) legitimately differ.
    columns = torch.stack([torch.randperm(50) for _ in range(2 * 16)], -1)  # (50, 32)
    x = ((columns.view(50, 2, 16).transpose(0, 1) - 25) / 64).to(torch.float64).to(device)
    mask = random_mask(2, 50, device)
    check_low_precision(lambda x: seqops.masked_pool(x, mask, mode),
                        lambda x: reference.masked_pool(x, mask, mode), (x,), dtype, grad_inputs=1)


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for mode in MODES:
        for B, L, D, masked in [(2, 5, 3, False), (3, 70, 260, True)]:
            x = torch.randn(B, L, D, device=device)
            mask = random_mask(B, L, device) if masked else None
            for rg in (False, True):
                torch.library.opcheck(torch.ops.seqops.masked_pool.default, (x.clone().requires_grad_(rg), mask, mode))
            out, index = torch.ops.seqops.masked_pool(x, mask, mode)
            torch.library.opcheck(torch.ops.seqops.masked_pool_backward.default, (torch.randn_like(out), mask, index, L, mode))


@pytest.mark.parametrize("device", DEVICES)
def test_bad_inputs_raise_clear_errors(device):
    x = torch.randn(2, 5, 4, device=device)
    op = torch.ops.seqops.masked_pool
    with pytest.raises(RuntimeError, match=r"mode must be one of 'mean', 'max', 'sum', got 'median'"):
        op(x, None, "median")
    with pytest.raises(RuntimeError, match=r"x must have 3 dimensions"):
        op(x[0], None, "mean")
    with pytest.raises(RuntimeError, match=r"mask must have shape \(batch, length\) = \(2, 5\), got \[5, 2\]"):
        op(x, torch.ones(5, 2, dtype=torch.bool, device=device), "mean")
    with pytest.raises(RuntimeError, match=r"got Long"):
        op(x.long(), None, "sum")
