"""Compressive Transformer modules: memory bookkeeping against a plain-Python FIFO, the layer
against a float64 materialized reference and against labml_nn, the reconstruction loss's
stop-gradient, the LM (segment training, deterministic generation), TorchScript and compile."""
import math
import random
import warnings

import pytest
import torch
from support.grad_check import assert_gradients_match
from support.originals import labml_modules
from support import DEVICES

from seqops import reference
from seqops.nn import (AttentionReconstructionLoss, CompressiveFeedForward, CompressiveMemory,
                       CompressiveTransformer, CompressiveTransformerLayer, CompressiveTransformerLM,
                       Conv1dCompression, MaxCompression, MeanCompression, RelativeMultiHeadAttention,
                       load_labml_state_dict)
from seqops.nn.compressive.weights import from_labml_state_dict


def make_layer(d_model=16, heads=4, d_ff=32, rate=2, max_distance=4096, compress=None,
               dtype=torch.float64, device="cpu", randomize=True):
    """A layer with every parameter random (labml zero-initializes the relative tables, which
    would hide positional errors)."""
    layer = CompressiveTransformerLayer(
        d_model=d_model, self_attn=RelativeMultiHeadAttention(heads, d_model, 0.0, max_distance),
        feed_forward=CompressiveFeedForward(d_model, d_ff, 0.0), dropout_prob=0.0,
        compress=compress or Conv1dCompression(rate, d_model)).to(device=device, dtype=dtype)
    if randomize:
        with torch.no_grad():
            for p in layer.parameters():
                p.normal_(0, 0.5)
    return layer


def hand_built_labml_state_dict(d_model=16, heads=4, d_ff=32, rate=2, P=4096, dtype=torch.float64):
    """A state_dict in labml's layout (names and shapes of labml's CompressiveTransformerLayer),
    built without labml."""
    d_k = d_model // heads
    shapes = {
        "compress.conv.weight": (d_model, d_model, rate), "compress.conv.bias": (d_model,),
        "self_attn.query.linear.weight": (d_model, d_model), "self_attn.key.linear.weight": (d_model, d_model),
        "self_attn.value.linear.weight": (d_model, d_model), "self_attn.value.linear.bias": (d_model,),
        "self_attn.output.weight": (d_model, d_model), "self_attn.output.bias": (d_model,),
        "self_attn.key_pos_embeddings": (2 * P, heads, d_k), "self_attn.key_pos_bias": (2 * P, heads),
        "self_attn.query_pos_bias": (heads, d_k),
        "feed_forward.layer1.weight": (d_ff, d_model), "feed_forward.layer1.bias": (d_ff,),
        "feed_forward.layer2.weight": (d_model, d_ff), "feed_forward.layer2.bias": (d_model,),
        "norm_self_attn.weight": (d_model,), "norm_self_attn.bias": (d_model,),
        "norm_ff.weight": (d_model,), "norm_ff.bias": (d_model,),
    }
    return {k: torch.randn(s, dtype=dtype) * 0.5 for k, s in shapes.items()}


# ----------------------------------------------------------------------------- memory

class PlainFifo:
    """The memory rule in plain Python on position ids: mem a list, c_mem a list of windows."""

    def __init__(self, mem_len, c_mem_len, rate):
        self.mem_len, self.c_mem_len, self.rate = mem_len, c_mem_len, rate
        self.mem, self.c_mem, self.dropped = [], [], []

    def update(self, positions):
        self.mem += positions
        if self.c_mem_len == 0:
            cut = max(len(self.mem) - self.mem_len, 0)
            self.dropped += self.mem[:cut]
            self.mem = self.mem[cut:]
            return []
        n_old = max(len(self.mem) - self.mem_len, 0) // self.rate * self.rate
        old, self.mem = self.mem[:n_old], self.mem[n_old:]
        self.c_mem += [tuple(old[i:i + self.rate]) for i in range(0, n_old, self.rate)]
        cut = max(len(self.c_mem) - self.c_mem_len, 0)
        self.dropped += [p for w in self.c_mem[:cut] for p in w]
        self.c_mem = self.c_mem[cut:]
        return old


