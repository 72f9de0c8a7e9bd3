"""seqops.nn pooling modules: compatibility with the originals (values and the gradients of the
input and every parameter), masks, compile, TorchScript."""
import copy
import io

import pytest
import torch
import torch.nn.functional as F
from support.grad_check import assert_gradients_match
from support import random_mask

from seqops import reference
from seqops.nn import CVTSeqPool, LAMA, LAMAEncoder, LAMAPooler, MeanSeqPool, SeqPool

B, L, D, H = 3, 11, 16, 4
F64 = torch.float64
TOL = dict(rtol=1e-10, atol=1e-10)  # float64 modules against float64 formulas


def modules():
    torch.manual_seed(0)
    return {
        "CVTSeqPool": CVTSeqPool(D),
        "SeqPool": SeqPool(D, num_heads=H),
        "MeanSeqPool": MeanSeqPool(),
        "LAMA": LAMA(H, D),
        "LAMAEncoder": LAMAEncoder(H, D, output_dim=7),
        "LAMAEncoder-noproj": LAMAEncoder(H, D),
        "LAMAPooler": LAMAPooler(H, D),
    }


OUT_SHAPES = {"CVTSeqPool": (B, D), "SeqPool": (B, H * D), "MeanSeqPool": (B, D), "LAMA": (B, H, L),
              "LAMAEncoder": (B, 7), "LAMAEncoder-noproj": (B, H, D), "LAMAPooler": (B, H * D)}


def test_cvt_seqpool_matches_original_formula_and_state_dict():
    m = CVTSeqPool(D)
    assert list(m.state_dict()) == ["pool.weight"] and m.pool.weight.shape == (1, D)
    x = torch.randn(B, L, D)
    original = torch.matmul(F.softmax(m.pool(x), dim=1).transpose(-1, -2), x).squeeze(-2)
    torch.testing.assert_close(m(x), original)
    m, x = m.double(), x.double().requires_grad_()
    out, original = m(x), torch.matmul(F.softmax(m.pool(x), dim=1).transpose(-1, -2), x).squeeze(-2)
    torch.testing.assert_close(out, original, **TOL)
    assert_gradients_match(m, out, original, {"x": x}, **TOL)
    with pytest.raises(ValueError, match="Expected input to have 3 axes. Got 2"):
        m(x[0])
    with pytest.raises(ValueError, match=r"Size of embedding dimension \(15\) did not match expected \(16\)"):
        m(x[..., :15])


def test_seqpool_with_bias_is_cct_attention_pool_and_masks():
    m = SeqPool(D).double()
    x = torch.randn(B, L, D, dtype=F64, requires_grad=True)
    out = m(x)
    cct = torch.matmul(F.softmax(F.linear(x, m.weight, m.bias), dim=1).transpose(-1, -2), x).squeeze(-2)
    torch.testing.assert_close(out, cct, **TOL)
    assert_gradients_match(m, out, cct, {"x": x}, **TOL)
    mask = random_mask(B, L, "cpu")
    out, want = m(x, mask), reference.seq_pool(x, m.weight, m.bias, mask).flatten(1)
    torch.testing.assert_close(out, want, **TOL)
    assert_gradients_match(m, out, want, {"x": x}, **TOL)


def test_mean_seqpool_averages_the_sequence():
    x = torch.randn(B, L, D, dtype=F64, requires_grad=True)
    mask = random_mask(B, L, "cpu")
    m = MeanSeqPool()
    for out, want in ((m(x), x.mean(1)), (m(x, mask), reference.masked_pool(x, mask, "mean"))):
        torch.testing.assert_close(out, want, **TOL)
        assert_gradients_match(m, out, want, {"x": x}, **TOL)


