"""Linformer (Wang et al. 2020, arXiv 2006.04768) with linformer-pytorch's API, on seqops.

``Linformer``, ``LinformerLM``, ``LinformerEncDec``, ``FeedForward``, ``PositionalEmbedding`` take
the same arguments and defaults as linformer-pytorch 0.19.3 (plus ``device`` / ``dtype``);
``MHAttention``, ``LinearAttentionHead`` (attention.py), ``get_EF``
(projection.py), ``Padder``, ``Visualizer`` (tools.py) complete the original's
API, and ``load_linformer_pytorch`` (weights.py) loads a model trained with the original.

Forward keyword arguments (all modules): ``input_mask`` bool (B, L), True = keep, masks the input
sequence's positions as keys; ``embeddings`` (B, M, D) the encoder output a decoder_mode model
cross-attends to; ``embeddings_mask`` bool (B, M) masks it; ``visualize`` keeps every head's
attention probabilities in its ``heads.P_bar``.

Behaviour: ``causal=True`` is causal through the E/F projections too (projection.causal_chunks);
in decoder_mode the self-attention is causal and the cross-attention sees the whole encoder
output. ``k_reduce_by_layer`` works in every sharing mode (layer i uses the first k_i rows of a
shared E), except one shared Conv1d for layers of different kernels, which raises. Masks exclude
keys before the projection. Inputs shorter than input_size are accepted (E/F columns sliced).
A layerwise-shared projection is stored once (``E.*``). Checkpoint levels C1 (every residual
block) and C2 (C1 + the fused heads) are non-reentrant and work with every keyword argument.

Long inputs stream (streaming.py): ``Linformer(..., block_size=None)`` (also on LinformerLM and
LinformerEncDec) runs each attention block and the feed-forward blocks after it one span of
queries at a time, after accumulating the compressed keys span by span, whenever the input is
longer than one span, without autograd, or under autograd at C1 / C2 (each span is then a
checkpoint). None chooses the span from the sizes, a positive number sets it (rounded up to
whole causal chunks or convolution windows), 0 turns streaming off. Outputs equal the
unstreamed ones up to float rounding; with dropout in training, spans draw their own masks (so
C1 / C2 then differ from C0 by the random draws, not in distribution). visualize, torch.compile
and TorchScript run unstreamed.
How each point differs from linformer-pytorch, and the test that pins it: docs/compat.md.
"""
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from ..dropout import Dropout
from .attention import CHECKPOINT_LEVELS, SHARING, MHAttention, check_mask
from .projection import METHODS, check_choice, get_EF
from .streaming import MIN_SPAN, run_stage, stages

ACTIVATIONS = ("gelu", "relu")


def check_block_size(block_size: Optional[int]) -> None:
    if block_size is not None and (isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 0):
        raise ValueError("block_size must be None (chosen from the sizes), 0 (no streaming) or a positive number of "
                         f"positions per span, got {block_size!r}")


class FeedForward(nn.Module):
    """w_2(dropout(act(w_1(x)))) then dropout: (B, L, input_channels) -> (B, L, output_channels).

    activation: 'gelu', 'relu' or None (no activation; the original silently dropped any other
    name, here it raises)."""

    def __init__(self, input_channels: int, output_channels: int, ff_dim: int, dropout: float,
                 activation: Optional[str] = "gelu", device=None, dtype=None) -> None:
        super().__init__()
        if activation is not None:
            check_choice("activation", activation, ACTIVATIONS)
        self.w_1 = nn.Linear(input_channels, ff_dim, device=device, dtype=dtype)
        self.w_2 = nn.Linear(ff_dim, output_channels, device=device, dtype=dtype)
        self.activation = activation if activation is not None else ""
        self.dropout = Dropout(dropout)
        self.dropout2 = Dropout(dropout)

    def forward(self, tensor: Tensor) -> Tensor:
        tensor = self.w_1(tensor)
        if self.activation == "gelu":
            tensor = F.gelu(tensor)
        elif self.activation == "relu":
            tensor = F.relu(tensor)
        return self.dropout2(self.w_2(self.dropout(tensor)))


