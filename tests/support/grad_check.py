"""The module tests' gradient rule: a module compared against a reference (the float64 oracle in
seqops.reference, a materialized path, or an original package) is compared on the gradient of its
input(s) and of EVERY named parameter, not on a hand-picked few.

    assert_gradients_match(module, out, want, {"x": x}, rtol=1e-10, atol=1e-10)

differentiates both outputs against one random cotangent. The tensors are the inputs given plus
``module.named_parameters()`` (all of them, so a new parameter is covered without editing the
test); ``ref_params`` maps a parameter name to the tensor that plays its part in the reference
graph (a state_dict copy, an original module's parameter), defaulting to the module's own
parameter (references that read the module's parameters). A gradient that does not reach a
tensor counts as zeros, so a detached parameter fails against a reference that uses it. Every
compared gradient must be nonzero in the reference (else the comparison proves nothing), except
the names in ``unused``, which must get no gradient on either side.
"""
from typing import Dict, Iterable, Mapping, Optional, Sequence, Union

import torch
from torch import Tensor

Outputs = Union[Tensor, Sequence[Tensor]]


def _as_tuple(out: Outputs):
    return (out,) if isinstance(out, Tensor) else tuple(out)


def _grads(outs, wrt, cotangents):
    pairs = [(o, g) for o, g in zip(outs, cotangents) if o.requires_grad]
    if not pairs:
        return [None] * len(wrt)
    return torch.autograd.grad([o for o, _ in pairs], wrt, [g for _, g in pairs], allow_unused=True,
                               retain_graph=True)


def assert_gradients_match(module: torch.nn.Module, out: Outputs, ref_out: Outputs,
                           inputs: Mapping[str, Tensor], ref_inputs: Optional[Mapping[str, Tensor]] = None,
                           ref_params: Optional[Mapping[str, Tensor]] = None, *, rtol: float, atol: float,
                           unused: Iterable[str] = (), seed: int = 1) -> Dict[str, Tensor]:
    """Asserts the gradients of `inputs` and of every named parameter of `module` through `out`
    equal those of their reference counterparts through `ref_out`; returns ours by name."""
    ref_inputs = inputs if ref_inputs is None else ref_inputs
    params = dict(module.named_parameters())
    ref_params = params if ref_params is None else ref_params
    missing = [n for n in params if n not in ref_params]
    assert not missing, f"no reference tensor for parameters {missing}"
    assert set(inputs) == set(ref_inputs) and not set(inputs) & set(params)
    unused = set(unused)
    assert unused <= set(inputs) | set(params), f"unknown names in unused: {unused - set(inputs) - set(params)}"
    names = list(inputs) + list(params)
    ours = [inputs[n] if n in inputs else params[n] for n in names]
    theirs = [ref_inputs[n] if n in ref_inputs else ref_params[n] for n in names]
    outs, ref_outs = _as_tuple(out), _as_tuple(ref_out)
    assert len(outs) == len(ref_outs)
    g = torch.Generator().manual_seed(seed)
    cotangents = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o) for o in outs]
    got = _grads(outs, ours, cotangents)
    want = _grads(ref_outs, theirs, [c.to(r) for c, r in zip(cotangents, ref_outs)])
    result = {}
    for name, t, a, b in zip(names, ours, got, want):
        a = torch.zeros_like(t) if a is None else a
        b = torch.zeros_like(a) if b is None else b
        if name in unused:
            assert not a.any() and not b.any(), f"{name}: expected no gradient"
        else:
            assert b.abs().sum() > 0, f"{name}: the reference gradient is zero; list it in unused or change the case"
            torch.testing.assert_close(a, b.to(a.dtype), rtol=rtol, atol=atol,
                                       msg=lambda s, name=name: f"gradient of {name}: {s}")
        result[name] = a
    return result
