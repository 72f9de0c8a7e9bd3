"""Typed entry points over torch.ops.seqops, one module per op family: ``pooling`` (seq_pool,
lama_pool, masked_pool), ``attention``, ``compress``, ``dropout``. Each family module holds its
ops' typed wrappers, fake kernels (registered from that module, the one the family's C++
fragment csrc/<family>/schema.cpp names with set_python_module), autograd and autocast rules.

The functions ``attention``, ``compress`` and ``dropout`` are bound here after their family
modules are imported, so ``seqops.ops.attention`` is the function (as TorchScript and
monkeypatching see it); a family module is reached with ``from seqops.ops.attention import ...``
or ``sys.modules["seqops.ops.attention"]``.
"""
from typing import List, Tuple

import torch

from .pooling import lama_pool, masked_pool, seq_pool  # noqa: F401
from .dropout import dropout, dropout_rng  # noqa: F401
from .attention import attention, attention_with_lse, window_bounds  # noqa: F401
from .compress import compress  # noqa: F401

# Ops of csrc/registration.cpp that report facts about the build rather than compute on tensors.
BUILD_FACT_OPS = ("cpu_isa",)


def _library_ops() -> Tuple[str, ...]:
    """The ops the C++ library defined in the seqops namespace (every family's schema.cpp),
    without the build facts."""
    names = {name.split("::", 1)[1].split(".", 1)[0]
             for name in torch._C._dispatch_get_all_op_names() if name.startswith("seqops::")}
    return tuple(sorted(names - set(BUILD_FACT_OPS)))


# Every seqops op, forward and backward, read from the registered library (one source: the
# schemas), in alphabetical order.
OP_NAMES = _library_ops()


def registered_devices(op: str) -> List[str]:
    """Dispatch keys among CPU/CUDA that have a kernel for ``seqops::<op>``."""
    return [k for k in ("CPU", "CUDA") if torch._C._dispatch_has_kernel_for_dispatch_key(f"seqops::{op}", k)]


__all__ = ["OP_NAMES", "attention", "attention_with_lse", "compress", "dropout", "dropout_rng",
           "lama_pool", "masked_pool", "registered_devices", "seq_pool", "window_bounds"]
