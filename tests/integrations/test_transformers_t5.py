"""seqops.integrations.transformers against transformers' own attention ("eager") on small
random-init models built here (no downloads): T5 encoder and encoder-decoder forward, a training
step (loss and every parameter's gradient, the bias tables included), padded batches, cached
greedy generation, bf16, torch.compile, the fallbacks (BERT / BART, custom 4-D masks, buckets
that would differ) and proof that T5 takes the fused path.

Tolerances: float64 runs must agree to 1e-10 (the same function); float32 runs follow the
project's rule, the error against eager float64 at most twice eager float32's (+ a floor of a
few float32 ulps), measured on these configs at ~1e-6 relative for both; bf16 follows the
low-precision rule of tests/support.
"""
import copy

import pytest
import torch

transformers = pytest.importorskip("transformers", minversion="5")

from transformers import (BartConfig, BartForConditionalGeneration, BertConfig, BertModel,  # noqa: E402
                          T5Config, T5EncoderModel, T5ForConditionalGeneration)
from transformers.models.t5.modeling_t5 import T5Attention  # noqa: E402

import seqops  # noqa: E402
import seqops.integrations.transformers as seqops_hf  # noqa: E402
from seqops.relative_position import t5_bucket  # noqa: E402
from support import assert_low_precision_close  # noqa: E402

seqops_hf.register()
VOCAB = 64


def t5_config(buckets=32, max_distance=128, dropout=0.0, **kw):
    return T5Config(vocab_size=VOCAB, d_model=64, d_kv=16, num_heads=4, d_ff=128, num_layers=2, num_decoder_layers=2,
                    relative_attention_num_buckets=buckets, relative_attention_max_distance=max_distance,
                    dropout_rate=dropout, decoder_start_token_id=0, pad_token_id=0, **kw)


def with_impl(model, impl, dtype=None):
    model = copy.deepcopy(model)
    if dtype is not None:
        model = model.to(dtype)
    model.set_attn_implementation(impl)
    return model


def padding_mask(batch, length, pads):
    mask = torch.ones(batch, length, dtype=torch.long)
    for b, n in enumerate(pads):
        if n:
            mask[b, length - n:] = 0
    return mask


def rel_err(x, ref):
    return ((x.double() - ref).abs().max() / ref.abs().max().clamp(min=1e-30)).item()


def assert_float32_rule(ours, eager, exact, what, floor=2e-7):
    e_ours, e_eager = rel_err(ours, exact), rel_err(eager, exact)
    assert e_ours <= 2 * e_eager + floor, f"{what}: seqops error {e_ours:.2e} > 2 x eager error {e_eager:.2e} + {floor}"


@pytest.fixture
def spy(monkeypatch):
    """Records the keyword arguments of every seqops.ops.attention call the integration makes."""
    calls = []
    original = seqops_hf._seqops_ops.attention

    def recording(q, k, v, **kwargs):
        calls.append(dict(kwargs, q_shape=tuple(q.shape), k_shape=tuple(k.shape)))
        return original(q, k, v, **kwargs)

    monkeypatch.setattr(seqops_hf._seqops_ops, "attention", recording)
    return calls


# ----------------------------------------------------------------------------- buckets

CONFIGS = [(32, 128), (64, 128), (32, 256), (128, 128), (16, 20), (32, 64), (8, 16)]


@pytest.mark.parametrize("buckets,max_distance", CONFIGS)
@pytest.mark.parametrize("bidirectional", [True, False])
def test_buckets_equal_transformers_for_every_offset_up_to_8192(buckets, max_distance, bidirectional):
    r = torch.arange(-8192, 8193)
    theirs = T5Attention._relative_position_bucket(r, bidirectional=bidirectional, num_buckets=buckets,
                                                   max_distance=max_distance)
    assert torch.equal(theirs, t5_bucket(r, bidirectional, buckets, max_distance))
    assert seqops_hf.buckets_agree(T5Attention._relative_position_bucket, buckets, max_distance, bidirectional)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_kernel_buckets_equal_transformers_up_to_8192(bidirectional):
    """The kernel's own bucketing (float64) against a bias built from transformers' buckets:
    one query over 8193 keys, offsets 0..8192 on each side, float64 (a single differing
    bucket would move the output by ~1e-4)."""
    torch.manual_seed(0)
    n, heads = 8193, 2
    table = torch.randn(heads, 32, dtype=torch.float64) * 3
    q = torch.randn(1, heads, 1, 8, dtype=torch.float64) * 0.1
    k, v = (torch.randn(1, heads, n, 8, dtype=torch.float64) for _ in range(2))
    for offset in ([0, n - 1] if bidirectional else [n - 1]):
        r = torch.arange(n) - offset
        buckets = T5Attention._relative_position_bucket(r, bidirectional=bidirectional, num_buckets=32,
                                                        max_distance=128)
        ours = seqops.ops.attention(q, k, v, t5_table=table, t5_bidirectional=bidirectional, query_offset=offset)
        dense = seqops.ops.attention(q, k, v, bias=table[:, buckets][None, :, None, :])
        torch.testing.assert_close(ours, dense, rtol=0, atol=1e-12)


