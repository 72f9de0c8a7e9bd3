"""seqops.ops.attention against the ways a user would compute the same attention, in one run.

    OMP_NUM_THREADS=2 python benchmarks/bench_attention.py [--quick] [--lengths 1024,2048,4096]

Baselines (same inputs, interleaved, median of repeats):
  sdpa         F.scaled_dot_product_attention, no bias (the floor a bias-free kernel aims at)
  sdpa+bias    SDPA with the T5 bias materialized as an (H, n, n) float mask
  eager        the originals' way: logits = q k^T * scale + bias[(H, n, n) gathered], softmax, @ v
  flex         torch.compile(flex_attention) with the T5 score_mod: table[h, bucket(kv - q)], the
               bucket computed in the score_mod (no n^2 tensor either)
  flex/table   the same with a cheaper score_mod reading a precomputed (H, 2n - 1) per-distance
               table (not the T5 score_mod itself; shown for comparison)
Relative keys: the eager Transformer-XL formulation (AC + rel-shifted BD) at the given lengths.
Peak memory: a fresh process per case, VmHWM above the inputs (Linux).
"""
import argparse
import json
import os
import subprocess
import sys

import torch
import torch.nn.functional as F

import seqops  # noqa: E402
from seqops.bench.families import T5_BUCKETS, eager_attention, flex_t5, t5_bias  # noqa: E402
from seqops.bench.timing import compare, markdown_table  # noqa: E402
from seqops.ops import attention  # noqa: E402

def rel_shift(x):
    """Transformer-XL's shift: (B, H, n, n) scores over R rows (distance n-1 .. 0) -> by key."""
    B, H, n, m = x.shape
    padded = F.pad(x, (1, 0))
    return padded.view(B, H, m + 1, n)[:, :, 1:].view(B, H, n, m)


def eager_txl(q, k, v, R, u, w):
    """(q + u) k^T + rel_shift((q + w) R^T), scaled, causal mask, softmax, @ v."""
    n = q.shape[2]
    ac = (q + u[None, :, None]) @ k.transpose(-1, -2)
    bd = rel_shift((q + w[None, :, None]) @ R.permute(1, 2, 0)[None])
    logits = (ac + bd) * q.shape[-1] ** -0.5
    causal = torch.ones(n, n, dtype=torch.bool).triu(1)
    return torch.softmax(logits.masked_fill(causal, float("-inf")), dim=-1) @ v


def fwd_bwd(fn, inputs):
    def run():
        out = fn(*inputs)
        out.backward(torch.ones_like(out))
    return run


def ms(t):
    return f"{t * 1e3:.1f}"


def bench_forward(n, repeats, flex):
    B, H, d = 1, 8, 64
    q, k, v = (torch.randn(B, H, n, d) for _ in range(3))
    table = torch.randn(H, T5_BUCKETS)
    fns = {
        "seqops": lambda: attention(q, k, v),
        "seqops_t5": lambda: attention(q, k, v, t5_table=table),
        "sdpa": lambda: F.scaled_dot_product_attention(q, k, v),
        "sdpa+bias_t5": lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=t5_bias(table, n)),
        "eager_t5": lambda: eager_attention(q, k, v, t5_bias(table, n)),
    }
    if flex:
        flex_fn, flex_table = flex_t5(table, n), flex_t5(table, n, per_distance=True)
        fns["flex_t5"] = lambda: flex_fn(q, k, v)
        fns["flex_table"] = lambda: flex_table(q, k, v)
    with torch.no_grad():
        return compare(fns, repeats=repeats, warmup=2)


def bench_backward(n, repeats):
    B, H, d = 1, 8, 64
    q, k, v = (torch.randn(B, H, n, d, requires_grad=True) for _ in range(3))
    table = torch.randn(H, T5_BUCKETS, requires_grad=True)
    return compare({
        "seqops_t5": fwd_bwd(lambda q, k, v, t: attention(q, k, v, t5_table=t), (q, k, v, table)),
        "eager_t5": fwd_bwd(lambda q, k, v, t: eager_attention(q, k, v, t5_bias(t, n)), (q, k, v, table)),
        "sdpa": fwd_bwd(F.scaled_dot_product_attention, (q, k, v)),
    }, repeats=repeats, warmup=1)


def bench_txl(n, repeats):
    B, H, d = 1, 8, 64
    q, k, v = (torch.randn(B, H, n, d) for _ in range(3))
    R, u, w = torch.randn(n, H, d), torch.randn(H, d), torch.randn(H, d)
    with torch.no_grad():
        return compare({
            "seqops": lambda: attention(q, k, v, causal=True, rel_keys=R, content_bias=u, position_bias=w),
            "eager": lambda: eager_txl(q, k, v, R, u, w),
        }, repeats=repeats, warmup=1)


