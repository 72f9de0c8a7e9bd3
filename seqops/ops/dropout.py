"""The dropout family: dropout with a counter-based mask (csrc/dropout/dropout.h), its fake
kernel (registered here, the module csrc/dropout/schema.cpp names with set_python_module) and
autograd. The mask is a pure function of a (seed, offset) pair, so it is never stored: the
backward redraws it. Dropout keeps its input dtype under autocast, like torch's.

(``seqops.ops.dropout`` is the function; this module is ``sys.modules["seqops.ops.dropout"]``,
e.g. ``from seqops.ops.dropout import dropout_rng``.)
"""
import torch
from torch import Tensor

from ._fakes import contiguous_like

_ops = torch.ops.seqops


def dropout_rng() -> Tensor:
    """A fresh (seed, offset) pair from torch's default CPU generator: seeding with
    torch.manual_seed reproduces the dropout mask."""
    # Integer literals (not 2 ** 63, a float to TorchScript) keep this scriptable.
    return torch.randint(-9223372036854775807 - 1, 9223372036854775807, (2,), dtype=torch.int64)


def dropout(x: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    """``torch.nn.functional.dropout`` (not in place) on seqops' kernels.

    In training, zeros each element with probability p and scales the others by 1 / (1 - p);
    otherwise, or with p = 0, returns x itself. The draws come from a Philox stream seeded from
    torch's default generator (torch.manual_seed reproduces them) and are redrawn in the
    backward instead of being stored, so a training step keeps no mask. The output is
    contiguous.
    """
    if p < 0.0 or p > 1.0:
        raise ValueError("dropout probability has to be between 0 and 1, but got {}".format(p))
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    return _ops.dropout(x, p, dropout_rng())


@torch.library.register_fake("seqops::dropout")
def dropout_fake(x, p, rng):
    torch._check(rng.device.type == "cpu" and rng.dtype == torch.int64 and rng.shape == (2,),
                 lambda: f"rng must be a CPU int64 tensor of shape (2,) (seed, offset), got {rng.dtype} "
                         f"{tuple(rng.shape)} on {rng.device}")
    return contiguous_like(x)


def dropout_setup_context(ctx, inputs, output):
    _, p, rng = inputs
    ctx.p = p
    ctx.save_for_backward(rng)


def dropout_autograd(ctx, grad):
    (rng,) = ctx.saved_tensors
    return _ops.dropout(grad, ctx.p, rng), None, None


torch.library.register_autograd("seqops::dropout", dropout_autograd, setup_context=dropout_setup_context)