def test_differing_buckets_take_the_dense_path(monkeypatch, spy):
    monkeypatch.setattr(seqops_hf, "buckets_agree", lambda *args: False)
    torch.manual_seed(0)
    model = T5EncoderModel(t5_config()).eval()
    ids, mask = torch.randint(1, VOCAB, (2, 20)), padding_mask(2, 20, [0, 6])
    with torch.no_grad():
        ref = with_impl(model, "eager")(input_ids=ids, attention_mask=mask).last_hidden_state
        out = with_impl(model, "seqops")(input_ids=ids, attention_mask=mask).last_hidden_state
    assert spy and all(c.get("t5_table") is None and c["bias"] is not None for c in spy)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- T5 forward

@pytest.mark.parametrize("buckets,max_distance", [(32, 128), (16, 20)])
def test_encoder_forward_matches_eager(buckets, max_distance):
    torch.manual_seed(0)
    model = T5EncoderModel(t5_config(buckets, max_distance)).eval()
    ids, mask = torch.randint(1, VOCAB, (3, 48)), padding_mask(3, 48, [0, 17, 40])
    with torch.no_grad():
        exact = with_impl(model, "eager", torch.float64)(input_ids=ids, attention_mask=mask).last_hidden_state
        ours64 = with_impl(model, "seqops", torch.float64)(input_ids=ids, attention_mask=mask).last_hidden_state
        eager = with_impl(model, "eager")(input_ids=ids, attention_mask=mask).last_hidden_state
        ours = with_impl(model, "seqops")(input_ids=ids, attention_mask=mask).last_hidden_state
    assert rel_err(ours64, exact) < 1e-10
    assert_float32_rule(ours, eager, exact, "encoder output")


def test_encoder_decoder_forward_matches_eager():
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(t5_config(16, 20)).eval()
    ids, mask = torch.randint(1, VOCAB, (2, 40)), padding_mask(2, 40, [0, 11])
    dec, dec_mask = torch.randint(1, VOCAB, (2, 30)), padding_mask(2, 30, [7, 0])
    run = lambda m: m(input_ids=ids, attention_mask=mask, decoder_input_ids=dec,  # noqa: E731
                      decoder_attention_mask=dec_mask).logits
    with torch.no_grad():
        exact = run(with_impl(model, "eager", torch.float64))
        ours64 = run(with_impl(model, "seqops", torch.float64))
        eager, ours = run(with_impl(model, "eager")), run(with_impl(model, "seqops"))
    assert rel_err(ours64, exact) < 1e-10
    assert_float32_rule(ours, eager, exact, "logits")


def test_t5_takes_the_fused_path(spy):
    """Every attention call of a padded encoder-decoder forward passes the table or no position
    term at all, never a dense bias; self-attention gets the T5 table with the right policy."""
    torch.manual_seed(0)
    model = with_impl(T5ForConditionalGeneration(t5_config()).eval(), "seqops")
    ids, mask = torch.randint(1, VOCAB, (2, 24)), padding_mask(2, 24, [0, 5])
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, decoder_input_ids=torch.randint(1, VOCAB, (2, 10)))
    assert len(spy) == 2 + 2 * 2  # encoder self, decoder self + cross
    assert all(c.get("bias") is None for c in spy)
    self_attn = [c for c in spy if c.get("t5_table") is not None]
    assert len(self_attn) == 4
    table = {True: model.encoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight,
             False: model.decoder.block[0].layer[0].SelfAttention.relative_attention_bias.weight}
    for c in self_attn:
        assert c["t5_table"].shape == (4, 32) and c["t5_max_distance"] == 128
        # encoder: bidirectional buckets, no causal mask; decoder: causal buckets and mask
        assert c["causal"] is not c["t5_bidirectional"]
        assert torch.equal(c["t5_table"], table[c["t5_bidirectional"]].t())
        assert c["t5_table"].data_ptr() == table[c["t5_bidirectional"]].data_ptr()  # the table itself
    encoder_calls = [c for c in self_attn if c["t5_bidirectional"]]
    assert all(c["key_padding_mask"] is not None and c["key_padding_mask"].shape == (2, 24) for c in encoder_calls)
    cross = [c for c in spy if c.get("t5_table") is None]
    assert len(cross) == 2 and all(not c["causal"] and c["key_padding_mask"].shape == (2, 24) for c in cross)


