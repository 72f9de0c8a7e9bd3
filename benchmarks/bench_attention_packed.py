"""Packed variable-length batches: seqops' cu_seqlens against padding the batch, and the other ways.

    OMP_NUM_THREADS=2 python benchmarks/bench_attention_packed.py [--quick] [--sequences 32]

A batch of causal self-attention sequences whose lengths follow a log-normal distribution (median
256, clipped to [16, 2048]: most short, a few long, as in instruction or document datasets),
float32, H 8, d 64. Same inputs, interleaved, median of repeats:
  seqops packed   one row of every token, cu_seqlens (cost ~ sum of L_i^2)
  seqops padded   (B, L_max) with a key-padding mask (cost ~ B L_max^2)
  sdpa padded     F.scaled_dot_product_attention on the padded batch, causal + padding bool mask
  sdpa loop       one SDPA call per sequence (no padding; a Python loop)
  flex packed     torch.compile(flex_attention) on the packed row with a document block mask
                  (block-sparse; forward only: FlexAttention has no CPU backward)
Forward, and forward + backward (gradients of q, k, v). --quick: 8 sequences.
"""
import argparse

import torch
import torch.nn.functional as F

from seqops.bench.families import flex_masked
from seqops.bench.timing import markdown_table, pass_rows, run_script
from seqops.nn import pack_sequences
from seqops.ops import attention


def draw_lengths(count, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.exp(torch.randn(count, generator=g) * 0.9 + torch.log(torch.tensor(256.0)))
    return lengths.round().clamp(16, 2048).long().tolist()


def padded(packed, cu, length):
    """(1, H, T, d) packed -> (B, H, length, d) zero-padded."""
    offsets = cu.tolist()
    out = packed.new_zeros(len(offsets) - 1, packed.shape[1], length, packed.shape[3])
    for b, (start, end) in enumerate(zip(offsets, offsets[1:])):
        out[b, :, :end - start] = packed[0, :, start:end]
    return out


def flex_documents(cu, total):
    """flex_attention with the packed row's causal document mask."""
    document = torch.repeat_interleave(torch.arange(len(cu) - 1), cu[1:] - cu[:-1])

    def mask_mod(b, h, q_idx, kv_idx):
        return (document[q_idx] == document[kv_idx]) & (kv_idx <= q_idx)
    return flex_masked(mask_mod, total)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sequences", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    lengths = draw_lengths(8 if args.quick else args.sequences)
    H, d = 8, 64
    torch.manual_seed(0)
    _, cu = pack_sequences([torch.empty(n) for n in lengths])
    T, L, B = sum(lengths), max(lengths), len(lengths)
    q, k, v = (torch.randn(1, H, T, d, requires_grad=True) for _ in range(3))
    qp, kp, vp = (padded(t.detach(), cu, L).requires_grad_(True) for t in (q, k, v))
    keep = torch.arange(L)[None, :] < torch.tensor(lengths)[:, None]  # (B, L)
    sdpa_mask = keep[:, None, None, :] & torch.ones(L, L, dtype=torch.bool).tril()
    offsets = cu.tolist()

    def sdpa_loop(q, k, v):
        return torch.cat([F.scaled_dot_product_attention(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], is_causal=True)
                          for s, e in zip(offsets, offsets[1:])], dim=2)

    packed_fns = {
        "seqops packed": lambda q, k, v: attention(q, k, v, causal=True, cu_seqlens=cu),
        "sdpa loop": sdpa_loop,
    }
    flex = flex_documents(cu, T)
    if flex is not None:
        packed_fns["flex packed"] = flex
    padded_fns = {
        "seqops padded": lambda q, k, v: attention(q, k, v, keep, causal=True),
        "sdpa padded": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, attn_mask=sdpa_mask),
    }
    with torch.no_grad():
        want = sdpa_loop(q.detach(), k.detach(), v.detach())
        for name, fn in packed_fns.items():
            torch.testing.assert_close(fn(q.detach(), k.detach(), v.detach()), want, atol=1e-4, rtol=1e-4,
                                       msg=lambda m: f"{name}: {m}")
        for name, fn in padded_fns.items():
            got = fn(qp.detach(), kp.detach(), vp.detach())
            for b, (s, e) in enumerate(zip(offsets, offsets[1:])):
                torch.testing.assert_close(got[b, :, :e - s], want[0, :, s:e], atol=1e-4, rtol=1e-4,
                                           msg=lambda m: f"{name}: {m}")

    rows = pass_rows({**packed_fns, **padded_fns}, lambda name: (qp, kp, vp) if name in padded_fns else (q, k, v),
                     "seqops packed", args.repeats, forward_only=["flex packed"])
    print(f"causal, {B} sequences of {min(lengths)}..{L} tokens (median {sorted(lengths)[B // 2]}, {T} in all; "
          f"padded {B} x {L} = {B * L}), H {H}, d {d}, float32, {torch.get_num_threads()} threads")
    print(markdown_table(["pass", "method", "ms", "x seqops packed"], rows))


if __name__ == "__main__":
    run_script(main)
