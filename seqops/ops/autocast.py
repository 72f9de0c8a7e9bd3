"""Autocast rules of the seqops ops. Matmul-like ops (the attention poolers, attention, the 'conv'
compression) run in the autocast context's own dtype -- bfloat16 or float16, on CPU or CUDA --
as torch.matmul does; reductions keep their input dtype, as torch.sum does. (torch.library's
register_autocast fixes one dtype per device at registration, which would ignore the context's.)
Each family module registers its own ops' rules.
"""
from typing import Callable, Dict, Optional, Tuple

import torch

Condition = Callable[[Tuple, Dict], bool]

_LIB = torch.library.Library("seqops", "FRAGMENT")  # keeps the rules alive


def _cast(value, dtype: torch.dtype):
    return value.to(dtype) if isinstance(value, torch.Tensor) and value.is_floating_point() else value


def _autocast_kernel(op, device_type: str, key, only_if: Optional[Condition]):
    def run(*args, **kwargs):
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(key)):
            if only_if is None or only_if(args, kwargs):
                dtype = torch.get_autocast_dtype(device_type)
                args = tuple(_cast(a, dtype) for a in args)
                kwargs = {k: _cast(v, dtype) for k, v in kwargs.items()}
            return op(*args, **kwargs)
    return run


def register_low_precision(name: str, only_if: Optional[Condition] = None) -> None:
    """Under autocast, seqops::<name> casts its floating tensors to the context's dtype (when
    ``only_if(args, kwargs)`` holds), for CPU and CUDA."""
    op = getattr(torch.ops.seqops, name).default
    for device_type, key_name in (("cpu", "AutocastCPU"), ("cuda", "AutocastCUDA")):
        key = getattr(torch._C.DispatchKey, key_name)
        run = _autocast_kernel(op, device_type, key, only_if)
        op.py_kernels.pop(key, None)
        op.py_impl(key)(run)  # what tracing (torch.compile, export) sees
        _LIB.impl(name, lambda _keyset, *args, run=run, **kwargs: run(*args, **kwargs), key_name, with_keyset=True)
