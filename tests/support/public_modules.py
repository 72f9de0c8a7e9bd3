"""Every public seqops.nn module, each built small and paired with inputs of a chosen sequence
length: the deployment tests (compile, TorchScript, export, C++) run over this one catalog, so a
new module joins all of them by being added here."""
from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import torch
from torch import Tensor, nn

from seqops.nn import (CVTSeqPool, CompressiveFeedForward, CompressiveTransformer, CompressiveTransformerLayer,
                       CompressiveTransformerLM, Conv1dCompression, EnformerPositionalEmbedding, FeedForward, LAMA,
                       LAMAEncoder, LAMAPooler, LearnedPositionalEmbedding, Linformer, LinformerEncDec, LinformerLM,
                       MaxCompression, MeanCompression, MeanSeqPool, MHAttention, MultiheadAttention, Padder,
                       RelativeMultiHeadAttention, RotaryPositionalEmbedding, SeqPool, SinusoidalPositionalEmbedding, T5PositionalEmbedding,
                       TransformerXLPositionalEmbedding, UnifiedPositionalEmbedding)

D, H, DH = 16, 4, 4   # model width, heads, head width
MAX_LEN = 24          # the longest sequence any case accepts (Linformer's input_size)
VOCAB = 11


@dataclass(frozen=True)
class ModuleCase:
    build: Callable[[], nn.Module]        # float32, eval mode, every parameter random
    inputs: Callable[[int], Tuple]        # the forward's positional arguments at sequence length L
    min_len: int = 2                      # shortest L the case accepts
    # False where torch.export cannot keep L symbolic: the causal Linformer splits the sequence
    # into ceil(L / chunk) chunks, and the reshapes of that split guard on the chunk count.
    dynamic_export: bool = True

    def make(self) -> nn.Module:
        torch.manual_seed(0)
        m = self.build().eval()
        with torch.no_grad():  # some originals zero-initialize biases, which would hide errors
            for p in m.parameters():
                if p.abs().max() == 0:
                    p.normal_(0, 0.5)
        return m


def _keep(L: int) -> Tensor:
    """A (2, L) keep-mask with a padded tail in row 0."""
    mask = torch.ones(2, L, dtype=torch.bool)
    mask[0, L - L // 3:] = False
    return mask


def _x(L: int) -> Tensor:
    return torch.randn(2, L, D)


def _tokens(L: int) -> Tensor:
    return torch.randint(0, VOCAB, (2, L))


class _LayerWithMemory(nn.Module):
    """A compressive layer fed fixed-size memories: the tests vary the current segment's length
    while the memories keep theirs."""

    def __init__(self, layer: CompressiveTransformerLayer) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, x: Tensor, mem: Tensor, c_mem: Tensor) -> Tensor:
        return self.layer(x, mem, c_mem)


class _StackWithMemory(nn.Module):
    """_LayerWithMemory for a two-layer CompressiveTransformer (the same memories in each layer)."""

    def __init__(self, stack: CompressiveTransformer) -> None:
        super().__init__()
        self.stack = stack

    def forward(self, x: Tensor, mem: Tensor, c_mem: Tensor) -> Tensor:
        return self.stack(x, [mem, mem], [c_mem, c_mem])[0]


def _compressive_layer() -> CompressiveTransformerLayer:
    return CompressiveTransformerLayer(
        d_model=D, self_attn=RelativeMultiHeadAttention(H, D, 0.0, 64), feed_forward=CompressiveFeedForward(D, 32, 0.0),
        dropout_prob=0.0, compress=Conv1dCompression(2, D))


def _linformer(**kw) -> Linformer:
    kwargs = dict(input_size=MAX_LEN, channels=D, dim_k=8, dim_ff=16, nhead=H, depth=2, dropout=0.0, dropout_ff=0.0)
    return Linformer(**{**kwargs, **kw})


def _linformer_lm(**kw) -> LinformerLM:
    return LinformerLM(num_tokens=VOCAB, input_size=MAX_LEN, channels=D, dim_k=8, dim_ff=16, nhead=H, depth=2,
                       dropout=0.0, dropout_ff=0.0, dropout_tokens=0.0, **kw)


def _mha(positional=None) -> MultiheadAttention:
    return MultiheadAttention(D, H, positional=positional)


_MEMORY = lambda L: (_x(L), torch.randn(2, 6, D), torch.randn(2, 4, D))  # noqa: E731

