"""torch.compile(fullgraph=True, dynamic=True) over every public module: no graph break, one graph
for every sequence length (a recompile is an error), and the outputs and gradients of eager.

The aot_eager backend (fake kernels, autograd, dynamic shapes: everything seqops provides) runs
over the whole catalog; Inductor, which adds its own code generation, runs one module per family
by default and the whole catalog with --run-slow."""
import pytest
import torch

from support.deployment import INDUCTOR_DEFAULT, LENGTHS, assert_same, outputs_and_grads, seeded_inputs
from support.public_modules import CASES

def check_compiled(name: str, backend: str) -> None:
    torch._dynamo.reset()
    case = CASES[name]
    module = case.make()
    compiled = torch.compile(module, fullgraph=True, dynamic=True, backend=backend)
    for i, L in enumerate(LENGTHS):
        args = seeded_inputs(case, L)
        with torch._dynamo.config.patch(error_on_recompile=i > 0):
            got = outputs_and_grads(compiled, module, args)
        assert_same(got, outputs_and_grads(module, module, args), f"{name} at L={L}")


@pytest.mark.parametrize("name", list(CASES))
def test_compile_dynamic_aot_eager(name):
    check_compiled(name, "aot_eager")


@pytest.mark.parametrize("name", [n if n in INDUCTOR_DEFAULT else pytest.param(n, marks=pytest.mark.slow)
                                  for n in CASES])
def test_compile_dynamic_inductor(name):
    check_compiled(name, "inductor")
