"""torch.jit.script -> torch.jit.save -> load elsewhere, for every public module:
- in a fresh Python process that imports only torch and seqops;
- from C++ (tests/cpp/load_scripted.cpp, built by CMakeLists.txt as seqops_load_scripted) with
  LibTorch and the seqops library, no Python. CI builds it and sets SEQOPS_REQUIRE_CPP=1, so a
  missing binary fails there instead of skipping. C++ use is inference-only (the autograd
  formulas are registered from Python).
Both must reproduce the outputs the Python module computed."""
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from support.deployment import seeded_inputs
from support.public_modules import CASES, flat_outputs

REPO = Path(__file__).resolve().parents[2]
CPP_LOADER = Path(os.environ.get("SEQOPS_CPP_BUILD", REPO / "cmake-build")) / "seqops_load_scripted"

# Run by a fresh interpreter: loads every saved model and reports PASS / FAIL per model.
PYTHON_LOADER = """
import sys, torch, seqops
assert not any(m.startswith(("public_modules", "deployment", "conftest")) for m in sys.modules)
for name in sys.argv[2:]:
    try:
        model = torch.jit.load(f"{sys.argv[1]}/{name}.pt")
        args, expected = torch.load(f"{sys.argv[1]}/{name}.data.pt")
        out = model(*args)
        got = [out] if isinstance(out, torch.Tensor) else [t for o in out for t in ([o] if isinstance(o, torch.Tensor) else o)]
        assert len(got) == len(expected), f"{len(got)} outputs, expected {len(expected)}"
        for g, e in zip(got, expected):
            torch.testing.assert_close(g, e, atol=1e-5, rtol=1e-4)
        print("PASS", name)
    except Exception as e:
        print("FAIL", name, type(e).__name__, str(e).replace(chr(10), " ")[:300])
"""


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory) -> Path:
    """Every catalog module scripted and saved, with its arguments and Python's outputs."""
    directory = tmp_path_factory.mktemp("scripted")
    for name, case in CASES.items():
        module = case.make()
        args = seeded_inputs(case, 11)
        with torch.no_grad():
            expected = flat_outputs(module(*args))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation notice
            torch.jit.save(torch.jit.script(module), str(directory / f"{name}.pt"))
        torch.save((args, expected), directory / f"{name}.data.pt")
    return directory


def run_loader(command) -> dict:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    lines = [line.split(" ", 2) for line in result.stdout.splitlines() if line.startswith(("PASS", "FAIL"))]
    report = {parts[1]: " ".join(parts) for parts in lines}
    assert report, f"the loader reported nothing (exit {result.returncode}):\n{result.stdout}\n{result.stderr}"
    return report


@pytest.fixture(scope="module")
def python_report(saved_models) -> dict:
    return run_loader([sys.executable, "-c", PYTHON_LOADER, str(saved_models), *CASES])


@pytest.fixture(scope="module")
def cpp_report(saved_models) -> dict:
    if not CPP_LOADER.exists():
        if os.environ.get("SEQOPS_REQUIRE_CPP") == "1":
            pytest.fail(f"{CPP_LOADER} is missing: build it with CMake (see CMakeLists.txt)")
        pytest.skip(f"{CPP_LOADER} not built (cmake -S . -B cmake-build && cmake --build cmake-build)")
    return run_loader([str(CPP_LOADER), str(saved_models), *CASES])


@pytest.mark.parametrize("name", list(CASES))
def test_scripted_model_runs_in_a_fresh_python_process(python_report, name):
    assert python_report.get(name, "").startswith("PASS"), python_report.get(name, f"{name}: no report")


@pytest.mark.parametrize("name", list(CASES))
def test_scripted_model_runs_from_cpp_without_python(cpp_report, name):
    assert cpp_report.get(name, "").startswith("PASS"), cpp_report.get(name, f"{name}: no report")
