"""Rotary positions inside the attention op (rotary_dim / rotary_base / rotary_interleaved): q and
k rotated as the kernels load them, against the float64 reference (seqops.reference.rotary, a
complex-number rotation) with every score policy it combines with, both pair layouts, partial
rotation, query offsets, GQA, causal, windows and masks; gradients (gradcheck and against the
reference), the tensor-core kernels in low precision and bad inputs. opcheck and torch.compile
with rotary positions are test_attention.py's (test_opcheck, test_compile_fullgraph)."""
import pytest
import torch

from seqops.ops import attention, attention_with_lse
from seqops.relative_position import rotate

from support import DEVICES, LOW_PRECISION_CASES, random_mask
from support.attention_cases import (POLICIES, check_against_reference, check_options_low_precision, make_qkv,
                                     score_args)

ROTARY_POLICIES = [p for p in POLICIES if not p.startswith("rel_keys")]


def rotary_kw(dim, interleaved, base=10000.0):
    return {"rotary_dim": dim, "rotary_base": base, "rotary_interleaved": interleaved}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("policy", ROTARY_POLICIES)
@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("rotary_dim", [16, 6])
@pytest.mark.parametrize("causal", [False, True])
def test_rotary_float64(device, policy, interleaved, rotary_dim, causal):
    """Outputs, lse and the gradients of q, k, v and the score tensors; Lq < Lk (queries at the
    end of the keys' span), GQA, batch entry 1 fully masked; a small base so that the angles of
    every pair turn several times over the span."""
    B, Hq, Hk, lq, lk, d, dv = 2, 4, 2, 37, 97, 16, 8
    q, k, v = make_qkv(B, Hq, Hk, lq, lk, d, dv, device=device)
    score = {**score_args(policy, Hq, lq, lk, d, B, device=device), **rotary_kw(rotary_dim, interleaved, 50.0)}
    check_against_reference(q, k, v, random_mask(B, lk, device), causal, score, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("options", [{"query_offset": 1000}, {"query_offset": -7, "window_left": 5, "window_right": 3},
                                     {"window_left": 20, "window_right": 0}])
def test_rotary_with_offsets_and_windows(device, options):
    """Query positions far from the keys' (decoding from a long prefix, or queries before the keys)
    and sliding windows, with the T5 term (which reads the same query_offset)."""
    B, H, lq, lk, d = 1, 2, 130, 97, 32
    q, k, v = make_qkv(B, H, H, lq, lk, d, d, device=device)
    score = {**score_args("t5", H, lq, lk, d, B, device=device), **rotary_kw(24, False), **options}
    check_against_reference(q, k, v, random_mask(B, lk, device, fully_masked_row=False), False, score, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_rotary_equals_attention_on_rotated_inputs(device):
    """The fused rotation is the module-side rotation (seqops.relative_position.rotate) applied
    to q and k before a plain call, in float32, for both layouts."""
    B, H, lq, lk, d = 2, 4, 33, 45, 64
    q, k, v = make_qkv(B, H, H, lq, lk, d, d, torch.float32, device)
    for interleaved in (False, True):
        got = attention(q, k, v, causal=True, **rotary_kw(48, interleaved))
        pq, pk = torch.arange(lk - lq, lk), torch.arange(lk)
        want = attention(rotate(q, pq, 48, 10000.0, interleaved), rotate(k, pk, 48, 10000.0, interleaved), v,
                         causal=True)
        torch.testing.assert_close(got, want, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("policy", ["none", "t5", "bias"])
@pytest.mark.parametrize("interleaved", [False, True])
def test_rotary_gradcheck(device, policy, interleaved):
    B, Hq, Hk, Lq, Lk, d = 1, 2, 1, 5, 7, 6
    q, k, v = make_qkv(B, Hq, Hk, Lq, Lk, d, 3, device=device)
    score = score_args(policy, Hq, Lq, Lk, d, B, device=device)
    names = [n for n, t in score.items() if isinstance(t, torch.Tensor)]
    inputs = [t.requires_grad_(True) for t in (q, k, v, *(score[n] for n in names))]
    mask = random_mask(B, Lk, device, fully_masked_row=False)

    def fn(*ts):
        return attention(*ts[:3], mask, True, query_offset=3, window_left=4, **rotary_kw(4, interleaved, 3.0),
                         **{**score, **dict(zip(names, ts[3:]))})

    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("device,dtype", LOW_PRECISION_CASES)
@pytest.mark.parametrize("interleaved", [False, True])
def test_rotary_low_precision(device, dtype, interleaved):
    """float16 / bfloat16 by the low-precision rule (the eager reference rotates in the low
    dtype too); on the emulator the tensor-core kernels run, loading the rotated tiles."""
    B, Hq, Hk, Lq, Lk, d = 2, 4, 2, 70, 150, 32
    q, k, v = make_qkv(B, Hq, Hk, Lq, Lk, d, d, device=device)
    mask = random_mask(B, Lk, device)
    options = {**rotary_kw(32, interleaved, 100.0), "query_offset": 60}
    check_options_low_precision(device, dtype, q, k, v, mask, True, options)


@pytest.mark.parametrize("device", DEVICES)
def test_rotary_bad_inputs(device):
    q, k, v = make_qkv(1, 2, 2, 5, 5, 8, 8, torch.float32, device)
    for dim in (-2, 3, 10):
        with pytest.raises(RuntimeError, match=rf"rotary_dim must be even and in \[0, head_dim = 8\] \(0: no rotary\), got {dim}"):
            attention(q, k, v, rotary_dim=dim)
    for base in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(RuntimeError, match="rotary_base must be finite and > 0"):
            attention(q, k, v, rotary_dim=4, rotary_base=base)
    rel = score_args("rel_keys_partial", 2, 5, 5, 8, 1, torch.float32, device)
    with pytest.raises(RuntimeError, match="rotary_dim does not combine with rel_keys"):
        attention(q, k, v, rotary_dim=4, **rel)
    # rotary_dim = 0 is the plain op, bit for bit.
    assert all(torch.equal(a, b) for a, b in zip(attention_with_lse(q, k, v, rotary_dim=0, rotary_interleaved=True),
                                                 attention_with_lse(q, k, v)))
