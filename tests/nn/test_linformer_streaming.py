"""Streamed Linformer layers (seqops.nn.linformer.streaming) and the folded attention
(folded.py): equal to the unstreamed layers and to the float64 reference for every sharing mode,
method, causality and full attention, with masks (a fully masked batch entry included) at odd
lengths; gradients at C1 / C2 equal C0's and pass gradcheck; no full-length intermediate while
streaming; the span choice; bad block sizes."""
import pytest
import torch
from support.grad_check import assert_gradients_match
from support.linformer_reference import ref_linformer
from torch.utils._python_dispatch import TorchDispatchMode

from seqops.nn import Linformer, LinformerEncDec
from seqops.nn.linformer import attention as attention_module
from seqops.nn.linformer import folded, streaming

F64 = torch.float64
SHARING = ["none", "headwise", "kv", "layerwise"]
METHODS = ["learnable", "convolution", "no_params"]
INPUT_SIZE, D, H, K = 1030, 12, 3, 9


def make(cls=Linformer, **overrides):
    kwargs = dict(input_size=INPUT_SIZE, channels=D, dim_k=K, dim_ff=10, nhead=H, depth=2, dropout=0.0,
                  dropout_ff=0.0, block_size=97)
    kwargs.update(overrides)
    layerwise_conv = kwargs.get("parameter_sharing", "layerwise") == "layerwise" and kwargs.get("method") == "convolution"
    kwargs.setdefault("k_reduce_by_layer", 0 if layerwise_conv else 2)
    return cls(**kwargs, dtype=F64).eval()


def masks(batch, length, seed=0):
    """Random keep masks; the last batch entry is fully masked."""
    mask = torch.rand(batch, length, generator=torch.Generator().manual_seed(seed)) > 0.3
    mask[-1] = False
    return mask


class SpanCounter:
    """Counts the query spans the streamed layers run (a test that streams must see them)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = streaming.attend_span

        def counted(*args, **kwargs):
            self.calls += 1
            return original(*args, **kwargs)
        monkeypatch.setattr(streaming, "attend_span", counted)


def unstreamed(model, *args, **kwargs):
    block_size, model.block_size = model.block_size, 0
    try:
        return model(*args, **kwargs)
    finally:
        model.block_size = block_size


@pytest.mark.parametrize("dim_d", [None, 16])
@pytest.mark.parametrize("full_attention", [False, True])
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sharing", SHARING)
def test_streamed_equals_unstreamed_and_reference(sharing, method, causal, full_attention, dim_d, monkeypatch):
    model = make(parameter_sharing=sharing, method=method, causal=causal, full_attention=full_attention, dim_d=dim_d)
    spans = SpanCounter(monkeypatch)
    x = torch.randn(3, 1025, D, dtype=F64)
    mask = masks(3, 1025)
    with torch.no_grad():
        out = model(x, input_mask=mask)
        assert spans.calls >= 2 * 1025 // 128  # two stages, spans of 97 or rounded up to a chunk / window
        want = unstreamed(model, x, input_mask=mask)
        torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(out, ref_linformer(model, x, mask), rtol=1e-10, atol=1e-10)
    # dim_d = 16 makes R C = 108 < d (C + R) = 336: attention over compressed rows runs folded
    assert model.seq[0].fn.folds() == (dim_d == 16 and not causal and not full_attention)


def test_lm_and_encoder_decoder_stream(monkeypatch):
    """The decoder's causal self-attention and its cross-attention over the encoder output."""
    spans = SpanCounter(monkeypatch)
    model = LinformerEncDec(13, INPUT_SIZE, D, 11, INPUT_SIZE, D, enc_dim_k=K, dec_dim_k=7, enc_nhead=H,
                            dec_nhead=2, enc_dim_d=16, enc_dim_ff=10, dec_dim_ff=10, enc_dropout=0.0,
                            dec_dropout=0.0, enc_dropout_ff=0.0, dec_dropout_ff=0.0, block_size=64,
                            dtype=F64).eval()
    src, tgt = torch.randint(0, 13, (2, 700)), torch.randint(0, 11, (2, 333))
    src_mask, tgt_mask = masks(2, 700, 1), masks(2, 333, 2)
    src_mask[-1, :5] = True
    with torch.no_grad():
        out = model(src, tgt, src_mask, tgt_mask)
        assert spans.calls > 0
        for m in (model.encoder.linformer, model.decoder.linformer):
            m.block_size = 0
        want = model(src, tgt, src_mask, tgt_mask)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("level", ["C1", "C2"])
