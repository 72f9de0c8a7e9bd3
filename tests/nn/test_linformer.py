"""seqops.nn Linformer: values against a float64 per-head reference, true causality, real masks,
checkpoint levels, variable length, state_dict, loading linformer-pytorch weights, compile and
TorchScript, argument errors, Padder and Visualizer.

The reference (tests/support/linformer_reference.py) builds every attention matrix densely; the
leak tests check causality without it.
"""
import io
import itertools
import sys

import pytest
import torch
import torch.nn.functional as F
from support.grad_check import assert_gradients_match
from support.linformer_reference import ref_head, ref_linformer
from support.originals import import_original

from seqops.nn import (LinearAttentionHead, Linformer, LinformerEncDec, LinformerLM, MHAttention, Padder,
                       Visualizer, get_EF, load_linformer_pytorch)
from seqops.nn.linformer.projection import causal_chunks
from seqops.nn.linformer.weights import convert_linformer_pytorch

F64 = torch.float64
N, D, H, K = 12, 8, 2, 4  # input_size, channels, heads, dim_k
SHARING = ["none", "headwise", "kv", "layerwise"]
METHODS = ["learnable", "convolution", "no_params"]


def linformer_pytorch():
    """The original package; a missing one skips (fails under SEQOPS_REQUIRE_ORIGINALS=1)."""
    return import_original("linformer_pytorch", "linformer-pytorch")


def make(cls=Linformer, **overrides):
    """A float64 model in eval mode, without dropout, with tiny sizes."""
    if cls is Linformer:
        kwargs = dict(input_size=N, channels=D, dim_k=K, dim_ff=8, nhead=H, depth=2, dropout=0.0, dropout_ff=0.0)
    else:
        kwargs = dict(num_tokens=11, input_size=N, channels=D, dim_k=K, dim_ff=8, nhead=H, depth=2, dropout=0.0,
                      dropout_ff=0.0, dropout_tokens=0.0)
    kwargs.update(overrides)
    if kwargs.get("k_reduce_by_layer") is None:
        layerwise_conv = kwargs.get("parameter_sharing", "layerwise") == "layerwise" and kwargs.get("method") == "convolution"
        kwargs["k_reduce_by_layer"] = 0 if layerwise_conv else 1
    return cls(**kwargs, dtype=F64).eval()


