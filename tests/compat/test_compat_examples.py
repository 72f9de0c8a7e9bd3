"""The originals' own example snippets, run through seqops.compat.

Each snippet is kept verbatim as in the original's README / docs (the seed documents under
/work/shared/seeds, and labml's experiment.py); ``adapt`` rewrites the import line to the compat
namespace and, where the original is huge or CUDA-only, the sizes / device (each replacement is
listed next to its snippet, argument names unchanged, and must match the snippet text exactly,
so an edited snippet fails loudly). The snippet runs with ``exec``; the test then checks the
shapes the README states (or the API documents)."""
import types

import pytest
import torch


def adapt(snippet: str, replacements) -> str:
    for old, new in replacements:
        assert old in snippet, f"snippet no longer contains {old!r}"
        snippet = snippet.replace(old, new)
    return snippet


def run(snippet: str, replacements=(), **names) -> dict:
    scope = {"torch": torch, **names}
    exec(compile(adapt(snippet, replacements), "<original example>", "exec"), scope)
    return scope


# ----------------------------------------------------------------------------- seqpool README

SEQPOOL_USAGE = """\
from seqpool import CVTSeqPool

f = CVTSeqPool(128)
x = torch.randn(4, 1024, 128) # for example, take x from a transformer's output
y = f(x) # (4, 1024, 128) -> (4, 128)
"""

SEQPOOL_VARIANT = """\
from seqpool import CVTSeqPool
f = CVTSeqPool(in_dim=128)
"""

SEQPOOL_IMPORT = [("from seqpool import", "from seqops.compat.seqpool import")]


def test_seqpool_readme_usage():
    scope = run(SEQPOOL_USAGE, SEQPOOL_IMPORT)  # README's own sizes
    assert scope["y"].shape == (4, 128)
    f, x = scope["f"], scope["x"]
    weights = torch.softmax(x @ f.pool.weight.t(), dim=1)          # CVT SeqPool: softmax over the sequence
    torch.testing.assert_close(scope["y"], (weights * x).sum(1))


def test_seqpool_readme_variant():
    f = run(SEQPOOL_VARIANT, SEQPOOL_IMPORT)["f"]
    assert list(f.state_dict()) == ["pool.weight"] and f.pool.weight.shape == (1, 128)
    assert f(torch.randn(2, 7, 128)).shape == (2, 128)


# ----------------------------------------------------------------------------- linformer-pytorch README

LINFORMER_README = """\
from linformer_pytorch import Linformer
import torch

device = torch.device("cuda")
model = Linformer(
        input_size=262144, # Dimension 1 of the input
        channels=64, # Dimension 2 of the input
        dim_d=256, # The inner dimension of the attention heads
        dim_k=128, # The second dimension of the P_bar matrix from the paper
        dim_ff=128, # Dimension in the feed forward network
        dropout_ff=0.15, # Dropout for feed forward network
        nhead=4, # Number of attention heads
        depth=2, # How many times to run the model
        dropout=0.1, # How much dropout to apply to P_bar after softmax
        activation="gelu", # What activation to use. Currently, only gelu and relu supported, and only on ff network.
        checkpoint_level="C0", # What checkpoint level to use. For more information, see below.
        ).cuda()
x = torch.randn(1, 262144, 64).cuda()
y = model(x)
print(y)
"""

LINFORMER_IMPORT = [("from linformer_pytorch import", "from seqops.compat.linformer_pytorch import")]
# The README's n = 262144 needs a GPU: n = 1024 (k = 128 as in the README), on the CPU.
LINFORMER_SMALL = [("input_size=262144", "input_size=1024"), ("torch.randn(1, 262144, 64)", "torch.randn(1, 1024, 64)"),
                   ('torch.device("cuda")', 'torch.device("cpu")'), (").cuda()", ").to(device)"),
                   ("print(y)", "")]


