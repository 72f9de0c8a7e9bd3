"""The `seqops` command: info, bench (smoke sizes), argument errors, family coverage."""
import json
import os
import subprocess
import sys

import pytest

from seqops.cli import commands as cli
from seqops.bench import FAMILIES, FAMILY_OF_OP, plots
from seqops.ops import OP_NAMES


def run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "seqops", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, timeout=600)


def test_info_lists_every_op():
    out = run_cli("info")
    assert out.returncode == 0, out.stderr
    for op in OP_NAMES:
        assert f"seqops::{op}" in out.stdout


def test_every_op_family_has_a_benchmark():
    forward_ops = [op for op in OP_NAMES if not op.endswith("_backward")]
    for op in forward_ops:
        assert op in FAMILY_OF_OP, f"seqops::{op} has no benchmark family"
        assert FAMILY_OF_OP[op] in FAMILIES


def test_bench_smoke_writes_results_and_plots(tmp_path, capsys):
    assert cli.main(["bench", "--smoke", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "summary" in printed and "x vs seqops" in printed
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) == {"machine", "ceilings", "profile", "complete", "results"}
    assert results["complete"] and results["profile"] == "smoke"
    assert results["ceilings"]["gemm_gflops"] > 0 and results["ceilings"]["copy_gbs"] > 0
    families = {r["family"] for r in results["results"]}
    assert families == set(FAMILIES)
    for r in results["results"]:
        assert set(r) == {"family", "case", "length", "impl", "time_s", "peak_bytes", "work", "unit"}
        assert r["time_s"] > 0 and r["unit"] in ("GFLOP/s", "GB/s")
    assert any(r["impl"] == "seqops" for r in results["results"])
    if plots.have_matplotlib():
        assert len(list(tmp_path.glob("*.png"))) >= len(FAMILIES)


def test_bench_without_matplotlib_says_so(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(plots, "have_matplotlib", lambda: False)
    assert cli.main(["bench", "--smoke", "--ops", "pool", "--out", str(tmp_path)]) == 0
    assert "matplotlib is not installed: no plots" in capsys.readouterr().out
    assert (tmp_path / "results.json").exists() and not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize("args,message", [
    (["bench", "--ops", "nope"], "unknown op family nope"),
    (["bench", "--dtype", "int8"], "invalid choice: 'int8'"),
    (["bench", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["launch"], "invalid choice: 'launch'"),
])
def test_bad_arguments_are_one_line_errors(args, message):
    out = run_cli(*args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_cuda_request_without_a_gpu_is_explained():
    import torch
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    out = run_cli("bench", "--device", "cuda")
    assert out.returncode == 2 and "no CUDA device" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("model", ["compressive", "linformer"])
def test_train_runs_saves_and_samples(model, tmp_path, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("def f(x):\n    return x + 1\n" * 400)
    checkpoint = tmp_path / f"{model}.pt"
    status = cli.main(["train", "--model", model, "--data", str(corpus), "--steps", "3",
                       "--checkpoint", str(checkpoint)])
    assert status == 0
    printed = capsys.readouterr().out
    assert f"{model}: 3 steps" in printed and "validation loss" in printed and "sample:" in printed
    assert checkpoint.exists()


def test_train_missing_data_file_is_explained(tmp_path):
    out = run_cli("train", "--model", "linformer", "--data", str(tmp_path / "nope.txt"))
    assert out.returncode == 2 and "no such file" in out.stderr and "Traceback" not in out.stderr