def keep_mask(batch, length, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(batch, length, generator=g) > 0.3
    mask[:, 0] = True
    return mask


def grads(out, inputs, seed=1):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return torch.autograd.grad(out, inputs, g)


def assert_close(a, b, tol=1e-10):
    torch.testing.assert_close(a, b, rtol=tol, atol=tol)


# ----------------------------------------------------------------------------- values

@pytest.mark.parametrize("level", ["C0", "C1", "C2"])
@pytest.mark.parametrize("full_attention", [False, True])
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sharing", SHARING)
def test_values_and_gradients_vs_reference(sharing, method, full_attention, level):
    for causal in (False, True):
        model = make(parameter_sharing=sharing, method=method, full_attention=full_attention, checkpoint_level=level,
                     causal=causal)
        x = torch.randn(3, N - 2, D, dtype=F64, requires_grad=True)
        mask = keep_mask(3, N - 2)
        out = model(x, input_mask=mask)
        want = ref_linformer(model, x, mask)
        assert out.shape == (3, N - 2, D)
        assert_close(out, want)
        assert_gradients_match(model, out, want, {"x": x}, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("causal", [False, True])
def test_widths_k_reduction_and_output_matrices_vs_reference(causal):
    model = make(parameter_sharing="headwise", ff_intermediate=6, w_o_intermediate_dim=5, depth=3, dim_d=3,
                 causal=causal, k_reduce_by_layer=2)
    x = torch.randn(2, N, D, dtype=F64, requires_grad=True)
    out, want = model(x), ref_linformer(model, x)
    assert_close(out, want)
    # The last layer's dim_k = 1: non-causal, one key whose softmax is 1 whatever E is; causal,
    # one chunk spans the input, so its compressed row is never visible (E and F unused).
    flat = [f"seq.4.fn.heads.{p}.{t}" for p in ("EF" if causal else "E") for t in ("weight", "bias")]
    assert_gradients_match(model, out, want, {"x": x}, rtol=1e-10, atol=1e-10, unused=flat)
    assert [blk.fn.heads.dim_k for blk in model.seq[::2]] == [4, 2, 1]


@pytest.mark.parametrize("sharing", ["none", "layerwise"])
def test_decoder_vs_reference(sharing):
    model = make(parameter_sharing=sharing, decoder_mode=True, causal=True)
    x, emb = (torch.randn(2, n, D, dtype=F64, requires_grad=True) for n in (N, N - 3))
    mask, emb_mask = keep_mask(2, N, 1), keep_mask(2, N - 3, 2)
    out, want = model(x, mask, emb, emb_mask), ref_linformer(model, x, mask, emb, emb_mask)
    assert_close(out, want)
    assert_gradients_match(model, out, want, {"x": x, "embeddings": emb}, rtol=1e-10, atol=1e-10)


def test_linear_attention_head_original_api():
    E, Fp = get_EF(N, K, dtype=F64), get_EF(N, K, dtype=F64)
    head = LinearAttentionHead(4, 0.0, E, Fp).eval()
    q, k, v = (torch.randn(2, N, 4, dtype=F64, requires_grad=True) for _ in range(3))
    want = ref_head(q, k, v, E.weight[0], E.bias[0], Fp.weight[0], Fp.bias[0], K, N, None, False, False)
    out = head(q, k, v)
    assert_close(out, want)
    assert_gradients_match(head, out, want, {"q": q, "k": k, "v": v}, rtol=1e-10, atol=1e-10)


def test_layerwise_k_reduction_uses_leading_rows():
    """Layerwise sharing with k_reduce_by_layer: layer i uses the first k_i rows of the one E
    (the original silently kept k for every layer)."""
    model = make(parameter_sharing="layerwise", k_reduce_by_layer=1)
    model(torch.randn(1, N, D, dtype=F64), visualize=True)
    assert [blk.fn.heads.P_bar.shape[-1] for blk in model.seq[::2]] == [K, K - 1]


# ----------------------------------------------------------------------------- causality

def assert_no_leak(run, x, perturb, positions):
    """Changing inputs after position p leaves the outputs up to p unchanged."""
    base = run(x)
    for p in positions:
        out = run(perturb(x, p))
        assert_close(out[:, :p + 1], base[:, :p + 1], tol=1e-12)
        assert not torch.allclose(out[:, p + 1:], base[:, p + 1:])


def perturb_features(x, p):
    y = x.clone()
    y[:, p + 1:] += torch.randn_like(y[:, p + 1:])
    return y


def perturb_tokens(x, p):
    y = x.clone()
    y[:, p + 1:] = (y[:, p + 1:] + 1 + torch.arange(y.shape[1] - p - 1)) % 11
    return y


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sharing", ["none", "kv", "layerwise"])
def test_causal_encoder_does_not_leak(sharing, method):
    model = make(parameter_sharing=sharing, method=method, causal=True)
    assert_no_leak(model, torch.randn(2, N, D, dtype=F64), perturb_features, [0, 3, 4, 7, 9])


def test_causal_full_attention_and_lm_do_not_leak():
    assert_no_leak(make(full_attention=True, causal=True), torch.randn(2, N, D, dtype=F64), perturb_features, [2, 8])
    lm = make(LinformerLM, causal=True, emb_dim=6)
    assert_no_leak(lm, torch.randint(0, 11, (2, N)), perturb_tokens, [0, 5, 10])


def test_decoder_self_attention_is_causal():
    model = LinformerEncDec(11, N, D, 11, N, D, enc_dim_k=K, dec_dim_k=K, enc_nhead=H, dec_nhead=H, enc_dim_ff=8,
                            dec_dim_ff=8, dec_k_reduce_by_layer=1, dtype=F64).eval()
    x = torch.randint(0, 11, (2, N))
    assert_no_leak(lambda y: model(x, y), torch.randint(0, 11, (2, N)), perturb_tokens, [1, 6, 9])


def test_original_causal_leaks():
    """The bug being fixed: linformer-pytorch's causal=True output depends on later positions."""
    model = linformer_pytorch().Linformer(input_size=N, channels=D, dim_k=K, nhead=H, causal=True).eval()
    x = torch.randn(1, N, D)
    assert not torch.allclose(model(perturb_features(x, 5))[:, :6], model(x)[:, :6])


# ----------------------------------------------------------------------------- masks

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("method", METHODS + ["full"])
def test_masked_positions_never_contribute(method, causal):
    model = make(method="learnable" if method == "full" else method, full_attention=method == "full",
                 causal=causal, parameter_sharing="none")
    x = torch.randn(2, N, D, dtype=F64)
    mask = keep_mask(2, N, 3)
    y = torch.where(mask[..., None], x, 100 * torch.randn_like(x))
    assert_close(model(x, mask)[mask], model(y, mask)[mask], tol=1e-12)


def test_embeddings_mask_masks_encoder_positions():
    model = make(decoder_mode=True, causal=True)
    x, emb = torch.randn(2, N, D, dtype=F64), torch.randn(2, N, D, dtype=F64)
    emb_mask = keep_mask(2, N, 4)
    emb2 = torch.where(emb_mask[..., None], emb, torch.randn_like(emb))
    assert_close(model(x, None, emb, emb_mask), model(x, None, emb2, emb_mask), tol=1e-12)


# ----------------------------------------------------------------------------- checkpoint levels

def test_checkpoint_levels_same_outputs_and_gradients_with_kwargs():
    """C1/C2 with masks, embeddings and visualize, in training mode with dropout (the checkpoint
    replays the same dropout): identical outputs and gradients to C0."""
    results = []
    for level in ("C0", "C1", "C2"):
        torch.manual_seed(0)
        model = make(LinformerLM, checkpoint_level=level, decoder_mode=True, causal=True, dropout=0.2,
                     dropout_ff=0.1, dropout_tokens=0.1).train()
        tokens, emb = torch.randint(0, 11, (2, N)), torch.randn(2, N, D, dtype=F64, requires_grad=True)
        torch.manual_seed(1)
        out = model(tokens, keep_mask(2, N, 5), emb, keep_mask(2, N, 6), True)
        results.append((out, grads(out, [emb] + list(model.parameters()))))
    for out, gs in results[1:]:
        assert_close(out, results[0][0], tol=1e-12)
        for g, g0 in zip(gs, results[0][1]):
            assert_close(g, g0, tol=1e-12)


# ----------------------------------------------------------------------------- lengths, Padder

@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("method", METHODS)
def test_short_inputs_equal_padder_and_causal_prefix(method, causal):
    model = make(method=method, causal=causal, parameter_sharing="headwise")
    x = torch.randn(2, N, D, dtype=F64)
    for L in (1, 5, 10):
        direct = model(x[:, :L])
        assert_close(direct, Padder(model)(x[:, :L]))
        if causal:
            assert_close(direct, model(x)[:, :L])


def test_padder_returns_mask_and_keeps_dtype():
    padder = Padder(make(LinformerLM))
    tokens = torch.randint(0, 11, (2, 7))
    padded, mask = padder.pad(tokens, keep_mask(2, 7))
    assert padded.shape == (2, N) and padded.dtype == torch.int64 and mask.shape == (2, N)
    assert mask[:, 7:].sum() == 0 and torch.equal(mask[:, :7], keep_mask(2, 7))
    x = torch.randn(2, 7, D, dtype=F64)
    assert Padder(make()).pad(x)[0].dtype == F64  # the original padded into float32
    assert padder(tokens).shape == (2, 7, 11)


# ----------------------------------------------------------------------------- state_dict

@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sharing", SHARING)
def test_state_dict_round_trip_stores_shared_projections_once(sharing, method):
    model = make(parameter_sharing=sharing, method=method)
    state = model.state_dict()
    keys = [k for k in state if ".E." in k or ".F." in k or k.startswith("E.")]
    tensors_per_projection = 1 if method == "no_params" else 2  # weight (a buffer for no_params), bias
    projections = {"none": 2, "headwise": 2, "kv": 1, "layerwise": 0}[sharing] * 2 + (sharing == "layerwise")
    assert len(keys) == tensors_per_projection * projections
    torch.manual_seed(123)
    fresh = make(parameter_sharing=sharing, method=method)
    x = torch.randn(2, N, D, dtype=F64)
    assert not torch.allclose(fresh(x), model(x))
    fresh.load_state_dict(state)
    assert_close(fresh(x), model(x), tol=0)
    model.to(torch.float32)  # no_params weights are buffers: they move too
    assert all(t.dtype == torch.float32 for t in model.state_dict().values() if t.is_floating_point())


# ----------------------------------------------------------------------------- linformer-pytorch weights

def _original_layout(model_kwargs, seed=0):
    """A state_dict in linformer-pytorch's layout (sharing 'none', learnable) built by hand."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g, dtype=F64)  # noqa: E731
    d, state = D // H, {}
    for j, k in ((0, K), (2, K - 1)):
        p = f"seq.{j}.fn."
        for part, h in itertools.product("qkv", range(H)):
            state[f"{p}to_{part}.{h}.weight"] = rnd(d, D)
        for h, which in itertools.product(range(H), "EF"):
            state[f"{p}heads.{h}.{which}.weight"], state[f"{p}heads.{h}.{which}.bias"] = rnd(k, N), rnd(k)
        state[p + "w_o.weight"], state[p + "w_o.bias"] = rnd(D, D), rnd(D)
        q = f"seq.{j + 1}.fn."
        state[q + "w_1.weight"], state[q + "w_1.bias"] = rnd(8, D), rnd(8)
        state[q + "w_2.weight"], state[q + "w_2.bias"] = rnd(D, 8), rnd(D)
        for i in (j, j + 1):
            state[f"seq.{i}.norm.weight"], state[f"seq.{i}.norm.bias"] = rnd(D), rnd(D)
    return state


def _original_forward(state, x):
    """linformer-pytorch's non-causal forward (seeds-api §2.4), per head, from its state_dict."""
    d = D // H
    for j in (0, 2):
        p, heads = f"seq.{j}.fn.", []
        for h in range(H):
            q, k, v = (x @ state[f"{p}to_{part}.{h}.weight"].t() for part in "qkv")
            E = lambda t, w: (t.transpose(1, 2) @ state[f"{p}heads.{h}.{w}.weight"].t()  # noqa: E731
                              + state[f"{p}heads.{h}.{w}.bias"])
            scores = torch.softmax(q @ E(k, "E") / d ** 0.5, -1)
            heads.append(scores @ E(v, "F").transpose(1, 2))
        attn = torch.cat(heads, -1) @ state[p + "w_o.weight"].t() + state[p + "w_o.bias"]
        x = F.layer_norm(x + attn, (D,), state[f"seq.{j}.norm.weight"], state[f"seq.{j}.norm.bias"])
        q = f"seq.{j + 1}.fn."
        ff = F.gelu(x @ state[q + "w_1.weight"].t() + state[q + "w_1.bias"]) @ state[q + "w_2.weight"].t()
        x = F.layer_norm(x + ff + state[q + "w_2.bias"], (D,), state[f"seq.{j + 1}.norm.weight"],
                         state[f"seq.{j + 1}.norm.bias"])
    return x


def test_load_hand_built_original_state_dict():
    model = make(parameter_sharing="none")
    state = _original_layout({})
    load_linformer_pytorch(model, state)
    x = torch.randn(2, N, D, dtype=F64)
    assert_close(model(x), _original_forward(state, x))


def test_no_params_needs_the_original_module():
    with pytest.raises(ValueError, match="pass the original module"):
        load_linformer_pytorch(make(method="no_params", parameter_sharing="kv"), _original_layout({}))


def original_tensors(original: torch.nn.Module) -> dict:
    """The original's state_dict with its parameters themselves (every name of a shared one) and
    its no_params E/F tensors: converted, they stay differentiable against the original's."""
    state = {**original.state_dict(), **dict(original.named_parameters(remove_duplicate=False))}
    for name, m in original.named_modules():
        if getattr(m, "is_proj_tensor", False):
            state[f"{name}.E"], state[f"{name}.F"] = m.E, m.F
    return state


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("sharing", SHARING)
def test_load_from_linformer_pytorch(sharing, method):
    lp = linformer_pytorch()
    kwargs = dict(input_size=N, channels=D, dim_k=K, nhead=H, depth=2, dim_ff=8, parameter_sharing=sharing,
                  method=method, k_reduce_by_layer=0 if sharing == "layerwise" else 1, w_o_intermediate_dim=5)
    original = lp.Linformer(**kwargs).double().eval()
    for m in original.modules():  # its no_params tensors do not follow .double()
        if getattr(m, "is_proj_tensor", False):
            m.E, m.F = m.E.double(), m.F.double()
    ours = Linformer(**kwargs, dtype=F64).eval()
    load_linformer_pytorch(ours, original)
    x = torch.randn(2, N, D, dtype=F64, requires_grad=True)
    want = original(x)
    assert_close(ours(x), want)
    # Gradients of x and of every original parameter: ours run on the original's tensors.
    got = torch.func.functional_call(ours, convert_linformer_pytorch(ours, original_tensors(original)), (x,))
    assert_gradients_match(original, got, want, {"x": x}, rtol=1e-10, atol=1e-10)


def test_load_lm_and_encoder_from_linformer_pytorch():
    lp = linformer_pytorch()
    kwargs = dict(num_tokens=11, input_size=N, channels=D, dim_k=K, nhead=H, depth=2, emb_dim=6,
                  parameter_sharing="kv")
    original, ours = lp.LinformerLM(**kwargs).double().eval(), LinformerLM(**kwargs, dtype=F64).eval()
    load_linformer_pytorch(ours, original.state_dict())
    tokens = torch.randint(0, 11, (2, N))
    assert_close(ours(tokens), original(tokens))
    enc_dec = dict(enc_num_tokens=11, enc_input_size=N, enc_channels=D, dec_num_tokens=7, dec_input_size=N,
                   dec_channels=D, enc_dim_k=K, dec_dim_k=K)
    original, ours = lp.LinformerEncDec(**enc_dec).double().eval(), LinformerEncDec(**enc_dec, dtype=F64).eval()
    load_linformer_pytorch(ours, original)
    assert_close(ours.encoder(tokens), original.encoder(tokens))  # its decoder was not causal


# ----------------------------------------------------------------------------- compile, TorchScript

CASES = {
    "linformer-causal-masked-C2": (lambda: make(causal=True, parameter_sharing="none", checkpoint_level="C2"),
                                lambda: (torch.randn(2, N - 1, D, dtype=F64), keep_mask(2, N - 1))),
    "linformer-kv": (lambda: make(parameter_sharing="kv"), lambda: (torch.randn(2, N, D, dtype=F64), keep_mask(2, N))),
    "lm-conv": (lambda: make(LinformerLM, method="convolution", parameter_sharing="headwise", emb_dim=6),
                lambda: (torch.randint(0, 11, (2, N)), keep_mask(2, N))),
}


@pytest.mark.parametrize("case", list(CASES))
def test_compile_fullgraph(case):
    build, inputs = CASES[case]
    model, args = build(), inputs()
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    got, want = compiled(*args), model(*args)
    assert_close(got, want)
    params = list(model.parameters())
    for g, g0 in zip(grads(got, params), grads(want, params)):
        assert_close(g, g0)


@pytest.mark.parametrize("case", list(CASES))
def test_torchscript(case):
    """Scripted models run without checkpointing (torch.utils.checkpoint is not scriptable)."""
    build, inputs = CASES[case]
    model, args = build(), inputs()
    scripted = torch.jit.script(model)
    buf = io.BytesIO()
    torch.jit.save(scripted, buf)
    buf.seek(0)
    assert_close(torch.jit.load(buf)(*args), model(*args))


# ----------------------------------------------------------------------------- errors

@pytest.mark.parametrize("kwargs, error, match", [
    (dict(parameter_sharing="heads"), ValueError, "parameter_sharing must be one of"),
    (dict(method="conv"), ValueError, "method must be one of"),
    (dict(checkpoint_level="C3"), ValueError, "checkpoint_level must be one of"),
    (dict(activation="tanh"), ValueError, "activation must be one of"),
    (dict(method="convolution", dim_k=N + 1), ValueError, r"dim_k <= input_size.*dim_k=13 > input_size=12"),
    (dict(method="convolution", parameter_sharing="layerwise", k_reduce_by_layer=1), ValueError, "one kernel"),
    (dict(nhead=3), ValueError, r"channels \(8\) must be divisible by nhead \(3\)"),
    (dict(ff_intermediate=6, decoder_mode=True), ValueError, "ff_intermediate"),
])
def test_bad_constructor_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        make(**kwargs)


def test_bad_forward_arguments():
    model = make()
    x = torch.randn(2, N, D, dtype=F64)
    with pytest.raises(ValueError, match="longer than input_size=12"):
        model(torch.randn(2, N + 1, D, dtype=F64))
    with pytest.raises(ValueError, match="channels=8"):
        model(torch.randn(2, N, D + 1, dtype=F64))
    with pytest.raises(TypeError, match="bool"):
        model(x, input_mask=torch.ones(2, N))
    with pytest.raises(ValueError, match=r"input_mask must have shape \(2, 12\)"):
        model(x, input_mask=torch.ones(2, N - 1, dtype=torch.bool))
    with pytest.raises(ValueError, match="decoder_mode"):
        model(x, embeddings=x)
    with pytest.raises(ValueError, match="decoder_mode"):
        make(decoder_mode=True)(x)
    with pytest.raises(TypeError, match="causal_mask must be True, False or None"):
        LinearAttentionHead(4, 0.0, get_EF(N, K), None, torch.ones(N, K, dtype=torch.bool))
    with pytest.raises(ValueError, match="dec_channels"):
        LinformerEncDec(11, N, D, 11, N, D + 2)


# ----------------------------------------------------------------------------- Visualizer

def test_visualizer_writes_png(tmp_path):
    pytest.importorskip("matplotlib")
    model = make(decoder_mode=True, causal=True)
    x = torch.randn(2, N, D, dtype=F64)
    model(x, embeddings=x, visualize=True)
    Visualizer(model).plot_all_heads(show=False, save_file=str(tmp_path / "linformer.png"), example=1)
    attn = MHAttention(N, 4, D, K, H, 0.0, "C0", "kv", None, None, False, False)
    attn(torch.randn(1, N, D), visualize=True)
    Visualizer(attn).plot_all_heads(show=False, save_file=str(tmp_path / "mha.png"), n_limit=5)
    for name in ("linformer.png", "mha.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert model.seq[0].fn.heads.P_bar.shape == (2, H, N, K + causal_chunks(N, K, 0)[1])
    assert model.seq[2].fn.heads.P_bar.shape == (2, H, N, K)


def test_visualizer_errors(monkeypatch):
    model = make()
    with pytest.raises(RuntimeError, match="visualize=True"):
        Visualizer(model).plot_all_heads(show=False)
    model(torch.randn(1, N, D, dtype=F64), visualize=True)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match="^Visualizer.plot_all_heads needs matplotlib: pip install matplotlib$"):
        Visualizer(model).plot_all_heads(show=False)
