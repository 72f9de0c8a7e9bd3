"""Every CUDA kernel runs under the emulator: the op catalog (forward and backward of every op,
score policy and compression mode; float32, and float16 for the tensor-core kernels) launches
each __global__ kernel of csrc/ at least once."""
import re

import pytest
import torch

from support import emulator
from support.op_cases import CASES, Sizes, input_grads, with_grads

KERNEL = re.compile(r"__global__\s+void\s+(?:__launch_bounds__\([^)]*\)\s+)?(\w+)\s*\(")


def kernel_names():
    names = set()
    for header in (emulator.ROOT / "csrc").rglob("*.cu*"):
        names |= set(KERNEL.findall(header.read_text()))
    return names


@pytest.mark.skipif(not emulator.AVAILABLE, reason=emulator.WHY)
def test_the_catalog_launches_every_kernel():
    kernels = kernel_names()
    assert len(kernels) >= 15, kernels
    torch.ops.seqops_emu.take_launches()
    with emulator.emulated(orders=("forward",)):
        for name, case in CASES.items():
            # one chunk, and several (the merge kernels); float16 at dim 16 takes attention's
            # tensor-core forward
            for lengths, dim, dtype in (((9, 5), 8, torch.float32), ((700, 300), 8, torch.float32),
                                        ((9, 5), 16, torch.float16)):
                sizes = Sizes(batch=2, length=lengths[0], length_q=lengths[1], dim=dim, heads=2, dtype=dtype)
                kw = with_grads(case, case.inputs(sizes, torch.Generator().manual_seed(0)))
                input_grads(case, kw, case.run(**kw))
    launched = set(torch.ops.seqops_emu.take_launches())
    assert kernels <= launched, f"never launched under the emulator: {sorted(kernels - launched)}"
