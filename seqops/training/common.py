"""What the training demos share: a corpus that needs no download, a character vocabulary, a
progress bar that degrades to plain prints, a Ctrl-C-safe step loop, sampling and checkpoints."""
import glob
import math
import os
import sysconfig
import time
from typing import Callable, Dict, Iterator, List, Optional

import torch
from torch import Tensor


def default_corpus_files() -> List[str]:
    """The Python standard library's own source files: always present, no download."""
    return sorted(glob.glob(os.path.join(sysconfig.get_paths()["stdlib"], "*.py")))


def load_corpus(path: Optional[str] = None, max_chars: int = 2_000_000) -> str:
    """The text of `path` (a file), or of the standard library's sources; at most max_chars."""
    if path is not None:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"--data: no such file: {path}")
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read(max_chars)
    parts, total = [], 0
    for name in default_corpus_files():
        with open(name, encoding="utf-8", errors="replace") as f:
            text = f.read()
        parts.append(text)
        total += len(text)
        if total >= max_chars:
            break
    return "".join(parts)[:max_chars]


class CharVocab:
    """Characters of a text, by frequency rank; unknown characters map to the rarest one."""

    def __init__(self, text: str) -> None:
        counts: Dict[str, int] = {}
        for ch in text:
            counts[ch] = counts.get(ch, 0) + 1
        self.chars = sorted(counts, key=lambda c: (-counts[c], c))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> Tensor:
        unknown = len(self.chars) - 1
        return torch.tensor([self.index.get(c, unknown) for c in text], dtype=torch.long)

    def decode(self, ids: Tensor) -> str:
        return "".join(self.chars[i] for i in ids.tolist())


def split(data: Tensor, valid_fraction: float = 0.05):
    cut = int(len(data) * (1 - valid_fraction))
    return data[:cut], data[cut:]


def random_windows(data: Tensor, batch: int, length: int, generator: torch.Generator) -> Tensor:
    """(batch, length + 1) token windows starting at random offsets (inputs and next tokens)."""
    starts = torch.randint(0, len(data) - length - 1, (batch,), generator=generator)
    return torch.stack([data[s:s + length + 1] for s in starts.tolist()])


def sample_next(logits: Tensor, temperature: float, top_k: Optional[int], generator: torch.Generator) -> Tensor:
    """(B, vocab) logits -> (B,) sampled ids (greedy when temperature == 0)."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logits.float(), -1), 1, generator=generator).squeeze(-1)


class Progress:
    """tqdm when it is installed, else a line every 10% of the steps."""

    def __init__(self, total: int, desc: str) -> None:
        self.total, self.count, self.desc = total, 0, desc
        try:
            from tqdm import tqdm
            self.bar = tqdm(total=total, desc=desc, dynamic_ncols=True)
        except ImportError:
            self.bar = None
        self.every = max(1, total // 10)

    def update(self, **stats: float) -> None:
        self.count += 1
        text = ", ".join(f"{k} {v:.3g}" for k, v in stats.items())
        if self.bar is not None:
            self.bar.set_postfix_str(text, refresh=False)
            self.bar.update(1)
        elif self.count % self.every == 0 or self.count == self.total:
            print(f"{self.desc}: step {self.count}/{self.total}, {text}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_steps(steps: int, step: Callable[[int], Dict[str, float]], desc: str) -> Dict[str, object]:
    """Calls step(i) for i < steps under a progress bar; Ctrl-C stops cleanly after the current
    step. Returns the steps done, the losses, tokens/s and whether it was interrupted."""
    bar = Progress(steps, desc)
    losses: List[float] = []
    tokens = 0
    start = time.perf_counter()
    interrupted = False
    try:
        for i in range(steps):
            stats = step(i)
            losses.append(stats["loss"])
            tokens += int(stats.pop("tokens"))
            bar.update(**stats, tok_s=tokens / (time.perf_counter() - start))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    return {"steps": len(losses), "losses": losses, "seconds": seconds,
            "tokens_per_s": tokens / seconds if seconds > 0 else math.nan, "interrupted": interrupted}


def save_checkpoint(path: str, model: torch.nn.Module, vocab: CharVocab, config: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    torch.save({"model": model.state_dict(), "chars": vocab.chars, "config": config}, path)


def summary(name: str, result: Dict[str, object]) -> Iterator[str]:
    """Human-readable lines about a finished (or interrupted) run."""
    losses = result["losses"]
    yield f"{name}: {result['steps']} steps in {result['seconds']:.0f} s ({result['tokens_per_s']:.0f} tokens/s)" + (
        ", interrupted" if result["interrupted"] else "")
    if losses:
        k = max(1, len(losses) // 10)
        first, last = sum(losses[:k]) / k, sum(losses[-k:]) / k
        yield f"loss: first {k} steps {first:.3f} -> last {k} steps {last:.3f}"