@pytest.mark.parametrize("level", ["C0", "C1", "C2"])  # the README's three checkpoint levels
def test_linformer_readme_example(level):
    scope = run(LINFORMER_README, LINFORMER_IMPORT + LINFORMER_SMALL + [('checkpoint_level="C0"',
                                                                          f'checkpoint_level="{level}"')])
    model, x, y = scope["model"], scope["x"], scope["y"]
    assert y.shape == x.shape == (1, 1024, 64)          # Linformer keeps (batch, input_size, channels)
    assert torch.isfinite(y).all()
    y.sum().backward()                                  # trains at every level (C1/C2: checkpointed)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_linformer_readme_padder_section():
    # The README's Padder section has no snippet; its description: pad to input_size, feed the net.
    scope = run(LINFORMER_README + "from linformer_pytorch import Padder\n"
                "padded = Padder(model)\nz = padded(torch.randn(1, 1000, 64).to(device))\n",
                [("from linformer_pytorch import Padder", "from seqops.compat.linformer_pytorch import Padder")]
                + LINFORMER_IMPORT + LINFORMER_SMALL)
    assert scope["z"].shape == (1, 1000, 64)


# ----------------------------------------------------------------------------- LAMA README

LAMA_README = """\
import torch
from modules.lama import LAMA

num_heads = 8      # Number of attention heads
input_dim = 768    # Dimension of each tokens hidden representation
batch_size = 16    # Number of sentences/documents in the mini-batch
max_seq_len = 100  # Maximum length of the input sequence

# Create a random input sequence
inputs = torch.randn(batch_size, max_seq_len, input_dim)  

# Initialize the attention mechanism
lama = LAMA(num_heads, input_dim)

output = lama(inputs)
assert output.size() == (batch_size, num_heads, max_seq_len)
"""

LAMA_POOLER_README = """\
import torch
from modules.lama_pooler import LAMAPooler

num_heads = 8      # Number of attention heads
input_dim = 768    # Dimension of each tokens hidden representation
batch_size = 16    # Number of sentences/documents in the mini-batch
max_seq_len = 100  # Maximum length of the input sequence

# Create a random input sequence
inputs = torch.randn(batch_size, max_seq_len, input_dim)  

# Initialize the pooler
lama_pooler = LAMAPooler(num_heads, input_dim)

pooled_output = lama_pooler(inputs)
assert pooled_output.size() == (batch_size, num_heads * input_dim)
"""


def test_lama_readme_example():
    scope = run(LAMA_README, [("from modules.lama import", "from seqops.compat.lama import")])  # README sizes
    weights = scope["output"]
    torch.testing.assert_close(weights.sum(-1), torch.ones(16, 8))   # a distribution over the sequence per head
    weights.sum().backward()  # the original's backward always failed (in-place normalization)
    assert scope["lama"]._p.grad is not None


def test_lama_pooler_readme_example():
    scope = run(LAMA_POOLER_README, [("from modules.lama_pooler import", "from seqops.compat.lama import")])
    pooler, inputs, out = scope["lama_pooler"], scope["inputs"], scope["pooled_output"]
    # Per sequence: LAMA's weights (B, H, L) times the inputs, flattened (the historical class
    # took its softmax over the batch axis instead).
    import seqops.nn
    weights = seqops.nn.LAMA.forward(pooler, inputs)               # LAMAPooler is a LAMA, as historically
    torch.testing.assert_close(out, (weights @ inputs).flatten(1))
    torch.testing.assert_close(pooler(inputs[:1]), out[:1])          # independent of the rest of the batch


def test_lama_original_float_mask_is_accepted():
    from seqops.compat.lama import LAMA, LAMAEncoder, LAMAPooler
    x = torch.randn(3, 9, 16)
    mask = torch.ones(3, 9)
    mask[0, 5:] = 0
    mask[2, :2] = 0
    for cls, args in ((LAMA, (4, 16)), (LAMAEncoder, (4, 16)), (LAMAPooler, (4, 16))):
        m = cls(*args)
        torch.testing.assert_close(m(x, mask), m(x, mask.bool()))
        assert not torch.allclose(m(x, mask), m(x))
    with pytest.raises(ValueError, match="fractional"):
        LAMA(4, 16)(x, mask * 0.5)