@pytest.mark.parametrize("mem_len,c_mem_len,rate", [(5, 4, 3), (8, 8, 4), (0, 6, 2), (6, 0, 4), (3, 2, 1)])
def test_memory_matches_plain_fifo_over_many_segments(mem_len, c_mem_len, rate):
    rng = random.Random(mem_len * 100 + c_mem_len * 10 + rate)
    memory, model = CompressiveMemory(mem_len, c_mem_len, rate), PlainFifo(mem_len, c_mem_len, rate)
    B, layers, seen = 2, 3, 0
    # Entry of layer l, batch b, position p holds (p, l, b) in features 0..2 and is valid iff p % 5.
    for _ in range(40):
        length = rng.randint(1, 7)
        pos = torch.arange(seen, seen + length, dtype=torch.float64)
        hidden = [torch.stack([pos.expand(B, length), torch.full((B, length), float(l), dtype=torch.float64),
                               torch.arange(B, dtype=torch.float64)[:, None].expand(B, length)], -1)
                  for l in range(layers)]
        mask = (pos % 5 != 0).expand(B, length)
        recon = memory.update(hidden, [MeanCompression(rate)] * layers, mask)
        old = model.update(list(range(seen, seen + length)))
        seen += length
        assert (recon is None) == (len(old) == 0)
        if recon is not None:  # the reconstruction inputs: this segment's h, the compressed entries
            assert all(torch.equal(h, x) for h, x in zip(recon.h, hidden))
            assert recon.mem[0][0, :, 0].tolist() == old
            assert recon.mask[0].tolist() == [p % 5 != 0 for p in old]
            torch.testing.assert_close(recon.compressed[0], MeanCompression(rate)(recon.mem[0]))
        assert memory.memory_length == len(model.mem) and memory.compressed_length == len(model.c_mem)
        if c_mem_len:  # the uncompressed remainder stays: mem_len <= len(mem) < mem_len + rate
            assert memory.memory_length == seen if seen < mem_len else mem_len <= memory.memory_length < mem_len + rate
        for l in range(layers):
            assert memory.mem[l][:, :, 0].tolist() == [model.mem] * B          # oldest first
            assert (memory.mem[l][..., 1] == l).all() and (memory.mem[l][..., 2] == torch.arange(B)[:, None]).all()
            if model.c_mem:
                window_means = torch.tensor([sum(w) / rate for w in model.c_mem], dtype=torch.float64)
                torch.testing.assert_close(memory.c_mem[l][:, :, 0], window_means.expand(B, -1))
            assert not memory.mem[l].requires_grad
        # Masks follow the same entries: a compressed slot is valid if any entry of its window is.
        assert memory.mem_mask[0].tolist() == [p % 5 != 0 for p in model.mem]
        if model.c_mem:
            assert memory.c_mem_mask[0].tolist() == [any(p % 5 != 0 for p in w) for w in model.c_mem]
    # Nothing lost or duplicated: every position is in mem, in c_mem or dropped, exactly once.
    kept = model.dropped + [p for w in model.c_mem for p in w] + model.mem
    assert sorted(kept) == list(range(seen)) and len(kept) == seen


def test_memory_key_padding_mask_and_errors():
    memory = CompressiveMemory(4, 4, 2)
    assert memory.key_padding_mask(None, 2, 3, torch.device("cpu")) is None
    memory.update([torch.randn(2, 5, 3)], [MeanCompression(2)])
    assert memory.key_padding_mask(None, 2, 3, torch.device("cpu")) is None  # all valid: no mask
    keys = memory.key_padding_mask(torch.tensor([[True, False, True]] * 2), 2, 3, torch.device("cpu"))
    assert keys.shape == (2, len(memory) + 3) and keys[:, :len(memory)].all() and not keys[0, -2]
    with pytest.raises(ValueError, match="call reset"):
        memory.update([torch.randn(3, 5, 3)], [MeanCompression(2)])
    with pytest.raises(ValueError, match="one compressor per layer"):
        memory.update([torch.randn(2, 5, 3)], [])
    with pytest.raises(ValueError, match="compression_rate must be >= 1"):
        CompressiveMemory(4, 4, 0)


def test_compression_modules():
    conv = Conv1dCompression(4, 8)
    assert set(conv.state_dict()) == {"conv.weight", "conv.bias"} and conv.conv.weight.shape == (8, 8, 4)
    x = torch.randn(2, 12, 8)
    torch.testing.assert_close(conv(x), conv.conv(x.transpose(1, 2)).transpose(1, 2))
    torch.testing.assert_close(MeanCompression(4)(x), x.view(2, 3, 4, 8).mean(2))
    torch.testing.assert_close(MaxCompression(4)(x), x.view(2, 3, 4, 8).amax(2))
    with pytest.raises(RuntimeError, match=r"x's length \(10\) is not a multiple of rate \(4\)"):
        conv(x[:, :10])  # labml silently dropped the last 2 memories
    with pytest.raises(ValueError, match="compression_rate must be >= 1"):
        Conv1dCompression(0, 8)


