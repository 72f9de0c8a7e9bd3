"""The emulator poisons every kernel's static __shared__ memory before each block (NaN in every
float type), so a read before the block's own write shows. For a template kernel that rests on
emulator/shared_memory.ld gathering the function-local statics of namespace seqops::cuda into
the poisoned section: check that each one in the op library landed there, and that each belongs
to a kernel (a host function's static there would be poisoned too)."""
import re
import shutil
import subprocess

import pytest

from support import emulator

pytestmark = pytest.mark.skipif(not emulator.AVAILABLE or shutil.which("readelf") is None,
                                reason=f"{emulator.WHY}, or no readelf")

KERNEL_STATIC = re.compile(r"^seqops::cuda::(?:\w+::)*\w+_kernel[<(].*::\w+$")


def section_index(name: str) -> int:
    out = subprocess.run(["readelf", "-SW", str(emulator.LIBRARY)], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        match = re.match(r"\s*\[\s*(\d+)\]\s+(\S+)", line)
        if match and match.group(2) == name:
            return int(match.group(1))
    raise AssertionError(f"no section {name} in {emulator.LIBRARY}")


def seqops_cuda_statics():
    """(demangled name, section index) of every function-local static of namespace seqops::cuda."""
    out = subprocess.run(["readelf", "-sW", str(emulator.LIBRARY)], capture_output=True, text=True, check=True).stdout
    rows = [line.split() for line in out.splitlines()]
    rows = [r for r in rows if len(r) >= 8 and r[3] == "OBJECT" and r[7].startswith("_ZZN6seqops4cuda")]
    names = subprocess.run(["c++filt"], input="\n".join(r[7] for r in rows), capture_output=True,
                           text=True, check=True).stdout.splitlines()
    return [(name, int(r[6])) for name, r in zip(names, rows)]


def test_every_kernel_shared_object_is_in_the_poisoned_section():
    shared = section_index("seqops_emu_shared")
    statics = seqops_cuda_statics()
    assert len(statics) >= 20, statics  # the pooling and row kernels' reducers, tiles and scratch
    misplaced = [name for name, index in statics if index != shared]
    assert not misplaced, f"kernel shared memory outside the poisoned section: {misplaced[:5]}"
    not_kernels = [name for name, _ in statics if not KERNEL_STATIC.match(name)]
    assert not not_kernels, f"statics of seqops::cuda that belong to no kernel (they would be poisoned): {not_kernels[:5]}"