# ----------------------------------------------------------------------------- positional-embeddings-pytorch

# Its README has no usage snippet ("Basic usage: #To be added#"); it documents the two APIs:
# forward_input(input_ [B, L, embed_dim], positions [B, L]) -> [B, L, embed_dim] and
# forward_attn(q [B, H, Lq, Dh], k [B, H, Lk, Dh], positions_q, positions_k) -> attention logits
# (the README says [B, Lq, Lk]; the original's code returns per-head (B, H, Lq, Lk), as seqops).
# The constructors are HEAD's (seeds-api.md section 3.4), keyword-only as there.
POSITIONAL_USAGE = """\
from positional_embeddings_pytorch import (SinusoidalPositionalEmbedding, LearnedPositionalEmbedding,
    TransformerXLPositionalEmbedding, T5PositionalEmbedding, UnifiedPositionalEmbedding,
    EnformerPositionalEmbedding)

batch_size, num_heads, head_dim, q_len, k_len = 2, 4, 16, 10, 12
embed_dim = num_heads * head_dim
absolute = [
    SinusoidalPositionalEmbedding(embed_dim=embed_dim, max_length=128, padding_idx=0),
    LearnedPositionalEmbedding(max_length=128, embed_dim=embed_dim, padding_idx=0),
]
relative = [
    TransformerXLPositionalEmbedding(embed_dim=embed_dim, num_heads=num_heads, head_dim=head_dim, dropout_p=0.1),
    T5PositionalEmbedding(num_heads=num_heads, num_buckets=32, max_distance=128),
    UnifiedPositionalEmbedding(num_heads=num_heads, head_dim=head_dim, max_length=128, dropout_p=0.1),
    EnformerPositionalEmbedding(num_heads=num_heads, head_dim=head_dim, dropout_p=0.1),
]
input_ = torch.randn(batch_size, q_len, embed_dim)
positions = torch.arange(1, q_len + 1).expand(batch_size, q_len)
q = torch.randn(batch_size, num_heads, q_len, head_dim)
k = torch.randn(batch_size, num_heads, k_len, head_dim)
positions_q = torch.arange(q_len).expand(batch_size, q_len)
positions_k = torch.arange(k_len).expand(batch_size, k_len)
with_positions = [pe.forward_input(input_, positions) for pe in absolute]
logits = [pe.eval().forward_attn(q, k, positions_q, positions_k) for pe in relative]
"""


def test_positional_readme_apis():
    scope = run(POSITIONAL_USAGE, [("from positional_embeddings_pytorch import",
                                    "from seqops.compat.positional_embeddings_pytorch import")])
    input_, q, k = scope["input_"], scope["q"], scope["k"]
    for pe, out in zip(scope["absolute"], scope["with_positions"]):
        assert out.shape == input_.shape
        torch.testing.assert_close(out - input_, pe(scope["positions"]))     # input + its position rows
    plain = q @ k.transpose(-1, -2)
    for pe, out in zip(scope["relative"], scope["logits"]):
        assert out.shape == (2, 4, 10, 12), type(pe).__name__
        assert not torch.allclose(out, plain, atol=1e-3), type(pe).__name__  # a positional term is added


