"""Decode-shaped attention (one query, a long cache): seqops against SDPA and the read-bandwidth
ceiling.

    OMP_NUM_THREADS=2 python benchmarks/bench_attention_decode.py [--quick] [--lengths 4096,16384]

B 4, H 8, d 64, float32, Lq 1 against Lk cached keys. A decode step is memory-bound: it reads
every cached key and value once (2 B H Lk d 4 bytes), so the rate is given in GB/s of that read
and against the machine's read bandwidth (measured in the
same run: torch.sum over at least 256 MiB, a streaming read). Same inputs, interleaved, median:
  seqops cache      seqops.ops.attention on a KVCache's filled prefix (views, read in place)
  seqops contig     seqops.ops.attention on contiguous keys / values
  sdpa contig       F.scaled_dot_product_attention on contiguous keys / values
  sdpa cache        SDPA on the cache's views
  step: cache       a whole decoding step of the cache way: KVCache.update of the new token, then
                    seqops attention over the views
  step: cat         the torch.cat way (a new contiguous K, V every step), then SDPA
--quick: Lk 4096. The lengths start where K + V (64 MiB at 4096) outgrow the last-level cache:
below that a call's speed depends on what the previous call left cached (the order of the rows).
"""
import argparse

import torch
import torch.nn.functional as F

from seqops.bench.timing import compare, markdown_table, run_script
from seqops.nn import KVCache
from seqops.ops import attention


def read_bandwidth(nbytes):
    """GB/s of torch.sum over nbytes of float32 (a read-once streaming pass, multi-threaded): the
    ceiling a read-once kernel can approach."""
    x = torch.ones(nbytes // 4)
    t = compare({"sum": lambda: x.sum()}, repeats=9, warmup=2)["sum"]
    return nbytes / t / 1e9


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--lengths", default="4096,16384")
    parser.add_argument("--repeats", type=int, default=25)
    args = parser.parse_args()
    lengths = [4096] if args.quick else [int(n) for n in args.lengths.split(",")]
    B, H, d = 4, 8, 64
    torch.manual_seed(0)
    rows = []
    ceiling = read_bandwidth(max(2 * B * H * max(lengths) * d * 4, 1 << 28))
    for n in lengths:
        cache = KVCache(capacity=2 * n)  # room left: its prefix is a strided view
        k_all, v_all = torch.randn(B, H, n, d), torch.randn(B, H, n, d)
        cache.update(0, k_all[:, :, :1], v_all[:, :, :1])
        for t in range(1, n, 1024):  # fill it the way decoding does, in chunks for speed
            ck, cv = cache.update(0, k_all[:, :, t:t + 1024], v_all[:, :, t:t + 1024])
        assert not ck.is_contiguous()
        q = torch.randn(B, H, 1, d)
        kc, vc = ck.contiguous(), cv.contiguous()
        new_k, new_v = torch.randn(B, H, 1, d), torch.randn(B, H, 1, d)
        torch.testing.assert_close(attention(q, ck, cv), F.scaled_dot_product_attention(q, kc, vc))

        def step_cache():
            # Append one token, attend, then drop it again so every repeat sees n keys.
            k2, v2 = cache.update(0, new_k, new_v)
            attention(q, k2, v2)
            cache.lengths[0] -= 1

        def step_cat():
            F.scaled_dot_product_attention(q, torch.cat([kc, new_k], 2), torch.cat([vc, new_v], 2))

        fns = {
            "seqops cache": lambda: attention(q, ck, cv),
            "seqops contig": lambda: attention(q, kc, vc),
            "sdpa contig": lambda: F.scaled_dot_product_attention(q, kc, vc),
            "sdpa cache": lambda: F.scaled_dot_product_attention(q, ck, cv),
            "step: cache": step_cache,
            "step: cat": step_cat,
        }
        with torch.no_grad():
            times = compare(fns, repeats=args.repeats, warmup=3)
        read = 2 * B * H * n * d * 4
        for name, t in times.items():
            rate = read / t / 1e9
            rows.append([str(n), name, f"{t * 1e6:.0f}", f"{rate:.1f}", f"{rate / ceiling:.2f}",
                         f"{times['sdpa contig'] / t:.2f}"])
    print(f"decode: B {B}, H {H}, d {d}, Lq 1, float32, {torch.get_num_threads()} threads; "
          f"read bandwidth (torch.sum) {ceiling:.1f} GB/s")
    print(markdown_table(["Lk", "method", "us", "GB/s of K+V", "x ceiling", "x sdpa contig"], rows))


if __name__ == "__main__":
    run_script(main)
