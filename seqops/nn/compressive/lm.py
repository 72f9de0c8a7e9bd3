"""CompressiveTransformerLM: token embedding, CompressiveTransformer, output projection, with
segment-by-segment training (memory carried between segments, attention-reconstruction loss) and
generation that carries the memories. State_dict keys (src_embed, transformer, generator) are
those of labml's AutoregressiveModel."""
from typing import List, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .model import CompressiveTransformer, CompressiveTransformerLayer
from .attention import CompressiveFeedForward, RelativeMultiHeadAttention
from .compression import Conv1dCompression, MaxCompression, MeanCompression
from .loss import AttentionReconstructionLoss
from .memory import CompressiveMemory

_COMPRESSIONS = {"conv": Conv1dCompression, "mean": MeanCompression, "max": MaxCompression}


class SegmentLoss(NamedTuple):
    """loss = lm_loss + ar_loss_weight * ar_loss (ar_loss is 0 when nothing was compressed)."""
    loss: Tensor
    lm_loss: Tensor
    ar_loss: Tensor


class CompressiveTransformerLM(nn.Module):
    """Autoregressive character/token LM on a Compressive Transformer (pre-LN, relative positions,
    no absolute position embedding -- as labml's AutoregressiveModel).

    Args:
        n_vocab, d_model, n_layers, heads, d_ff: the usual sizes (d_ff: the feed-forward width).
        mem_len, c_mem_len, compression_rate: see CompressiveMemory.
        dropout: residual, feed-forward and attention dropout.
        compression: 'conv' (the paper's best, trained by the reconstruction loss), 'mean' or 'max'.
        ar_loss_weight: weight of the attention-reconstruction loss in ``segment_loss``.
        max_distance: relative-position table half-size P; default c_mem_len + 2 * mem_len +
            compression_rate covers segments up to mem_len tokens (longer distances share the
            table's edge rows).
    """

    def __init__(self, n_vocab: int, d_model: int, n_layers: int, heads: int, d_ff: int, mem_len: int,
                 c_mem_len: int, compression_rate: int, dropout: float = 0.0, compression: str = "conv",
                 ar_loss_weight: float = 1.0, max_distance: Optional[int] = None,
                 device=None, dtype=None) -> None:
        super().__init__()
        if compression not in _COMPRESSIONS:
            raise ValueError(f"compression must be one of {sorted(_COMPRESSIONS)}, got {compression!r}")
        factory = {"device": device, "dtype": dtype}
        self.n_vocab = n_vocab
        self.mem_len, self.c_mem_len, self.compression_rate = mem_len, c_mem_len, compression_rate
        self.ar_loss_weight = ar_loss_weight
        max_distance = max_distance or c_mem_len + 2 * mem_len + compression_rate
        compress = (Conv1dCompression(compression_rate, d_model, **factory) if compression == "conv"
                    else _COMPRESSIONS[compression](compression_rate, d_model))
        layer = CompressiveTransformerLayer(
            d_model=d_model, self_attn=RelativeMultiHeadAttention(heads, d_model, dropout, max_distance, **factory),
            feed_forward=CompressiveFeedForward(d_model, d_ff, dropout, **factory), dropout_prob=dropout,
            compress=compress, **factory)
        self.src_embed = nn.Embedding(n_vocab, d_model, **factory)
        self.transformer = CompressiveTransformer(layer, n_layers)
        self.generator = nn.Linear(d_model, n_vocab, **factory)
        self.reconstruction_loss = AttentionReconstructionLoss(self.transformer.layers)
        self.trains_compression = compression == "conv"

    def new_memory(self) -> CompressiveMemory:
        return CompressiveMemory(self.mem_len, self.c_mem_len, self.compression_rate)

    def forward(self, x: Tensor, memory: Optional[CompressiveMemory] = None,
                mask: Optional[Tensor] = None) -> Tuple[Tensor, List[Tensor]]:
        """x (B, L) token ids, memory (not modified), mask bool (B, L) valid tokens ->
        (logits (B, L, n_vocab), hidden: per layer its input (B, L, d_model), detached)."""
        mem: List[Tensor] = memory.mem if memory is not None else []
        c_mem: List[Tensor] = memory.c_mem if memory is not None else []
        keys_mask = mask
        if memory is not None:
            keys_mask = memory.key_padding_mask(mask, x.shape[0], x.shape[1], x.device)
        out, hidden = self.transformer(self.src_embed(x), mem, c_mem, keys_mask, True)
        return self.generator(out), hidden

    def compressors(self) -> List[nn.Module]:
        return [layer.compress for layer in self.transformer.layers]

    def segment_loss(self, x: Tensor, y: Tensor, memory: CompressiveMemory,
                     mask: Optional[Tensor] = None) -> SegmentLoss:
        """One training segment: forward over x (B, L) with the memory, memory update, cross
        entropy against y (B, L) (positions where mask is False are ignored) plus the
        reconstruction loss of what the update compressed."""
        logits, hidden = self(x, memory, mask)
        recon = memory.update(hidden, self.compressors(), mask)
        target = y if mask is None else y.masked_fill(~mask, -100)
        lm_loss = F.cross_entropy(logits.flatten(0, 1).float(), target.flatten(), ignore_index=-100)
        ar_loss = lm_loss.new_zeros(())
        if recon is not None and self.trains_compression and self.ar_loss_weight > 0:
            ar_loss = self.reconstruction_loss(recon.h, recon.mem, recon.mask, recon.compressed)
        return SegmentLoss(lm_loss + self.ar_loss_weight * ar_loss, lm_loss, ar_loss)

    @torch.no_grad()
    def generate(self, prompt: Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: Optional[int] = None, memory: Optional[CompressiveMemory] = None,
                 generator: Optional[torch.Generator] = None) -> Tensor:
        """Samples max_new_tokens tokens after prompt ((B, Lp) or (Lp,) ids, Lp >= 1), in eval
        mode, carrying the memories: the prompt is fed in segments of max(mem_len, 1) tokens,
        then one token per step, each step updating the memory (compressing as in training).
        temperature 0 means greedy; top_k keeps the k most likely tokens. Sampling draws from
        ``generator`` (default: torch's global generator, so torch.manual_seed makes it
        deterministic). Returns prompt followed by the new tokens, shaped like prompt."""
        squeeze = prompt.dim() == 1
        tokens = prompt.unsqueeze(0) if squeeze else prompt
        if tokens.shape[1] < 1:
            raise ValueError("prompt must hold at least one token")
        memory = memory if memory is not None else self.new_memory()
        was_training = self.training
        self.eval()
        try:
            step = max(self.mem_len, 1)
            logits = tokens.new_empty(0)
            for start in range(0, tokens.shape[1], step):
                logits = self._feed(tokens[:, start:start + step], memory)
            out = [tokens]
            for _ in range(max_new_tokens):
                nxt = self._sample(logits[:, -1], temperature, top_k, generator)
                out.append(nxt)
                logits = self._feed(nxt, memory)
        finally:
            self.train(was_training)
        result = torch.cat(out, 1)
        return result[0] if squeeze else result

    def _feed(self, x: Tensor, memory: CompressiveMemory) -> Tensor:
        logits, hidden = self(x, memory)
        memory.update(hidden, self.compressors())
        return logits

    @staticmethod
    def _sample(logits: Tensor, temperature: float, top_k: Optional[int],
                generator: Optional[torch.Generator]) -> Tensor:
        """logits (B, V) -> (B, 1) ids."""
        if temperature <= 0:
            return logits.argmax(-1, keepdim=True)
        logits = logits.float() / temperature
        if top_k is not None and top_k < logits.shape[-1]:
            kth = logits.topk(top_k, dim=-1).values[:, -1:]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        return torch.multinomial(logits.softmax(-1), 1, generator=generator)