class PositionalEmbedding(nn.Module):
    """The original's sinusoidal table: (1, L, channels) = [sin(p f) | cos(p f)] (halves, not
    interleaved), f_i = 100000^(-2i / channels), for positions p = 0..L-1 of tensor (B, L, ...).
    Odd widths drop the last cosine column (the original returned channels + 1 columns)."""

    def __init__(self, channels: int, device=None, dtype=None) -> None:
        super().__init__()
        self.channels = channels
        inv_freq = 1.0 / (100000 ** (torch.arange(0, channels, 2, device=device).float() / channels))
        self.register_buffer("inv_freq", inv_freq.to(dtype))  # computed in float32 as the original

    def forward(self, tensor: Tensor) -> Tensor:
        pos = torch.arange(tensor.shape[1], device=tensor.device, dtype=self.inv_freq.dtype)
        angles = pos[:, None] * self.inv_freq[None, :]
        return torch.cat((angles.sin(), angles.cos()), dim=-1)[None, :, :self.channels]


class _Residual(nn.Module):
    """Post-norm residual block ``norm(shortcut(x) + branch(x))`` (the original's Residual, with
    ``resample`` = Linear when widths differ), checkpointed (non-reentrant) at C1 and C2."""

    def __init__(self, fn: nn.Module, input_channels: int, output_channels: int, checkpoint_level: str,
                 device=None, dtype=None) -> None:
        super().__init__()
        self.fn = fn
        factory = {"device": device, "dtype": dtype}
        self.resample = nn.Linear(input_channels, output_channels, **factory) if input_channels != output_channels else None
        self.norm = nn.LayerNorm(output_channels, **factory)
        self.checkpointed = checkpoint_level != "C0"

    def forward(self, x: Tensor, input_mask: Optional[Tensor], embeddings: Optional[Tensor],
                embeddings_mask: Optional[Tensor], visualize: bool, shared_weight: Optional[Tensor],
                shared_bias: Optional[Tensor]) -> Tensor:
        if self.checkpointed and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return self._checkpoint(x, input_mask, embeddings, embeddings_mask, visualize, shared_weight, shared_bias)
        return self._block(x, input_mask, embeddings, embeddings_mask, visualize, shared_weight, shared_bias)

    def _block(self, x: Tensor, input_mask: Optional[Tensor], embeddings: Optional[Tensor],
               embeddings_mask: Optional[Tensor], visualize: bool, shared_weight: Optional[Tensor],
               shared_bias: Optional[Tensor]) -> Tensor:
        return self.combine(x, self._branch(x, input_mask, embeddings, embeddings_mask, visualize, shared_weight,
                                            shared_bias))

    def combine(self, x: Tensor, branch: Tensor) -> Tensor:
        """norm(shortcut(x) + branch): the block's output from its input and its branch's output."""
        shortcut = x if self.resample is None else self.resample(x)
        return self.norm(shortcut + branch)

    @torch.jit.unused
    def _checkpoint(self, x: Tensor, input_mask: Optional[Tensor], embeddings: Optional[Tensor],
                    embeddings_mask: Optional[Tensor], visualize: bool, shared_weight: Optional[Tensor],
                    shared_bias: Optional[Tensor]) -> Tensor:
        return checkpoint(self._block, x, input_mask, embeddings, embeddings_mask, visualize, shared_weight,
                          shared_bias, use_reentrant=False)


