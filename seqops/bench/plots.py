"""PNG plots of `seqops bench` results: time and peak memory vs sequence length, log scale, one
line per implementation, one figure per benchmark case. matplotlib is optional."""
import os
import re
from collections import defaultdict
from typing import Dict, List, Optional


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def plot_results(rows: List[dict], out_dir: str) -> List[str]:
    """Writes <family>_<case>.png for every case measured at two or more lengths; returns paths."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_case: Dict[tuple, Dict[str, List[tuple]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        by_case[(r["family"], r["case"])][r["impl"]].append((r["length"], r["time_s"], r["peak_bytes"]))
    paths = []
    for (family, case), impls in by_case.items():
        if len({p[0] for pts in impls.values() for p in pts}) < 2:
            continue
        fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(11, 4))
        for impl, pts in impls.items():
            pts.sort()
            lengths = [p[0] for p in pts]
            ax_t.plot(lengths, [p[1] * 1e3 for p in pts], marker="o", label=impl)
            mem: List[Optional[float]] = [p[2] / 2 ** 20 if p[2] else None for p in pts]
            if any(m is not None for m in mem):
                ax_m.plot(lengths, [m if m is not None else float("nan") for m in mem], marker="o", label=impl)
        for ax, label in ((ax_t, "time per call (ms)"), (ax_m, "peak memory (MiB)")):
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xlabel("sequence length")
            ax.set_ylabel(label)
            ax.grid(True, which="both", alpha=0.3)
            if ax.lines:
                ax.legend()
        fig.suptitle(f"{family}: {case}")
        fig.tight_layout()
        path = os.path.join(out_dir, f"{family}_{_slug(case)}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
