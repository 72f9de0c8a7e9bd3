"""Long sequences, lean memory: seqops' streamed Linformer against linformer-pytorch (issue 19).

    OMP_NUM_THREADS=2 python benchmarks/bench_linformer_long.py [--quick]

CPU, float32, batch 1; linformer-pytorch 0.19.3 gets our weights (load_linformer_pytorch), so
both compute the same function. Every case runs in a fresh process: the peak is the process's
VmHWM above the model and the input, with glibc's mmap threshold pinned (MALLOC_MMAP_THRESHOLD_)
so that freed tensors leave the RSS; times are medians of a few calls in another fresh process
(without the pinned threshold, which slows every large allocation down).

1. linformer-pytorch's README model, Linformer(input_size=n, channels=64, dim_d=256, dim_k=64,
   dim_ff=128), forward in no_grad (eval), n = 262144 (--quick: 65536). Targets: peak above the
   input <= 0.15x the original's, >= 2.5x faster.
2. Training step (forward + backward of sum-like cotangent) of issue 4's configuration,
   Linformer(input_size=n, channels=512, dim_k=256, nhead=8, depth=2) in training mode, n = 65536
   (--quick: 16384): ours at C1 (streamed spans, recomputed in the backward) and C0 against the
   original at C0 and C1. Targets (ours C1 vs the original's best of C0 / C1 for each measure):
   peak <= 0.35x, >= 2x faster.
"""
import argparse
import os
import subprocess
import sys

CASE = r"""
import sys, time, torch
from seqops.nn import Linformer, load_linformer_pytorch
def hwm():
    for line in open('/proc/self/status'):
        if line.startswith('VmHWM'):
            return int(line.split()[1]) * 1024
kind, impl, n, level, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
torch.manual_seed(0)
if kind == 'readme':
    kwargs = dict(input_size=n, channels=64, dim_d=256, dim_k=64, dim_ff=128)
else:
    kwargs = dict(input_size=n, channels=512, dim_k=256, nhead=8, depth=2, checkpoint_level=level)
model = ours = Linformer(**kwargs)
if impl == 'linformer-pytorch':
    import linformer_pytorch
    model = linformer_pytorch.Linformer(**kwargs)
    load_linformer_pytorch(ours, model)
    del ours
x = torch.randn(1, n, kwargs['channels'], requires_grad=kind == 'training')
model.train(kind == 'training')
base = hwm()
times = []
for i in range(repeats):
    t0 = time.perf_counter()
    if kind == 'readme':
        with torch.no_grad():
            y = model(x)
    else:
        y = model(x)
        y.backward(torch.ones_like(y))
    times.append(time.perf_counter() - t0)
    if i == 0:
        peak = hwm() - base
    del y
print(peak, *times)
"""


def run_case(kind, impl, n, level, repeats, pinned):
    env = dict(os.environ)
    if pinned:
        env["MALLOC_MMAP_THRESHOLD_"] = "131072"
    else:
        env.pop("MALLOC_MMAP_THRESHOLD_", None)
    out = subprocess.run([sys.executable, "-c", CASE, kind, impl, str(n), level, str(repeats)], capture_output=True,
                         text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} {impl} {level} failed:\n{out.stderr[-2000:]}")
    values = out.stdout.split()
    return int(values[0]), sorted(float(v) for v in values[1:])


def measure(kind, impl, n, level, repeats):
    """(peak bytes of the first call, median seconds of the calls after the first)."""
    peak, _ = run_case(kind, impl, n, level, 1, pinned=True)
    _, times = run_case(kind, impl, n, level, repeats + 1, pinned=False)
    steady = times[:-1] if len(times) > 2 else times  # drop the slowest (the first call's page faults)
    return peak, steady[len(steady) // 2]


def verdict(ok):
    return "PASS" if ok else "FAIL"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="n = 65536 / 16384 and one timed call")
    args = parser.parse_args()
    repeats = 1 if args.quick else 3
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    import torch

    import seqops
    print(f"seqops {seqops.__version__}, torch {torch.__version__}, threads {os.environ.get('OMP_NUM_THREADS', '?')}, "
          f"cpu isa {torch.ops.seqops.cpu_isa()}")
    try:
        import linformer_pytorch  # noqa: F401
    except ImportError:
        sys.exit("linformer-pytorch is not installed: pip install linformer-pytorch==0.19.3 (the comparison needs it)")

    n = 65536 if args.quick else 262144
    ours = measure("readme", "seqops", n, "C0", repeats)
    orig = measure("readme", "linformer-pytorch", n, "C0", repeats)
    print(f"\n1. README model, forward (no_grad), n = {n}")
    print("| impl | peak MiB above input | ms |\n|---|---|---|")
    for name, (peak, t) in (("seqops", ours), ("linformer-pytorch", orig)):
        print(f"| {name} | {peak / 2 ** 20:.0f} | {t * 1e3:.0f} |")
    memory, speed = ours[0] / orig[0], orig[1] / ours[1]
    print(f"peak ratio {memory:.3f} (target <= 0.15: {verdict(memory <= 0.15)}), "
          f"speed-up {speed:.2f}x (target >= 2.5: {verdict(speed >= 2.5)})")

    n = 16384 if args.quick else 65536
    rows = {}
    for impl in ("seqops", "linformer-pytorch"):
        for level in ("C0", "C1"):
            rows[impl, level] = measure("training", impl, n, level, max(1, repeats - 1))
    print(f"\n2. Training step, Linformer(input_size=n, channels=512, dim_k=256, nhead=8, depth=2), n = {n}")
    print("| impl | level | peak MiB | ms |\n|---|---|---|---|")
    for (impl, level), (peak, t) in rows.items():
        print(f"| {impl} | {level} | {peak / 2 ** 20:.0f} | {t * 1e3:.0f} |")
    peak, t = rows["seqops", "C1"]
    best_peak = min(rows["linformer-pytorch", level][0] for level in ("C0", "C1"))
    best_time = min(rows["linformer-pytorch", level][1] for level in ("C0", "C1"))
    print(f"seqops C1 vs the original's best: peak ratio {peak / best_peak:.3f} (target <= 0.35: "
          f"{verdict(peak / best_peak <= 0.35)}), speed-up {best_time / t:.2f}x (target >= 2: "
          f"{verdict(best_time / t >= 2)})")


if __name__ == "__main__":
    main()
