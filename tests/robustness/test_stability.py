"""Numerical stability: logits of magnitude 1e4, fully masked rows, length-1 sequences, and (opt-in,
--run-slow) attention with a T5 bias over 65536 positions give finite, correct outputs."""
import pytest
import torch

import seqops
from support import NATIVE_DEVICES
from support.op_cases import CASES, CATALOG_DEVICES, Sizes, as_float64, input_grads, with_grads
from seqops import reference


def check_against_reference(name: str, kw: dict, tol: float = 1e-4) -> None:
    """Non-finite entries where the float64 reference has them, the rest within tol (relative to
    the largest finite value, at least 1)."""
    case = CASES[name]
    got, want = case.run(**kw), case.reference(**as_float64(kw))
    for g, w in zip(got, want):
        finite = torch.isfinite(w)
        assert torch.equal(torch.isfinite(g), finite), f"{name}: non-finite entries differ"
        magnitude = w[finite].abs().max().item() if finite.any() else 1.0
        torch.testing.assert_close(g.double()[finite], w[finite], atol=tol * max(1.0, magnitude), rtol=tol)


def run_with_grads(name: str, kw: dict):
    """The outputs of the call with its differentiable inputs requiring grad; checks that every
    input gradient (from ones) is finite."""
    kw = with_grads(CASES[name], kw)
    outs = CASES[name].run(**kw)
    for g in input_grads(CASES[name], kw, outs)[1]:
        assert g is None or torch.isfinite(g).all()
    return outs


@pytest.mark.parametrize("device", CATALOG_DEVICES)
@pytest.mark.parametrize("name", ["seq_pool", "lama_pool", "attention_plain", "attention_bias", "attention_t5",
                                  "attention_rel_keys"])
def test_logits_of_magnitude_1e4(device, name):
    case = CASES[name]
    kw = case.inputs(Sizes(batch=2, length=50, length_q=30, dim=16, heads=2, masked=False, device=device),
                     torch.Generator().manual_seed(0))
    for key in ("x", "q", "bias", "t5_table"):
        if key in kw:
            kw[key] = kw[key] * 1e4 / (kw[key].abs().max() if key in ("bias", "t5_table") else 1.0)
    check_against_reference(name, kw)
    run_with_grads(name, kw)


@pytest.mark.parametrize("device", CATALOG_DEVICES)
@pytest.mark.parametrize("name", list(CASES))
def test_fully_masked_rows_and_length_one(device, name):
    for sizes in (Sizes(batch=3, length=9, length_q=4, masked=True, device=device),
                  Sizes(batch=2, length=1, length_q=1, device=device),
                  Sizes(batch=2, length=1, length_q=1, masked=True, device=device)):
        kw = CASES[name].inputs(sizes, torch.Generator().manual_seed(1))
        check_against_reference(name, kw)
        outs = [o for o in run_with_grads(name, kw) if o.requires_grad]
        if sizes.masked and ("mask" in kw or "key_padding_mask" in kw):
            assert all((o[1] == 0).all() for o in outs if o.shape[0] > 1), "fully masked row 1 must be zero"


@pytest.mark.slow
@pytest.mark.parametrize("device", NATIVE_DEVICES)
def test_attention_with_t5_bias_over_65536_positions(device):
    """Full forward and backward at n = 65536; checked against float64 on 48 sampled query rows
    (the cotangent is zero elsewhere, so the reference needs only those rows). Not emulated: the
    emulator would take hours over 2^32 scores; its multi-tile attention cases are in
    tests/ops/test_attention.py."""
    n, H, d = 65536, 2, 32
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, H, n, d, generator=g).to(device).requires_grad_() for _ in range(3))
    table = torch.randn(H, 32, generator=g).to(device).requires_grad_()
    out = seqops.attention(q, k, v, causal=True, t5_table=table, t5_bidirectional=False)
    assert torch.isfinite(out).all()
    rows = torch.cat([torch.tensor([0, 1, n - 1]), torch.randint(2, n - 1, (45,), generator=g)]).unique()
    cot = torch.zeros_like(out)
    rows = rows.to(device)
    cot[:, :, rows] = torch.randn(1, H, len(rows), d, generator=g).to(device)
    grads = torch.autograd.grad(out, (q, k, v, table), cot)

    q64, k64, v64, t64 = (t.detach().double().requires_grad_() for t in (q, k, v, table))
    logits = torch.einsum("bhid,bhjd->bhij", q64[:, :, rows], k64) / d ** 0.5
    rel = torch.arange(n, device=device)[None, :] - rows[:, None]
    logits = logits + t64[:, reference.t5_bucket(rel, bidirectional=False, num_buckets=32, max_distance=128)]
    logits = logits.masked_fill(rel > 0, float("-inf"))
    want = torch.softmax(logits, -1) @ v64
    torch.testing.assert_close(out[:, :, rows].double(), want.detach(), atol=1e-5, rtol=1e-4)
    want_grads = torch.autograd.grad(want, (q64, k64, v64, t64), cot[:, :, rows].double())
    for got, exact in zip(grads, want_grads):
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), exact, atol=1e-5, rtol=1e-3)