# ----------------------------------------------------------------------------- training

def training_step(model, ids, mask, labels, label_mask):
    out = model(input_ids=ids, attention_mask=mask, labels=labels, decoder_attention_mask=label_mask)
    out.loss.backward()
    grads = {name: p.grad for name, p in model.named_parameters()}
    return out.loss.detach(), grads


def test_training_step_matches_eager():
    """Loss and the gradient of every parameter (both relative-bias tables included), padded
    encoder and decoder batches."""
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(t5_config()).train()  # dropout 0: deterministic
    ids, mask = torch.randint(1, VOCAB, (2, 32)), padding_mask(2, 32, [0, 9])
    labels, label_mask = torch.randint(1, VOCAB, (2, 16)), padding_mask(2, 16, [5, 0])
    args = (ids, mask, labels, label_mask)
    exact_loss, exact = training_step(with_impl(model, "eager", torch.float64), *args)
    loss64, ours64 = training_step(with_impl(model, "seqops", torch.float64), *args)
    eager_loss, eager = training_step(with_impl(model, "eager"), *args)
    loss, ours = training_step(with_impl(model, "seqops"), *args)
    assert set(ours) == set(exact) and all(g is not None for g in ours.values())
    assert any("relative_attention_bias" in name for name in ours)
    assert rel_err(loss64, exact_loss) < 1e-10
    assert_float32_rule(loss, eager_loss, exact_loss, "loss")
    for name in exact:
        assert rel_err(ours64[name], exact[name]) < 1e-9, name
        assert_float32_rule(ours[name], eager[name], exact[name], name, floor=5e-7)


def test_training_with_dropout_runs_and_uses_the_dropout(spy):
    torch.manual_seed(0)
    model = with_impl(T5ForConditionalGeneration(t5_config(dropout=0.1)).train(), "seqops")
    ids, labels = torch.randint(1, VOCAB, (2, 16)), torch.randint(1, VOCAB, (2, 8))
    losses = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        out = model(input_ids=ids, labels=labels)
        out.loss.backward()
        losses.append(out.loss.item())
    assert all(c["dropout_p"] == 0.1 for c in spy)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        eval_loss = model(input_ids=ids, labels=labels).loss.item()
    assert losses[0] != losses[1] and eval_loss not in losses
    assert spy[-1]["dropout_p"] == 0.0


def test_gradient_checkpointing_matches_eager():
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(t5_config()).train()
    model.gradient_checkpointing_enable()
    ids, labels = torch.randint(1, VOCAB, (2, 16)), torch.randint(1, VOCAB, (2, 8))
    args = (ids, None, labels, None)
    eager_loss, eager = training_step(with_impl(model, "eager"), *args)
    loss, ours = training_step(with_impl(model, "seqops"), *args)
    torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=1e-6)
    for name in eager:
        torch.testing.assert_close(ours[name], eager[name], rtol=1e-4, atol=1e-5, msg=name)


# ----------------------------------------------------------------------------- generation

def test_greedy_generation_with_cache_matches_eager(spy):
    # initializer_factor 5 and this seed: logits far apart and greedy decoding varies its tokens
    torch.manual_seed(3)
    model = T5ForConditionalGeneration(t5_config(16, 20, initializer_factor=5.0)).eval()
    ids, mask = torch.randint(1, VOCAB, (2, 12)), padding_mask(2, 12, [0, 4])
    kw = dict(input_ids=ids, attention_mask=mask, max_new_tokens=24, do_sample=False, output_scores=True,
              return_dict_in_generate=True)
    exact = with_impl(model, "eager", torch.float64).generate(**kw)
    eager = with_impl(model, "eager").generate(**kw)
    spy.clear()
    ours = with_impl(model, "seqops").generate(**kw)
    assert torch.equal(ours.sequences, eager.sequences) and torch.equal(ours.sequences, exact.sequences)
    assert max(len(set(row.tolist())) for row in ours.sequences) > 4  # not a constant sequence
    for step, (a, b, x) in enumerate(zip(ours.scores, eager.scores, exact.scores)):
        assert_float32_rule(a, b, x, f"scores of step {step}", floor=1e-6)
    # The cached steps: one new query over the cache, causal T5 buckets with the offset Lk - 1.
    decode = [c for c in spy if c.get("t5_table") is not None and c["q_shape"][2] == 1]
    assert len(decode) == 2 * 24 and all(not c["t5_bidirectional"] and c["causal"] for c in decode)
    assert sorted({c["k_shape"][2] for c in decode}) == list(range(1, 25))
    assert all(c.get("bias") is None for c in spy)