CASES: Dict[str, ModuleCase] = {
    # pooling
    "SeqPool": ModuleCase(lambda: SeqPool(D, num_heads=2), lambda L: (_x(L), _keep(L))),
    "CVTSeqPool": ModuleCase(lambda: CVTSeqPool(D), lambda L: (_x(L), _keep(L))),
    "MeanSeqPool": ModuleCase(lambda: MeanSeqPool(), lambda L: (_x(L), _keep(L))),
    "LAMA": ModuleCase(lambda: LAMA(H, D), lambda L: (_x(L), _keep(L))),
    "LAMAEncoder": ModuleCase(lambda: LAMAEncoder(H, D, output_dim=8), lambda L: (_x(L), _keep(L))),
    "LAMAPooler": ModuleCase(lambda: LAMAPooler(H, D), lambda L: (_x(L), _keep(L))),
    # attention with each positional embedding
    "MultiheadAttention": ModuleCase(lambda: _mha(), lambda L: (_x(L), _x(L), _x(L), _keep(L), True)),
    "MHA+Sinusoidal": ModuleCase(lambda: _mha(SinusoidalPositionalEmbedding(embed_dim=D, max_length=64)),
                                 lambda L: (_x(L), None, None, _keep(L), True)),
    "MHA+Learned": ModuleCase(lambda: _mha(LearnedPositionalEmbedding(max_length=64, embed_dim=D)),
                              lambda L: (_x(L), None, None, _keep(L), True)),
    "MHA+TransformerXL": ModuleCase(
        lambda: _mha(TransformerXLPositionalEmbedding(embed_dim=12, num_heads=H, head_dim=DH, dropout_p=0.0)),
        lambda L: (_x(L), None, None, _keep(L), True)),
    "MHA+T5": ModuleCase(lambda: _mha(T5PositionalEmbedding(num_heads=H, num_buckets=8, max_distance=20)),
                         lambda L: (_x(L), None, None, _keep(L), False)),
    "MHA+TUPE": ModuleCase(
        lambda: _mha(UnifiedPositionalEmbedding(num_heads=H, head_dim=DH, max_length=64, dropout_p=0.0,
                                                rel_pos_embed=True, num_buckets=8, max_distance=20)),
        lambda L: (_x(L), None, None, _keep(L), True)),
    "MHA+Enformer": ModuleCase(lambda: _mha(EnformerPositionalEmbedding(num_heads=H, head_dim=DH, dropout_p=0.0)),
                               lambda L: (_x(L), None, None, _keep(L), False)),
    "MHA+Rotary": ModuleCase(lambda: _mha(RotaryPositionalEmbedding(head_dim=DH, num_heads=H, base=100.0)),
                             lambda L: (_x(L), None, None, _keep(L), True)),
    # Linformer
    "Linformer": ModuleCase(lambda: _linformer(), lambda L: (_x(L), _keep(L))),
    "Linformer-causal-conv": ModuleCase(lambda: _linformer(causal=True, method="convolution", dim_k=6),
                                        lambda L: (_x(L),), min_len=6, dynamic_export=False),
    "LinformerLM": ModuleCase(lambda: _linformer_lm(), lambda L: (_tokens(L), _keep(L))),
    "LinformerEncDec": ModuleCase(
        lambda: LinformerEncDec(enc_num_tokens=VOCAB, enc_input_size=MAX_LEN, enc_channels=D, dec_num_tokens=VOCAB,
                                dec_input_size=MAX_LEN, dec_channels=D, enc_dim_k=8, enc_dim_ff=16, enc_nhead=H,
                                enc_depth=1, enc_dropout=0.0, enc_dropout_ff=0.0, dec_dim_k=8, dec_dim_ff=16,
                                dec_nhead=H, dec_depth=1, dec_dropout=0.0, dec_dropout_ff=0.0),
        lambda L: (_tokens(L), _tokens(L)), dynamic_export=False),  # its decoder is causal
    "MHAttention": ModuleCase(
        lambda: MHAttention(MAX_LEN, DH, D, 8, H, 0.0, "C0", "kv", None, None, False, False),
        lambda L: (_x(L), _keep(L))),
    "FeedForward": ModuleCase(lambda: FeedForward(D, D, 32, 0.0), lambda L: (_x(L),)),
    "Padder": ModuleCase(lambda: Padder(_linformer()), lambda L: (_x(L),)),
    # Compressive Transformer
    "RelativeMultiHeadAttention": ModuleCase(lambda: RelativeMultiHeadAttention(H, D, 0.0, 64),
                                             lambda L: (_x(L), _x(L), _x(L), _keep(L), True)),
    "CompressiveFeedForward": ModuleCase(lambda: CompressiveFeedForward(D, 32, 0.0), lambda L: (_x(L),)),
    "CompressiveTransformerLayer": ModuleCase(lambda: _LayerWithMemory(_compressive_layer()), _MEMORY),
    "CompressiveTransformer": ModuleCase(lambda: _StackWithMemory(CompressiveTransformer(_compressive_layer(), 2)),
                                         _MEMORY),
    "CompressiveTransformerLM": ModuleCase(
        lambda: CompressiveTransformerLM(VOCAB, D, 2, H, 32, mem_len=8, c_mem_len=8, compression_rate=2),
        lambda L: (_tokens(L),)),
    "Conv1dCompression": ModuleCase(lambda: Conv1dCompression(2, D), lambda L: (_x(2 * L),)),
    "MeanCompression": ModuleCase(lambda: MeanCompression(2, D), lambda L: (_x(2 * L),)),
    "MaxCompression": ModuleCase(lambda: MaxCompression(2, D), lambda L: (_x(2 * L),)),
}


def flat_outputs(out) -> Tuple[Tensor, ...]:
    """The tensors of a forward's result (a tensor or nested tuples/lists of them)."""
    if isinstance(out, Tensor):
        return (out,)
    return tuple(t for o in out for t in flat_outputs(o))
