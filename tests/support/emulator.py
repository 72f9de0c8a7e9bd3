"""The CUDA host emulator from the tests: loads libseqops_emu.so (built by emulator/CMakeLists.txt)
and runs seqops ops on their CUDA entry points, on CPU tensors.

Under `emulated()`, a TorchDispatchMode, every torch.ops.seqops.<op> call (forward ops and, through
the registered autograd formulas, backward ops) goes to torch.ops.seqops_emu.<op> instead, once per
thread order of ORDERS; the runs must agree bit for bit, or the kernel has a race. Everything
else (the Python wrappers, autograd, the float64 references) runs as on the CPU.

SEQOPS_EMU_LIBRARY names the library (default: emu-build/libseqops_emu.so at the repository
root); SEQOPS_REQUIRE_EMU=1 (CI) makes a missing library an error instead of a skip;
SEQOPS_EMU_ORDERS (comma-separated) narrows the orders, as CI's sanitizer run does (it looks for
memory errors, which need one order, not three)."""
import contextlib
import os
import pathlib
from typing import List, Sequence

import torch
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = pathlib.Path(__file__).resolve().parents[2]
LIBRARY = pathlib.Path(os.environ.get("SEQOPS_EMU_LIBRARY", ROOT / "emu-build" / "libseqops_emu.so"))
REQUIRED = os.environ.get("SEQOPS_REQUIRE_EMU") == "1"
WHY = f"no CUDA emulator library at {LIBRARY} (cmake -S emulator -B emu-build -G Ninja && cmake --build emu-build)"

# The thread orders every emulated op runs in (see emulator/include/emulator/control.h).
ORDERS = tuple(os.environ.get("SEQOPS_EMU_ORDERS", "forward,reverse,random").split(","))


def _load() -> bool:
    if not LIBRARY.exists():
        if REQUIRED:
            raise RuntimeError(f"SEQOPS_REQUIRE_EMU=1 but {WHY}")
        return False
    import seqops  # noqa: F401  (the seqops namespace first: the emulated ops mirror its schemas)
    torch.ops.load_library(str(LIBRARY))
    return True


AVAILABLE = _load()
_active: List["Emulated"] = []


def active() -> bool:
    """Whether seqops ops run on the emulator right now."""
    return bool(_active)


def _bits(t: torch.Tensor) -> torch.Tensor:
    return t.detach().contiguous().reshape(-1).view(torch.uint8)


def _same_bits(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype and torch.equal(_bits(a), _bits(b))
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_same_bits(x, y) for x, y in zip(a, b))
    return a == b


def _symbolic(args, kwargs) -> bool:
    """Whether a call carries fake or meta tensors (opcheck, torch.compile tracing): those go to
    seqops' own fake kernels, not to the emulator."""
    tensors = [t for t in pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
    return any(type(t) is not torch.Tensor or t.device.type != "cpu" for t in tensors)


class Emulated(TorchDispatchMode):
    def __init__(self, orders: Sequence[str], seed: int):
        super().__init__()
        self.orders, self.seed = tuple(orders), seed

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        if not name.startswith("seqops::") or not hasattr(torch.ops.seqops_emu, func._opname) or _symbolic(args, kwargs):
            return func(*args, **kwargs)
        target = getattr(getattr(torch.ops.seqops_emu, func._opname), func._overloadname)
        results = []
        for order in self.orders:
            torch.ops.seqops_emu.set_order(order, self.seed)
            results.append(target(*args, **kwargs))
        for order, other in zip(self.orders[1:], results[1:]):
            assert _same_bits(results[0], other), (
                f"{name} on the CUDA emulator: thread order '{order}' gives other bits than "
                f"'{self.orders[0]}' (a race: a missing __syncthreads or __syncwarp)")
        return results[0]


@contextlib.contextmanager
def emulated(orders: Sequence[str] = ORDERS, seed: int = 0):
    """Runs every seqops op inside on the emulator (in each of `orders`, compared bit for bit)."""
    if not AVAILABLE:
        raise RuntimeError(WHY)
    mode = Emulated(orders, seed)
    _active.append(mode)
    try:
        with mode:
            yield mode
    finally:
        _active.pop()
        torch.ops.seqops_emu.reset_device()


def set_device_attribute(name: str, value: int) -> None:
    """Changes the emulated device (e.g. "max_shared_per_block_optin"); reset after emulated()."""
    torch.ops.seqops_emu.set_device_attribute(name, value)