def test_static_cache_generation_falls_back_and_matches_eager(spy):
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(t5_config(16, 20, initializer_factor=5.0)).eval()
    ids = torch.randint(1, VOCAB, (1, 10))
    kw = dict(input_ids=ids, max_new_tokens=8, do_sample=False, cache_implementation="static")
    eager = with_impl(model, "eager").generate(**kw)
    spy.clear()
    ours = with_impl(model, "seqops").generate(**kw)
    assert torch.equal(ours, eager)
    # The static cache's keys include empty slots: the decoder's self-attention is dense.
    assert any(c.get("bias") is not None for c in spy)


# ----------------------------------------------------------------------------- bf16

def test_bf16_follows_the_low_precision_rule():
    torch.manual_seed(0)
    model = T5ForConditionalGeneration(t5_config(16, 20)).eval()
    ids, mask = torch.randint(1, VOCAB, (2, 40)), padding_mask(2, 40, [0, 13])
    dec = torch.randint(1, VOCAB, (2, 24))
    run = lambda m: m(input_ids=ids, attention_mask=mask, decoder_input_ids=dec,  # noqa: E731
                      output_hidden_states=True)
    with torch.no_grad():
        exact = run(with_impl(model, "eager", torch.float64))
        eager = run(with_impl(model, "eager", torch.bfloat16))
        ours = run(with_impl(model, "seqops", torch.bfloat16))
    assert ours.logits.dtype == torch.bfloat16
    assert_low_precision_close(ours.encoder_last_hidden_state, eager.encoder_last_hidden_state,
                               exact.encoder_last_hidden_state, 1e-3)
    assert_low_precision_close(ours.logits, eager.logits, exact.logits, 1e-3)


# ----------------------------------------------------------------------------- torch.compile

