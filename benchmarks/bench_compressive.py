"""Compressive Transformer training step: seqops against labml_nn, same configuration.

    OMP_NUM_THREADS=2 python benchmarks/bench_compressive.py [--quick] [--batch 4] [--layers 2]

One step = forward over a segment of seq_len tokens attending over full memories
([c_mem; mem; x], c_mem_len = mem_len = seq_len, compression_rate 4), the memory update (FIFO,
compression of the seq_len evicted entries, truncation), LM cross entropy + attention-
reconstruction loss, backward. No optimizer step (both would run the same AdamW). labml's side is
labml_nn's modules plus its trainer's merge_compress_memory logic (experiment.py cannot be
imported without torchvision), sequence-first as labml runs it. d_ff = 2 d_model (labml's
default Configs: d_model 128, d_ff 256; --d-ff-mult changes it), vocab 256, dropout 0.

Each (implementation, configuration) runs in a fresh subprocess: the median step time over the
repeats, and the peak RSS above the RSS after setup (model, optimizer-free, steady-state memories
allocated). Before timing, both implementations run one step from the same weights and memories
and must give the same loss (the benchmark compares the same computation). Needs
`pip install --no-deps labml-nn labml`.
"""
import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

from seqops.bench.timing import markdown_table  # noqa: E402

VOCAB, RATE = 256, 4
FULL = [(128, 4, 128), (128, 4, 512), (256, 4, 256), (256, 8, 512), (512, 8, 256), (512, 8, 512)]  # (d_model, heads, seq_len)
QUICK = [(128, 4, 128), (256, 4, 256)]


def import_labml():
    from labml import tracker
    if not hasattr(tracker, "debug"):  # labml-nn 0.5.1 calls tracker.debug, labml 0.5.3 lacks it
        tracker.debug = lambda *args, **kwargs: None
    from labml_nn.transformers import compressive
    from labml_nn.transformers.feed_forward import FeedForward
    from labml_nn.transformers.utils import subsequent_mask
    from labml_nn.transformers.xl.relative_mha import RelativeMultiHeadAttention
    return compressive, FeedForward, RelativeMultiHeadAttention, subsequent_mask


class LabmlStep:
    """labml's AutoregressiveModel layout (src_embed, transformer, generator) and its trainer's
    step without the optimizer: model, merge_compress_memory, CE + reconstruction loss."""

    def __init__(self, d, heads, seq_len, layers, batch, d_ff):
        compressive, FeedForward, Attention, self.subsequent_mask = import_labml()
        layer = compressive.CompressiveTransformerLayer(
            d_model=d, self_attn=Attention(heads, d, 0.0), feed_forward=FeedForward(d, d_ff, 0.0),
            dropout_prob=0.0, compress=compressive.Conv1dCompression(RATE, d))
        self.model = nn.Module()
        self.model.src_embed = nn.Embedding(VOCAB, d)
        self.model.transformer = compressive.CompressiveTransformer(layer, layers)
        self.model.generator = nn.Linear(d, VOCAB)
        with torch.no_grad():  # labml zero-initializes the relative tables; make them count
            for name, p in self.model.named_parameters():
                if "pos" in name:
                    p.normal_(0, 0.02)
        self.loss = compressive.AttentionReconstructionLoss(self.model.transformer.layers)
        self.mem_len = self.c_mem_len = seq_len

    def set_memory(self, mem, c_mem):  # batch-first in, sequence-first kept
        self.mem = [m.transpose(0, 1).contiguous() for m in mem]
        self.c_mem = [c.transpose(0, 1).contiguous() for c in c_mem]

    def merge_compress_memory(self, new_mem):
        """labml experiment.py's Configs.merge_compress_memory, re-typed."""
        mem = [torch.cat((m, x), dim=0) for m, x in zip(self.mem, new_mem)]
        to_compress = []
        if len(mem[0]) > self.mem_len:
            n_old = (len(mem[0]) - self.mem_len + RATE - 1) // RATE * RATE
            to_compress = [m[:n_old] for m in mem]
            mem = [m[n_old:] for m in mem]
            new_c = [layer.compress(m) for layer, m in zip(self.model.transformer.layers, to_compress)]
            self.c_mem = [torch.cat((c, n), dim=0)[-self.c_mem_len:] for c, n in zip(self.c_mem, new_c)]
        self.mem = mem
        return to_compress

    def __call__(self, x, y):  # x, y (B, L) ids
        x, y = x.t(), y.t()
        L = x.shape[0]
        m_len = len(self.mem[0]) + len(self.c_mem[0])
        mask = self.subsequent_mask(L)
        mask = torch.cat((mask.new_ones(L, m_len, 1), mask), dim=1)
        out, new_mem = self.model.transformer(self.model.src_embed(x), self.mem, self.c_mem, mask)
        logits = self.model.generator(out)
        with torch.no_grad():
            to_compress = self.merge_compress_memory(new_mem)
        loss = F.cross_entropy(logits.reshape(-1, VOCAB), y.reshape(-1))
        if to_compress:
            loss = loss + self.loss(new_mem, to_compress)
        loss.backward()
        return loss.detach()


