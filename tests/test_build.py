"""The build: import-time checks, the `seqops info` command, run-time ISA selection."""
import json
import os
import subprocess
import sys

import pytest
import torch

import seqops


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def test_build_info_matches_running_torch():
    info = seqops.build_info()
    assert info["torch_version"] == torch.__version__
    assert "DEFAULT" in info["cpu_isas"]


def test_info_command_lists_ops_and_devices():
    r = subprocess.run([sys.executable, "-m", "seqops", "info"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "torch (built against)" in r.stdout and torch.__version__ in r.stdout
    for op in seqops.ops.OP_NAMES:
        assert f"seqops::{op}" in r.stdout
    assert "CPU vector ISA in use" in r.stdout


def test_import_refuses_a_different_torch(tmp_path):
    # A copy of the package whose build info names another torch must not import.
    pkg = os.path.dirname(seqops.__file__)
    info = json.load(open(os.path.join(pkg, "_build_info.json")))
    info["torch_version"] = "0.0.1"
    code = (
        "import json, seqops._build as b, unittest.mock as m\n"
        f"info = {info!r}\n"
        "with m.patch.object(b, 'build_info', return_value=info):\n"
        "    b.load_library()\n"
    )
    r = run_python(code)
    assert r.returncode != 0
    assert "compiled against torch 0.0.1" in r.stderr and torch.__version__ in r.stderr


@pytest.mark.parametrize("capability", ["default", "avx2"])
def test_every_isa_variant_gives_the_same_results(capability):
    # ATEN_CPU_CAPABILITY selects a lower ISA, as it does for PyTorch's own kernels.
    code = (
        "import torch, seqops\n"
        "g = torch.Generator().manual_seed(0)\n"
        "x = torch.randn(2, 77, 45, generator=g, dtype=torch.float64)\n"
        "w = torch.randn(3, 45, generator=g, dtype=torch.float64)\n"
        "print(torch.ops.seqops.cpu_isa())\n"
        "want = seqops.reference.seq_pool(x, w)\n"
        "assert torch.allclose(seqops.seq_pool(x, w), want, atol=1e-12)\n"
        "xb = x.bfloat16(); assert torch.allclose(seqops.masked_pool(xb, None, 'sum').double(), xb.double().sum(1), rtol=1e-2)\n"
        "for act in ('tanh', 'relu', 'sigmoid'):\n"
        "    for xs in (x, x.float()):\n"
        "        got = seqops.lama_pool(xs, w.to(xs.dtype), w.to(xs.dtype), None, act)\n"
        "        ref = seqops.reference.lama_pool(x, w, w, None, act)\n"
        "        tol = 1e-10 if xs.dtype == torch.float64 else 1e-4\n"
        "        assert all(torch.allclose(a.double(), b, atol=tol, rtol=tol) for a, b in zip(got, ref)), act\n"
    )
    r = run_python(code, ATEN_CPU_CAPABILITY=capability)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == capability.upper()
