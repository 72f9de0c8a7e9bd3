"""Packed variable-length sequences in the attention op (cu_seqlens): several sequences laid end to
end in each row, against the float64 reference that cuts every sequence out and attends it alone
(seqops.reference.attention with cu_seqlens): every score policy, rotary positions, causal,
windows, key padding (fully masked rows), GQA, empty and one-token sequences; gradients
(gradcheck and against the reference), dropout (the Philox stream of the packed row), the
tensor-core kernels in low precision, int32 offsets on the CPU or with the data, and bad offsets.
opcheck and torch.compile with packed sequences are test_attention.py's (OPTION_CASES)."""
import pytest
import torch

from seqops import reference as ref
from seqops.ops import attention, attention_with_lse

from support import DEVICES, LOW_PRECISION_CASES, random_mask
from support.attention_cases import (POLICIES, check_against_reference, check_options_low_precision, make_qkv,
                                     philox_keep_of, score_args)

# Sequence lengths with an empty sequence, one-token ones and one longer than a CPU query block.
LENGTHS = [7, 1, 0, 97, 33, 1, 150]


def offsets(lengths, dtype=torch.int64, device="cpu"):
    return torch.tensor([0] + lengths, dtype=dtype).cumsum(0).to(dtype=dtype, device=device)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("causal", [False, True])
