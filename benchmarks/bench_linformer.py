"""seqops' Linformer against linformer-pytorch and a standard Transformer, in one run.

    OMP_NUM_THREADS=2 python benchmarks/bench_linformer.py [--quick]

CPU, float32, batch 1. Configuration: Linformer(input_size=n, channels=512, dim_k=256, nhead=8,
depth=2) with the original's other defaults (dim_ff=256, dropout 0.1 / 0.15, layerwise sharing).
1. forward + backward (training mode) at n = 4096: seqops, linformer-pytorch (when installed,
   weights loaded into ours so both compute the same function) and torch.nn.TransformerEncoder
   (SDPA attention, same width, depth, heads, feed-forward width, dropout, post-norm, GELU; with
   attention dropout, SDPA runs its math path on CPU);
2. peak memory of one forward + backward at checkpoint levels C0 / C1 / C2: a fresh process per
   case, VmHWM above the model, the input and a short warm-up (Linux). glibc's mmap threshold is
   pinned (MALLOC_MMAP_THRESHOLD_) so that freed tensors go back to the OS: by default glibc
   raises the threshold after the first large free and keeps later freed blocks in its heap, so
   the RSS high-water mark would count memory that checkpointing already released;
3. inference (no_grad, eval) speed-up of the Linformer over full attention at n = 1024..16384:
   the same model with full_attention=True (seqops' fused exact attention) and the SDPA encoder.
--quick: n = 2048 for tables 1 and 2, scaling at n = 1024..4096, fewer repeats (about a minute).
"""
import argparse
import os
import subprocess
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import seqops  # noqa: E402
from seqops.nn import Linformer, load_linformer_pytorch  # noqa: E402
from seqops.bench.timing import compare, markdown_table, run_script  # noqa: E402

CHANNELS, DIM_K, NHEAD, DEPTH, DIM_FF = 512, 256, 8, 2, 256


def seqops_model(n, level="C0", full_attention=False):
    return Linformer(input_size=n, channels=CHANNELS, dim_k=DIM_K, nhead=NHEAD, depth=DEPTH,
                     checkpoint_level=level, full_attention=full_attention)


def original_model(n, level="C0"):
    """linformer-pytorch's Linformer, or None when it is not installed."""
    try:
        import linformer_pytorch
    except ImportError:
        return None
    return linformer_pytorch.Linformer(input_size=n, channels=CHANNELS, dim_k=DIM_K, nhead=NHEAD, depth=DEPTH,
                                       checkpoint_level=level)


def sdpa_encoder():
    layer = nn.TransformerEncoderLayer(CHANNELS, NHEAD, DIM_FF, dropout=0.1, activation="gelu", batch_first=True)
    return nn.TransformerEncoder(layer, DEPTH, enable_nested_tensor=False)


def fwd_bwd(model, x):
    def run():
        out = model(x)
        out.backward(torch.ones_like(out))
    return run


def forward(model, x):
    def run():
        with torch.no_grad():
            model(x)
    return run


def ms(t):
    return f"{t * 1e3:.0f}"


def bench_training(n, repeats):
    torch.manual_seed(0)
    x = torch.randn(1, n, CHANNELS, requires_grad=True)
    ours = seqops_model(n)
    fns = {"seqops": fwd_bwd(ours, x), "sdpa_encoder": fwd_bwd(sdpa_encoder(), x)}
    original = original_model(n)
    if original is not None:
        load_linformer_pytorch(ours, original)
        fns["linformer_pytorch"] = fwd_bwd(original, x)
    return compare(fns, repeats=repeats, warmup=1)


PEAK_SNIPPET = """
import sys, torch
sys.path.insert(0, sys.argv[4])
from bench_linformer import original_model, seqops_model
def hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM'):
            return int(line.split()[1]) * 1024
n, impl, level = int(sys.argv[1]), sys.argv[2], sys.argv[3]
torch.manual_seed(0)
build = seqops_model if impl == 'seqops' else original_model
model, warm = build(n, level), build(256, level)
x, small = torch.randn(1, n, 512, requires_grad=True), torch.randn(1, 256, 512, requires_grad=True)
warm(small).sum().backward()  # loads kernels and allocator pools at a small size
base = hwm()
model(x).sum().backward()
print(hwm() - base)
"""


def peak_memory(n, impl, level):
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    out = subprocess.run([sys.executable, "-c", PEAK_SNIPPET, str(n), impl, level, here], capture_output=True,
                         text=True, check=True, env=env)
    return int(out.stdout.strip().splitlines()[-1])


def bench_scaling(n, repeats):
    torch.manual_seed(0)
    x = torch.randn(1, n, CHANNELS)
    models = {"linformer": seqops_model(n), "full_attention": seqops_model(n, full_attention=True),
              "sdpa_encoder": sdpa_encoder()}
    return compare({name: forward(m.eval(), x) for name, m in models.items()}, repeats=repeats, warmup=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="n = 2048, fewer repeats, scaling at n <= 4096")
    parser.add_argument("--n", type=int, help="sequence length of tables 1 and 2 (default 4096, quick 2048)")
    args = parser.parse_args()
    if args.n is None:
        args.n = 2048 if args.quick else 4096
    repeats = 2 if args.quick else 5
    lengths = [1024, 2048, 4096] if args.quick else [1024, 2048, 4096, 8192, 16384]
    print(f"seqops {seqops.__version__}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cpu isa {torch.ops.seqops.cpu_isa()}; float32, batch 1, channels {CHANNELS}, dim_k {DIM_K}, "
          f"nhead {NHEAD}, depth {DEPTH}, dim_ff {DIM_FF}")
    print("load average before:", open("/proc/loadavg").read().split()[:3], "(other processes skew timings)")
    has_original = original_model(16) is not None

    t = bench_training(args.n, repeats)
    rows = [["seqops Linformer", ms(t["seqops"]), "1.00"]]
    if has_original:
        rows.append(["linformer-pytorch", ms(t["linformer_pytorch"]), f"{t['linformer_pytorch'] / t['seqops']:.2f}"])
    rows.append(["nn.TransformerEncoder (SDPA)", ms(t["sdpa_encoder"]), f"{t['sdpa_encoder'] / t['seqops']:.2f}"])
    print(f"\nForward + backward, training mode, n = {args.n} (median ms; x = time / seqops time)")
    print(markdown_table(["model", "ms", "x"], rows))

    impls = ["seqops"] + (["linformer_pytorch"] if has_original else [])
    rows = []
    for impl in impls:
        peaks = [peak_memory(args.n, impl, level) for level in ("C0", "C1", "C2")]
        rows.append([impl] + [f"{p / 2 ** 20:.0f}" for p in peaks] + [f"{peaks[1] / peaks[0]:.2f}",
                                                                      f"{peaks[2] / peaks[0]:.2f}"])
    print(f"\nPeak memory of one forward + backward, n = {args.n} (MiB above model + input)")
    print(markdown_table(["implementation", "C0", "C1", "C2", "C1/C0", "C2/C0"], rows))

    rows = []
    for n in lengths:
        t = bench_scaling(n, repeats)
        rows.append([str(n), ms(t["linformer"]), ms(t["full_attention"]), ms(t["sdpa_encoder"]),
                     f"{t['full_attention'] / t['linformer']:.1f}", f"{t['sdpa_encoder'] / t['linformer']:.1f}"])
    print("\nInference (no_grad, eval), median ms; speed-up = full-attention time / Linformer time")
    print(markdown_table(["n", "Linformer", "full attention (seqops)", "SDPA encoder", "speed-up vs full",
                          "speed-up vs SDPA"], rows))


if __name__ == "__main__":
    run_script(main)
