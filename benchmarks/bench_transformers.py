"""Hugging Face transformers' T5 with attn_implementation "seqops" vs "sdpa" and "eager".

    OMP_NUM_THREADS=2 python benchmarks/bench_transformers.py [--quick] [--lengths 512,2048,8192]
                                                              [--train-lengths 512,2048] [--no-memory]
                                                              [--profile CASE:N]

CPU, float32, batch 1, random init (no download), a t5-small-sized model: d_model 512, 8 heads,
d_kv 64, d_ff 2048, 6 layers, vocab 32128, 32 buckets / max distance 128
(seqops.bench.families.hf_t5). An attention mask of ones is passed, as a tokenizer would.
1. encoder forward (T5EncoderModel, eval, no_grad) at n = 512 / 2048 / 8192;
2. encoder-decoder training step (T5ForConditionalGeneration, train mode, dropout 0.1 as
   t5-small, forward + cross-entropy + backward; encoder over n tokens, decoder over n / 4
   labels) at n = 512 / 2048. Not at 8192: eager and sdpa would keep six (8, 8192, 8192) fp32
   tensors per encoder layer for the backward (~12 GiB per layer), more than this machine has.
Times: median of --repeats interleaved runs after one warm-up (seqops.bench.timing.compare).
Peak memory: a fresh process per case and implementation, VmHWM above the model, the inputs and
a warm-up at n = 128 (seqops.bench.timing.peak_memory), glibc's mmap threshold pinned so that
freed tensors go back to the OS (as benchmarks/bench_linformer.py does).
--profile encoder:2048 (or train:2048) prints torch.profiler's top operators of one call of
each implementation (--impls seqops,sdpa: of those) instead.
--quick: n = 512 / 2048, training step at 512, 2 repeats.
"""
import argparse
import json
import os
import subprocess
import sys

import torch

import seqops  # noqa: F401
from seqops.bench.families import have_transformers, hf_t5
from seqops.bench.timing import compare, markdown_table, run_script

IMPLS = ("seqops", "sdpa", "eager")
VOCAB = 32128


def case(kind: str, impl: str, n: int):
    """A zero-argument callable running one encoder forward (kind "encoder") or one training
    step (kind "train") of a fresh model at length n."""
    torch.manual_seed(0)
    ids = torch.randint(1, VOCAB, (1, n))
    mask = torch.ones(1, n, dtype=torch.long)
    if kind == "encoder":
        model = hf_t5("encoder", impl).eval()

        def run():
            with torch.no_grad():
                model(input_ids=ids, attention_mask=mask)
        return run
    model = hf_t5("seq2seq", impl).train()
    labels = torch.randint(1, VOCAB, (1, max(n // 4, 1)))

    def step():
        model.zero_grad(set_to_none=True)
        model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
    return step


PEAK_SNIPPET = """
import json, sys
sys.path.insert(0, sys.argv[4])
from bench_transformers import case
from seqops.bench.timing import peak_memory
kind, impl, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
case(kind, impl, 128)()  # loads kernels, fills the allocator's pools at a small size
run = case(kind, impl, n)
print(json.dumps(peak_memory(run)))
"""


def peak_in_fresh_process(kind: str, impl: str, n: int) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    out = subprocess.run([sys.executable, "-c", PEAK_SNIPPET, kind, impl, str(n), here], capture_output=True,
                         text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"peak memory of {kind} {impl} n={n} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def profile(kind: str, n: int, impls=IMPLS, rows: int = 12) -> None:
    from torch.profiler import ProfilerActivity, profile as torch_profile
    for impl in impls:
        run = case(kind, impl, n)
        run()
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            run()
        print(f"\n### {kind} n={n}, {impl}")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def ms(t: float) -> str:
    return f"{t * 1e3:.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--lengths", help="encoder-forward lengths (default 512,2048,8192)")
    parser.add_argument("--train-lengths", help="training-step lengths (default 512,2048)")
    parser.add_argument("--repeats", type=int, help="timed runs per case (default 3, quick 2)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory processes")
    parser.add_argument("--profile", metavar="CASE:N", help="profile one case (encoder:N or train:N) instead")
    parser.add_argument("--impls", default=",".join(IMPLS), help="implementations to profile (default all)")
    args = parser.parse_args()
    if not have_transformers():
        sys.exit("bench_transformers.py needs transformers>=5 (pip install seqops[hf])")
    if args.profile:
        kind, n = args.profile.split(":")
        profile(kind, int(n), [i for i in args.impls.split(",") if i])
        return
    parse = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    lengths = parse(args.lengths) if args.lengths else ([512, 2048] if args.quick else [512, 2048, 8192])
    train_lengths = parse(args.train_lengths) if args.train_lengths is not None else \
        ([512] if args.quick else [512, 2048])
    repeats = args.repeats or (2 if args.quick else 3)

    import transformers
    print(f"seqops {seqops.__version__}, transformers {transformers.__version__}, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, cpu isa {torch.ops.seqops.cpu_isa()}; float32, batch 1, "
          "t5-small-sized (d_model 512, 8 heads, d_kv 64, d_ff 2048, 6 layers)")
    print("load average before:", open("/proc/loadavg").read().split()[:3], "(other processes skew timings)")

    results = []
    for kind, ns in (("encoder", lengths), ("train", train_lengths)):
        for n in ns:
            fns = {impl: case(kind, impl, n) for impl in IMPLS}
            times = compare(fns, repeats=repeats, warmup=1)
            del fns
            peaks = {impl: None for impl in IMPLS}
            if not args.no_memory:
                peaks = {impl: peak_in_fresh_process(kind, impl, n) for impl in IMPLS}
            results.append((kind, n, times, peaks))
            line = ", ".join(f"{impl} {ms(times[impl])} ms" + (f" / {peaks[impl] / 2 ** 20:.0f} MiB"
                                                               if peaks[impl] is not None else "")
                             for impl in IMPLS)
            print(f"[{kind} n={n}] {line}", flush=True)

    header = ["case", "n", "seqops ms", "sdpa ms", "eager ms", "sdpa / seqops", "eager / seqops",
              "seqops MiB", "sdpa MiB", "eager MiB", "seqops / sdpa memory"]
    rows = []
    for kind, n, t, p in results:
        mib = lambda v: f"{v / 2 ** 20:.0f}" if v is not None else "-"  # noqa: E731
        ratio = f"{p['seqops'] / p['sdpa']:.3f}" if p["sdpa"] else "-"
        rows.append(["encoder forward" if kind == "encoder" else "training step", str(n), ms(t["seqops"]),
                     ms(t["sdpa"]), ms(t["eager"]), f"{t['sdpa'] / t['seqops']:.2f}",
                     f"{t['eager'] / t['seqops']:.2f}", mib(p["seqops"]), mib(p["sdpa"]), mib(p["eager"]), ratio])
    print("\nMedian ms per call; 'x / seqops' > 1 means seqops is faster; peak MiB above model + inputs")
    print(markdown_table(header, rows))


if __name__ == "__main__":
    run_script(main)
