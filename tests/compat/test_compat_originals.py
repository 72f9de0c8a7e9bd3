"""Where the original is installed: its weights loaded into seqops through seqops.compat give its
outputs (where the original is sound), and its documented bugs are really there (where seqops
differs on purpose). Skipped when the original is not installed (pip lines in docs/compat.md)."""

import pytest
import torch

import seqops.nn
from support.originals import import_original, labml_modules
from seqops.compat import labml_compressive, linformer_pytorch, positional_embeddings_pytorch, seqpool

F64 = torch.float64


def close(a, b, tol=1e-10):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


# ----------------------------------------------------------------------------- seqpool

def test_seqpool_cvt_state_dict_and_outputs():
    original = import_original("seqpool", "seqpool")
    theirs = original.CVTSeqPool(32).double()
    ours = seqpool.CVTSeqPool(32).double()
    ours.load_state_dict(theirs.state_dict())                    # same keys, shapes: strict load
    x = torch.randn(3, 17, 32, dtype=F64)
    close(ours(x), theirs(x))
    for bad in (x[0], x[..., :31]):                              # the same ValueErrors
        with pytest.raises(ValueError) as want:
            theirs(bad)
        with pytest.raises(ValueError, match=str(want.value).replace("(", r"\(").replace(")", r"\)")):
            ours(bad)


def test_seqpool_mean_fixes_the_axis():
    original = import_original("seqpool", "seqpool")
    x = torch.randn(3, 17, 32)
    assert original.MeanSeqPool()(x).shape == (3, 17)            # the original's bug: mean of the embedding
    close(seqpool.MeanSeqPool()(x), x.mean(1), 1e-6)            # seqops: mean over the sequence


# ----------------------------------------------------------------------------- linformer-pytorch

SMALL = dict(input_size=64, channels=16, dim_d=8, dim_k=12, dim_ff=32, nhead=2, depth=2)


def test_linformer_readme_model_loads_original_weights():
    original = import_original("linformer_pytorch", "linformer-pytorch")
    torch.manual_seed(0)
    theirs = original.Linformer(**SMALL).double().eval()
    ours = linformer_pytorch.Linformer(**SMALL, dtype=F64).eval()
    seqops.nn.load_linformer_pytorch(ours, theirs)
    x = torch.randn(2, 64, 16, dtype=F64)
    close(ours(x), theirs(x))


@pytest.mark.parametrize("sharing", ["none", "headwise", "kv"])
def test_linformer_lm_loads_original_weights(sharing):
    original = import_original("linformer_pytorch", "linformer-pytorch")
    kwargs = dict(num_tokens=20, input_size=32, channels=16, dim_k=8, nhead=2, depth=2, dim_ff=24,
                  parameter_sharing=sharing, emb_dim=12)
    theirs = original.LinformerLM(**kwargs).double().eval()
    ours = linformer_pytorch.LinformerLM(**kwargs, dtype=F64).eval()
    seqops.nn.load_linformer_pytorch(ours, theirs.state_dict())
    tokens = torch.randint(0, 20, (2, 32))
    close(ours(tokens), theirs(tokens))


def test_linformer_original_causal_leaks_ours_does_not():
    original = import_original("linformer_pytorch", "linformer-pytorch")
    kwargs = dict(num_tokens=20, input_size=32, channels=16, dim_k=8, nhead=2, depth=1, dim_ff=24, causal=True)
    theirs = original.LinformerLM(**kwargs).eval()
    ours = linformer_pytorch.LinformerLM(**kwargs).eval()
    a = torch.randint(0, 20, (1, 32))
    b = a.clone()
    b[0, 20:] = (a[0, 20:] + 1) % 20                              # change only the future of position 10
    assert not torch.allclose(theirs(a)[0, 10], theirs(b)[0, 10])  # the original's output at 10 moves
    close(ours(a)[0, :20], ours(b)[0, :20], 1e-6)                 # seqops': positions < 20 do not


