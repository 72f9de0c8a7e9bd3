"""Differences from the originals that docs/compat.md documents and no other test pinned."""
import pytest
import torch

from seqops.compat import labml_compressive, linformer_pytorch

F64 = torch.float64


def test_linformer_positional_embedding_odd_width():
    # The original's table had channels + 1 columns for odd channels (and failed when added).
    pe = linformer_pytorch.PositionalEmbedding(5)
    table = pe(torch.zeros(2, 7, 5))
    assert table.shape == (1, 7, 5)
    p = torch.arange(7.0)[:, None]
    f = 1.0 / 100000 ** (torch.arange(0, 5, 2).float() / 5)        # base 100000, as the original
    want = torch.cat((torch.sin(p * f), torch.cos(p * f)), -1)[:, :5]   # halves; last cosine dropped
    torch.testing.assert_close(table[0], want)


def test_linformer_ff_intermediate_with_layerwise_sharing():
    # The original asserted "not (ff_intermediate and parameter_sharing == 'layerwise')".
    model = linformer_pytorch.Linformer(input_size=16, channels=8, dim_k=4, nhead=2, depth=3, dim_ff=12,
                                        ff_intermediate=6, parameter_sharing="layerwise", dtype=F64).eval()
    x = torch.randn(2, 16, 8, dtype=F64)
    assert model(x).shape == (2, 16, 8)


def test_linformer_feed_forward_unknown_activation_raises():
    # The original's FeedForward silently ran without an activation for any unknown name.
    with pytest.raises(ValueError, match="activation"):
        linformer_pytorch.FeedForward(8, 8, 16, 0.0, activation="tanh")
    ff = linformer_pytorch.FeedForward(8, 8, 16, 0.0, activation=None).eval()   # None: no activation
    x = torch.randn(2, 3, 8)
    torch.testing.assert_close(ff(x), ff.w_2(ff.w_1(x)))


def test_linformer_enc_dec_input_mask_reaches_the_cross_attention():
    # The original passed keyword arguments to the encoder only; here input_mask also hides the
    # masked source positions from the decoder's cross-attention.
    model = linformer_pytorch.LinformerEncDec(11, 16, 8, 7, 16, 8, enc_dim_k=4, dec_dim_k=4, enc_nhead=2,
                                              dec_nhead=2, enc_dim_ff=12, dec_dim_ff=12, enc_depth=1,
                                              dec_depth=1, dtype=F64).eval()
    x, y = torch.randint(0, 11, (2, 16)), torch.randint(0, 7, (2, 16))
    keep = torch.ones(2, 16, dtype=torch.bool)
    keep[:, 12:] = False
    x2 = x.clone()
    x2[:, 12:] = (x[:, 12:] + 1) % 11                               # change only masked source tokens
    out = model(x, y, input_mask=keep, y_mask=torch.ones(2, 16, dtype=torch.bool))
    out2 = model(x2, y, input_mask=keep, y_mask=torch.ones(2, 16, dtype=torch.bool))
    torch.testing.assert_close(out, out2, rtol=1e-10, atol=1e-10)
    assert not torch.allclose(model(x, y), model(x2, y))            # unmasked, the change shows


def test_labml_attention_keeps_no_probabilities():
    # labml's MultiHeadAttention stored every call's probabilities in self.attn (and logged them
    # through labml.tracker); the fused attention never materializes them.
    attn = labml_compressive.RelativeMultiHeadAttention(2, 8, 0.0)
    x = torch.randn(1, 5, 8)
    attn(x, x, x, None, True)
    assert not hasattr(attn, "attn")


def test_linformer_causal_convolution_with_inexact_kernel():
    # input_size 10, dim_k 4: kernel 10 // 4 = 2 gives 5 windows != dim_k. The original's (n, k)
    # causal mask then mismatched the scores (crash); here it runs and stays causal.
    model = linformer_pytorch.Linformer(input_size=10, channels=8, dim_k=4, nhead=2, dim_ff=12, depth=2,
                                        method="convolution", parameter_sharing="none", causal=True,
                                        dtype=F64).eval()
    x = torch.randn(2, 10, 8, dtype=F64)
    out = model(x)
    assert out.shape == (2, 10, 8)
    for p in (0, 3, 6, 8):
        y = x.clone()
        y[:, p + 1:] += torch.randn_like(y[:, p + 1:])          # change only the future of position p
        torch.testing.assert_close(model(y)[:, :p + 1], out[:, :p + 1], rtol=1e-10, atol=1e-10)
        assert not torch.allclose(model(y)[:, p + 1:], out[:, p + 1:])
