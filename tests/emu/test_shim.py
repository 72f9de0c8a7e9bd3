"""The emulator's shim on its own: tests/emu/shim_test.cpp (built by emulator/CMakeLists.txt as
seqops_emu_shim_test) checks the collectives' semantics and that each fault a GPU would hang on or
leave undefined is reported. One pytest case per C++ case; the shared-memory overflow must be
caught by the canary, or by AddressSanitizer in the sanitizer build (where it aborts)."""
import os
import subprocess

import pytest

from support import emulator

BUILD = os.environ.get("SEQOPS_EMU_BUILD", str(emulator.ROOT / "emu-build"))
BINARY = os.path.join(BUILD, "seqops_emu_shim_test")
SANITIZED = os.environ.get("SEQOPS_EMU_SANITIZED") == "1"

CASES = ["shuffles", "votes", "partial_mask_ok", "block_reduction_and_indices", "atomics", "dynamic_shared",
         "poisoned_shared_memory", "missing_barrier_is_order_dependent", "barrier_after_return",
         "divergent_barriers", "shuffle_partial_participation", "shuffle_mask_without_caller",
         "shuffle_reads_outside_mask", "shuffle_in_partial_warp", "shuffle_against_barrier", "too_much_shared"]

pytestmark = pytest.mark.skipif(not os.path.exists(BINARY) and not emulator.REQUIRED,
                                reason=f"no {BINARY} (build emulator/CMakeLists.txt)")


def run(case):
    env = dict(os.environ, ASAN_OPTIONS="detect_stack_use_after_return=0:detect_leaks=1")
    env.pop("LD_PRELOAD", None)  # the binary links its sanitizer runtime itself
    return subprocess.run([BINARY, case], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize("case", CASES)
def test_case(case):
    result = run(case)
    assert result.returncode == 0 and "FAIL" not in result.stdout and "PASS" in result.stdout, \
        result.stdout + result.stderr


def test_every_case_is_listed():
    source = open(os.path.join(os.path.dirname(__file__), "shim_test.cpp")).read()
    listed = {line.split('"')[1] for line in source.split("const std::map<std::string, void (*)()> cases = {")[1]
              .split("};")[0].splitlines() if '"' in line}
    assert listed == set(CASES) | {"shared_overflow"}


def test_shared_memory_overflow_is_caught():
    result = run("shared_overflow")
    if SANITIZED:
        assert result.returncode != 0 and "heap-buffer-overflow" in result.stderr, result.stderr[-2000:]
    else:
        assert result.returncode == 0 and "PASS" in result.stdout, result.stdout + result.stderr