def test_positional_pypi_tupe_constructor():
    from seqops.compat.positional_embeddings_pytorch import TUPE, UnifiedPositionalEmbedding
    # PyPI 0.0.1's signature (embed_dim, no head_dim); the original crashed building in_proj here.
    tupe = TUPE(embed_dim=64, num_heads=4, max_length=32, dropout_p=0.1, rel_pos_embed=True)
    ref = UnifiedPositionalEmbedding(num_heads=4, head_dim=16, max_length=32, dropout_p=0.1)
    assert {k: v.shape for k, v in tupe.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    ref.load_state_dict(tupe.state_dict())
    q, k = torch.randn(2, 4, 5, 16), torch.randn(2, 4, 7, 16)
    torch.testing.assert_close(tupe.eval().forward_attn(q, k), ref.eval().forward_attn(q, k))
    with pytest.raises(ValueError, match="multiple of num_heads"):
        TUPE(embed_dim=30, num_heads=4, max_length=32, dropout_p=0.1)


# ----------------------------------------------------------------------------- labml_nn compressive

# labml's docs page for the Compressive Transformer has no snippet; its experiment
# (labml_nn/transformers/compressive/experiment.py, rendered at nn.labml.ai) builds the model so,
# inside the config function autoregressive_model(c). Config values: experiment.py's defaults
# (d_model 128, heads 4, dropout 0.0, d_ff 256, n_layers 6) with main()'s compression_rate 2.
LABML_EXPERIMENT = """\
from labml_nn.transformers.compressive import CompressiveTransformer, AttentionReconstructionLoss, \\
    CompressiveTransformerLayer, Conv1dCompression
from labml_nn.transformers.xl import RelativeMultiHeadAttention
from labml_nn.transformers.feed_forward import FeedForward
transformer = CompressiveTransformer(
    CompressiveTransformerLayer(d_model=c.d_model,
                                self_attn=RelativeMultiHeadAttention(c.heads, c.d_model, c.dropout),
                                feed_forward=FeedForward(c.d_model, c.d_ff, c.dropout),
                                dropout_prob=c.dropout,
                                compress=Conv1dCompression(c.compression_rate, c.d_model)), c.n_layers)
attention_reconstruction_loss = AttentionReconstructionLoss(transformer.layers)
"""
LABML_CONFIG = dict(d_model=128, heads=4, dropout=0.0, d_ff=256, n_layers=6, compression_rate=2)
LABML_IMPORTS = [(f"from {m} import", "from seqops.compat.labml_compressive import")
                 for m in ("labml_nn.transformers.compressive", "labml_nn.transformers.xl",
                           "labml_nn.transformers.feed_forward")]


def test_labml_experiment_model_builds_and_runs_batch_first():
    scope = run(LABML_EXPERIMENT, LABML_IMPORTS, c=types.SimpleNamespace(**LABML_CONFIG))
    transformer, loss = scope["transformer"], scope["attention_reconstruction_loss"]
    assert len(transformer.layers) == 6
    B, Lq, Lm, Lc = 2, 8, 8, 4                         # main(): seq_len 8, mem_len 8
    x = torch.randn(B, Lq, 128)                        # batch-first (labml: [Lq, B, d_model])
    mem = [torch.randn(B, Lm, 128) for _ in range(6)]
    c_mem = [torch.randn(B, Lc, 128) for _ in range(6)]
    out, new_mem = transformer(x, mem, c_mem)          # mask=None, causal=True: labml's usual mask
    assert out.shape == (B, Lq, 128) and len(new_mem) == 6 and new_mem[0].shape == (B, Lq, 128)
    first, _ = transformer(x, [], [])                  # labml's "no memory yet": empty lists
    assert first.shape == (B, Lq, 128)
    to_compress = [torch.randn(B, 2 * 2, 128) for _ in range(6)]
    ar = loss(new_mem, to_compress)
    assert ar.shape == () and ar > 0
    ar.backward()                                      # only the compressions get gradients
    assert transformer.layers[0].compress.conv.weight.grad is not None
    assert transformer.layers[0].self_attn.query.linear.weight.grad is None
    # labml's sequence-first [Lq, Lk, B] mask is refused, with the expected shape in the message.
    with pytest.raises(RuntimeError, match="key_padding_mask must have shape"):
        transformer(x, mem, c_mem, torch.ones(Lq, Lc + Lm + Lq, 1, dtype=torch.bool))
