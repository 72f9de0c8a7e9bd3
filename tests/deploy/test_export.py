"""torch.export.export with a dynamic sequence length for every public module, then the exported
program at other lengths (up to the longest a module accepts; the causal Linformer exports one
length per program, see ModuleCase.dynamic_export); and AOTInductor: compile and
package the exported program, load the package, run it. AOTInductor runs one module per family
by default and the whole catalog with --run-slow."""
import warnings

import pytest
import torch

from support.deployment import INDUCTOR_DEFAULT, length_dims, seeded_inputs
from support.public_modules import CASES, MAX_LEN, flat_outputs

RUN_LENGTHS = (9, 11, MAX_LEN)


def export(name: str):
    case = CASES[name]
    module = case.make()
    L = 10 if case.dynamic_export else MAX_LEN
    dims = length_dims(case) if case.dynamic_export else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch's pytree deprecation notices
        program = torch.export.export(module, seeded_inputs(case, L), dynamic_shapes=dims)
    return module, program


def check_runs_like_eager(name: str, module, run) -> None:
    for L in RUN_LENGTHS if CASES[name].dynamic_export else (MAX_LEN,):
        args = seeded_inputs(CASES[name], L)
        with torch.no_grad():
            got, want = flat_outputs(run(*args)), flat_outputs(module(*args))
        assert len(got) == len(want)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4, msg=lambda m: f"{name} at L={L}: {m}")


@pytest.mark.parametrize("name", list(CASES))
def test_export_with_dynamic_length(name):
    module, program = export(name)
    check_runs_like_eager(name, module, program.module())


@pytest.mark.parametrize("name", [n if n in INDUCTOR_DEFAULT else pytest.param(n, marks=pytest.mark.slow)
                                  for n in CASES])
def test_aot_inductor_package_loads_and_runs(name, tmp_path):
    module, program = export(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        package = torch._inductor.aoti_compile_and_package(program, package_path=str(tmp_path / f"{name}.pt2"))
    check_runs_like_eager(name, module, torch._inductor.aoti_load_package(package))
