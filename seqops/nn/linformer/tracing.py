"""Shape helpers that keep traced graphs (torch.compile, torch.export) valid for every length."""
import torch
from torch import Tensor


def leading(x: Tensor, dim: int, n: int) -> Tensor:
    """The first n entries of x along dim: a view in eager mode, a copy when traced. A view's
    strides make it contiguous only when n is the full size, so a traced graph holding the view
    would guard on (specialize) that case; the copy is contiguous for every n."""
    if torch.compiler.is_compiling():
        return torch.narrow_copy(x, dim, 0, n)
    return x.narrow(dim, 0, n)