def test_linformer_original_causal_convolution_crashes():
    original = import_original("linformer_pytorch", "linformer-pytorch")
    kwargs = dict(input_size=10, channels=8, dim_k=4, nhead=2, dim_ff=12, depth=2, method="convolution",
                  parameter_sharing="none", causal=True)
    with pytest.raises(RuntimeError, match="must match the size"):   # 5 windows vs its (10, 4) mask
        original.Linformer(**kwargs).eval()(torch.randn(2, 10, 8))
    assert linformer_pytorch.Linformer(**kwargs).eval()(torch.randn(2, 10, 8)).shape == (2, 10, 8)


# ----------------------------------------------------------------------------- positional-embeddings-pytorch

def test_positional_t5_loads_original_weights_and_fixes_max_distance():
    original = import_original("positional_embeddings_pytorch", "positional-embeddings-pytorch")
    q, k = torch.randn(2, 4, 9, 8, dtype=F64), torch.randn(2, 4, 300, 8, dtype=F64)
    theirs = original.T5PositionalEmbedding(num_heads=4).double()
    ours = positional_embeddings_pytorch.T5PositionalEmbedding(num_heads=4).double()
    ours.load_state_dict(theirs.state_dict())
    close(ours.forward_attn(q, k), theirs.forward_attn(q, k, None, None))
    # max_distance: the original always used 128 (distances up to 299 here tell 16 from 128).
    theirs16 = original.T5PositionalEmbedding(num_heads=4, max_distance=16).double()
    ours16 = positional_embeddings_pytorch.T5PositionalEmbedding(num_heads=4, max_distance=16).double()
    ours16.load_state_dict(theirs16.state_dict())
    theirs128 = original.T5PositionalEmbedding(num_heads=4, max_distance=128).double()
    theirs128.load_state_dict(theirs16.state_dict())
    close(theirs16.forward_attn(q, k, None, None), theirs128.forward_attn(q, k, None, None))  # ignored
    assert not torch.allclose(ours16.forward_attn(q, k), theirs16.forward_attn(q, k, None, None))


def test_positional_sinusoidal_matches_original_table():
    original = import_original("positional_embeddings_pytorch", "positional-embeddings-pytorch")
    theirs = original.SinusoidalPositionalEmbedding(embed_dim=16, max_length=32, padding_idx=1)
    ours = positional_embeddings_pytorch.SinusoidalPositionalEmbedding(embed_dim=16, max_length=32, padding_idx=1)
    positions = torch.tensor([[1, 2, 3, 4, 5], [1, 1, 2, 3, 4]])   # fairseq: real tokens from padding_idx + 1
    close(ours(positions), theirs(positions), 1e-6)
    ours.load_state_dict(theirs.state_dict(), strict=False)        # the original's _float_tensor is dropped


def test_positional_original_breakage_that_seqops_fixes():
    original = import_original("positional_embeddings_pytorch", "positional-embeddings-pytorch")
    with pytest.raises(RecursionError):                            # PyPI 0.0.1 as HEAD: __getattr__ recursion
        original.LearnedPositionalEmbedding(max_length=16, embed_dim=8, padding_idx=0)
    positional_embeddings_pytorch.LearnedPositionalEmbedding(max_length=16, embed_dim=8, padding_idx=0)
    with pytest.raises(TypeError):                                 # 0.0.1's TUPE: in_proj from head_dim=None
        original.TUPE(embed_dim=8, num_heads=2, max_length=16, dropout_p=0.1, rel_pos_embed=True)
    positional_embeddings_pytorch.TUPE(embed_dim=8, num_heads=2, max_length=16, dropout_p=0.1, rel_pos_embed=True)
    enformer = original.EnformerPositionalEmbedding(num_heads=2, head_dim=8, dropout_p=0.1).eval()
    q, k = torch.randn(2, 2, 5, 8), torch.randn(2, 2, 5, 8)
    assert enformer.forward_attn(q, k, None, None).shape == (5, 5)   # summed over batch and heads
    ours = positional_embeddings_pytorch.EnformerPositionalEmbedding(num_heads=2, head_dim=8, dropout_p=0.1)
    assert ours.eval().forward_attn(q, k).shape == (2, 2, 5, 5)