# ----------------------------------------------------------------------------- layer

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("memories", ["none", "mem", "c_mem", "both"])
@pytest.mark.parametrize("causal,masked", [(True, False), (True, True), (False, True)])
def test_layer_matches_float64_reference(device, memories, causal, masked):
    layer = make_layer(device=device)
    B, Lq, Lm, Lc = 3, 6, 7, 4
    x = torch.randn(B, Lq, 16, dtype=torch.float64, device=device)
    mem = torch.randn(B, Lm, 16, dtype=torch.float64, device=device) if memories in ("mem", "both") else None
    c_mem = torch.randn(B, Lc, 16, dtype=torch.float64, device=device) if memories in ("c_mem", "both") else None
    Lk = Lq + (Lm if mem is not None else 0) + (Lc if c_mem is not None else 0)
    mask = None
    if masked:
        mask = torch.rand(B, Lk, device=device) > 0.3
        mask[:, -Lq:] |= torch.eye(Lq, dtype=torch.bool, device=device)[0]  # keep the first token
    x.requires_grad_()
    got = layer(x, mem, c_mem, mask, causal)
    state = {k: v.detach().clone().requires_grad_() for k, v in layer.state_dict().items()}
    x_ref = x.detach().clone().requires_grad_()
    want = reference.compressive_layer(state, x_ref, mem, c_mem, mask, causal, heads=4)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    # x and all 17 parameters the layer's forward reads; the compressor only acts on the memory.
    assert_gradients_match(layer, got, want, {"x": x}, {"x": x_ref}, state, rtol=1e-10, atol=1e-10,
                           unused=["compress.conv.weight", "compress.conv.bias"])


def test_layer_relative_table_clamps_beyond_max_distance():
    # Span 4 + 9 + 6 = 19 > P = 5: the distances past the table read its edge rows (labml
    # would slice out of range); the reference clamps the same way.
    layer = make_layer(max_distance=5)
    x, mem, c_mem = (torch.randn(2, n, 16, dtype=torch.float64) for n in (6, 9, 4))
    state = {k: v.detach() for k, v in layer.state_dict().items()}
    for causal in (True, False):
        torch.testing.assert_close(layer(x, mem, c_mem, None, causal),
                                   reference.compressive_layer(state, x, mem, c_mem, None, causal, heads=4))


def test_hand_built_labml_state_dict_loads_and_matches_reference():
    state = hand_built_labml_state_dict()
    x, mem, c_mem = (torch.randn(2, n, 16, dtype=torch.float64) for n in (5, 6, 3))
    want = reference.compressive_layer(state, x, mem, c_mem, None, True, heads=4)
    for max_distance in (4096, 32):  # labml's P as is, or re-centered into a smaller table
        layer = make_layer(max_distance=max_distance, randomize=False)
        load_labml_state_dict(layer, state)
        torch.testing.assert_close(layer(x, mem, c_mem), want, rtol=1e-10, atol=1e-10)


def test_layers_are_initialized_independently():
    template = make_layer(dtype=torch.float32, randomize=False)
    model = CompressiveTransformer(template, 3)
    w = [layer.self_attn.query.linear.weight for layer in model.layers]
    assert torch.equal(w[0], template.self_attn.query.linear.weight)  # copy 0 keeps the template
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])  # labml: all identical
    assert all(layer is not template for layer in model.layers)


def test_attention_module_forward_matches_fused_key_value_path():
    attn = make_layer().self_attn
    z, kv_in = torch.randn(2, 5, 16, dtype=torch.float64), torch.randn(2, 9, 16, dtype=torch.float64)
    k, v = attn.key_value(kv_in, *attn.kv_weights())
    for causal in (True, False):
        torch.testing.assert_close(attn(z, kv_in, kv_in, None, causal), attn.attend(attn.query(z), k, v, None, causal))
    # The LayerNorm folded into the projection gives the projection of the normalized input.
    gamma, beta = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    hat = torch.nn.functional.layer_norm(kv_in, (16,))
    folded = attn.key_value(hat, *attn.kv_weights(gamma, beta))
    for a, b in zip(folded, attn.key_value(hat * gamma + beta, *attn.kv_weights())):
        torch.testing.assert_close(a, b)


# ----------------------------------------------------------------------------- against labml_nn