def test_packed_float64(device, policy, causal):
    """Outputs, lse and the gradients of q, k, v and the score tensors; GQA, key padding with
    batch entry 1 fully masked."""
    B, Hq, Hk, d, dv = 2, 4, 2, 16, 8
    T = sum(LENGTHS)
    q, k, v = make_qkv(B, Hq, Hk, T, T, d, dv, device=device)
    score = {**score_args(policy, Hq, T, T, d, B, device=device), "cu_seqlens": offsets(LENGTHS)}
    check_against_reference(q, k, v, random_mask(B, T, device), causal, score, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("options", [
    {"rotary_dim": 12, "rotary_base": 50.0, "t5_table": "t5"},
    {"rotary_dim": 16, "rotary_interleaved": True, "window_left": 5, "window_right": 2},
    {"window_left": 20, "window_right": 0, "alibi_slopes": "alibi"},
], ids=["rotary-t5", "rotary-interleaved-window", "window-alibi"])
def test_packed_positions_restart(device, options):
    """Rotary positions and windows count from each sequence's first token (the reference
    attends each sequence alone, at positions 0..)."""
    B, H, d = 1, 2, 16
    T = sum(LENGTHS)
    q, k, v = make_qkv(B, H, H, T, T, d, d, device=device)
    score = dict(options)
    for name in ("t5_table", "alibi_slopes"):
        if name in score:
            score.update(score_args(score.pop(name), H, T, T, d, B, device=device))
    score["cu_seqlens"] = offsets(LENGTHS, torch.int32, device)  # int32 offsets with the data
    check_against_reference(q, k, v, None, True, score, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_packed_equals_separate_calls(device):
    """In float32, each packed sequence's rows are those of the op called on that sequence alone."""
    B, H, d = 2, 4, 32
    T = sum(LENGTHS)
    q, k, v = make_qkv(B, H, H, T, T, d, d, torch.float32, device)
    table = torch.randn(H, 32, device=device)
    got, got_lse = attention_with_lse(q, k, v, None, True, t5_table=table, rotary_dim=32, cu_seqlens=offsets(LENGTHS))
    cuts = offsets(LENGTHS).tolist()
    for start, end in zip(cuts, cuts[1:]):
        if end > start:
            want, want_lse = attention_with_lse(q[:, :, start:end], k[:, :, start:end], v[:, :, start:end], None, True,
                                                t5_table=table, rotary_dim=32)
            torch.testing.assert_close(got[:, :, start:end], want, rtol=2e-5, atol=2e-5)
            torch.testing.assert_close(got_lse[:, :, start:end], want_lse, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("policy", ["none", "t5", "rel_keys"])
def test_packed_gradcheck(device, policy):
    B, Hq, Hk, d = 1, 2, 1, 4
    lengths = [2, 0, 3, 1]
    T = sum(lengths)
    q, k, v = make_qkv(B, Hq, Hk, T, T, d, 3, device=device)
    score = score_args(policy, Hq, T, T, d, B, device=device)
    names = [n for n, t in score.items() if isinstance(t, torch.Tensor)]
    inputs = [t.requires_grad_(True) for t in (q, k, v, *(score[n] for n in names))]
    rotary = {} if policy == "rel_keys" else {"rotary_dim": 4, "rotary_base": 3.0}

    def fn(*ts):
        return attention(*ts[:3], None, True, cu_seqlens=offsets(lengths), **rotary,
                         **{**score, **dict(zip(names, ts[3:]))})

    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("device", DEVICES)
def test_packed_dropout_is_the_rows_philox_stream(device):
    """Dropout keeps the packed row's mask (counters of the row's query and key indices): the
    reference cuts each sequence's block out of that mask."""
    B, H, d, p = 1, 2, 8, 0.3
    T = sum(LENGTHS)
    q, k, v = make_qkv(B, H, H, T, T, d, d, device=device)
    keep = philox_keep_of(5, B, H, T, T, p, device)
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    torch.manual_seed(5)
    out = attention(*leaves, None, True, None, p, cu_seqlens=offsets(LENGTHS))
    exact = [t.detach().clone().requires_grad_(True) for t in (q, k, v)]
    want, _ = ref.attention(*exact, None, True, dropout_mask=keep, dropout_p=p, cu_seqlens=offsets(LENGTHS))
    torch.testing.assert_close(out, want, atol=1e-12, rtol=0)
    grad = torch.randn_like(out)
    for g, w in zip(torch.autograd.grad(out, leaves, grad), torch.autograd.grad(want, exact, grad)):
        torch.testing.assert_close(g, w, atol=1e-11, rtol=0)


@pytest.mark.parametrize("device,dtype", LOW_PRECISION_CASES)
def test_packed_low_precision(device, dtype):
    """float16 / bfloat16 by the low-precision rule, with rotary positions and ALiBi; on the
    emulator the tensor-core kernels run, their tiles spanning sequence boundaries."""
    B, Hq, Hk, d = 2, 4, 2, 32
    lengths = [70, 1, 0, 45, 34]
    T = sum(lengths)
    q, k, v = make_qkv(B, Hq, Hk, T, T, d, d, device=device)
    slopes = torch.rand(Hq, dtype=torch.float64, device=device)
    mask = random_mask(B, T, device)
    options = {"rotary_dim": 32, "rotary_base": 100.0, "cu_seqlens": offsets(lengths)}
    check_options_low_precision(device, dtype, q, k, v, mask, True, options, alibi_slopes=slopes)


@pytest.mark.parametrize("device", DEVICES)
def test_packed_bad_offsets(device):
    q, k, v = make_qkv(1, 2, 2, 10, 10, 8, 8, torch.float32, device)
    cases = [
        (torch.tensor([0.0, 10.0]), "cu_seqlens must be a 1-D int32 or int64 tensor"),
        (torch.tensor([[0, 10]]), "cu_seqlens must be a 1-D int32 or int64 tensor"),
        (torch.tensor([0]), "cu_seqlens must be a 1-D int32 or int64 tensor of num_sequences \\+ 1 >= 2 offsets"),
        (torch.tensor([1, 10]), r"cu_seqlens must start at 0 and end at the length of q \(10\), got 1 and 10"),
        (torch.tensor([0, 4, 9]), r"cu_seqlens must start at 0 and end at the length of q \(10\), got 0 and 9"),
        (torch.tensor([0, 6, 4, 10]), r"cu_seqlens must be non-decreasing, got cu_seqlens\[2\] = 4 < cu_seqlens\[1\] = 6"),
    ]
    for cu, message in cases:
        with pytest.raises(RuntimeError, match=message):
            attention(q, k, v, cu_seqlens=cu)
    with pytest.raises(RuntimeError, match="q and k must have the same length, got Lq = 9 and Lk = 10"):
        attention(q[:, :, :9], k, v, cu_seqlens=torch.tensor([0, 10]))
    with pytest.raises(RuntimeError, match="query_offset does not combine with cu_seqlens"):
        attention(q, k, v, query_offset=3, cu_seqlens=torch.tensor([0, 10]))
    # One sequence over the whole row is the plain op, bit for bit (offsets 0 is accepted too).
    plain = attention_with_lse(q, k, v, causal=True)
    for packed in (attention_with_lse(q, k, v, causal=True, cu_seqlens=torch.tensor([0, 10])),
                   attention_with_lse(q, k, v, causal=True, query_offset=0, cu_seqlens=torch.tensor([0, 0, 10, 10]))):
        assert all(torch.equal(a, b) for a, b in zip(packed, plain))