class AttentionResidual(_Residual):
    """Residual around MHAttention: self-attention over the input, or (cross) over embeddings."""

    def __init__(self, fn: MHAttention, channels: int, checkpoint_level: str, device=None, dtype=None) -> None:
        super().__init__(fn, channels, channels, checkpoint_level, device, dtype)
        self.cross = fn.decoder_mode

    def _branch(self, x: Tensor, input_mask: Optional[Tensor], embeddings: Optional[Tensor],
                embeddings_mask: Optional[Tensor], visualize: bool, shared_weight: Optional[Tensor],
                shared_bias: Optional[Tensor]) -> Tensor:
        if self.cross:
            return self.fn(x, None, embeddings, embeddings_mask, visualize, shared_weight, shared_bias)
        return self.fn(x, input_mask, None, None, visualize, shared_weight, shared_bias)


class FeedForwardResidual(_Residual):
    """Residual around FeedForward (position-wise: ignores masks and embeddings)."""

    def _branch(self, x: Tensor, input_mask: Optional[Tensor], embeddings: Optional[Tensor],
                embeddings_mask: Optional[Tensor], visualize: bool, shared_weight: Optional[Tensor],
                shared_bias: Optional[Tensor]) -> Tensor:
        return self.fn(x)


class Linformer(nn.Module):
    """Stack of post-norm [attention, feed-forward] blocks (+ [cross-attention, feed-forward] in
    decoder_mode) with linformer-pytorch's arguments and defaults (seeds-api §2.3).

    Layer i compresses to k_i = max(1, dim_k - i * k_reduce_by_layer) rows. ``seq`` lists the
    residual blocks in the original's order (``seq[j].fn`` is the MHAttention / FeedForward), so
    ``seq[j].fn.heads.P_bar`` holds a visualized attention; ``E`` is the layerwise-shared
    projection (None otherwise).
    forward(tensor, input_mask=None, embeddings=None, embeddings_mask=None, visualize=False):
        tensor (B, L, channels) with L <= input_size -> (B, L, channels).
    """

    def __init__(self, input_size: int, channels: int, dim_k: int, dim_ff: int = 256, dim_d: Optional[int] = None,
                 dropout_ff: float = 0.15, nhead: int = 4, depth: int = 1, dropout: float = 0.1,
                 activation: str = "gelu", checkpoint_level: str = "C0", parameter_sharing: str = "layerwise",
                 k_reduce_by_layer: int = 0, full_attention: bool = False, include_ff: bool = True,
                 w_o_intermediate_dim: Optional[int] = None, decoder_mode: bool = False, causal: bool = False,
                 method: str = "learnable", ff_intermediate: Optional[int] = None, block_size: Optional[int] = None,
                 device=None, dtype=None) -> None:
        super().__init__()
        check_choice("activation", activation, ACTIVATIONS)
        check_block_size(block_size)
        check_choice("checkpoint_level", checkpoint_level, CHECKPOINT_LEVELS)
        check_choice("parameter_sharing", parameter_sharing, SHARING)
        check_choice("method", method, METHODS)
        if dim_d is None and channels % nhead != 0:
            raise ValueError(f"channels ({channels}) must be divisible by nhead ({nhead}) when dim_d is None")
        if depth < 1 or k_reduce_by_layer < 0:
            raise ValueError(f"depth must be >= 1 and k_reduce_by_layer >= 0, got {depth} and {k_reduce_by_layer}")
        if ff_intermediate is not None and (decoder_mode or not include_ff):
            raise ValueError("ff_intermediate needs include_ff=True and decoder_mode=False (the feed-forward blocks "
                             "change the width; the cross-attention needs width channels)")
        shared = parameter_sharing == "layerwise" and not full_attention
        if shared and method == "convolution" and k_reduce_by_layer > 0 and depth > 1:
            raise ValueError("k_reduce_by_layer > 0 with method='convolution' and parameter_sharing='layerwise': one "
                             "shared Conv1d has one kernel (input_size // dim_k); use another sharing mode or method")
        factory = {"device": device, "dtype": dtype}
        self.decoder_mode = decoder_mode
        self.input_size = input_size
        self.channels = channels
        self.checkpoint_level = checkpoint_level
        self.depth = depth
        self.nhead = nhead
        self.block_size = block_size
        head_dim = channels // nhead if dim_d is None else dim_d
        self.E = get_EF(input_size, dim_k, method, head_dim, **factory) if shared else None

        def attention(width: int, k: int, cross: bool) -> AttentionResidual:
            attn = MHAttention(input_size, head_dim, width, k, nhead, dropout, checkpoint_level, parameter_sharing,
                               None, None, full_attention, causal and not cross, w_o_intermediate_dim, cross,
                               method, **factory)
            return AttentionResidual(attn, width, checkpoint_level, **factory)

        def feed_forward(width_in: int, width_out: int) -> FeedForwardResidual:
            ff = FeedForward(width_in, width_out, dim_ff, dropout_ff, activation, **factory)
            return FeedForwardResidual(ff, width_in, width_out, checkpoint_level, **factory)

        layers = []
        for index in range(depth):
            width_in = ff_intermediate if ff_intermediate is not None and index != 0 else channels
            width_out = ff_intermediate if ff_intermediate is not None and index != depth - 1 else channels
            k = max(1, dim_k - index * k_reduce_by_layer)
            layers.append(attention(width_in, k, False))
            if include_ff:
                layers.append(feed_forward(width_in, width_out))
            if decoder_mode:
                layers.append(attention(channels, k, True))
                if include_ff:
                    layers.append(feed_forward(channels, channels))
        self.seq = nn.ModuleList(layers)

    def forward(self, tensor: Tensor, input_mask: Optional[Tensor] = None, embeddings: Optional[Tensor] = None,
                embeddings_mask: Optional[Tensor] = None, visualize: bool = False) -> Tensor:
        if tensor.dim() != 3 or tensor.shape[2] != self.channels:
            raise ValueError(f"tensor must be (batch, length, channels={self.channels}), got {list(tensor.shape)}")
        if tensor.shape[1] > self.input_size:
            raise ValueError(f"sequence length {tensor.shape[1]} is longer than input_size={self.input_size}")
        check_mask("input_mask", input_mask, tensor.shape[0], tensor.shape[1])
        if self.decoder_mode != (embeddings is not None):
            raise ValueError("embeddings (the encoder output) must be given exactly when decoder_mode=True "
                             f"(decoder_mode={self.decoder_mode})")
        shared_weight: Optional[Tensor] = None
        shared_bias: Optional[Tensor] = None
        if self.E is not None:
            shared_weight, shared_bias = self.E.weight, self.E.bias
        if not torch.jit.is_scripting() and self._streams(tensor.shape[1], visualize):
            return self._streamed(tensor, input_mask, embeddings, embeddings_mask, shared_weight, shared_bias)
        for layer in self.seq:
            tensor = layer(tensor, input_mask, embeddings, embeddings_mask, visualize, shared_weight, shared_bias)
        return tensor

    @torch.jit.unused
    def _streams(self, length: int, visualize: bool) -> bool:
        """Streamed layers (streaming.py) for inputs longer than one span, in eager mode: always
        without autograd, and at C1 / C2 under autograd (whose recomputation they reuse). visualize
        keeps every query's probabilities anyway, so it runs unstreamed, as do traced graphs (a
        loop over spans would fix the length) and block_size=0."""
        if visualize or self.block_size == 0 or torch.compiler.is_compiling():
            return False
        if torch.is_grad_enabled() and self.checkpoint_level == "C0":
            return False
        return length > (self.block_size if self.block_size is not None else MIN_SPAN)

    @torch.jit.unused
    def _streamed(self, tensor: Tensor, input_mask: Optional[Tensor], embeddings: Optional[Tensor],
                  embeddings_mask: Optional[Tensor], shared_weight: Optional[Tensor],
                  shared_bias: Optional[Tensor]) -> Tensor:
        checkpointed = torch.is_grad_enabled()
        for blocks in stages(self.seq):
            tensor = run_stage(blocks, tensor, input_mask, embeddings, embeddings_mask, shared_weight, shared_bias,
                               self.block_size, checkpointed)
        return tensor


