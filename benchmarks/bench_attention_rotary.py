"""Rotary positions: seqops' fused rotation against rotating q and k first.

    OMP_NUM_THREADS=2 python benchmarks/bench_attention_rotary.py [--quick] [--n 4096]

Causal self-attention, float32, B 1, H 8, d 64, every feature rotated (the LLaMA / GPT-NeoX half
layout). Same inputs, interleaved, median of repeats:
  seqops fused      seqops.ops.attention(rotary_dim=64): q and k rotated as the kernel loads them
  seqops plain      the same op without rotation (what the fused rotation costs on top)
  rotate + seqops   seqops.relative_position.rotate on q and k (the usual eager rotary), then
                    the plain op
  rotate + sdpa     the same rotation, then F.scaled_dot_product_attention(is_causal=True)
Forward, and forward + backward (gradients of q, k, v); and the decode step (one query against
n cached keys, query_offset n - 1), where the eager way rotates the new key only (the cache holds
rotated keys) but seqops rotates every cached key tile on load. --quick: n 2048.
"""
import argparse

import torch
import torch.nn.functional as F

from seqops.bench.timing import compare, forward_call, markdown_table, run_script, training_call
from seqops.ops import attention
from seqops.relative_position import rotate


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    n = 2048 if args.quick else args.n
    B, H, d = 1, 8, 64
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, n, d, requires_grad=True) for _ in range(3))
    positions = torch.arange(n)

    def rotated(x):
        return rotate(x, positions, d)

    fns = {
        "seqops fused": lambda q, k, v: attention(q, k, v, causal=True, rotary_dim=d),
        "seqops plain": lambda q, k, v: attention(q, k, v, causal=True),
        "rotate + seqops": lambda q, k, v: attention(rotated(q), rotated(k), v, causal=True),
        "rotate + sdpa": lambda q, k, v: F.scaled_dot_product_attention(rotated(q), rotated(k), v, is_causal=True),
    }
    qd, kd, vd = q.detach(), k.detach(), v.detach()
    with torch.no_grad():
        want = fns["seqops fused"](qd, kd, vd)
        for name in ("rotate + seqops", "rotate + sdpa"):
            torch.testing.assert_close(fns[name](qd, kd, vd), want, atol=1e-4, rtol=1e-4, msg=lambda m: f"{name}: {m}")

    rows = []
    for label, wrap in (("forward", forward_call), ("forward + backward", training_call)):
        times = compare({name: wrap(fn, q, k, v) for name, fn in fns.items()}, repeats=args.repeats, warmup=1)
        base = times["seqops fused"]
        for name, t in times.items():
            rows.append([label, name, f"{t * 1e3:.2f}", f"{t / base:.2f}"])

    # Decode: B 4 (several sequences), one new query against the n cached keys.
    Bd = 4
    cache_k, cache_v = torch.randn(Bd, H, n, d), torch.randn(Bd, H, n, d)
    cache_k_rotated = rotate(cache_k, positions, d)  # the eager cache stores rotated keys
    q1 = torch.randn(Bd, H, 1, d)
    last = torch.tensor([n - 1])
    decode = {
        "seqops fused": lambda: attention(q1, cache_k, cache_v, rotary_dim=d, query_offset=n - 1),
        "rotate + seqops": lambda: attention(rotate(q1, last, d), cache_k_rotated, cache_v),
        "rotate + sdpa": lambda: F.scaled_dot_product_attention(rotate(q1, last, d), cache_k_rotated, cache_v),
    }
    torch.testing.assert_close(decode["seqops fused"](), decode["rotate + sdpa"](), atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        times = compare(decode, repeats=args.repeats * 4, warmup=2)
    for name, t in times.items():
        rows.append([f"decode (B {Bd})", name, f"{t * 1e3:.2f}", f"{t / times['seqops fused']:.2f}"])
    print(f"causal rotary attention, n {n}, B {B}, H {H}, d {d}, float32, {torch.get_num_threads()} threads")
    print(markdown_table(["pass", "method", "ms", "x seqops fused"], rows))


if __name__ == "__main__":
    run_script(main)
