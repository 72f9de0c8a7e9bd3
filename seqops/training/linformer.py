"""`seqops train --model linformer`: a causal character-level LinformerLM on a corpus that needs no
download (the standard library's sources by default)."""
from typing import Dict, Optional

import torch
import torch.nn.functional as F

from . import common
from ..nn import LinformerLM


@torch.no_grad()
def generate(model: LinformerLM, vocab: common.CharVocab, prompt: str, max_new_tokens: int,
             temperature: float, top_k: Optional[int], generator: torch.Generator) -> str:
    """Samples one character at a time from the last input_size characters (the model is causal,
    so shorter contexts are fine)."""
    model.eval()
    device = next(model.parameters()).device
    ids = vocab.encode(prompt).to(device)[None]
    for _ in range(max_new_tokens):
        logits = model(ids[:, -model.input_size:])[:, -1]
        ids = torch.cat([ids, common.sample_next(logits, temperature, top_k, generator).to(device)[:, None]], 1)
    return vocab.decode(ids[0])


def train(data_path: Optional[str] = None, steps: int = 300, device: str = "cpu", batch: int = 16,
          length: int = 128, channels: int = 128, depth: int = 2, heads: int = 4, dim_k: int = 32,
          lr: float = 2e-3, seed: int = 0, checkpoint: Optional[str] = "checkpoints/linformer.pt",
          prompt: str = "def ", sample_length: int = 200) -> Dict[str, object]:
    """Trains, prints progress, saves a checkpoint and a sample; returns the run's numbers."""
    torch.manual_seed(seed)
    text = common.load_corpus(data_path)
    vocab = common.CharVocab(text)
    train_ids, valid_ids = common.split(vocab.encode(text))
    config = dict(num_tokens=len(vocab), input_size=length, channels=channels, dim_k=dim_k,
                  dim_ff=4 * channels, nhead=heads, depth=depth, causal=True, dropout=0.0,
                  dropout_ff=0.0, dropout_tokens=0.0)
    model = LinformerLM(**config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)

    def loss_of(windows: torch.Tensor) -> torch.Tensor:
        windows = windows.to(device)
        logits = model(windows[:, :-1])
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1))

    def step(_: int) -> Dict[str, float]:
        model.train()
        loss = loss_of(common.random_windows(train_ids, batch, length, g))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        return {"loss": loss.item(), "tokens": batch * length}

    print(f"linformer LM: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, "
          f"vocabulary {len(vocab)}, {len(train_ids)} training characters")
    result = common.run_steps(steps, step, "linformer")
    model.eval()
    with torch.no_grad():
        result["valid_loss"] = loss_of(common.random_windows(valid_ids, batch, length, g)).item()
    if checkpoint:
        common.save_checkpoint(checkpoint, model, vocab, config)
        result["checkpoint"] = checkpoint
    result["sample"] = generate(model, vocab, prompt, sample_length, 0.8, 10, g)
    return result
