"""Packed variable-length batches in the modules: seqops.nn.pack_sequences / unpack_sequences /
packed_positions, and MultiheadAttention (every positional scheme's attend) with cu_seqlens,
whose output and gradients for each sequence equal a call on that sequence alone; TorchScript;
the combinations that cannot work raise."""
import pytest
import torch

from seqops.nn import KVCache, MultiheadAttention, pack_sequences, packed_positions, unpack_sequences

from support import DEVICES
from support.positional_cases import DH, H, SCHEMES, make

E = H * DH
LENGTHS = [5, 1, 0, 19, 8]
# Enformer's features scale with the sequence length: it refuses packed sequences (below).
PACKABLE = [None] + [kind for kind in SCHEMES if kind != "enformer"]


def sequences(device, dtype=torch.float64):
    g = torch.Generator().manual_seed(3)
    return [torch.randn(n, E, generator=g, dtype=dtype).to(device) for n in LENGTHS]


def test_pack_unpack_and_positions():
    seqs = sequences("cpu")
    packed, cu = pack_sequences(seqs)
    assert packed.shape == (1, sum(LENGTHS), E) and cu.dtype == torch.int64
    assert cu.tolist() == [0, 5, 6, 6, 25, 33]
    assert all(torch.equal(a, b) for a, b in zip(unpack_sequences(packed, cu), seqs))
    assert packed_positions(cu).tolist() == [*range(5), 0, *range(19), *range(8)]
    assert packed_positions(cu.int()).tolist() == packed_positions(cu).tolist()
    with pytest.raises(ValueError, match="at least one sequence"):
        pack_sequences([])
    with pytest.raises(ValueError, match=r"packed must be \(1, tokens, ...\)"):
        unpack_sequences(packed[0], cu)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", PACKABLE)
@pytest.mark.parametrize("causal", [False, True])
def test_mha_packed_equals_each_sequence_alone(device, kind, causal):
    """Outputs and the gradients of the inputs and of every parameter, float64. Absolute schemes
    add their positions to the inputs first, at packed_positions."""
    m = MultiheadAttention(E, H, positional=make(kind, torch.float64) if kind else None).to(device, torch.float64)
    seqs = sequences(device)
    packed, cu = pack_sequences(seqs)
    packed.requires_grad_(True)
    absolute = kind in ("sinusoidal", "learned")

    def embed(x, positions):
        return m.positional.forward_input(x, positions) if absolute else x

    out = m(embed(packed, packed_positions(cu)), causal=causal, cu_seqlens=cu)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [packed, *m.parameters()], grad, allow_unused=True)
    for piece, (start, end) in zip(seqs, zip(cu.tolist(), cu.tolist()[1:])):
        if end > start:
            alone = m(embed(piece[None], torch.arange(end - start, device=device)), causal=causal)
            torch.testing.assert_close(out[:, start:end], alone, rtol=1e-10, atol=1e-10)
    # The loss summed over the sequences alone has the packed call's gradients.
    leaves = [s.detach().clone().requires_grad_(True) for s in seqs]
    total = sum((m(embed(s[None], torch.arange(len(s), device=device)), causal=causal)
                 * grad[:, start:start + len(s)]).sum()
                for s, start in zip(leaves, cu.tolist()) if len(s) > 0)
    want = torch.autograd.grad(total, [*leaves, *m.parameters()], allow_unused=True)
    torch.testing.assert_close(got[0][0], torch.cat([g if g is not None else torch.zeros_like(s)
                                                     for g, s in zip(want[:len(leaves)], leaves)]),
                               rtol=1e-10, atol=1e-10)
    for g, w in zip(got[1:], want[len(leaves):]):
        assert (g is None) == (w is None)
        if g is not None:
            torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", PACKABLE)
def test_mha_packed_torchscript(kind):
    m = MultiheadAttention(E, H, positional=make(kind) if kind else None, window=(4, 0)).eval()
    scripted = torch.jit.script(m)
    packed, cu = pack_sequences(sequences("cpu", torch.float32))
    torch.testing.assert_close(scripted(packed, causal=True, cu_seqlens=cu), m(packed, causal=True, cu_seqlens=cu))


def test_packed_refusals():
    packed, cu = pack_sequences(sequences("cpu", torch.float32))
    m = MultiheadAttention(E, H, positional=make("enformer")).eval()
    with pytest.raises(ValueError, match="EnformerPositionalEmbedding's relative features scale with the sequence"):
        m(packed, cu_seqlens=cu)
    m = MultiheadAttention(E, H).eval()
    with pytest.raises(ValueError, match="cu_seqlens .* does not combine with cache"):
        m(packed, cu_seqlens=cu, cache=KVCache())
    with pytest.raises(RuntimeError, match="q and k must have the same length"):
        m(packed, packed[:, :10], cu_seqlens=cu)
