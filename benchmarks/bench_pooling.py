"""Pooling ops (seq_pool, lama_pool, masked_pool) against the eager PyTorch way, in one run.

    OMP_NUM_THREADS=2 python benchmarks/bench_pooling.py [--quick] [--device cpu|cuda] [--dtype float32]

Effective bandwidth counts one read of x (the minimum traffic). Each case also times `x.sum(1)`
(one read of x by PyTorch) in the same interleaved run, as the machine's read ceiling right now:
"fwd / read" near 1.0 means the op runs at memory speed.
"""
import argparse
import sys

import torch

import seqops  # noqa: E402
from seqops import reference  # noqa: E402
from seqops.bench.timing import compare, markdown_table  # noqa: E402


def eager_seq_pool(x, w):
    """CCT's attention_pool: softmax over the sequence of a 1-unit linear, then bmm."""
    a = torch.softmax(x @ w.t(), dim=1)                    # (B, L, 1)
    return torch.matmul(a.transpose(-1, -2), x).squeeze(-2)


def fwd_bwd(fn, *inputs):
    def run():
        out = fn(*inputs)
        if isinstance(out, tuple):
            out = out[0]
        out.backward(torch.ones_like(out))
    return run


def bench_seq_pool(shape, dtype, device, repeats):
    B, L, D = shape
    x = torch.randn(B, L, D, dtype=dtype, device=device)
    w = torch.randn(1, D, dtype=dtype, device=device) * 0.02
    with torch.no_grad():
        fwd = compare({"seqops": lambda: seqops.seq_pool(x, w), "eager": lambda: eager_seq_pool(x, w),
                       "read": lambda: x.sum(1)}, device, repeats)
    xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
    both = compare({"seqops": fwd_bwd(seqops.seq_pool, xg, wg), "eager": fwd_bwd(eager_seq_pool, xg, wg)},
                   device, max(3, repeats // 3))
    return fwd, both, x.numel() * x.element_size()


def eager_lama(x, p_dh, q_dh):
    """The original LAMA forward (weights) followed by the LAMAEncoder pooling bmm."""
    with torch.no_grad():
        weights = reference.lama_original(x, p_dh, q_dh)
    return weights @ x


def bench_lama(shape, heads, dtype, device, repeats):
    B, L, D = shape
    x = torch.randn(B, L, D, dtype=dtype, device=device)
    p = torch.randn(D, heads, dtype=dtype, device=device) / heads ** 0.5
    q = torch.randn(D, heads, dtype=dtype, device=device) / heads ** 0.5
    with torch.no_grad():
        fwd = compare({"seqops": lambda: seqops.lama_pool(x, p.t(), q.t()),
                       "eager": lambda: eager_lama(x, p, q), "read": lambda: x.sum(1)}, device, repeats)
    xg, pg, qg = (t.clone().requires_grad_() for t in (x, p.t().contiguous(), q.t().contiguous()))
    # The original's backward always fails; the eager baseline with gradients is our reference.
    both = compare({"seqops": fwd_bwd(seqops.lama_pool, xg, pg, qg),
                    "eager": fwd_bwd(reference.lama_pool, xg, pg, qg)}, device, max(3, repeats // 3))
    return fwd, both, x.numel() * x.element_size()


def bench_masked_mean(shape, dtype, device, repeats):
    B, L, D = shape
    x = torch.randn(B, L, D, dtype=dtype, device=device)
    mask = torch.rand(B, L, device=device) > 0.1
    with torch.no_grad():
        fwd = compare({"seqops": lambda: seqops.masked_pool(x, mask, "mean"),
                       "eager": lambda: reference.masked_pool(x, mask, "mean"), "read": lambda: x.sum(1)},
                      device, repeats)
    return fwd, None, x.numel() * x.element_size()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small shapes, few repeats (about a minute)")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        sys.exit("--device cuda: no CUDA device is available")
    dtype = getattr(torch, args.dtype)
    repeats = 5 if args.quick else 15
    big = [(16, 1024, 768), (128, 256, 256)] if args.quick else [(64, 1024, 768), (128, 256, 256)]
    if args.device == "cuda":
        big.append((64, 4096, 768) if not args.quick else (32, 2048, 768))

    cases = []
    for shape in big:
        cases.append(("seq_pool", shape, *bench_seq_pool(shape, dtype, args.device, repeats)))
    lama_shape = (16, 512, 768) if args.quick else (64, 512, 768)
    cases.append(("lama_pool H8", lama_shape, *bench_lama(lama_shape, 8, dtype, args.device, repeats)))
    cases.append(("masked_pool mean", big[0], *bench_masked_mean(big[0], dtype, args.device, repeats)))

    rows = []
    for name, shape, fwd, both, nbytes in cases:
        row = [name, "x".join(map(str, shape)), f"{fwd['seqops'] * 1e3:.2f}", f"{fwd['eager'] * 1e3:.2f}",
               f"{fwd['eager'] / fwd['seqops']:.2f}x", f"{nbytes / fwd['seqops'] / 1e9:.1f}",
               f"{nbytes / fwd['read'] / 1e9:.1f}", f"{fwd['seqops'] / fwd['read']:.2f}"]
        if both is None:
            row += ["-", "-", "-"]
        else:
            row += [f"{both['seqops'] * 1e3:.2f}", f"{both['eager'] * 1e3:.2f}", f"{both['eager'] / both['seqops']:.2f}x"]
        rows.append(row)
    threads = torch.get_num_threads()
    print(f"device={args.device} dtype={args.dtype} threads={threads} cpu_isa={torch.ops.seqops.cpu_isa()} "
          f"torch={torch.__version__}")
    print(markdown_table(["op", "B x L x D", "fwd ms", "eager fwd ms", "fwd speed-up", "fwd GB/s (x once)",
                          "x.sum GB/s", "fwd / read",
                          "fwd+bwd ms", "eager fwd+bwd ms", "fwd+bwd speed-up"], rows))


if __name__ == "__main__":
    main()
