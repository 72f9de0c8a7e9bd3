"""RotaryPositionalEmbedding beyond the scheme-wide positional tests (test_positional.py, where
its logits are checked against explicit rotation matrices and attend against the softmax of
forward_attn): the constructor, rotate, the two pair layouts, the fused path making no rotated
copy, and MultiheadAttention decoding with rotary positions."""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from seqops.nn import KVCache, MultiheadAttention, RotaryPositionalEmbedding

from support import DEVICES, random_mask

F64 = torch.float64


def test_constructor_checks_and_defaults():
    m = RotaryPositionalEmbedding(head_dim=8)
    assert m.rotary_dim == 8 and m.base == 10000.0 and not m.interleaved and list(m.parameters()) == []
    assert "rotary_dim=8" in repr(m)
    for kwargs in (dict(rotary_dim=3), dict(rotary_dim=10), dict(rotary_dim=0)):
        with pytest.raises(ValueError, match=r"rotary_dim must be even, >= 2 and <= head_dim \(8\)"):
            RotaryPositionalEmbedding(head_dim=8, **kwargs)
    for base in (0.0, -2.0, float("inf")):
        with pytest.raises(ValueError, match="base must be finite and > 0"):
            RotaryPositionalEmbedding(head_dim=8, base=base)
    with pytest.raises(ValueError, match=r"q must have head_dim 8 features, got shape \[1, 2, 3, 6\]"):
        m.attend(torch.randn(1, 2, 3, 6), torch.randn(1, 2, 3, 6), torch.randn(1, 2, 3, 6))


def test_rotate_keeps_norms_and_the_unrotated_features():
    m = RotaryPositionalEmbedding(head_dim=10, rotary_dim=6, base=30.0)
    x = torch.randn(2, 3, 9, 10, dtype=F64)
    positions = torch.stack([torch.randperm(50)[:9], torch.randperm(50)[:9]])
    y = m.rotate(x, positions)
    torch.testing.assert_close(y[..., 6:], x[..., 6:], rtol=0, atol=0)
    torch.testing.assert_close(y.norm(dim=-1), x.norm(dim=-1))
    torch.testing.assert_close(m.rotate(x, torch.zeros(9, dtype=torch.long)), x)
    # Per-batch positions rotate each batch entry by its own.
    torch.testing.assert_close(y[1:], m.rotate(x[1:], positions[1]))


def test_layouts_are_a_permutation_apart():
    """The half layout on q, k equals the interleaved layout on features permuted so that pair p
    sits at (2p, 2p + 1)."""
    half, inter = (RotaryPositionalEmbedding(head_dim=8, base=20.0, interleaved=i) for i in (False, True))
    perm = torch.tensor([0, 4, 1, 5, 2, 6, 3, 7])
    q, k, v = (torch.randn(2, 2, 11, 8, dtype=F64) for _ in range(3))
    torch.testing.assert_close(half.forward_attn(q, k), inter.forward_attn(q[..., perm], k[..., perm]))
    torch.testing.assert_close(half.attend(q, k, v, causal=True), inter.attend(q[..., perm], k[..., perm], v, causal=True))


class LargestAllocation(TorchDispatchMode):
    """Records the shapes of every tensor an op returns (rotated copies of q or k would show)."""

    def __init__(self):
        super().__init__()
        self.shapes = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and func is not torch.ops.seqops.attention.default:
                self.shapes.append((str(func), tuple(t.shape)))
        return out


def test_fused_attend_makes_no_rotated_copy():
    m = RotaryPositionalEmbedding(head_dim=16)
    q, k, v = (torch.randn(1, 4, 64, 16) for _ in range(3))
    with LargestAllocation() as mode:
        m.attend(q, k, v, causal=True)
    assert all(shape != tuple(q.shape) for _, shape in mode.shapes), mode.shapes
    # The fallback for arbitrary positions does rotate copies (and says so in its docs).
    with LargestAllocation() as mode:
        m.attend(q, k, v, positions_q=torch.randperm(64), positions_k=torch.randperm(64))
    assert any(shape == tuple(q.shape) for _, shape in mode.shapes)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("interleaved", [False, True])
def test_mha_decoding_with_rotary_equals_the_causal_forward(device, interleaved):
    pos = RotaryPositionalEmbedding(head_dim=8, num_heads=4, base=100.0, interleaved=interleaved)
    m = MultiheadAttention(32, 4, positional=pos, window=(5, 0)).double().eval().to(device)
    x = torch.randn(2, 19, 32, dtype=F64, device=device)
    mask = random_mask(2, 19, device, fully_masked_row=False)
    cache = KVCache()
    with torch.no_grad():
        full = m(x, causal=True, key_padding_mask=mask)
        steps = torch.cat([m(x[:, t:t + 1], causal=True, cache=cache, key_padding_mask=mask[:, :t + 1])
                           for t in range(19)], dim=1)
    torch.testing.assert_close(steps, full, rtol=1e-10, atol=1e-10)