# ----------------------------------------------------------------------------- labml_nn compressive

def build(ns_compressive, attention, feed_forward, d=16, heads=4, d_ff=32, rate=2, n_layers=2):
    """experiment.py's autoregressive_model construction, for either namespace."""
    c = ns_compressive
    return c.CompressiveTransformer(
        c.CompressiveTransformerLayer(d_model=d, self_attn=attention(heads, d, 0.0),
                                      feed_forward=feed_forward(d, d_ff, 0.0), dropout_prob=0.0,
                                      compress=c.Conv1dCompression(rate, d)), n_layers)


def test_labml_weights_load_and_outputs_match():
    compressive, LabmlFeedForward, LabmlAttention, subsequent_mask = labml_modules()
    theirs = build(compressive, LabmlAttention, LabmlFeedForward).double()
    with torch.no_grad():                  # labml's layers start as identical copies: make them differ
        for p in theirs.parameters():
            p.normal_(0, 0.5)
    ours = build(labml_compressive, labml_compressive.RelativeMultiHeadAttention,
                 labml_compressive.FeedForward).double()
    seqops.nn.load_labml_state_dict(ours, theirs.state_dict())
    B, Lq, Lm, Lc = 2, 5, 6, 3
    x = torch.randn(Lq, B, 16, dtype=F64)                                   # labml: sequence-first
    mem = [torch.randn(Lm, B, 16, dtype=F64) for _ in range(2)]
    c_mem = [torch.randn(Lc, B, 16, dtype=F64) for _ in range(2)]
    mask = torch.cat((torch.ones(Lq, Lm + Lc, 1, dtype=torch.bool), subsequent_mask(Lq)), 1)
    want, want_mem = theirs(x, mem, c_mem, mask)
    bf = lambda t: t.transpose(0, 1)  # noqa: E731
    got, got_mem = ours(bf(x), [bf(m) for m in mem], [bf(c) for c in c_mem])  # mask=None, causal=True
    close(bf(got), want)
    for g, w in zip(got_mem, want_mem):
        close(bf(g), w)
    old = [torch.randn(8, B, 16, dtype=F64) for _ in range(2)]
    close(bf(ours.layers[1].compress(bf(old[1]))), theirs.layers[1].compress(old[1]))
    want_loss = compressive.AttentionReconstructionLoss(theirs.layers)(want_mem, old)
    got_loss = labml_compressive.AttentionReconstructionLoss(ours.layers)(got_mem, [bf(o) for o in old])
    close(got_loss, want_loss, 1e-10)


def test_labml_differences_that_seqops_fixes():
    compressive, LabmlFeedForward, LabmlAttention, _ = labml_modules()
    theirs = build(compressive, LabmlAttention, LabmlFeedForward)
    ours = build(labml_compressive, labml_compressive.RelativeMultiHeadAttention, labml_compressive.FeedForward)
    w = lambda model, i: model.layers[i].feed_forward.layer1.weight  # noqa: E731
    assert torch.equal(w(theirs, 0), w(theirs, 1))                  # labml: deep copies, identical layers
    assert not torch.equal(w(ours, 0), w(ours, 1))                  # seqops: independently initialized
    mem = torch.randn(10, 1, 16)                                    # 10 memories, rate 2 -> 5; rate 4 drops 2
    conv4 = compressive.Conv1dCompression(4, 16)
    assert conv4(mem).shape == (2, 1, 16)                           # labml silently drops 10 mod 4 = 2
    ours4 = labml_compressive.Conv1dCompression(4, 16)
    with pytest.raises(Exception, match="multiple"):                # seqops refuses a partial window
        ours4(mem.transpose(0, 1))
