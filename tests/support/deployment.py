"""Helpers shared by the deployment tests: run a catalog case at a length, compare outputs and
gradients with eager, and say which argument dims carry the sequence length."""
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from .public_modules import MAX_LEN, ModuleCase, flat_outputs

LENGTHS = (9, 13, 17)  # the first traces, the others must reuse the graph
# The modules compiled with Inductor (and AOTInductor) in the default suite; the others are slow tests.
INDUCTOR_DEFAULT = ("SeqPool", "MHA+T5", "Linformer", "CompressiveTransformerLayer")


def seeded_inputs(case: ModuleCase, L: int) -> Tuple:
    torch.manual_seed(L)
    return case.inputs(L)


def float_leaves(args: Tuple) -> Tuple:
    """args with each floating tensor replaced by a fresh leaf that requires grad."""
    return tuple(a.detach().clone().requires_grad_() if isinstance(a, Tensor) and a.is_floating_point() else a
                 for a in args)


def outputs_and_grads(fn: Callable, module: nn.Module, args: Tuple) -> Tuple[List[Tensor], List[Optional[Tensor]]]:
    """fn(*args)'s float outputs, and the gradients of a fixed random projection of them with
    respect to the module's parameters and the floating inputs."""
    args = float_leaves(args)
    outs = [o for o in flat_outputs(fn(*args)) if o.is_floating_point()]
    wrt = list(module.parameters()) + [a for a in args if isinstance(a, Tensor) and a.requires_grad]
    g = torch.Generator().manual_seed(1)
    loss = sum((o * torch.randn(o.shape, generator=g, dtype=o.dtype)).sum() for o in outs)
    grads = torch.autograd.grad(loss, wrt, allow_unused=True)
    return [o.detach() for o in outs], list(grads)


def assert_same(got: Tuple[List, List], want: Tuple[List, List], what: str) -> None:
    for kind, g_list, w_list in (("output", got[0], want[0]), ("gradient", got[1], want[1])):
        assert len(g_list) == len(w_list), f"{what}: {len(g_list)} {kind}s vs {len(w_list)}"
        for i, (g, w) in enumerate(zip(g_list, w_list)):
            if w is None:
                assert g is None or not g.any(), f"{what}: {kind} {i} should be absent"
                continue
            torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-4, msg=lambda m: f"{what}: {kind} {i}: {m}")


def length_dims(case: ModuleCase) -> Tuple[Dict[int, object], ...]:
    """torch.export dynamic_shapes for the case's arguments: dim 1 of each tensor whose length
    follows L (as L or as 2 L) is dynamic, every other dim static."""
    L = torch.export.Dim("L", min=max(case.min_len, 2), max=MAX_LEN)
    small, large = case.inputs(9), case.inputs(11)
    shapes = []
    for a, b in zip(small, large):
        if not isinstance(a, Tensor) or a.dim() < 2 or a.shape[1] == b.shape[1]:
            shapes.append(None)
        else:
            per_step = (b.shape[1] - a.shape[1]) // 2
            shapes.append({1: L if per_step == 1 else per_step * L})
    return tuple(shapes)