class SeqopsStep:
    """CompressiveTransformerLM.segment_loss + backward."""

    def __init__(self, d, heads, seq_len, layers, batch, d_ff, labml_state=None):
        from seqops.nn import CompressiveTransformerLM, load_labml_state_dict
        self.model = CompressiveTransformerLM(VOCAB, d, layers, heads, d_ff, mem_len=seq_len,
                                              c_mem_len=seq_len, compression_rate=RATE)
        if labml_state is not None:
            load_labml_state_dict(self.model, labml_state)
        self.memory = self.model.new_memory()

    def set_memory(self, mem, c_mem):
        self.memory.mem, self.memory.c_mem = list(mem), list(c_mem)

    def __call__(self, x, y):
        out = self.model.segment_loss(x, y, self.memory)
        out.loss.backward()
        return out.loss.detach()


IMPLS = {"seqops": SeqopsStep, "labml": LabmlStep}


def steady_memories(d, seq_len, layers, batch, seed=1):
    g = torch.Generator().manual_seed(seed)
    mem = [torch.randn(batch, seq_len, d, generator=g) for _ in range(layers)]
    c_mem = [torch.randn(batch, seq_len, d, generator=g) for _ in range(layers)]
    return mem, c_mem


def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def child(impl, d, heads, seq_len, layers, batch, d_ff, repeats):
    """Runs in a fresh process: prints {"ms": median step ms, "peak_mb": peak RSS above setup}."""
    torch.manual_seed(0)
    step = IMPLS[impl](d, heads, seq_len, layers, batch, d_ff)
    step.set_memory(*steady_memories(d, seq_len, layers, batch))
    data = torch.randint(0, VOCAB, (repeats + 2, batch, seq_len + 1))
    base = rss_mb()
    times = []
    for i in range(repeats + 1):  # step 0 warms up; the memories stay at their steady sizes
        t0 = time.perf_counter()
        step(data[i, :, :-1], data[i, :, 1:])
        times.append(time.perf_counter() - t0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base
    print(json.dumps({"ms": 1e3 * statistics.median(times[1:]), "peak_mb": peak}))


def run_child(impl, cfg, args, repeats):
    args = [sys.executable, os.path.abspath(__file__), "--child", impl, "--config", ",".join(map(str, cfg)),
            "--layers", str(args.layers), "--batch", str(args.batch), "--d-ff-mult", str(args.d_ff_mult),
            "--repeats", str(repeats)]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def same_loss_check(cfg, layers, batch, d_ff):
    """Both implementations, same weights and memories, one step: the losses must agree."""
    d, heads, seq_len = cfg
    torch.manual_seed(0)
    theirs = LabmlStep(d, heads, seq_len, layers, batch, d_ff)
    ours = SeqopsStep(d, heads, seq_len, layers, batch, d_ff, labml_state=theirs.model.state_dict())
    for s in (theirs, ours):
        s.set_memory(*steady_memories(d, seq_len, layers, batch))
    x = torch.randint(0, VOCAB, (batch, seq_len + 1))
    a, b = theirs(x[:, :-1], x[:, 1:]), ours(x[:, :-1], x[:, 1:])
    return a.item(), b.item()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="two small configurations, fewer repeats (~1 min)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--d-ff-mult", type=int, default=2, help="d_ff = this x d_model (labml's default: 2)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--child", choices=sorted(IMPLS))
    parser.add_argument("--config")
    args = parser.parse_args()
    if args.child:
        d, heads, seq_len = map(int, args.config.split(","))
        return child(args.child, d, heads, seq_len, args.layers, args.batch, args.d_ff_mult * d, args.repeats)
    configs = QUICK if args.quick else FULL
    repeats = args.repeats or (5 if args.quick else 7)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads "
          f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}), batch {args.batch}, "
          f"{args.layers} layers, compression_rate {RATE}, c_mem_len = mem_len = seq_len, "
          f"d_ff = {args.d_ff_mult} d_model\n")
    labml_loss, ours_loss = same_loss_check(configs[0], args.layers, args.batch, args.d_ff_mult * configs[0][0])
    print(f"same weights and memories, one step: labml loss {labml_loss:.6f}, seqops loss {ours_loss:.6f}\n")
    rows = []
    for cfg in configs:
        r = {impl: run_child(impl, cfg, args, repeats) for impl in ("labml", "seqops")}
        d, heads, seq_len = cfg
        rows.append([str(d), str(heads), str(seq_len), str(3 * seq_len),
                     f"{r['labml']['ms']:.0f}", f"{r['seqops']['ms']:.0f}",
                     f"{r['labml']['ms'] / r['seqops']['ms']:.2f}x",
                     f"{r['labml']['peak_mb']:.0f}", f"{r['seqops']['peak_mb']:.0f}"])
        print(f"done d_model={d} heads={heads} seq_len={seq_len}", file=sys.stderr)
    print(markdown_table(["d_model", "heads", "seq = mem = c_mem", "keys", "labml ms", "seqops ms",
                          "speed-up", "labml peak MB", "seqops peak MB"], rows))


if __name__ == "__main__":
    main()