class LinformerLM(nn.Module):
    """Token embedding + sinusoidal positions + Linformer + logits, with linformer-pytorch's
    arguments and (LM-specific) defaults. emb_dim != channels adds ``project_in`` /
    ``project_out`` Linears around the Linformer; return_emb returns the (B, L, emb_dim) states.
    forward(tensor, input_mask=None, embeddings=None, embeddings_mask=None, visualize=False):
        tensor (B, L) int64 in [0, num_tokens), L <= input_size -> (B, L, num_tokens).
    """

    def __init__(self, num_tokens: int, input_size: int, channels: int, dim_k: int = 64, dim_ff: int = 1024,
                 dim_d: Optional[int] = None, dropout_ff: float = 0.1, dropout_tokens: float = 0.1, nhead: int = 4,
                 depth: int = 2, ff_intermediate: Optional[int] = None, dropout: float = 0.05,
                 activation: str = "gelu", checkpoint_level: str = "C0", parameter_sharing: str = "layerwise",
                 k_reduce_by_layer: int = 0, full_attention: bool = False, include_ff: bool = True,
                 w_o_intermediate_dim: Optional[int] = None, emb_dim: Optional[int] = None, return_emb: bool = False,
                 decoder_mode: bool = False, causal: bool = False, method: str = "learnable",
                 block_size: Optional[int] = None, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        emb_dim = channels if emb_dim is None else emb_dim
        self.input_size = input_size
        self.to_token_emb = nn.Embedding(num_tokens, emb_dim, **factory)
        self.pos_emb = PositionalEmbedding(emb_dim, **factory)
        self.project_in = nn.Linear(emb_dim, channels, **factory) if emb_dim != channels else None
        self.linformer = Linformer(input_size, channels, dim_k, dim_ff, dim_d, dropout_ff, nhead, depth, dropout,
                                   activation, checkpoint_level, parameter_sharing, k_reduce_by_layer,
                                   full_attention, include_ff, w_o_intermediate_dim, decoder_mode, causal, method,
                                   ff_intermediate, block_size, **factory)
        self.project_out = nn.Linear(channels, emb_dim, **factory) if emb_dim != channels else None
        self.to_logits = None if return_emb else nn.Linear(emb_dim, num_tokens, **factory)
        self.dropout_tokens = Dropout(dropout_tokens)

    def forward(self, tensor: Tensor, input_mask: Optional[Tensor] = None, embeddings: Optional[Tensor] = None,
                embeddings_mask: Optional[Tensor] = None, visualize: bool = False) -> Tensor:
        if tensor.dim() != 2:
            raise ValueError(f"tensor must be (batch, length) token ids, got shape {list(tensor.shape)}")
        x = self.to_token_emb(tensor)
        x = self.dropout_tokens(self.pos_emb(x).to(x.dtype) + x)
        if self.project_in is not None:
            x = self.project_in(x)
        x = self.linformer(x, input_mask, embeddings, embeddings_mask, visualize)
        if self.project_out is not None:
            x = self.project_out(x)
        if self.to_logits is not None:
            x = self.to_logits(x)
        return x


class LinformerEncDec(nn.Module):
    """Encoder LinformerLM (return_emb) + causal decoder LinformerLM (decoder_mode), with
    linformer-pytorch's enc_* / dec_* arguments and defaults.
    forward(x, y=None, input_mask=None, y_mask=None, visualize=False):
        x (B, Lx) source tokens, y (B, Ly) target tokens (default x); input_mask (B, Lx) masks the
        source (encoder keys and the decoder's cross-attention keys; the original passed keyword
        arguments to the encoder only), y_mask (B, Ly) the target (default input_mask when y is
        None). Returns (B, Ly, dec_num_tokens). Position i of the output depends on y[:i+1] only.
    """

    def __init__(self, enc_num_tokens: int, enc_input_size: int, enc_channels: int, dec_num_tokens: int,
                 dec_input_size: int, dec_channels: int, enc_dim_k: int = 64, enc_dim_ff: int = 1024,
                 enc_dim_d: Optional[int] = None, enc_ff_intermediate: Optional[int] = None,
                 dec_ff_intermediate: Optional[int] = None, enc_dropout_ff: float = 0.1, enc_nhead: int = 4,
                 enc_depth: int = 2, enc_dropout: float = 0.05, enc_parameter_sharing: str = "layerwise",
                 enc_k_reduce_by_layer: int = 0, enc_full_attention: bool = False, enc_include_ff: bool = True,
                 enc_w_o_intermediate_dim: Optional[int] = None, enc_emb_dim: Optional[int] = None,
                 enc_method: str = "learnable", dec_dim_k: int = 64, dec_dim_ff: int = 1024,
                 dec_dim_d: Optional[int] = None, dec_dropout_ff: float = 0.1, dec_nhead: int = 4, dec_depth: int = 2,
                 dec_dropout: float = 0.05, dec_parameter_sharing: str = "layerwise", dec_k_reduce_by_layer: int = 0,
                 dec_full_attention: bool = False, dec_include_ff: bool = True,
                 dec_w_o_intermediate_dim: Optional[int] = None, dec_emb_dim: Optional[int] = None,
                 dec_method: str = "learnable", activation: str = "gelu", checkpoint_level: str = "C0",
                 block_size: Optional[int] = None, device=None, dtype=None) -> None:
        super().__init__()
        enc_width = enc_channels if enc_emb_dim is None else enc_emb_dim
        if enc_width != dec_channels:
            raise ValueError(f"the encoder output width (enc_emb_dim or enc_channels = {enc_width}) must equal "
                             f"dec_channels ({dec_channels}): the decoder cross-attends to it")
        factory = {"device": device, "dtype": dtype}
        self.encoder = LinformerLM(enc_num_tokens, enc_input_size, enc_channels, enc_dim_k, enc_dim_ff, enc_dim_d,
                                   enc_dropout_ff, nhead=enc_nhead, depth=enc_depth,
                                   ff_intermediate=enc_ff_intermediate, dropout=enc_dropout, activation=activation,
                                   checkpoint_level=checkpoint_level, parameter_sharing=enc_parameter_sharing,
                                   k_reduce_by_layer=enc_k_reduce_by_layer, full_attention=enc_full_attention,
                                   include_ff=enc_include_ff, w_o_intermediate_dim=enc_w_o_intermediate_dim,
                                   emb_dim=enc_emb_dim, return_emb=True, method=enc_method, block_size=block_size,
                                   **factory)
        self.decoder = LinformerLM(dec_num_tokens, dec_input_size, dec_channels, dec_dim_k, dec_dim_ff, dec_dim_d,
                                   dec_dropout_ff, nhead=dec_nhead, depth=dec_depth,
                                   ff_intermediate=dec_ff_intermediate, dropout=dec_dropout, activation=activation,
                                   checkpoint_level=checkpoint_level, parameter_sharing=dec_parameter_sharing,
                                   k_reduce_by_layer=dec_k_reduce_by_layer, full_attention=dec_full_attention,
                                   include_ff=dec_include_ff, w_o_intermediate_dim=dec_w_o_intermediate_dim,
                                   emb_dim=dec_emb_dim, decoder_mode=True, causal=True, method=dec_method,
                                   block_size=block_size, **factory)

    def forward(self, x: Tensor, y: Optional[Tensor] = None, input_mask: Optional[Tensor] = None,
                y_mask: Optional[Tensor] = None, visualize: bool = False) -> Tensor:
        encoded = self.encoder(x, input_mask, None, None, visualize)
        if y is None:
            y = x
            if y_mask is None:
                y_mask = input_mask
        return self.decoder(y, y_mask, encoded, input_mask, visualize)

