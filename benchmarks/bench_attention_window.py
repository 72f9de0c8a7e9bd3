"""Sliding-window attention: seqops' window against full attention and the other ways to get it.

    OMP_NUM_THREADS=2 python benchmarks/bench_attention_window.py [--quick] [--n 16384] [--window 256]

Causal self-attention, float32, B 1, H 8, d 64, each query seeing itself and the `window` keys
before it (window_left = window, window_right = 0). Same inputs, interleaved, median of repeats:
  seqops full     seqops.ops.attention, causal, no window (the n^2 cost)
  seqops window   the same with window_left: key tiles outside the band are skipped (cost ~ n w)
  sdpa causal     F.scaled_dot_product_attention(is_causal=True), no window (full cost)
  sdpa mask       SDPA with the window as a materialized (n, n) bool mask
  flex            torch.compile(flex_attention) with a sliding-window block mask (block-sparse;
                  forward only: FlexAttention has no CPU backward)
Forward, and forward + backward (gradients of q, k, v). --quick: n 4096.
"""
import argparse

import torch
import torch.nn.functional as F

from seqops.bench.families import flex_masked
from seqops.bench.timing import markdown_table, pass_rows, run_script
from seqops.ops import attention


def band_mask(n, window):
    i = torch.arange(n)[:, None]
    j = torch.arange(n)[None, :]
    return (j <= i) & (j >= i - window)


def flex_window(n, window):
    def mask_mod(b, h, q_idx, kv_idx):
        return (kv_idx <= q_idx) & (kv_idx >= q_idx - window)
    return flex_masked(mask_mod, n)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=16384)
    parser.add_argument("--window", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    n = 4096 if args.quick else args.n
    w = args.window
    B, H, d = 1, 8, 64
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, n, d, requires_grad=True) for _ in range(3))
    mask = band_mask(n, w)
    fns = {
        "seqops full": lambda q, k, v: attention(q, k, v, causal=True),
        "seqops window": lambda q, k, v: attention(q, k, v, causal=True, window_left=w),
        "sdpa causal": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        "sdpa mask": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
    }
    flex = flex_window(n, w)
    if flex is not None:
        fns["flex"] = flex
    qd, kd, vd = q.detach(), k.detach(), v.detach()
    with torch.no_grad():
        want = attention(qd, kd, vd, causal=True, window_left=w)
        for name, fn in fns.items():
            if "full" not in name and "causal" not in name:
                torch.testing.assert_close(fn(qd, kd, vd), want, atol=1e-4, rtol=1e-4, msg=lambda m: f"{name}: {m}")

    rows = pass_rows(fns, lambda name: (q, k, v), "seqops window", args.repeats, forward_only=["flex"])
    print(f"causal sliding window {w}, n {n}, B {B}, H {H}, d {d}, float32, "
          f"{torch.get_num_threads()} threads")
    print(markdown_table(["pass", "method", "ms", "x seqops window"], rows))


if __name__ == "__main__":
    run_script(main)
