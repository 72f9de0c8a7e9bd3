"""Sliding-window (local) attention: the op's window_left / window_right with every score policy,
causal or not, masks, Lq > Lk, gradients and the tensor-core kernels, against the float64
reference (seqops.reference.attention_keep's window). The gradcheck, opcheck and torch.compile
with a window are test_attention.py's (test_gradcheck, test_opcheck, test_compile_fullgraph)."""
import pytest
import torch

from seqops.ops import attention, attention_with_lse, window_bounds

from support import DEVICES, LOW_PRECISION_CASES, kernel_device, random_mask
from support.attention_cases import (POLICIES, check_against_reference, check_options_low_precision, make_qkv,
                                     score_args)

# (left, right): a single key, a narrow two-sided band, left only, right only, up to the diagonal,
# and one wider than some queries' reach.
WINDOWS = [(0, 0), (3, 5), (16, -1), (-1, 7), (0, -1), (40, 0)]


def window_kw(window):
    return {"window_left": window[0], "window_right": window[1]}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("lq,lk", [(97, 130), (130, 97)])
def test_window_float64(device, policy, causal, window, lq, lk):
    """Outputs, lse and every gradient; with Lq > Lk and narrow windows some queries see no key
    (zero row, lse -inf), and batch entry 1 is fully masked."""
    B, Hq, Hk, d, dv = 2, 2, 1, 16, 8
    q, k, v = make_qkv(B, Hq, Hk, lq, lk, d, dv, device=device)
    score = {**score_args(policy, Hq, lq, lk, d, B, device=device), **window_kw(window)}
    check_against_reference(q, k, v, random_mask(B, lk, device), causal, score, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("policy", ["none", "t5", "alibi", "rel_keys", "bias"])
def test_window_across_many_tiles(device, policy):
    """Windows far narrower than the sequence, so whole key tiles (and, in the backward, query
    tiles) are skipped on both sides of the band; float64 against the reference."""
    L = 1025 if kernel_device(device) != "emu" else 300
    B, H, d = 1, 2, 16
    q, k, v = make_qkv(B, H, H, L, L, d, d, device=device)
    score = {**score_args(policy, H, L, L, d, B, device=device), "window_left": 70, "window_right": 33}
    check_against_reference(q, k, v, random_mask(B, L, device, fully_masked_row=False), False, score, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_unbounded_windows_are_no_window(device):
    """-1, or a window wider than Lq + Lk, is the same computation as no window, bit for bit; a
    right side beyond the diagonal changes nothing under causal."""
    q, k, v = make_qkv(2, 2, 2, 37, 45, 16, 16, torch.float32, device)
    plain = attention_with_lse(q, k, v, causal=True)
    for left, right in [(-1, -1), (83, -1), (10 ** 12, 2 ** 62), (-1, 5)]:
        got = attention_with_lse(q, k, v, causal=True, window_left=left, window_right=right)
        assert all(torch.equal(a, b) for a, b in zip(got, plain)), (left, right)
    narrow = attention_with_lse(q, k, v, causal=True, window_left=4, window_right=0)
    capped = attention_with_lse(q, k, v, causal=True, window_left=4, window_right=9)
    assert all(torch.equal(a, b) for a, b in zip(narrow, capped))


@pytest.mark.parametrize("device,dtype", LOW_PRECISION_CASES)
@pytest.mark.parametrize("causal", [False, True])
def test_window_low_precision(device, dtype, causal):
    """float16 / bfloat16 (on the emulator: the tensor-core kernels, which skip tiles of 64 queries
    / 32 keys outside the band) by the low-precision rule, with a query offset in the T5 term."""
    B, Hq, Hk, Lq, Lk, d = 2, 4, 2, 70, 150, 32
    q, k, v = make_qkv(B, Hq, Hk, Lq, Lk, d, d, device=device)
    mask = random_mask(B, Lk, device)
    table = torch.randn(Hq, 32, dtype=torch.float64, device=device)
    options = {"window_left": 24, "window_right": 9, "query_offset": 60, "t5_max_distance": 20}
    check_options_low_precision(device, dtype, q, k, v, mask, causal, options, t5_table=table)


@pytest.mark.parametrize("device", DEVICES)
def test_window_bad_inputs(device):
    q, k, v = make_qkv(1, 2, 2, 5, 5, 8, 8, torch.float32, device)
    for name in ("window_left", "window_right"):
        with pytest.raises(RuntimeError, match=rf"{name} must be >= 0, or -1 for no limit, got -2"):
            attention(q, k, v, **{name: -2})
    for bad in [(-2, 0), (0, -5)]:
        with pytest.raises(ValueError, match=r"window must be \(left, right\) with each >= 0, or -1"):
            window_bounds(bad)
    assert window_bounds(None) == (-1, -1) and window_bounds((3, 0)) == (3, 0)