def _labml_layer(d_model, heads, d_ff, rate):
    compressive, FeedForward, LabmlAttention, _ = labml_modules()
    layer = compressive.CompressiveTransformerLayer(
        d_model=d_model, self_attn=LabmlAttention(heads, d_model, 0.0),
        feed_forward=FeedForward(d_model, d_ff, 0.0), dropout_prob=0.0,
        compress=compressive.Conv1dCompression(rate, d_model)).double()
    with torch.no_grad():
        for p in layer.parameters():
            p.normal_(0, 0.5)
    return layer


def as_labml(ours: torch.nn.Module, theirs: torch.nn.Module):
    """`ours` run functionally on `theirs`'s parameters through the labml converter: its outputs
    differentiate against labml's own tensors, so both sides' gradients can be compared by name."""
    converted = from_labml_state_dict(ours, dict(theirs.named_parameters()))
    return lambda *args: torch.func.functional_call(ours, converted, args)


class LossModule(torch.nn.Module):
    """A reconstruction loss (a plain object) as a module whose parameters are its layers'."""

    def __init__(self, loss):
        super().__init__()
        self.layers, self.loss = loss.layers, loss

    def forward(self, h, old):
        return self.loss(h, old)


def test_labml_attention_module_matches():
    _, _, LabmlAttention, subsequent_mask = labml_modules()
    theirs = LabmlAttention(4, 16, 0.0).double()
    with torch.no_grad():
        for p in theirs.parameters():
            p.normal_(0, 0.5)
    ours = make_layer(max_distance=4096, randomize=False).self_attn
    ours.load_state_dict(theirs.state_dict())   # same names and shapes: loads as is
    q_in = torch.randn(4, 2, 16, dtype=torch.float64, requires_grad=True)
    kv_in = torch.randn(11, 2, 16, dtype=torch.float64, requires_grad=True)
    mask = torch.cat((torch.ones(4, 7, 1, dtype=torch.bool), subsequent_mask(4)), 1)
    want = theirs(query=q_in, key=kv_in, value=kv_in, mask=mask)
    got = ours(q_in.transpose(0, 1), kv_in.transpose(0, 1), kv_in.transpose(0, 1), None, True).transpose(0, 1)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    # Same parameter names: ours are compared with labml's, name by name, and the inputs'.
    assert_gradients_match(ours, got, want, {"q_in": q_in, "kv_in": kv_in},
                           ref_params=dict(theirs.named_parameters()), rtol=1e-10, atol=1e-10)


