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

from seqops.bench.compressive_steps import IMPLS, RATE, VOCAB, LabmlStep, SeqopsStep, steady_memories  # noqa: E402
from seqops.bench.timing import markdown_table  # noqa: E402

FULL = [(128, 4, 128), (128, 4, 512), (256, 4, 256), (256, 8, 512), (512, 8, 256), (512, 8, 512)]  # (d_model, heads, seq_len)
QUICK = [(128, 4, 128), (256, 4, 256)]


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
