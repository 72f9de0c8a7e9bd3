"""The emulator's C++ test programs (built by emulator/CMakeLists.txt): shim_test.cpp checks the
shim's collectives and that each fault a GPU would hang on or leave undefined is reported;
tensor_core_test.cpp checks mma.sync and ldmatrix against a plain matrix product and the PTX
layouts, and the warp-tile helpers (warp_mma.cuh) against exact products. One pytest case per C++
case, read from each program's table; the shared-memory overflow must be caught by the canary,
or by AddressSanitizer in the sanitizer build (where it aborts)."""
import os
import pathlib
import subprocess

import pytest

from support import emulator

BUILD = os.environ.get("SEQOPS_EMU_BUILD", str(emulator.ROOT / "emu-build"))
SANITIZED = os.environ.get("SEQOPS_EMU_SANITIZED") == "1"
HERE = pathlib.Path(__file__).parent
RUN_ALONE = {"shared_overflow"}  # below: it must crash a sanitizer build


def table(program: str):
    source = (HERE / f"{program}.cpp").read_text()
    body = source.split("const case_runner::Cases cases = {")[1].split("};")[0]
    return [line.split('"')[1] for line in body.splitlines() if '"' in line]


PROGRAMS = ("shim_test", "tensor_core_test")
CASES = [(p, c) for p in PROGRAMS for c in table(p) if c not in RUN_ALONE]


def binary(program: str) -> str:
    return os.path.join(BUILD, f"seqops_emu_{program}")


pytestmark = pytest.mark.skipif(not os.path.exists(binary("shim_test")) and not emulator.REQUIRED,
                                reason=f"no {binary('shim_test')} (build emulator/CMakeLists.txt)")


def run(program, case):
    env = dict(os.environ, ASAN_OPTIONS="detect_stack_use_after_return=0:detect_leaks=1")
    env.pop("LD_PRELOAD", None)  # the binary links its sanitizer runtime itself
    return subprocess.run([binary(program), case], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("program,case", CASES, ids=[f"{p}-{c}" for p, c in CASES])
def test_case(program, case):
    result = run(program, case)
    assert result.returncode == 0 and "FAIL" not in result.stdout and "PASS" in result.stdout, \
        result.stdout + result.stderr


def test_the_tables_are_read():
    shim, tensor_core = table("shim_test"), table("tensor_core_test")
    assert len(shim) >= 17 and "shuffles" in shim and "shared_overflow" in shim
    assert len(tensor_core) >= 8 and {"mma_f16", "ldmatrix_layouts", "warp_tiles"} <= set(tensor_core)


def test_shared_memory_overflow_is_caught():
    result = run("shim_test", "shared_overflow")
    if SANITIZED:
        assert result.returncode != 0 and "heap-buffer-overflow" in result.stderr, result.stderr[-2000:]
    else:
        assert result.returncode == 0 and "PASS" in result.stdout, result.stdout + result.stderr
