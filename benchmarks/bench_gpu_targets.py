"""Issue 17's GPU targets in one run (bf16, B * H = 16, n = 4096), each as a ratio and PASS / FAIL:

    python benchmarks/bench_gpu_targets.py            # on a CUDA device (an H100 / H200)
    python benchmarks/bench_gpu_targets.py --dry-run  # the same code at toy sizes, any device

  forward, no score term       sdpa(flash backend) time / seqops time     >= 0.5   (d = 64, 128)
  forward, T5 table            flex(T5 score_mod) time / seqops time      >= 1.5
  fwd+bwd, learnable T5 table  flex time / seqops time                    >  1, gradients bitwise
                               equal over two runs (deterministic)
  seq_pool forward             bytes of x read per second / device-to-device copy bytes per
                               second (read + write), B * L * D >= 32M    >= 0.8

Timings are medians of interleaved repeats (seqops.bench.timing.compare). FlexAttention is
compiled once per case before timing. --json writes the raw numbers.
"""
import argparse
import json
import sys

import torch
import torch.nn.functional as F

import seqops
from seqops.bench.families import T5_BUCKETS, eager_attention, flex_t5, t5_bias
from seqops.bench.timing import compare, markdown_table
from seqops.ops import attention


def flash_sdpa(q, k, v):
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v)


def fwd_bwd(fn, inputs):
    def run():
        out = fn(*inputs)
        return torch.autograd.grad(out, inputs, torch.ones_like(out))
    return run


def attention_cases(args, device, dtype):
    B, H, n = (1, 2, 64) if args.dry_run else (2, 8, 4096)
    rows = []
    for d in (64, 128):
        q, k, v = (torch.randn(B, H, n, d, device=device, dtype=dtype) for _ in range(3))
        flops = 4 * B * H * n * n * d
        base = flash_sdpa if device == "cuda" else F.scaled_dot_product_attention
        with torch.no_grad():
            t = compare({"seqops": lambda: attention(q, k, v), "sdpa": lambda: base(q, k, v)},
                        device=device, repeats=args.repeats)
        rows.append(("forward, no score", d, t["seqops"], t["sdpa"], flops, t["sdpa"] / t["seqops"], 0.5))
    d = 64
    q, k, v = (torch.randn(B, H, n, d, device=device, dtype=dtype) for _ in range(3))
    table = torch.randn(H, T5_BUCKETS, device=device, dtype=dtype)
    flex = flex_t5(table, n)
    with torch.no_grad():
        t = compare({"seqops": lambda: attention(q, k, v, t5_table=table), "flex": lambda: flex(q, k, v)},
                    device=device, repeats=args.repeats)
    flops = 4 * B * H * n * n * d
    rows.append(("forward, T5 table", d, t["seqops"], t["flex"], flops, t["flex"] / t["seqops"], 1.5))

    inputs = [t_.clone().requires_grad_() for t_ in (q, k, v, table)]
    seqops_step = fwd_bwd(lambda q, k, v, tb: attention(q, k, v, t5_table=tb), inputs)
    if device == "cuda":
        flex_learn = flex_t5(inputs[3], n)  # the score_mod reads the leaf table: its gradient flows
        flex_step = fwd_bwd(lambda q, k, v, tb: flex_learn(q, k, v), inputs)
    else:  # FlexAttention has no CPU backward: the dry run times the eager T5 attention instead
        flex_step = fwd_bwd(lambda q, k, v, tb: eager_attention(q, k, v, t5_bias(tb, n)), inputs)
    t = compare({"seqops": seqops_step, "flex": flex_step}, device=device, repeats=args.repeats)
    first, second = seqops_step(), seqops_step()
    deterministic = all(torch.equal(a, b) for a, b in zip(first, second))
    # FLOPs of forward + backward by FlashAttention's convention: 1 + 2.5 forwards.
    rows.append(("fwd+bwd, learnable T5", d, t["seqops"], t["flex"], 3.5 * flops, t["flex"] / t["seqops"], 1.0))
    return rows, deterministic


def seq_pool_case(args, device, dtype):
    B, L, D = (2, 256, 64) if args.dry_run else (8, 16384, 256)  # 33.5M elements
    x = torch.randn(B, L, D, device=device, dtype=dtype)
    w = torch.randn(1, D, device=device, dtype=dtype) / D ** 0.5
    y = torch.empty_like(x)
    with torch.no_grad():
        t = compare({"seqops": lambda: seqops.seq_pool(x, w), "copy": lambda: y.copy_(x)},
                    device=device, repeats=args.repeats)
    nbytes = x.numel() * x.element_size()
    pool_bw, copy_bw = nbytes / t["seqops"], 2 * nbytes / t["copy"]
    return B * L * D, pool_bw, copy_bw


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dry-run", action="store_true", help="toy sizes on whatever device there is")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--json", help="write the raw numbers here")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.dry_run:
        sys.exit("no CUDA device: the targets are GPU targets (--dry-run runs the script's code at toy sizes)")
    dtype = torch.bfloat16
    if device == "cuda":
        print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, seqops {seqops.__version__}")

    rows, deterministic = attention_cases(args, device, dtype)
    elements, pool_bw, copy_bw = seq_pool_case(args, device, dtype)
    table = []
    for case, d, t_ours, t_base, flops, ratio, target in rows:
        ok = ratio > target if target == 1.0 else ratio >= target
        table.append([case, str(d), f"{t_ours * 1e3:.3f}", f"{t_base * 1e3:.3f}",
                      f"{flops / t_ours / 1e12:.1f}", f"{ratio:.2f}", f"{target}", "PASS" if ok else "FAIL"])
    bw_ratio = pool_bw / copy_bw
    table.append(["seq_pool forward", f"{elements / 1e6:.1f}M el", f"{pool_bw / 1e9:.0f} GB/s",
                  f"copy {copy_bw / 1e9:.0f} GB/s", "-", f"{bw_ratio:.2f}", "0.8",
                  "PASS" if bw_ratio >= 0.8 else "FAIL"])
    print(markdown_table(["case", "d", "seqops ms", "baseline ms", "seqops TFLOP/s", "ratio", "target", ""],
                         table))
    print(f"fwd+bwd with a learnable T5 table deterministic over two runs: {deterministic}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "deterministic": deterministic, "seq_pool": [elements, pool_bw, copy_bw]}, f)


if __name__ == "__main__":
    main()
