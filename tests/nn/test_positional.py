"""seqops.nn positional embeddings and MultiheadAttention.

Each formula is re-derived here in float64 (scalar math where practical), independently of the
modules; ``attend`` is checked against softmax(scale * forward_attn + mask) @ v.
"""
import math

import pytest
import torch
from support.grad_check import assert_gradients_match
from support import DEVICES, LOW_PRECISION_CASES, check_low_precision, random_mask
from support.positional_cases import DH, H, ORIGINAL_KWARGS, RELATIVE, SCHEMES, make

import seqops

from seqops.nn import (EnformerPositionalEmbedding, LearnedPositionalEmbedding, MultiheadAttention,
                       SinusoidalPositionalEmbedding, T5PositionalEmbedding,
                       TransformerXLPositionalEmbedding, UnifiedPositionalEmbedding)

F64 = torch.float64


def rand(*shape, dtype=F64):
    return torch.randn(*shape, dtype=dtype)


# ----------------------------------------------------------------------------- re-derivations

def t5_bucket_scalar(rel: int, bidirectional: bool, num_buckets: int, max_distance: int) -> int:
    n, ret = -rel, 0
    if bidirectional:
        num_buckets //= 2
        if n < 0:
            ret = num_buckets
        n = abs(n)
    else:
        n = max(n, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return ret + n
    large = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    return ret + min(large, num_buckets - 1)


def t5_buckets(rel: torch.Tensor, bidirectional=True, num_buckets=32, max_distance=128) -> torch.Tensor:
    flat = [t5_bucket_scalar(int(r), bidirectional, num_buckets, max_distance) for r in rel.reshape(-1)]
    return torch.tensor(flat, dtype=torch.long).view(rel.shape)


def full_positions(positions, length, start=0):
    if positions is None:
        return torch.arange(start, start + length)[None]
    return positions if positions.dim() == 2 else positions[None]


def relative(pq, pk):
    return pk[:, None, :] - pq[:, :, None]  # key - query


def sinusoid_scalar_rows(positions: torch.Tensor, dim: int, padding_idx) -> torch.Tensor:
    half = dim // 2
    out = torch.zeros(positions.numel(), dim, dtype=F64)
    for row, p in enumerate(positions.reshape(-1).tolist()):
        if p == padding_idx:
            continue
        for i in range(half):
            freq = math.exp(-i * math.log(10000) / max(half - 1, 1))
            out[row, i] = math.sin(p * freq)
            out[row, half + i] = math.cos(p * freq)
    return out.view(*positions.shape, dim)


def txl_logits(m, q, k, pq, pk):
    """(q + u).k + (q + v).r_net(pe(pq_i - pk_j)), pe = [sin(d f) | cos(d f)], f_m = 10000^(-2m/E)."""
    E = m.embed_dim
    dist = (pq[:, :, None] - pk[:, None, :]).to(F64)                       # query - key
    freqs = torch.tensor([10000 ** (-2 * mm / E) for mm in range((E + 1) // 2)], dtype=F64)
    arg = dist[..., None] * freqs
    pe = torch.cat([arg.sin(), arg.cos()], -1)[..., :E]                     # (B', Lq, Lk, E)
    r = (pe @ m.r_net.weight.double().t()).unflatten(-1, (m.num_heads, m.head_dim))  # (B', Lq, Lk, H, Dh)
    u, v = m.r_w_bias.double(), m.r_r_bias.double()
    return (q + u) @ k.transpose(-1, -2) + torch.einsum("bhid,bijhd->bhij", q + v, r)


def enformer_feature_rows(dist: torch.Tensor, S: int, f: int) -> torch.Tensor:
    """Enformer's relative features of each distance (scalar math), (N, width)."""
    def raw(p):
        a = abs(p)
        row = [math.exp(-math.log(2) * a / 2 ** (3 + (math.log2(S) - 3) * n / f)) for n in range(f + 1)]
        row += [1.0 if 2 ** (n + 1) - 1 > a else 0.0 for n in range(f)]
        std = S / (2 * f)
        for n in range(f):
            mean = S / f + (S - S / f) * n / (f - 1) if f > 1 else S / f
            c, rate = (mean / std) ** 2, mean / std ** 2
            pdf = 0.0 if a == 0 else math.exp((c - 1) * math.log(a) - rate * a + c * math.log(rate) - math.lgamma(c))
            row.append(pdf + 1e-8)
        row += [math.cos(2 * math.pi * a / (1.25 * 2 ** n)) for n in range(f)]
        row += [1.0 if n == a else 0.0 for n in range(f)]
        idx = list(range(0, f + 1, 2))
        row += [math.sin(a / 10000 ** (i / f + 1)) for i in idx] + [math.cos(a / 10000 ** (i / f + 1)) for i in idx]
        return row
    gamma = slice(2 * f + 1, 3 * f + 1)
    gamma_max = max(max(raw(p)[gamma]) for p in range(S))
    rows = []
    for p in dist.reshape(-1).tolist():
        row = raw(p)
        row[gamma] = [g / gamma_max for g in row[gamma]]
        sign = (p > 0) - (p < 0)
        rows.append(row + [sign * x for x in row])
    return torch.tensor(rows, dtype=F64)


def enformer_logits(m, q, k, pq, pk):
    rel = relative(pq, pk)
    S = max(q.shape[-2], k.shape[-2])
    feats = enformer_feature_rows(rel, S, m.feature_size).view(*rel.shape, -1)
    r = (feats @ m.pos_embed.weight.double().t() + m.pos_embed.bias.double()).unflatten(-1, (m.num_heads, m.head_dim))
    u, v = m.content_bias.double(), m.pos_embed_bias.double()
    return (q + u) @ k.transpose(-1, -2) + torch.einsum("bhid,bijhd->bhij", q + v, r)


def tupe_logits(m, q, k, pq, pk):
    hd = m.num_heads * m.head_dim
    w, b = m.in_proj.weight.double(), m.in_proj.bias.double()

    def proj(pos, part):
        x = m.abs_pos_embed.double()[pos]
        x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + m.ln.eps)
        x = x * m.ln.weight.double() + m.ln.bias.double()
        y = x @ w[part * hd:(part + 1) * hd].t() + b[part * hd:(part + 1) * hd]
        return y.view(*pos.shape, m.num_heads, m.head_dim).transpose(1, 2)
    scaling = (m.head_dim * m.pos_scale_factor) ** -0.5
    pos = scaling * proj(pq, 0) @ proj(pk, 1).transpose(-1, -2)
    buckets = t5_buckets(relative(pq, pk), True, m.num_buckets, m.max_distance)
    rel = m.rel_pos_embed.weight.double()[buckets].permute(0, 3, 1, 2)
    return q @ k.transpose(-1, -2) + pos + rel


def t5_logits(m, q, k, pq, pk):
    buckets = t5_buckets(relative(pq, pk), m.bidirectional, m.num_buckets, m.max_distance)
    return q @ k.transpose(-1, -2) + m.relative_attention_bias.weight.double()[buckets].permute(0, 3, 1, 2)


def rotation_matrices(positions, m) -> torch.Tensor:
    """(..., Dh, Dh) the block rotation of each position: pair p = (2p, 2p + 1) (interleaved) or
    (p, p + rotary_dim / 2), turned by position * base^(-2p / rotary_dim); identity past
    rotary_dim."""
    half = m.rotary_dim // 2
    out = torch.eye(m.head_dim, dtype=F64).repeat(*positions.shape, 1, 1)
    for p in range(half):
        a, b = (2 * p, 2 * p + 1) if m.interleaved else (p, p + half)
        angle = positions.to(F64) * m.base ** (-2 * p / m.rotary_dim)
        out[..., a, a], out[..., a, b] = angle.cos(), -angle.sin()
        out[..., b, a], out[..., b, b] = angle.sin(), angle.cos()
    return out


def rotary_logits(m, q, k, pq, pk):
    """(R(pq_i) q_i) . (R(pk_j) k_j) with explicit rotation matrices."""
    rq = torch.einsum("bide,bhie->bhid", rotation_matrices(pq, m), q)
    rk = torch.einsum("bjde,bhje->bhjd", rotation_matrices(pk, m), k)
    return rq @ rk.transpose(-1, -2)


def expected_logits(kind, m, q, k, positions_q=None, positions_k=None):
    Lq, Lk = q.shape[-2], k.shape[-2]
    pq = full_positions(positions_q, Lq, Lk - Lq if kind == "txl" else 0)
    pk = full_positions(positions_k, Lk)
    if kind in ("sinusoidal", "learned"):
        return q @ k.transpose(-1, -2)
    return {"txl": txl_logits, "t5": t5_logits, "tupe": tupe_logits, "enformer": enformer_logits,
            "rotary": rotary_logits}[kind](m, q, k, pq, pk)


def softmax_attention(logits, v, mask=None, causal=False, window=None):
    """Masked softmax(logits) @ v; queries that see no key give zeros. window (left, right): keys
    at offsets -left .. right from the query's diagonal (-1: no limit)."""
    B, _, Lq, Lk = logits.shape
    keep = torch.ones(B, 1, Lq, Lk, dtype=torch.bool, device=logits.device)
    if causal:
        keep &= torch.ones(Lq, Lk, dtype=torch.bool, device=logits.device).tril(Lk - Lq)
    if window is not None:
        ones = torch.ones(Lq, Lk, dtype=torch.bool, device=logits.device)
        if window[0] >= 0:
            keep &= ones.triu(Lk - Lq - window[0])
        if window[1] >= 0:
            keep &= ones.tril(Lk - Lq + window[1])
    if mask is not None:
        keep &= mask[:, None, None, :]
    p = torch.softmax(logits.masked_fill(~keep, float("-inf")), -1).nan_to_num(0.0)
    return p @ v


# ----------------------------------------------------------------------------- construction

@pytest.mark.parametrize("kind", list(ORIGINAL_KWARGS))
def test_constructs_with_original_kwargs(kind):
    # Fix: the original's subclasses passed max_length to a base that took max_pos (TypeError).
    cls, kwargs = ORIGINAL_KWARGS[kind]
    m = cls(**kwargs)
    if "max_length" in kwargs:
        assert m.max_length == m.max_pos == kwargs["max_length"]


@pytest.mark.parametrize("cls,kwargs", [
    (SinusoidalPositionalEmbedding, dict(embed_dim=8, max_length=10, padding_idx=None)),
    (TransformerXLPositionalEmbedding, dict(embed_dim=8, num_heads=2, head_dim=4, dropout_p=None)),
    (UnifiedPositionalEmbedding, dict(num_heads=2, head_dim=4, max_length=10, dropout_p=None)),
    (UnifiedPositionalEmbedding, dict(num_heads=2, head_dim=4, max_length=10, dropout_p=0.1, rel_pos_embed=False)),
    (EnformerPositionalEmbedding, dict(num_heads=2, head_dim=8, dropout_p=None)),
])
def test_none_arguments_the_original_crashed_on(cls, kwargs):
    m = cls(**kwargs)
    q, k = (torch.randn(2, m.num_heads or 1, 3, m.head_dim or 4) for _ in range(2))
    if m.num_heads is not None:
        assert m.forward_attn(q, k).shape == (2, m.num_heads, 3, 3)
    else:
        assert m.forward_input(torch.zeros(2, 3, 8)).shape == (2, 3, 8)


def test_constructor_errors_are_explicit():
    with pytest.raises(NotImplementedError, match="has_cls_token"):
        UnifiedPositionalEmbedding(num_heads=2, head_dim=4, max_length=8, dropout_p=0.0, has_cls_token=True)
    with pytest.raises(ValueError, match="even"):
        UnifiedPositionalEmbedding(num_heads=2, head_dim=4, max_length=8, dropout_p=0.0, num_buckets=7)
    with pytest.raises(ValueError, match=">= 12"):
        EnformerPositionalEmbedding(num_heads=2, head_dim=5, dropout_p=0.0)


# ----------------------------------------------------------------------------- absolute

@pytest.mark.parametrize("dim,padding_idx", [(16, 0), (9, 1), (2, None), (3, 0)])
def test_sinusoidal_matches_fairseq_formula(dim, padding_idx):
    m = SinusoidalPositionalEmbedding(embed_dim=dim, max_length=10, padding_idx=padding_idx)
    # Positions far past max_length (the original's table was sized from the sequence length)
    # and the padding index itself.
    positions = torch.tensor([[0, 1, 2, 3, 500], [1, 7, 40, 0, 11]])
    expected = sinusoid_scalar_rows(positions, dim, padding_idx)
    torch.testing.assert_close(m(positions, torch.float64), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(m(positions).double(), expected, rtol=0, atol=2e-4)
    x = rand(2, 5, dim)
    torch.testing.assert_close(m.forward_input(x, positions), x + expected)
    start = 0 if padding_idx is None else padding_idx + 1
    default = torch.arange(start, start + 5)[None].expand(2, 5)
    torch.testing.assert_close(m.forward_input(x), x + sinusoid_scalar_rows(default, dim, padding_idx))
    assert "_float_tensor" not in m.state_dict()
    m.load_state_dict({"_float_tensor": torch.empty(1)})  # an original's state_dict loads


def test_learned_no_recursion_and_delegates_to_embedding():
    # Fix: the original's __getattr__ recursed forever at construction.
    torch.manual_seed(0)
    m = LearnedPositionalEmbedding(max_length=300, embed_dim=64, padding_idx=0)
    assert m.weight is m.emb.weight and m.num_embeddings == 301 and m.padding_idx == 0
    assert list(m.state_dict()) == ["emb.weight"]
    assert torch.all(m.weight[0] == 0)
    assert abs(m.weight[1:].std().item() - 64 ** -0.5) < 0.01
    with pytest.raises(AttributeError):
        m.no_such_attribute
    positions = torch.tensor([[1, 2, 3], [5, 0, 300]])
    x = rand(2, 3, 64).float()
    torch.testing.assert_close(m.forward_input(x, positions), x + m.weight[positions])
    torch.testing.assert_close(m.forward_input(x), x + m.weight[1:4])


@pytest.mark.parametrize("kind", ["sinusoidal", "learned"])
def test_absolute_schemes_have_plain_attention_logits(kind):
    m = make(kind)
    q, k = rand(2, H, 5, DH).float(), rand(2, H, 6, DH).float()
    torch.testing.assert_close(m.forward_attn(q, k, None, None), q @ k.transpose(-1, -2))


# ----------------------------------------------------------------------------- forward_attn

@pytest.mark.parametrize("kind", RELATIVE)
@pytest.mark.parametrize("lq,lk", [(1, 1), (7, 7), (5, 9), (9, 4)])
def test_forward_attn_matches_formula(kind, lq, lk):
    m = make(kind, F64)
    q, k = rand(3, H, lq, DH), rand(3, H, lk, DH)
    out = m.forward_attn(q, k, None, None)
    assert out.shape == (3, H, lq, lk)
    torch.testing.assert_close(out, expected_logits(kind, m, q, k), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", RELATIVE)
def test_forward_attn_honours_positions(kind):
    m = make(kind, F64)
    B, Lq, Lk = 3, 6, 8
    q, k = rand(B, H, Lq, DH), rand(B, H, Lk, DH)
    pq = torch.stack([torch.randperm(40)[:Lq] for _ in range(B)])
    pk = torch.stack([torch.randperm(40)[:Lk] for _ in range(B)])
    out = m.forward_attn(q, k, pq, pk)
    torch.testing.assert_close(out, expected_logits(kind, m, q, k, pq, pk), rtol=1e-10, atol=1e-10)
    # Translating both sequences changes nothing for purely relative schemes.
    if kind != "tupe":
        shifted = m.forward_attn(q, k, torch.arange(Lq) + 11, torch.arange(Lk) + 11 - (Lk - Lq if kind == "txl" else 0))
        torch.testing.assert_close(shifted, m.forward_attn(q, k), rtol=1e-10, atol=1e-10)


def test_t5_honours_max_distance():
    # Fix: the original always bucketed with max_distance=128.
    rel = torch.arange(-60, 61)[None, :]
    b16, b128 = t5_buckets(rel, True, 32, 16), t5_buckets(rel, True, 32, 128)
    assert not torch.equal(b16, b128)
    for max_distance, buckets in ((16, b16), (128, b128)):
        m = T5PositionalEmbedding(num_heads=H, num_buckets=32, max_distance=max_distance)
        assert torch.equal(m.relative_position_bucket(rel), buckets)
        bias = m.compute_bias(rel)
        assert bias.shape == (1, H, 1, 121)
        torch.testing.assert_close(bias[0], m.relative_attention_bias.weight[buckets[0]].t()[:, None])


def test_t5_unidirectional_buckets():
    m = T5PositionalEmbedding(num_heads=H, num_buckets=8, max_distance=20, bidirectional=False)
    rel = torch.arange(-30, 5)[None]
    assert torch.equal(m.relative_position_bucket(rel), t5_buckets(rel, False, 8, 20))


def test_txl_relative_shift_is_per_batch_and_relative():
    # Fix: the original shifted across the batch/head axes (identity for B=1, mixing for B>1).
    m = make("txl", F64)
    B, L = 3, 6
    q, k = rand(B, H, L, DH), rand(B, H, L, DH)
    full = m.forward_attn(q, k)
    for b in range(B):
        torch.testing.assert_close(full[b:b + 1], m.forward_attn(q[b:b + 1], k[b:b + 1]))
    # With q = 0 and k = 0 only r_r_bias . R[i - j] remains: a Toeplitz matrix, not constant rows.
    bd = m.forward_attn(torch.zeros(1, H, L, DH, dtype=F64), torch.zeros(1, H, L, DH, dtype=F64))[0]
    for i in range(1, L):
        for j in range(1, L):
            torch.testing.assert_close(bd[:, i, j], bd[:, i - 1, j - 1])
    assert not torch.allclose(bd[:, :, 0], bd[:, :, 1])
    assert not torch.allclose(bd[:, 0, :], bd[:, 1, :])


def test_txl_biases_are_initialized():
    # Fix: r_w_bias / r_r_bias were raw uninitialized memory.
    torch.manual_seed(0)
    a = TransformerXLPositionalEmbedding(embed_dim=16, num_heads=4, head_dim=8, dropout_p=0.0)
    torch.manual_seed(0)
    b = TransformerXLPositionalEmbedding(embed_dim=16, num_heads=4, head_dim=8, dropout_p=0.0)
    for name in ("r_w_bias", "r_r_bias"):
        p = getattr(a, name)
        assert p.shape == (1, 4, 1, 8) and torch.isfinite(p).all() and p.abs().max() < 0.2
        assert torch.equal(p, getattr(b, name))
    assert set(a.state_dict()) == {"r_net.weight", "pos_emb.inv_freq", "r_w_bias", "r_r_bias"}


def test_txl_odd_embed_dim():
    m = TransformerXLPositionalEmbedding(embed_dim=7, num_heads=2, head_dim=4, dropout_p=0.0).double()
    q, k = rand(2, 2, 3, 4), rand(2, 2, 5, 4)
    torch.testing.assert_close(m.forward_attn(q, k), expected_logits("txl", m, q, k))


def test_tupe_buckets_use_max_distance_and_state_dict_loads():
    # Fix: the original bucketed with max_distance = max_length.
    kwargs = dict(num_heads=H, head_dim=DH, max_length=100, dropout_p=0.0, num_buckets=16, max_distance=12)
    m = UnifiedPositionalEmbedding(**kwargs).double()
    q, k = rand(1, H, 40, DH), rand(1, H, 40, DH)
    rel = relative(torch.arange(40)[None], torch.arange(40)[None])
    assert not torch.equal(t5_buckets(rel, True, 16, 12), t5_buckets(rel, True, 16, 100))
    torch.testing.assert_close(m.forward_attn(q, k), expected_logits("tupe", m, q, k))
    # An original state_dict (with its int64 bucket "parameter") loads.
    original = {name: torch.randn_like(t) for name, t in m.state_dict().items()}
    original["rel_pos_embed_bucket"] = t5_buckets(relative(torch.arange(100)[None], torch.arange(100)[None]), True, 16, 100)[0]
    m.load_state_dict(original)
    torch.testing.assert_close(m.abs_pos_embed, original["abs_pos_embed"])
    assert "rel_pos_embed_bucket" not in m.state_dict()
    with pytest.raises(ValueError, match="max_length"):
        m.forward_attn(q, k, torch.arange(40) + 70, None)


def test_enformer_returns_batch_head_logits_and_keeps_state_dict_layout():
    # Fix: the original returned a (Lk, Lq) tensor summed over batch and heads.
    m = make("enformer", F64)
    assert set(m.state_dict()) == {"pos_embed.weight", "pos_embed.bias", "content_bias", "pos_embed_bias"}
    assert m.pos_embed.weight.shape == (H * DH, H * DH)  # H*Dh = 16: the original's layout
    q, k = rand(2, H, 5, DH), rand(2, H, 6, DH)
    out = m.forward_attn(q, k, None, None)
    assert out.shape == (2, H, 5, 6)
    torch.testing.assert_close(out, expected_logits("enformer", m, q, k), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("heads,head_dim", [(3, 7), (1, 12), (4, 16)])
def test_enformer_constructs_for_any_width(heads, head_dim):
    m = EnformerPositionalEmbedding(num_heads=heads, head_dim=head_dim, dropout_p=0.0)
    q, k = torch.randn(2, heads, 4, head_dim), torch.randn(2, heads, 4, head_dim)
    assert m.forward_attn(q, k).shape == (2, heads, 4, 4)


def test_enformer_feature_basis_is_cached(monkeypatch):
    m = make("enformer")
    calls = []
    original = type(m)._features

    def counting(self, *args):
        calls.append(args[1])
        return original(self, *args)
    monkeypatch.setattr(type(m), "_features", counting)
    q, k = torch.randn(2, H, 9, DH), torch.randn(2, H, 9, DH)
    m.forward_attn(q, k)
    first = len(calls)
    assert first > 0
    m.forward_attn(q, k)
    m.forward_attn(q * 2, k)
    assert len(calls) == first
    m.forward_attn(q[:, :, :5], k[:, :, :5])  # a new length computes its own basis once
    assert len(calls) > first


# ----------------------------------------------------------------------------- attend

LENGTHS = [(1, 1), (7, 7), (97, 97), (5, 12), (12, 5)]


@pytest.mark.parametrize("kind", list(SCHEMES))
@pytest.mark.parametrize("lq,lk", LENGTHS)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("device", DEVICES)
def test_attend_equals_softmax_of_forward_attn(kind, lq, lk, masked, causal, dtype, device):
    m = make(kind, F64)
    B, dv = 3, 5
    q, k, v = rand(B, H, lq, DH), rand(B, H, lk, DH), rand(B, H, lk, dv)
    mask = random_mask(B, lk, "cpu") if masked else None  # row 1 fully masked -> zeros
    scale = DH ** -0.5
    expected = softmax_attention(scale * m.forward_attn(q, k, None, None), v, mask, causal)
    torch.testing.assert_close(m.forward_attn(q, k), expected_logits(kind, m, q, k), rtol=1e-9, atol=1e-9)
    m = m.to(device, dtype)
    dev = lambda t: None if t is None else t.to(device)  # noqa: E731
    out = m.attend(dev(q).to(dtype), dev(k).to(dtype), dev(v).to(dtype), key_padding_mask=dev(mask), causal=causal)
    assert out.dtype == dtype and out.shape == (B, H, lq, dv)
    tol = 1e-10 if dtype == F64 else 2e-5
    torch.testing.assert_close(out.cpu().double(), expected, rtol=tol, atol=tol)
    if masked:
        assert torch.all(out[1] == 0)


@pytest.mark.parametrize("kind", list(SCHEMES))
@pytest.mark.parametrize("window", [(0, 0), (3, 2), (-1, 4), (6, -1)])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("positions", [None, "arbitrary"])
@pytest.mark.parametrize("device", DEVICES)
def test_attend_with_window(kind, window, causal, positions, device):
    """attend(window=...) on the fused path and (arbitrary positions) the dense fallback equals
    the windowed softmax of forward_attn."""
    m = make(kind, F64)
    B, lq, lk = 2, 12, 17
    q, k, v = rand(B, H, lq, DH), rand(B, H, lk, DH), rand(B, H, lk, 3)
    pq = pk = None
    if positions == "arbitrary":
        pq, pk = torch.randperm(40)[:lq], torch.randperm(40)[:lk]
    mask = random_mask(B, lk, "cpu")
    expected = softmax_attention(DH ** -0.5 * m.forward_attn(q, k, pq, pk), v, mask, causal, window)
    m = m.to(device)
    dev = lambda t: None if t is None else t.to(device)  # noqa: E731
    out = m.attend(dev(q), dev(k), dev(v), dev(mask), causal, None, 0.0, dev(pq), dev(pk), window=window)
    torch.testing.assert_close(out.cpu(), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", RELATIVE)
@pytest.mark.parametrize("device,dtype", LOW_PRECISION_CASES)
def test_attend_low_precision(kind, device, dtype):
    # The project's rule: error of attend <= 2x the error of the materialized path run in the
    # same precision (parameters float32 in both), for the output and dq, dk, dv.
    m32, m64 = make(kind).to(device), make(kind, F64).to(device)
    m64.load_state_dict(m32.state_dict())
    B, Lq, Lk = 2, 33, 47
    mask = random_mask(B, Lk, device, fully_masked_row=False)
    inputs = [torch.randn(B, H, Lq, DH, device=device), torch.randn(B, H, Lk, DH, device=device),
              torch.randn(B, H, Lk, DH, device=device)]

    def module(q):
        return m64 if q.dtype == F64 else m32

    def fused(q, k, v):
        return module(q).attend(q, k, v, mask, True)

    def materialized(q, k, v):
        return softmax_attention(DH ** -0.5 * module(q).forward_attn(q, k), v, mask.cpu().to(device), True)

    check_low_precision(fused, materialized, inputs, dtype, grad_inputs=3, floor=2e-3)


@pytest.mark.parametrize("kind", RELATIVE)
@pytest.mark.parametrize("positions", ["shifted", "arbitrary"])
def test_attend_honours_positions(kind, positions, monkeypatch):
    m = make(kind, F64)
    B, Lq, Lk = 3, 6, 9
    q, k, v = rand(B, H, Lq, DH), rand(B, H, Lk, DH), rand(B, H, Lk, 4)
    if positions == "shifted":  # one query-minus-key offset (3), a different start per batch
        start = torch.tensor([[0], [4], [10]])
        pq, pk = torch.arange(Lq) + 3 + start, torch.arange(Lk) + start
    else:
        pq = torch.stack([torch.randperm(50)[:Lq] for _ in range(B)])
        pk = torch.stack([torch.randperm(50)[:Lk] for _ in range(B)])
    calls = []
    fused_op = seqops.ops.attention
    monkeypatch.setattr(seqops.ops, "attention", lambda *a, **kw: calls.append(kw) or fused_op(*a, **kw))
    mask = random_mask(B, Lk, "cpu")
    out = m.attend(q, k, v, mask, True, 0.3, 0.0, pq, pk)
    logits = expected_logits(kind, m, q, k, pq, pk)
    torch.testing.assert_close(out, softmax_attention(0.3 * logits, v, mask, True), rtol=1e-10, atol=1e-10)
    # Shifted aranges take the fused score policy (rotary: the fused rotation); other positions a
    # materialized bias (rotary: rotated copies of q and k, a plain call).
    assert len(calls) == 1
    policy = [name for name in ("bias", "t5_table", "rel_keys") if calls[0].get(name) is not None]
    if kind == "rotary":
        assert policy == [] and calls[0].get("rotary_dim", 0) == (0 if positions == "arbitrary" else m.rotary_dim)
    else:
        assert policy == (["bias"] if positions == "arbitrary" else
                          ["rel_keys" if kind in ("txl", "enformer") else "t5_table"])


@pytest.mark.parametrize("kind", RELATIVE)
@pytest.mark.parametrize("lq,lk,positions", [(7, 7, None), (5, 9, None), (6, 8, "shifted"), (6, 8, "arbitrary")])
def test_attend_gradients_match_materialized(kind, lq, lk, positions):
    m = make(kind, F64)
    B = 2
    q, k, v = (rand(B, H, lq, DH).requires_grad_(), rand(B, H, lk, DH).requires_grad_(),
               rand(B, H, lk, 3).requires_grad_())
    pq = pk = None
    if positions == "shifted":
        pq, pk = torch.arange(lq)[None] + 2, torch.arange(lk)[None]
    elif positions == "arbitrary":
        pq = torch.stack([torch.randperm(30)[:lq] for _ in range(B)])
        pk = torch.stack([torch.randperm(30)[:lk] for _ in range(B)])
    mask = random_mask(B, lk, "cpu", fully_masked_row=False)
    fused = m.attend(q, k, v, mask, False, None, 0.0, pq, pk)
    ref = softmax_attention(DH ** -0.5 * m.forward_attn(q, k, pq, pk), v, mask)
    assert_gradients_match(m, fused, ref, {"q": q, "k": k, "v": v}, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", ["txl", "enformer", "tupe"])
def test_positional_dropout_matches_materialized_path(kind):
    cls, kwargs = ORIGINAL_KWARGS[kind]
    m = cls(**dict(kwargs, dropout_p=0.3)).double().train()
    q, k, v = (rand(2, H, 6, d).requires_grad_() for d in (DH, DH, 4))
    torch.manual_seed(1)
    out = m.attend(q, k, v)
    torch.manual_seed(1)
    expected = softmax_attention(DH ** -0.5 * m.forward_attn(q, k), v)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    assert_gradients_match(m, out, expected, {"q": q, "k": k, "v": v}, rtol=1e-10, atol=1e-10)
    torch.manual_seed(2)
    assert not torch.allclose(m.attend(q, k, v), out)


# ----------------------------------------------------------------------------- MultiheadAttention

E = H * DH


def test_mha_loads_torch_state_dict_and_matches_plain_attention():
    torch_mha = torch.nn.MultiheadAttention(E, H, batch_first=True).double()
    m = MultiheadAttention(E, H).double()
    assert set(m.state_dict()) == set(torch_mha.state_dict())
    m.load_state_dict(torch_mha.state_dict())
    x, mem = rand(3, 7, E), rand(3, 9, E)
    mask = random_mask(3, 9, "cpu", fully_masked_row=False)
    expected, _ = torch_mha(x, mem, mem, key_padding_mask=~mask)  # torch: True = ignore
    torch.testing.assert_close(m(x, mem, mem, key_padding_mask=mask), expected)
    causal = torch.ones(7, 7, dtype=torch.bool).triu(1)
    expected, _ = torch_mha(x, x, x, attn_mask=causal)
    torch.testing.assert_close(m(x, causal=True), expected)


@pytest.mark.parametrize("kind", [None] + list(SCHEMES))
@pytest.mark.parametrize("batch_first,window", [(True, None), (False, None), (True, (2, 1))])
def test_mha_with_each_positional(kind, batch_first, window):
    pos = make(kind, F64) if kind is not None else None
    m = MultiheadAttention(E, H, positional=pos, batch_first=batch_first, window=window).double().eval()
    B, Lq, Lk = 2, 5, 8
    x, mem = rand(B, Lq, E).requires_grad_(), rand(B, Lk, E).requires_grad_()
    mask = random_mask(B, Lk, "cpu")
    args = (x, mem, mem) if batch_first else (x.transpose(0, 1), mem.transpose(0, 1), mem.transpose(0, 1))
    out = m(*args, key_padding_mask=mask, causal=True)
    out = out if batch_first else out.transpose(0, 1)
    w, b = m.in_proj_weight, m.in_proj_bias
    heads = lambda t: t.view(B, -1, H, DH).transpose(1, 2)  # noqa: E731
    q, k, v = heads(x @ w[:E].t() + b[:E]), heads(mem @ w[E:2 * E].t() + b[E:2 * E]), heads(mem @ w[2 * E:].t() + b[2 * E:])
    logits = q @ k.transpose(-1, -2) if pos is None else pos.forward_attn(q, k)
    attn = softmax_attention(DH ** -0.5 * logits, v, mask, causal=True, window=window)
    expected = m.out_proj(attn.transpose(1, 2).reshape(B, Lq, E))
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    # x, the memory, the projections and every parameter of the positional scheme (absolute
    # schemes act on the inputs, outside attention: the learned table gets no gradient here).
    assert_gradients_match(m, out, expected, {"x": x, "memory": mem}, rtol=1e-10, atol=1e-10,
                           unused=["positional.emb.weight"] if kind == "learned" else [])


def test_mha_checks_positional_heads():
    with pytest.raises(ValueError, match="num_heads"):
        MultiheadAttention(E, H, positional=T5PositionalEmbedding(num_heads=H + 1))
    with pytest.raises(ValueError, match="head_dim"):
        MultiheadAttention(E, H, positional=EnformerPositionalEmbedding(num_heads=H, head_dim=DH * 2))


@pytest.mark.parametrize("kind", [None] + list(SCHEMES))
@pytest.mark.parametrize("window", [None, (3, 0)])
def test_mha_torchscript(kind, window):
    m = MultiheadAttention(E, H, positional=make(kind) if kind else None, window=window).eval()
    scripted = torch.jit.script(m)
    x = torch.randn(2, 7, 16)
    mask = random_mask(2, 7, "cpu")
    torch.testing.assert_close(scripted(x, key_padding_mask=mask, causal=True), m(x, key_padding_mask=mask, causal=True))
    positions = torch.arange(7) + 3
    torch.testing.assert_close(scripted(x, positions_q=positions, positions_k=positions),
                               m(x, positions_q=positions, positions_k=positions))


@pytest.mark.parametrize("kind", [None] + list(SCHEMES))
def test_mha_compiles_fullgraph(kind):
    m = MultiheadAttention(E, H, positional=make(kind) if kind else None).eval()
    x = torch.randn(2, 7, 16)
    mask = random_mask(2, 7, "cpu")
    compiled = torch.compile(m, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x, key_padding_mask=mask, causal=True), m(x, key_padding_mask=mask, causal=True))