def test_torch_compile_fullgraph():
    """fullgraph=True over the whole encoder-decoder (mask function, wrapped T5 methods, the
    op's fake kernel and autograd) in inference and training. aot_eager keeps the test short;
    inductor compiles the same graph (about 20 s here)."""
    from torch.fx import GraphModule
    graphs = []

    def backend(gm: GraphModule, example_inputs):
        graphs.append(gm)
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(t5_config()).eval()
    ids, mask = torch.randint(1, VOCAB, (2, 24)), padding_mask(2, 24, [0, 7])
    labels = torch.randint(1, VOCAB, (2, 12))
    ref_model, ours = with_impl(model, "eager"), with_impl(model, "seqops")
    compiled = torch.compile(ours, fullgraph=True, backend=backend)
    with torch.no_grad():
        ref = ref_model(input_ids=ids, attention_mask=mask, labels=labels).logits
        out = compiled(input_ids=ids, attention_mask=mask, labels=labels).logits
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    attention_nodes = [n for g in graphs for n in g.graph.nodes if "seqops" in str(n.target) and "attention" in str(n.target)]

    def option(node, name):
        """The op's argument `name` in the traced call (positional or by keyword)."""
        from seqops.ops.attention import OPTION_NAMES
        position = 3 + OPTION_NAMES.index(name)
        return node.args[position] if position < len(node.args) else node.kwargs.get(name)

    assert len(attention_nodes) == 6 and all(option(n, "bias") is None for n in attention_nodes)
    assert sum(option(n, "t5_table") is not None for n in attention_nodes) == 4
    ours.train(), ref_model.train()
    loss = compiled(input_ids=ids, attention_mask=mask, labels=labels).loss
    loss.backward()
    ref_loss = ref_model(input_ids=ids, attention_mask=mask, labels=labels).loss
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss, rtol=1e-5, atol=1e-6)
    table = "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
    torch.testing.assert_close(ours.get_parameter(table).grad, ref_model.get_parameter(table).grad,
                               rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- fallbacks

def test_custom_4d_mask_takes_the_dense_path(spy):
    """A 4-D mask that is not key padding (here: a band) cannot be the op's masks: the dense
    bias, with transformers' position bias computed from the table."""
    torch.manual_seed(0)
    model = T5EncoderModel(t5_config()).eval()
    n = 20
    i = torch.arange(n)
    band = ((i[:, None] - i[None, :]).abs() <= 3)[None, None].expand(2, 1, n, n)
    additive = torch.zeros(2, 1, n, n).masked_fill(~band, torch.finfo(torch.float32).min)
    ids = torch.randint(1, VOCAB, (2, n))
    with torch.no_grad():
        ref = with_impl(model, "eager")(input_ids=ids, attention_mask=additive).last_hidden_state
        out = with_impl(model, "seqops")(input_ids=ids, attention_mask=additive).last_hidden_state
    assert spy and all(c.get("t5_table") is None and c["bias"].shape == (2, 4, n, n) for c in spy)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_bert_takes_the_dense_path_and_matches_eager(spy):
    torch.manual_seed(0)
    config = BertConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BertModel(config).eval()
    ids, mask = torch.randint(1, VOCAB, (2, 20)), padding_mask(2, 20, [0, 6])
    with torch.no_grad():
        ref = with_impl(model, "eager")(input_ids=ids, attention_mask=mask).last_hidden_state
        out = with_impl(model, "seqops")(input_ids=ids, attention_mask=mask).last_hidden_state
    assert len(spy) == 2 and all(c["bias"] is not None and c["bias"].dtype == torch.float32 for c in spy)
    assert all(c.get("t5_table") is None and c.get("key_padding_mask") is None for c in spy)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


def test_bart_takes_the_dense_path_and_matches_eager(spy):
    torch.manual_seed(0)
    config = BartConfig(vocab_size=VOCAB, d_model=64, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
                        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, dropout=0.0,
                        attention_dropout=0.0, max_position_embeddings=64)
    model = BartForConditionalGeneration(config).eval()
    ids, mask = torch.randint(3, VOCAB, (2, 20)), padding_mask(2, 20, [0, 6])
    dec = torch.randint(3, VOCAB, (2, 12))
    with torch.no_grad():
        ref = with_impl(model, "eager")(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        out = with_impl(model, "seqops")(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    assert len(spy) == 3 and all(c["bias"] is not None for c in spy)  # the decoder's causal mask included
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- registration

def test_register_is_idempotent_and_switching_back_restores_eager(spy):
    assert seqops_hf.register() == "seqops" and seqops_hf.register() == "seqops" and seqops_hf.is_registered()
    assert "seqops" in transformers.AttentionInterface._global_mapping
    from transformers.masking_utils import AttentionMaskInterface
    assert "seqops" in AttentionMaskInterface._global_mapping
    torch.manual_seed(0)
    model = T5EncoderModel(t5_config()).eval()
    model.set_attn_implementation("eager")
    ids = torch.randint(1, VOCAB, (1, 12))
    with torch.no_grad():
        ref = model(input_ids=ids).last_hidden_state
        model.set_attn_implementation("seqops")
        assert model.encoder.config._attn_implementation == "seqops"
        model(input_ids=ids)
        calls = len(spy)
        model.set_attn_implementation("eager")
        out = model(input_ids=ids).last_hidden_state
    assert calls == 2 and len(spy) == 2
    assert torch.equal(out, ref)
    # the wrapped T5 methods hand on the dense bias again
    attention = model.encoder.block[0].layer[0].SelfAttention
    assert attention.compute_bias(12, 12).shape == (1, 4, 12, 12)


def test_from_pretrained_with_attn_implementation(tmp_path, spy):
    torch.manual_seed(0)
    model = T5EncoderModel(t5_config()).eval()
    model.save_pretrained(tmp_path)
    loaded = T5EncoderModel.from_pretrained(tmp_path, attn_implementation="seqops").eval()
    assert loaded.config._attn_implementation == "seqops"
    ids = torch.randint(1, VOCAB, (1, 12))
    with torch.no_grad():
        ref = with_impl(model, "eager")(input_ids=ids).last_hidden_state
        out = loaded(input_ids=ids).last_hidden_state
    assert len(spy) == 2 and all(c["t5_table"] is not None for c in spy)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
