"""`seqops bench`: runs the families' cases, prints the table, writes results.json and plots."""
import json
import os
import platform
import time
from typing import Dict, List, Optional

import torch

from . import ceilings, plots
from .families import FAMILIES, Case
from .timing import compare, markdown_table, peak_memory

HEADER = ["family", "case", "n", "impl", "ms", "x vs seqops", "rate", "% ceiling", "peak MiB"]


def _first_call(impls: Dict[str, object]) -> Dict[str, object]:
    """Calls each impl once (warm-up, compilation); drops those that fail, saying why."""
    working = {}
    for name, fn in impls.items():
        try:
            fn()
            working[name] = fn
        except Exception as e:  # a baseline that cannot run here is reported, not fatal
            print(f"  {name}: skipped ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    return working


def _measure(case: Case, device: str, profile: str) -> List[dict]:
    impls = _first_call(case.impls)
    if not impls:
        return []
    full = profile == "full"
    times = compare(impls, device, repeats=7 if full else 3, warmup=1 if full else 0)
    return [{"family": case.family, "case": case.name, "length": case.length, "impl": name,
             "time_s": times[name], "peak_bytes": peak_memory(fn, device), "work": case.work,
             "unit": case.unit} for name, fn in impls.items()]


def _table_rows(rows: List[dict], ceiling: Dict[str, float]) -> List[List[str]]:
    seqops_time = {(r["family"], r["case"], r["length"]): r["time_s"] for r in rows if r["impl"] == "seqops"}
    out = []
    for r in rows:
        rate = r["work"] / r["time_s"] / 1e9
        top = ceiling["gemm_gflops"] if r["unit"] == "GFLOP/s" else ceiling["copy_gbs"]
        ref = seqops_time.get((r["family"], r["case"], r["length"]))
        out.append([r["family"], r["case"], str(r["length"]), r["impl"], f"{r['time_s'] * 1e3:.2f}",
                    f"{r['time_s'] / ref:.2f}" if ref else "-", f"{rate:.1f} {r['unit']}",
                    f"{100 * rate / top:.0f}%",
                    f"{r['peak_bytes'] / 2 ** 20:.1f}" if r["peak_bytes"] is not None else "-"])
    return out


def machine_facts(device: str, dtype: torch.dtype) -> dict:
    return {"torch": torch.__version__, "device": device,
            "device_name": torch.cuda.get_device_name() if device == "cuda" else platform.processor() or platform.machine(),
            "dtype": str(dtype).replace("torch.", ""), "threads": torch.get_num_threads(),
            "cpu_isa": torch.ops.seqops.cpu_isa()}


def run(families: List[str], device: str, dtype: torch.dtype, profile: str, out_dir: Optional[str]) -> int:
    """Returns the process exit status (130 when interrupted)."""
    start = time.perf_counter()
    facts = machine_facts(device, dtype)
    print("seqops bench: " + ", ".join(f"{k} {v}" for k, v in facts.items()))
    ceiling = ceilings.measure(device, dtype, profile != "full")
    print(f"ceilings now: GEMM {ceiling['gemm_gflops']:.0f} GFLOP/s, copy {ceiling['copy_gbs']:.1f} GB/s "
          "(read + write)\n")
    rows: List[dict] = []
    status = 0
    try:
        for family in families:
            for case in FAMILIES[family](device, dtype, profile):
                print(f"[{family}] {case.name}, n={case.length}")
                measured = _measure(case, device, profile)
                rows += measured
                for line in markdown_table(HEADER, _table_rows(measured, ceiling)).splitlines()[2:]:
                    print("  " + line)
    except KeyboardInterrupt:
        print("\ninterrupted: summary of the cases measured so far")
        status = 130
    print(f"\nsummary ({time.perf_counter() - start:.0f} s; 'x vs seqops' > 1 means seqops is faster)")
    print(markdown_table(HEADER, _table_rows(rows, ceiling)))
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        with open(os.path.join(out_dir, "results.json"), "w") as f:
            json.dump({"machine": facts, "ceilings": ceiling, "profile": profile, "complete": status == 0,
                       "results": rows}, f, indent=2)
        print(f"wrote {os.path.join(out_dir, 'results.json')}")
        if plots.have_matplotlib():
            for path in plots.plot_results(rows, out_dir):
                print(f"wrote {path}")
        else:
            print("matplotlib is not installed: no plots (pip install matplotlib)")
    return status