def test_labml_layer_and_transformer_outputs_match():
    compressive, _, _, subsequent_mask = labml_modules()
    theirs = compressive.CompressiveTransformer(_labml_layer(16, 4, 32, 2), 2).double()
    with torch.no_grad():  # labml's copies start identical: make them differ
        for p in theirs.parameters():
            p.normal_(0, 0.5)
    ours = CompressiveTransformer(make_layer(max_distance=64, randomize=False), 2)
    load_labml_state_dict(ours, theirs.state_dict())
    B, Lq, Lm, Lc = 2, 5, 6, 3
    x = torch.randn(Lq, B, 16, dtype=torch.float64, requires_grad=True)  # labml: sequence-first
    mem = [torch.randn(Lm, B, 16, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    c_mem = [torch.randn(Lc, B, 16, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    mask = torch.cat((torch.ones(Lq, Lm + Lc, 1, dtype=torch.bool), subsequent_mask(Lq)), 1)
    want, want_mem = theirs(x, mem, c_mem, mask)
    bf = lambda t: t.transpose(0, 1)  # noqa: E731
    got, got_mem = ours(bf(x), [bf(m) for m in mem], [bf(c) for c in c_mem], None, True)
    torch.testing.assert_close(bf(got), want, rtol=1e-10, atol=1e-10)
    for g, w in zip(got_mem, want_mem):
        torch.testing.assert_close(bf(g), w)
    # Gradients of the inputs, the memories and every labml parameter (the relative tables
    # through the re-centering to max_distance=64), ours against labml's.
    ours_on_theirs = as_labml(ours, theirs)
    inputs = {"x": x, **{f"mem{i}": m for i, m in enumerate(mem)}, **{f"c_mem{i}": c for i, c in enumerate(c_mem)}}
    got = bf(ours_on_theirs(bf(x), [bf(m) for m in mem], [bf(c) for c in c_mem], None, True)[0])
    assert_gradients_match(theirs, got, want, inputs, rtol=1e-10, atol=1e-10,
                           unused=[n for n, _ in theirs.named_parameters() if ".compress." in n])
    # The compression and the reconstruction loss agree too (labml's loss is sequence-first),
    # and so do its gradients: the compressors' only, every other tensor gets none.
    old = [torch.randn(8, B, 16, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    torch.testing.assert_close(bf(ours.layers[0].compress(bf(old[0]))), theirs.layers[0].compress(old[0]))
    their_loss = LossModule(compressive.AttentionReconstructionLoss(theirs.layers))
    want_loss = their_loss(want_mem, old)
    ours_loss = LossModule(AttentionReconstructionLoss(ours.layers))
    torch.testing.assert_close(ours_loss(got_mem, [bf(o) for o in old]), want_loss, rtol=1e-10, atol=1e-12)
    got_loss = as_labml(ours_loss, their_loss)([bf(m) for m in want_mem], [bf(o) for o in old])
    assert_gradients_match(their_loss, got_loss, want_loss, {f"old{i}": o for i, o in enumerate(old)},
                           rtol=1e-10, atol=1e-12,
                           unused=[f"old{i}" for i in range(2)]
                           + [n for n, _ in their_loss.named_parameters() if ".compress." not in n])


# ----------------------------------------------------------------------------- reconstruction loss

def test_reconstruction_loss_matches_materialized_math_and_trains_only_the_compressor():
    model = CompressiveTransformer(make_layer(), 2)
    h = [torch.randn(2, 5, 16, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    old = [torch.randn(2, 8, 16, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    loss = AttentionReconstructionLoss(model.layers)(h, old)

    def content_attention(layer, q_in, kv_in):  # float64, materialized, (B, H, Lq, d)
        ln = layer.norm_self_attn
        n = lambda t: torch.nn.functional.layer_norm(t, (16,), ln.weight, ln.bias, ln.eps)  # noqa: E731
        a = layer.self_attn
        q, k, v = a.query(n(q_in)), a.key(n(kv_in)), a.value(n(kv_in))
        return torch.softmax(q @ k.transpose(-1, -2) * a.scale, -1) @ v

    want = sum(torch.nn.functional.mse_loss(content_attention(l, hh, l.compress(o)), content_attention(l, hh, o))
               for l, hh, o in zip(model.layers, h, old))
    torch.testing.assert_close(loss, want)
    loss.backward()
    for name, p in model.named_parameters():
        if ".compress." in name:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    assert all(t.grad is None for t in h + old)


def test_reconstruction_loss_with_padding_mask():
    layer = make_layer()
    h, old = torch.randn(2, 5, 16, dtype=torch.float64), torch.randn(2, 8, 16, dtype=torch.float64)
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 4:] = False   # the last two windows of batch 1 are padding
    loss = AttentionReconstructionLoss(torch.nn.ModuleList([layer]))
    masked = loss([h], [old], mask)
    # Batch 1 alone, with its padding cut off, gives the same attention values.
    alone = AttentionReconstructionLoss(torch.nn.ModuleList([layer]))
    per_batch = [alone([h[:1]], [old[:1]]), alone([h[1:]], [old[1:, :4]])]
    torch.testing.assert_close(masked, sum(per_batch) / 2)


# ----------------------------------------------------------------------------- LM

def test_lm_segment_training_reduces_loss_and_keeps_memory_bounded():
    torch.manual_seed(0)
    lm = CompressiveTransformerLM(n_vocab=12, d_model=32, n_layers=2, heads=4, d_ff=64, mem_len=8,
                                  c_mem_len=8, compression_rate=2)
    opt = torch.optim.Adam(lm.parameters(), lr=3e-3)
    stream = torch.arange(400) % 12       # a periodic sequence: easy to learn
    stream = torch.stack([stream, stream.roll(5)])
    memory, losses, saw_ar = lm.new_memory(), [], False
    for epoch in range(2):
        memory.reset()
        for s in range(0, 384, 8):
            out = lm.segment_loss(stream[:, s:s + 8], stream[:, s + 1:s + 9], memory)
            opt.zero_grad()
            out.loss.backward()
            opt.step()
            losses.append(out.lm_loss.item())
            saw_ar |= out.ar_loss.item() > 0
            assert memory.memory_length <= 8 + 1 and memory.compressed_length <= 8
    assert saw_ar and sum(losses[-10:]) / 10 < 0.5 * sum(losses[:10]) / 10


def test_lm_reconstruction_loss_trains_only_the_compression():
    lm = CompressiveTransformerLM(20, 16, 2, 2, 32, mem_len=4, c_mem_len=4, compression_rate=2)
    memory = lm.new_memory()
    x = torch.randint(0, 20, (2, 6))
    lm.segment_loss(x, x, memory)          # fills the memory
    out = lm.segment_loss(x, x, memory)    # compresses: ar_loss > 0
    assert out.ar_loss.item() > 0
    out.ar_loss.backward()
    for name, p in lm.named_parameters():
        assert (p.grad is not None) == (".compress." in name), name


def test_lm_padding_mask_ignores_padded_targets():
    lm = CompressiveTransformerLM(20, 16, 1, 2, 32, 4, 4, 2)
    x = torch.randint(0, 20, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[1, 4:] = False
    y = torch.randint(0, 20, (2, 6))
    out = lm.segment_loss(x, y, lm.new_memory(), mask)
    y2 = y.clone()
    y2[1, 4:] = (y2[1, 4:] + 1) % 20    # changing padded targets changes nothing
    torch.testing.assert_close(lm.segment_loss(x, y2, lm.new_memory(), mask).lm_loss, out.lm_loss)


def test_generation_is_deterministic_under_a_seed_and_carries_memory():
    lm = CompressiveTransformerLM(30, 16, 2, 2, 32, mem_len=4, c_mem_len=4, compression_rate=2).train()
    prompt = torch.randint(0, 30, (2, 7))
    runs = []
    for _ in range(2):
        torch.manual_seed(123)
        runs.append(lm.generate(prompt, 12, temperature=0.8, top_k=5))
    assert torch.equal(runs[0], runs[1]) and runs[0].shape == (2, 19) and torch.equal(runs[0][:, :7], prompt)
    assert lm.training  # restored
    memory = lm.new_memory()
    one = lm.generate(prompt[0], 5, temperature=0.0, memory=memory)
    assert one.shape == (12,)
    assert memory.compressed_length == 4 and memory.memory_length >= 4  # 11 fed tokens: it compressed
    g = torch.Generator().manual_seed(5)
    a = lm.generate(prompt, 6, generator=g)
    g.manual_seed(5)
    assert torch.equal(a, lm.generate(prompt, 6, generator=g))


# ----------------------------------------------------------------------------- TorchScript / compile

def test_torchscript_and_compile_on_the_layer():
    layer = make_layer(dtype=torch.float32)
    x, mem, c_mem = (torch.randn(2, n, 16) for n in (5, 6, 3))
    mask = torch.ones(2, 14, dtype=torch.bool)
    mask[0, :2] = False
    want = layer(x, mem, c_mem, mask, True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation warning
        scripted = torch.jit.script(layer)
    torch.testing.assert_close(scripted(x, mem, c_mem, mask, True), want)
    compiled = torch.compile(layer, fullgraph=True, backend="aot_eager")
    xc = x.clone().requires_grad_()
    got = compiled(xc, mem, c_mem, mask, True)
    torch.testing.assert_close(got, want)
    got.sum().backward()
    xe = x.clone().requires_grad_()
    layer(xe, mem, c_mem, mask, True).sum().backward()
    torch.testing.assert_close(xc.grad, xe.grad)


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match=r"d_model \(10\) must be a positive multiple of heads \(4\)"):
        RelativeMultiHeadAttention(4, 10)
    with pytest.raises(ValueError, match="compression must be one of"):
        CompressiveTransformerLM(10, 16, 1, 2, 32, 4, 4, 2, compression="median")
    with pytest.raises(ValueError, match="n_layers must be >= 1"):
        CompressiveTransformer(make_layer(), 0)


def test_train_loop_on_a_text_file(tmp_path):
    from seqops.training.compressive import train
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("the quick brown fox jumps over the lazy dog. " * 200)
    result = train(str(corpus), steps=6, batch=2, seq_len=16, mem_len=8, c_mem_len=8, compression_rate=2,
                   d_model=16, n_layers=1, heads=2, d_ff=32, checkpoint=str(tmp_path / "ckpt.pt"),
                   sample_length=5)
    assert result["steps"] == 6 and not result["interrupted"]
    assert all(math.isfinite(x) for x in result["losses"] + [result["valid_loss"]])
    assert len(result["sample"]) == 5 and (tmp_path / "ckpt.pt").exists()
    state = torch.load(tmp_path / "ckpt.pt")["model"]
    assert "transformer.layers.0.compress.conv.weight" in state