PEAK_SNIPPET = """
import sys, torch, seqops
from seqops.ops import attention
import torch.nn.functional as F
def hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM'):
            return int(line.split()[1]) * 1024
n, which = int(sys.argv[1]), sys.argv[2]
q, k, v = (torch.randn(1, 8, n, 64) for _ in range(3))
table = torch.randn(8, 32)
with torch.no_grad():
    attention(q[:, :, :64], k[:, :, :64], v[:, :, :64], t5_table=table)  # load everything once
    F.scaled_dot_product_attention(q[:, :, :64], k[:, :, :64], v[:, :, :64])
    base = hwm()
    if which == 'seqops_t5':
        attention(q, k, v, t5_table=table)
    else:
        F.scaled_dot_product_attention(q, k, v)
print(hwm() - base)
"""


def peak_memory(n, which):
    out = subprocess.run([sys.executable, "-c", PEAK_SNIPPET, str(n), which], capture_output=True, text=True,
                         check=True, env=os.environ)
    return int(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="n = 1024, 2048 only, few repeats, no flex")
    parser.add_argument("--lengths", default="1024,2048,4096")
    parser.add_argument("--no-flex", action="store_true", help="skip torch.compile(flex_attention)")
    parser.add_argument("--peak-n", type=int, default=16384)
    parser.add_argument("--json", help="write the raw timings here")
    args = parser.parse_args()
    lengths = [1024, 2048] if args.quick else [int(x) for x in args.lengths.split(",")]
    repeats = 3 if args.quick else 7
    flex = not (args.quick or args.no_flex)
    print(f"seqops {seqops.__version__}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"cpu isa {torch.ops.seqops.cpu_isa()}; B=1 H=8 d=64 float32; times in ms")
    results = {}

    rows = []
    for n in lengths:
        t = bench_forward(n, repeats, flex)
        results[f"forward n={n}"] = t
        flops = 4 * 8 * n * n * 64
        rows.append([str(n), ms(t["sdpa"]), ms(t["seqops"]), f"{t['seqops'] / t['sdpa']:.2f}",
                     f"{flops / t['seqops'] / 1e9:.0f}", ms(t["seqops_t5"]), f"{t['seqops_t5'] / t['sdpa']:.2f}",
                     ms(t["eager_t5"]), f"{t['eager_t5'] / t['seqops_t5']:.1f}", ms(t["sdpa+bias_t5"]),
                     f"{t['sdpa+bias_t5'] / t['seqops_t5']:.1f}",
                     ms(t["flex_t5"]) if "flex_t5" in t else "-",
                     f"{t['flex_t5'] / t['seqops_t5']:.1f}" if "flex_t5" in t else "-",
                     f"{t['flex_table'] / t['seqops_t5']:.1f}" if "flex_table" in t else "-"])
    print("\nForward")
    print(markdown_table(["n", "sdpa", "seqops", "/sdpa", "GF/s", "seqops T5", "T5 /sdpa", "eager T5",
                          "eager/ours", "sdpa+bias", "sdpa+bias/ours", "flex T5", "flex/ours",
                          "flex/table / ours"], rows))

    rows = []
    for n in lengths:
        t = bench_backward(n, max(3, repeats // 2))
        results[f"fwd+bwd n={n}"] = t
        rows.append([str(n), ms(t["seqops_t5"]), ms(t["eager_t5"]), f"{t['eager_t5'] / t['seqops_t5']:.1f}",
                     ms(t["sdpa"])])
    print("\nForward + backward, learnable T5 table")
    print(markdown_table(["n", "seqops T5", "eager T5", "eager/ours", "sdpa (no bias)"], rows))

    rows = []
    for n in lengths[:2]:
        t = bench_txl(n, repeats)
        results[f"txl n={n}"] = t
        rows.append([str(n), ms(t["seqops"]), ms(t["eager"]), f"{t['eager'] / t['seqops']:.1f}"])
    print("\nTransformer-XL relative attention (causal, u/v biases), forward")
    print(markdown_table(["n", "seqops", "eager rel-shift", "eager/ours"], rows))

    if not args.quick:
        n = args.peak_n
        peaks = {w: peak_memory(n, w) for w in ("seqops_t5", "sdpa")}
        results[f"peak n={n}"] = peaks
        n2 = 8 * n * n * 4
        print(f"\nPeak memory above the inputs at n={n} (B=1 H=8 d=64 fp32; one (H, n, n) fp32 tensor = "
              f"{n2 / 2**30:.1f} GiB)")
        print(markdown_table(["impl", "peak MiB"], [[w, f"{p / 2**20:.0f}"] for w, p in peaks.items()]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
