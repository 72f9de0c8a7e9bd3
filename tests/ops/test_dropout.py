"""seqops.ops.dropout and seqops.nn.Dropout: the mask is the documented Philox stream, values
and gradients match the float64 reference, opcheck, reproducibility, bad inputs."""
import pytest
import torch
from support import DEVICES, LOW_PRECISION_CASES, noncontiguous

import seqops
from seqops import reference
from seqops.nn import Dropout
from seqops.ops import dropout_rng

F64 = torch.float64
RNG = torch.tensor([0x0123456789ABCDEF, -77], dtype=torch.int64)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(1,), (7,), (97, 3), (2, 1025)])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_matches_reference_float64(device, shape, p):
    x = torch.randn(*shape, dtype=F64, device=device, requires_grad=True)
    y = torch.ops.seqops.dropout(x, p, RNG)
    want = reference.dropout(x, p, RNG)
    assert torch.equal(y, want)
    g = torch.randn_like(y)
    (gx,) = torch.autograd.grad(y, x, g)
    assert torch.equal(gx, reference.dropout(g, p, RNG))


@pytest.mark.parametrize("device", DEVICES)
def test_noncontiguous_input_uses_row_major_order(device):
    x = torch.randn(33, 70, dtype=F64, device=device)
    got = torch.ops.seqops.dropout(noncontiguous(x), 0.3, RNG)
    assert got.is_contiguous()
    assert torch.equal(got, torch.ops.seqops.dropout(x, 0.3, RNG))


@pytest.mark.parametrize("device", DEVICES)
def test_float32_matches_reference(device):
    x = torch.randn(5, 1031, dtype=torch.float32, device=device)
    got = torch.ops.seqops.dropout(x, 0.25, RNG)
    torch.testing.assert_close(got.double(), reference.dropout(x.double(), 0.25, RNG), rtol=1e-7, atol=0)


@pytest.mark.parametrize("device,dtype", LOW_PRECISION_CASES)
def test_low_precision_same_mask_and_rounding(device, dtype):
    x = torch.randn(3, 257, device=device).to(dtype)
    got = torch.ops.seqops.dropout(x, 0.4, RNG)
    want = reference.dropout(x.double(), 0.4, RNG)
    assert got.dtype == dtype
    assert torch.equal(got != 0, want != 0)
    # One rounding of the float32 product to dtype: within half an ulp of dtype (2^-8 for
    # bfloat16, 2^-11 for float16) after the float32 product's own rounding (2^-24), and half
    # the subnormal spacing for float16's subnormals.
    finfo = torch.finfo(dtype)
    torch.testing.assert_close(got.double(), want, rtol=finfo.eps / 2 + 2.0 ** -24, atol=finfo.tiny * finfo.eps / 2)


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck(device):
    x = torch.randn(4, 9, dtype=F64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: torch.ops.seqops.dropout(t, 0.3, RNG), (x,))
    assert torch.autograd.gradgradcheck(lambda t: torch.ops.seqops.dropout(t, 0.3, RNG), (x,))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    for shape, p in (((5,), 0.2), ((3, 7, 11), 0.5), ((2, 0, 4), 0.1)):
        for rg in (False, True):
            x = torch.randn(*shape, device=device, requires_grad=rg)
            torch.library.opcheck(torch.ops.seqops.dropout.default, (x, p, RNG))


@pytest.mark.parametrize("device", DEVICES)
def test_keep_rate(device):
    p = 0.3
    y = torch.ops.seqops.dropout(torch.ones(1 << 18, device=device), p, RNG)
    rate = (y != 0).double().mean().item()
    sigma = (p * (1 - p) / y.numel()) ** 0.5
    assert abs(rate - (1 - p)) < 5 * sigma, f"keep rate {rate:.5f} vs {1 - p} (5 sigma = {5 * sigma:.5f})"


@pytest.mark.parametrize("device", DEVICES)
def test_streams_differ_across_offsets_and_tasks(device):
    # Elements far apart (other parallel tasks) and another offset give other draws.
    x = torch.ones(1 << 17, device=device)
    a = torch.ops.seqops.dropout(x, 0.5, RNG) != 0
    b = torch.ops.seqops.dropout(x, 0.5, RNG + torch.tensor([0, 1])) != 0
    assert 0.45 < (a != b).double().mean().item() < 0.55
    half = x.numel() // 2
    assert 0.45 < (a[:half] != a[half:]).double().mean().item() < 0.55


def test_functional_and_module_semantics():
    x = torch.randn(6, 50, requires_grad=True)
    torch.manual_seed(3)
    y = seqops.dropout(x, 0.2)
    torch.manual_seed(3)
    assert torch.equal(seqops.dropout(x, 0.2), y)
    torch.manual_seed(3)
    assert torch.equal(y, torch.ops.seqops.dropout(x, 0.2, dropout_rng()))
    assert not torch.equal(seqops.dropout(x, 0.2), y)  # the generator moved on
    assert seqops.dropout(x, 0.2, training=False) is x and seqops.dropout(x, 0.0) is x
    assert torch.equal(seqops.dropout(x, 1.0), torch.zeros_like(x))
    m = Dropout(0.2)
    assert isinstance(m, torch.nn.Dropout) and m.state_dict() == {} and repr(m) == "Dropout(p=0.2, inplace=False)"
    torch.manual_seed(3)
    assert torch.equal(m(x), y)
    assert m.eval()(x) is x


def test_module_scripts():
    m = torch.jit.script(Dropout(0.5))
    x = torch.randn(4, 8)
    torch.manual_seed(0)
    got = m(x)
    torch.manual_seed(0)
    assert torch.equal(got, Dropout(0.5)(x))


def test_compiles_fullgraph():
    x = torch.randn(4, 33)
    f = torch.compile(lambda t: torch.ops.seqops.dropout(t, 0.3, RNG) * 2, fullgraph=True, backend="aot_eager")
    assert torch.equal(f(x), torch.ops.seqops.dropout(x, 0.3, RNG) * 2)


@pytest.mark.parametrize("device", DEVICES)
def test_bad_inputs_raise_clear_errors(device):
    x = torch.randn(3, 4, device=device)
    op = torch.ops.seqops.dropout
    cases = [
        ((x, 1.0, RNG), r"p must be in \[0, 1\), got 1"),
        ((x, -0.1, RNG), r"p must be in \[0, 1\), got -0.1"),
        ((x, 0.5, RNG.double()), r"rng must be a CPU int64 tensor of shape \(2,\) \(seed, offset\), got Double"),
        ((x, 0.5, RNG[:1]), r"rng must be a CPU int64 tensor of shape \(2,\)"),
        ((x, 0.5, RNG[None]), r"rng must be a CPU int64 tensor of shape \(2,\) \(seed, offset\), got Long \[1, 2\]"),
        ((x.long(), 0.5, RNG), r"x on (CPU|CUDA) must be .*float32 or float64, got Long"),
    ]
    for args, msg in cases:
        with pytest.raises(RuntimeError, match=msg):
            op(*args)
    with pytest.raises(ValueError, match="dropout probability has to be between 0 and 1, but got 1.5"):
        seqops.dropout(x, 1.5)
    with pytest.raises(ValueError, match="does not work in place"):
        Dropout(0.1, inplace=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_draws_the_cpu_mask():
    x = torch.randn(3, 1000, dtype=F64)
    assert torch.equal(torch.ops.seqops.dropout(x.cuda(), 0.35, RNG).cpu(), torch.ops.seqops.dropout(x, 0.35, RNG))
