"""Incremental decoding: seqops.nn.KVCache with MultiheadAttention and every positional scheme.

Decoding token by token (and in chunks) must give the outputs of one causal call on the whole
sequence, with masks, windows, the growing and the fixed-capacity cache; the cache hands the
kernels views of its buffer, which the CPU kernel reads in place."""
import pytest
import torch

from seqops.nn import KVCache, MultiheadAttention

from support import random_mask

from support.positional_cases import DH, H, SCHEMES, make

F64 = torch.float64
E = H * DH
KINDS = [None] + list(SCHEMES)


def model(kind, window=None):
    pos = make(kind, F64) if kind is not None else None
    return MultiheadAttention(E, H, positional=pos, window=window).double().eval()


def decode(m, x, chunks, cache, mask=None):
    """Feeds x (B, L, E) in chunks of the given sizes; returns the outputs concatenated."""
    outs, t = [], 0
    with torch.no_grad():
        for size in chunks:
            keep = None if mask is None else mask[:, :t + size]
            outs.append(m(x[:, t:t + size], causal=True, cache=cache, key_padding_mask=keep))
            t += size
    return torch.cat(outs, dim=1)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("window", [None, (3, 0)])
@pytest.mark.parametrize("capacity", [None, 16])
def test_decoding_equals_the_causal_forward(kind, window, capacity):
    m = model(kind, window)
    B, L = 2, 13
    x = torch.randn(B, L, E, dtype=F64)
    mask = random_mask(B, L, "cpu", fully_masked_row=False)
    for chunks in ([1] * L, [5, 1, 1, 4, 2]):
        got = decode(m, x, chunks, KVCache(capacity), mask)
        # Each step is the causal call on the prefix so far (its last rows) ...
        t = 0
        for size in chunks:
            with torch.no_grad():
                prefix = m(x[:, :t + size], causal=True, key_padding_mask=mask[:, :t + size])
            torch.testing.assert_close(got[:, t:t + size], prefix[:, t:], rtol=1e-10, atol=1e-10)
            t += size
        # ... and, where the scheme does not scale with the length (Enformer's features do),
        # the causal call on the whole sequence.
        if kind != "enformer":
            with torch.no_grad():
                full = m(x, causal=True, key_padding_mask=mask)
            torch.testing.assert_close(got, full, rtol=1e-10, atol=1e-10)


def test_cache_keeps_every_layer():
    layers = [model("t5"), model("txl")]
    B, L = 1, 9
    x = torch.randn(B, L, E, dtype=F64)

    def stack(inputs, cache=None):
        h = inputs
        for i, m in enumerate(layers):
            h = h + m(h, causal=True, cache=cache, cache_layer=i)
        return h

    with torch.no_grad():
        full = stack(x)
        cache = KVCache()
        steps = torch.cat([stack(x[:, t:t + 1], cache) for t in range(L)], dim=1)
    torch.testing.assert_close(steps, full, rtol=1e-10, atol=1e-10)
    assert cache.num_layers() == 2 and cache.length(0) == cache.length(1) == L and cache.length(5) == 0


def test_cache_returns_views_of_its_buffer_and_grows_by_doubling():
    cache = KVCache()
    k = torch.randn(2, 3, 1, 4)
    sizes = []
    for t in range(1, 40):
        keys, values = cache.update(0, k + t, k - t)
        assert keys.shape == (2, 3, t, 4) and keys.data_ptr() == cache.keys[0].data_ptr()
        assert torch.equal(keys[:, :, -1:], k + t) and torch.equal(values[:, :, 0:1], k - 1)
        sizes.append(cache.keys[0].shape[2])
    assert sorted(set(sizes)) == [1, 2, 4, 8, 16, 32, 64]
    cache.reset()
    assert cache.length(0) == 0 and cache.update(0, k, k)[0].shape[2] == 1


def test_fixed_capacity_never_reallocates_and_raises_when_full():
    cache = KVCache(capacity=4)
    k = torch.randn(1, 2, 3, 8)
    buffer = cache.update(0, k, k)[0].data_ptr()
    assert cache.update(0, k[:, :, :1], k[:, :, :1])[0].data_ptr() == buffer
    with pytest.raises(ValueError, match="holds 4 of its capacity 4 tokens; 1 more do not fit"):
        cache.update(0, k[:, :, :1], k[:, :, :1])


def test_cache_errors_name_the_problem():
    with pytest.raises(ValueError, match="capacity must be >= 1"):
        KVCache(0)
    cache = KVCache()
    k = torch.randn(1, 2, 3, 8)
    with pytest.raises(ValueError, match=r"layer must be an existing layer or the next one \(0\), got 1"):
        cache.update(1, k, k)
    with pytest.raises(ValueError, match="k and v must be"):
        cache.update(0, k[0], k)
    cache.update(0, k, k)
    with pytest.raises(ValueError, match=r"k of layer 0 must be \(1, 2, L, 8\)"):
        cache.update(0, torch.randn(1, 3, 1, 8), torch.randn(1, 3, 1, 8))
    with pytest.raises(ValueError, match="v of layer 0 must be .* torch.float32"):
        cache.update(0, k, k.double())


class TokenByToken(torch.nn.Module):
    """A decoding loop with its cache inside: how TorchScript decodes (a cache passed in from
    Python is copied at the boundary, so its updates would not come back)."""

    def __init__(self, mha: MultiheadAttention):
        super().__init__()
        self.mha = mha

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cache = KVCache()
        outs = [self.mha(x[:, t:t + 1], causal=True, cache=cache) for t in range(x.shape[1])]
        return torch.cat(outs, dim=1)


@pytest.mark.parametrize("kind", [None, "t5", "txl"])
def test_scripted_decoding(kind):
    m = model(kind).float()
    scripted = torch.jit.script(TokenByToken(m))
    x = torch.randn(2, 6, E)
    with torch.no_grad():
        want = m(x, causal=True)
        got = scripted(x)
    torch.testing.assert_close(got, want)


def test_compiled_decode_step_with_fixed_capacity():
    m = model("t5").float()
    x = torch.randn(1, 8, E)
    with torch.no_grad():
        want = decode(m, x, [1] * 8, KVCache(8))
        cache = KVCache(8)
        step = torch.compile(lambda xt: m(xt, causal=True, cache=cache), fullgraph=True, backend="aot_eager",
                             dynamic=True)
        got = torch.cat([step(x[:, t:t + 1]) for t in range(8)], dim=1)
    torch.testing.assert_close(got, want)
