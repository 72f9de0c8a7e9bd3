"""The emulator bites: each __syncthreads of the row kernels (csrc/common/cuda/row_kernels.cuh),
removed from a scratch copy of the header, makes tests/emu/barrier_driver.cpp fail (a wrong
result, thread orders that disagree, or a fault), while the header as it is passes."""
import pathlib
import re
import shutil
import subprocess

import pytest
from torch.utils import cpp_extension

from support import emulator

ROOT = emulator.ROOT
HEADER = ROOT / "csrc" / "common" / "cuda" / "row_kernels.cuh"
BARRIERS = [i for i, line in enumerate(HEADER.read_text().splitlines()) if re.fullmatch(r"\s*__syncthreads\(\);", line)]
HAVE_TOOLS = shutil.which("g++") is not None and pathlib.Path("/usr/include/boost/context/detail/fcontext.hpp").exists()

pytestmark = pytest.mark.skipif(not HAVE_TOOLS and not emulator.REQUIRED,
                                reason="needs g++ and boost.context (Debian: libboost-context-dev)")

FLAGS = ["-std=c++20", "-O1", "-DSEQOPS_EMULATOR", "-Wno-unknown-pragmas", "-I", str(ROOT / "emulator" / "include")]


@pytest.fixture(scope="module")
def runtime(tmp_path_factory) -> list:
    """The emulator's runtime, compiled once."""
    out = tmp_path_factory.mktemp("emu-runtime")
    objects = []
    for source in sorted((ROOT / "emulator" / "src").glob("*.cpp")):
        if source.name in ("context.cpp", "ops.cpp"):  # the torch-facing parts
            continue
        obj = out / (source.stem + ".o")
        subprocess.run(["g++", *FLAGS, "-c", str(source), "-o", str(obj)], check=True)
        objects.append(str(obj))
    return objects


def run_driver(header_text: str, workdir: pathlib.Path, objects: list) -> subprocess.CompletedProcess:
    scratch = workdir / "scratch" / "common" / "cuda"
    scratch.mkdir(parents=True)
    (scratch / "row_kernels.cuh").write_text(header_text)
    includes = ["-I", str(workdir / "scratch"), "-I", str(ROOT / "csrc")]
    for path in cpp_extension.include_paths():
        includes += ["-isystem", path]
    binary = workdir / "driver"
    subprocess.run(["g++", *FLAGS, *includes, str(ROOT / "tests" / "emu" / "barrier_driver.cpp"), *objects,
                    "-lboost_context", "-o", str(binary)], check=True)
    return subprocess.run([str(binary)], capture_output=True, text=True, timeout=300)


def test_the_kernels_as_they_are_pass(tmp_path, runtime):
    result = run_driver(HEADER.read_text(), tmp_path, runtime)
    assert result.returncode == 0 and "PASS" in result.stdout, result.stdout + result.stderr


def test_every_barrier_is_found():
    assert len(BARRIERS) >= 5, BARRIERS


@pytest.mark.parametrize("line", BARRIERS)
def test_removing_a_barrier_fails(tmp_path, runtime, line):
    lines = HEADER.read_text().splitlines()
    lines[line] = "  // (barrier removed by tests/emu/test_barriers.py)"
    result = run_driver("\n".join(lines) + "\n", tmp_path, runtime)
    assert result.returncode != 0 and "FAIL" in result.stdout, (
        f"removing the __syncthreads at row_kernels.cuh:{line + 1} went unnoticed: {result.stdout}")