def test_lama_loads_original_state_dict_and_matches_forward():
    original = {"_p": torch.randn(D, H, dtype=F64, requires_grad=True),
                "_q": (torch.randn(D, H, dtype=F64) / D ** 0.5).requires_grad_()}
    m = LAMA(H, D, dtype=F64)
    m.load_state_dict(original)
    x = torch.randn(B, L, D, dtype=F64, requires_grad=True)
    mask = random_mask(B, L, "cpu", fully_masked_row=False)
    for keep in (None, mask):  # values, and the gradients of x, _p, _q against the original's tensors
        out, want = m(x, keep), reference.lama_original(x, original["_p"], original["_q"], keep)
        torch.testing.assert_close(out, want, **TOL)
        assert_gradients_match(m, out, want, {"x": x}, ref_params=original, **TOL)
    enc = LAMAEncoder(H, D, output_dim=5, dtype=F64)
    enc.load_state_dict({"_attention._p": original["_p"], "_attention._q": original["_q"],
                         "projection_layer.weight": torch.randn(5, H * D), "projection_layer.bias": torch.randn(5)})
    weights = reference.lama_original(x, original["_p"], original["_q"], mask)
    out, want = enc(x, mask), enc.projection_layer((weights @ x).flatten(1))
    torch.testing.assert_close(out, want, **TOL)
    assert_gradients_match(enc, out, want, {"x": x}, **TOL, ref_params={
        **dict(enc.named_parameters()), "_attention._p": original["_p"], "_attention._q": original["_q"]})


@pytest.mark.parametrize("activation,name", [(None, "identity"), (torch.tanh, "tanh"), (F.relu, "relu"),
                                             (torch.nn.Sigmoid(), "sigmoid"), ("relu", "relu")])
def test_lama_activation_mapping(activation, name):
    assert LAMA(2, 4, activation).activation == name


def test_lama_rejects_unfusable_activation():
    with pytest.raises(ValueError, match="has no fused kernel"):
        LAMA(2, 4, F.gelu)


@pytest.mark.parametrize("name", list(OUT_SHAPES))
def test_shapes_gradients_and_masks(name):
    m = modules()[name]
    x = torch.randn(B, L, D, requires_grad=True)
    mask = random_mask(B, L, "cpu")
    out = m(x, mask)
    assert out.shape == OUT_SHAPES[name]
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad[1] == 0).all()  # row 1 fully masked
    for p in m.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", list(OUT_SHAPES))
def test_compile_fullgraph_matches_eager(name):
    torch._dynamo.reset()
    m = modules()[name]
    x = torch.randn(B, L, D, requires_grad=True)
    mask = random_mask(B, L, "cpu")
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    got, want = compiled(x, mask), m(x, mask)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(torch.autograd.grad(got.sum(), x)[0], torch.autograd.grad(want.sum(), x)[0])


@pytest.mark.parametrize("name", list(OUT_SHAPES))
def test_torchscript_save_and_load(name):
    m = modules()[name].eval()
    scripted = torch.jit.script(m)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    loaded = torch.jit.load(buf)
    x = torch.randn(B, L, D)
    mask = random_mask(B, L, "cpu")
    torch.testing.assert_close(loaded(x, mask), m(x, mask))
    torch.testing.assert_close(loaded(x), m(x))


@pytest.mark.parametrize("name", list(OUT_SHAPES))
def test_empty_batch(name):
    m = modules()[name]
    x = torch.randn(0, L, D, requires_grad=True)
    out = m(x, torch.ones(0, L, dtype=torch.bool))
    assert out.shape == (0,) + OUT_SHAPES[name][1:]
    out.sum().backward()
    assert x.grad.shape == x.shape
    for p in m.parameters():
        assert p.grad is not None and (p.grad == 0).all()


def test_modules_accept_bfloat16_inputs_with_float32_parameters():
    # bfloat16 outputs, close to the same module in float64 on the same (bfloat16-valued) input:
    # bfloat16 carries 8 significant bits (relative step 2^-8 = 3.9e-3); pooling sums over L = 11
    # rows and the parameters are rounded to bfloat16 too: the error seen is <= 3.2e-3, 1e-2 allowed.
    x = torch.randn(B, L, D, dtype=torch.bfloat16)
    mask = random_mask(B, L, "cpu")
    for name, m in modules().items():
        if name == "LAMAEncoder":  # its Linear needs matching dtypes, as any nn.Linear does
            continue
        exact = copy.deepcopy(m).double()
        for keep in (None, mask):
            got = m(x, keep)
            assert got.dtype == torch.bfloat16, name
            torch.testing.assert_close(got.double(), exact(x.double(), keep), rtol=1e-2, atol=1e-2,
                                       msg=lambda s, name=name: f"{name}: {s}")


def test_autocast_matches_explicit_cast():
    m = SeqPool(D, num_heads=2)
    x = torch.randn(B, L, D)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = m(x)
    assert got.dtype == torch.bfloat16
    want = torch.ops.seqops.seq_pool(x.bfloat16(), m.weight.bfloat16(), m.bias.bfloat16(), None)[0].flatten(1)
    torch.testing.assert_close(got, want)