@pytest.mark.parametrize("config", [
    dict(), dict(dim_d=16), dict(parameter_sharing="none", causal=True),
    dict(method="convolution", parameter_sharing="headwise"), dict(full_attention=True, causal=True),
    dict(w_o_intermediate_dim=5, dim_d=16, parameter_sharing="kv"),
], ids=["layerwise", "folded", "causal-per-head", "convolution", "full-causal", "folded-w_o-pair"])
def test_streamed_training_gradients_equal_c0(level, config, monkeypatch):
    torch.manual_seed(0)
    streamed = make(checkpoint_level=level, block_size=64, **config).train()
    plain = make(checkpoint_level="C0", **config).train()
    plain.load_state_dict(streamed.state_dict())
    spans = SpanCounter(monkeypatch)
    x = torch.randn(2, 301, D, dtype=F64, requires_grad=True)
    mask = masks(2, 301, 3)
    out = streamed(x, input_mask=mask)
    assert spans.calls > 0
    want = plain(x, input_mask=mask)
    torch.testing.assert_close(out, want, rtol=1e-12, atol=1e-12)
    params = dict(plain.named_parameters())
    assert_gradients_match(streamed, out, want, {"x": x}, ref_params=params, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("config", [dict(dim_d=16), dict(causal=True, parameter_sharing="none"),
                                    dict(method="convolution", parameter_sharing="kv")])
def test_streamed_gradcheck(config, monkeypatch):
    spans = SpanCounter(monkeypatch)
    model = Linformer(input_size=40, channels=4, dim_k=5, dim_ff=6, nhead=2, depth=1, dropout=0.0, dropout_ff=0.0,
                      checkpoint_level="C1", block_size=8, dtype=F64, **config).eval()
    x = torch.randn(2, 37, 4, dtype=F64, requires_grad=True)
    mask = masks(2, 37, 4)
    mask[-1, 3] = True
    # fast_mode (a random projection of the Jacobian): the full Jacobian took 60-90 s per case;
    # the exact comparison with the unstreamed gradients is test_streamed_training_gradients_equal_c0.
    assert torch.autograd.gradcheck(lambda t: model(t, input_mask=mask), (x,), fast_mode=True)
    assert spans.calls > 0


def test_folded_fully_masked_entry_gives_bias_and_finite_gradients():
    model = make(dim_d=16, block_size=0, parameter_sharing="kv").train()
    x = torch.randn(2, 50, D, dtype=F64, requires_grad=True)
    mask = masks(2, 50)
    mha = model.seq[0].fn
    assert mha.folds()
    out = mha(x, mask)
    torch.testing.assert_close(out[-1], mha.w_o.bias.expand(50, D))
    out.square().sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[-1].abs().max() == 0


def test_folded_visualize_and_dropout(monkeypatch):
    """visualize keeps the same probabilities folded or not; dropout in the folded path drops
    probabilities (not the output) with the configured rate."""
    model = make(dim_d=16, block_size=0, depth=1)
    x, mask = torch.randn(2, 40, D, dtype=F64), masks(2, 40)
    mask[-1, :3] = True
    model(x, input_mask=mask, visualize=True)
    probs = model.seq[0].fn.heads.P_bar
    monkeypatch.setattr(attention_module, "folding_pays", lambda *a: False)
    assert not model.seq[0].fn.folds()
    model(x, input_mask=mask, visualize=True)
    torch.testing.assert_close(probs, model.seq[0].fn.heads.P_bar, rtol=1e-12, atol=1e-12)

    keys = torch.randn(1, 2 * 8, 6, dtype=F64)
    values = torch.ones(1, 2 * 8, 6, dtype=F64)
    y, p = folded.attend_folded(torch.randn(1, 20000, 6, dtype=F64), keys, values, 2, None, 0.25)
    # each output element sums 2 heads' probabilities (each summing to 1), dropped at 1/4, scaled by 4/3
    assert abs(y.mean().item() - 2.0) < 0.02 and (p >= 0).all()


class LargestOutput(TorchDispatchMode):
    """Records the element count of the largest new tensor any op returns (views of an op's
    inputs, such as the slices of a projection weight, allocate nothing)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = torch.utils._pytree.tree_leaves((args, kwargs))
        owned = {t.untyped_storage().data_ptr() for t in inputs if isinstance(t, torch.Tensor)}
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor) and t.untyped_storage().data_ptr() not in owned:
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("config", [dict(dim_d=32), dict(dim_d=32, causal=True, parameter_sharing="none"),
                                    dict(dim_d=8, dim_k=32)])
def test_streaming_holds_no_full_length_intermediate(config):
    """Per query and head-width (L, H d) tensors exist only span by span: the largest tensor of
    a streamed forward is the (B, L, C) stage output, far below the unstreamed one's."""
    kwargs = dict(input_size=4096, channels=8, nhead=4, dim_k=16, dim_ff=16, depth=2, dropout=0.0, dropout_ff=0.0)
    kwargs.update(config)
    model = Linformer(**kwargs, block_size=256).eval()
    x = torch.randn(1, 4096, 8)
    largest = {}
    for block_size in (256, 0):
        model.block_size = block_size
        with torch.no_grad(), LargestOutput() as mode:
            model(x)
        largest[block_size] = mode.largest
    hd = 4 * kwargs["dim_d"]
    # unstreamed: the queries (L, H d), or the folded path's logits (L, H R)
    assert largest[0] >= 4096 * min(hd, 4 * kwargs["dim_k"])
    # the stage output, or a span's projections (a causal span of 256 is one chunk here)
    assert largest[256] <= max(4096 * 8, 2 * 256 * 3 * hd), largest


def test_span_length():
    model = Linformer(input_size=262144, channels=64, dim_d=256, dim_k=64, dim_ff=128)
    mha = model.seq[0].fn
    span = streaming.span_length(mha, 128, None, model.E.weight, torch.float32)
    assert span & (span - 1) == 0 and span * (2 * 4 * 64 + 128 + 4 * 64) * 4 <= streaming.SPAN_BYTES
    causal = Linformer(input_size=4096, channels=16, dim_k=64, nhead=2, causal=True, parameter_sharing="kv").seq[0].fn
    chunk = causal.heads.chunks(None)[1]
    assert chunk == 64 and streaming.span_length(causal, 16, 100, None, torch.float32) == 128  # whole chunks
    conv = Linformer(input_size=1000, channels=16, dim_k=7, nhead=2, method="convolution",
                     parameter_sharing="none").seq[0].fn
    assert streaming.span_length(conv, 16, 200, None, torch.float32) % (1000 // 7) == 0


@pytest.mark.parametrize("bad", [-1, 2.5, True, "64"])
def test_bad_block_size(bad):
    with pytest.raises(ValueError, match="block_size must be None"):
        Linformer(input_size=64, channels=8, dim_k=4, block_size=bad)
