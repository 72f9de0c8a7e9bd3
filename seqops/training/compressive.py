"""`seqops train --model compressive` (and examples/train_compressive.py): segment-by-segment
training of a character-level CompressiveTransformerLM on a corpus that needs no download (the
standard library's sources by default, or any text file).

The corpus is cut into ``batch`` parallel streams; each step trains on the next ``seq_len``
characters of every stream, attending over the memories of the previous segments (Transformer-XL
style: memories carry no gradient; the attention-reconstruction loss trains the compression).
Corpus, vocabulary, progress bar (tqdm, or plain periodic prints), Ctrl-C handling and
checkpoints come from seqops.training.common, shared with the other demos.
"""
import math
from typing import Dict, Optional

import torch

from . import common
from ..nn import CompressiveTransformerLM


def _streams(ids: torch.Tensor, batch: int, seq_len: int) -> torch.Tensor:
    """(batch, T) contiguous streams of ids, T >= seq_len + 1."""
    length = ids.numel() // batch
    if length < seq_len + 1:
        raise ValueError(f"{ids.numel()} characters cannot feed {batch} streams of {seq_len + 1}")
    return ids[:length * batch].view(batch, length)


def _segment(streams: torch.Tensor, index: int, seq_len: int):
    """Inputs and next-character targets of segment `index`, (batch, seq_len) each."""
    start = index * seq_len
    return streams[:, start:start + seq_len], streams[:, start + 1:start + seq_len + 1]


@torch.no_grad()
def evaluate(model: CompressiveTransformerLM, streams: torch.Tensor, seq_len: int, segments: int) -> float:
    """Mean LM loss (nats per character) over the first `segments` segments, with memory."""
    was_training = model.training
    model.eval()
    memory, total = model.new_memory(), 0.0
    n = max(1, min(segments, (streams.shape[1] - 1) // seq_len))
    for s in range(n):
        total += model.segment_loss(*_segment(streams, s, seq_len), memory).lm_loss.item()
    model.train(was_training)
    return total / n


def train(data_path: Optional[str] = None, steps: int = 2000, device: str = "cpu", *, seed: int = 0,
          checkpoint: Optional[str] = "checkpoints/compressive.pt", batch: int = 16, seq_len: int = 64,
          mem_len: int = 64, c_mem_len: int = 64, compression_rate: int = 4, d_model: int = 128,
          n_layers: int = 2, heads: int = 4, d_ff: int = 256, dropout: float = 0.0,
          compression: str = "conv", lr: float = 2e-3, max_chars: int = 2_000_000,
          eval_segments: int = 8, prompt_length: int = 48, sample_length: int = 200) -> Dict[str, object]:
    """Trains, saves a checkpoint (unless checkpoint is None) and samples; returns
    seqops.common.run_steps' numbers (steps, losses, seconds, tokens_per_s, interrupted) plus
    ar_losses, valid_loss_before / valid_loss (held-out nats per character, the last 5% of the
    corpus), valid_bpc, checkpoint, prompt and sample (generated after a held-out prompt)."""
    config = dict(n_vocab=0, d_model=d_model, n_layers=n_layers, heads=heads, d_ff=d_ff, mem_len=mem_len,
                  c_mem_len=c_mem_len, compression_rate=compression_rate, dropout=dropout,
                  compression=compression)
    torch.manual_seed(seed)
    text = common.load_corpus(data_path, max_chars)
    vocab = common.CharVocab(text)
    config["n_vocab"] = len(vocab)
    train_ids, valid_ids = common.split(vocab.encode(text))
    train_streams = _streams(train_ids, batch, seq_len).to(device)
    valid_streams = _streams(valid_ids, min(batch, 4), seq_len).to(device)
    model = CompressiveTransformerLM(**config, device=device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    warmup = min(50, steps)
    schedule = torch.optim.lr_scheduler.LambdaLR(   # linear warm-up, cosine decay
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s / steps, 1.0))))
    per_epoch = (train_streams.shape[1] - 1) // seq_len
    memory = model.new_memory()
    ar_losses = []

    def step(i: int) -> Dict[str, float]:
        if i % per_epoch == 0:
            memory.reset()  # the streams start over: their end must not be the memory of their start
        out = model.segment_loss(*_segment(train_streams, i % per_epoch, seq_len), memory)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        ar_losses.append(out.ar_loss.item())
        return {"loss": out.lm_loss.item(), "ar_loss": ar_losses[-1], "tokens": batch * seq_len}

    print(f"compressive LM: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
          f"vocabulary {len(vocab)}, {len(train_ids)} training characters, {batch} streams of "
          f"{seq_len}-character segments, memory {mem_len} + compressed {c_mem_len} (rate {compression_rate})")
    valid_before = evaluate(model, valid_streams, seq_len, eval_segments)
    result = common.run_steps(steps, step, "compressive")
    result["ar_losses"] = ar_losses
    result["valid_loss_before"] = valid_before
    result["valid_loss"] = evaluate(model, valid_streams, seq_len, eval_segments)
    result["valid_bpc"] = result["valid_loss"] / math.log(2)
    result["checkpoint"] = checkpoint
    if checkpoint:
        common.save_checkpoint(checkpoint, model, vocab, config)
    prompt = valid_ids[:prompt_length].to(device)
    generated = model.generate(prompt, sample_length, temperature=0.8, top_k=10,
                               generator=torch.Generator(device=device).manual_seed(seed))
    result["prompt"] = vocab.decode(prompt.cpu())
    result["sample"] = vocab.decode(generated[prompt_length:].cpu())
    return result
