"""Every op's forward and backward is bitwise reproducible run to run, also under
torch.use_deterministic_algorithms(True), at sizes large enough for every parallel path (several
query / key tiles, threads over batch and heads); dropout is reproduced by torch.manual_seed."""
from dataclasses import replace

import pytest
import torch

import seqops
from support.op_cases import CASES, CATALOG_DEVICES, Sizes, input_grads, with_grads

LARGE = Sizes(batch=3, length=700, length_q=300, dim=40, heads=4)


def forward_backward(name: str, device: str = "cpu"):
    case = CASES[name]
    kw = with_grads(case, case.inputs(replace(LARGE, device=device), torch.Generator().manual_seed(0)))
    outs = case.run(**kw)
    cot = [torch.ones_like(o) * 0.5 + o.detach() * 0.01 for o in outs if o.requires_grad]
    _, grads = input_grads(case, kw, outs, cot)
    return [o.detach() for o in outs] + [g for g in grads if g is not None]


def assert_bitwise_equal(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", CATALOG_DEVICES)
@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("deterministic_mode", [False, True])
def test_forward_and_backward_are_bitwise_reproducible(device, name, deterministic_mode):
    previous = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(deterministic_mode)
    try:
        first = forward_backward(name, device)
        for _ in range(2):
            assert_bitwise_equal(first, forward_backward(name, device))
    finally:
        torch.use_deterministic_algorithms(previous)


@pytest.mark.parametrize("device", CATALOG_DEVICES)
def test_attention_dropout_is_reproduced_by_the_seed(device):
    q, k, v = (torch.randn(2, 3, 200, 16, device=device, requires_grad=True) for _ in range(3))

    def run():
        torch.manual_seed(7)
        out = seqops.attention(q, k, v, dropout_p=0.3)
        return [out] + list(torch.autograd.grad(out.square().sum(), (q, k, v)))

    first = run()
    assert_bitwise_equal(first, run())
    torch.manual_seed(8)
    assert not torch.equal(seqops.attention(q, k, v, dropout_p=0.3), first[0])
