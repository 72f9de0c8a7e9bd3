import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not HAS_CUDA, reason="no CUDA device"))]

# Low-precision dtypes each device supports (float32/float64 are checked everywhere).
LOW_PRECISION = {"cpu": [torch.bfloat16], "cuda": [torch.float16, torch.bfloat16]}


def random_mask(batch: int, length: int, device, fully_masked_row: bool = True) -> torch.Tensor:
    """Random keep-mask with at least one kept position per row, and (optionally) row 1 fully masked."""
    g = torch.Generator().manual_seed(batch * 1000 + length)
    mask = torch.rand(batch, length, generator=g) > 0.35
    mask[:, 0] = True
    if fully_masked_row and batch > 1:
        mask[1] = False
    return mask.to(device)


def noncontiguous(t: torch.Tensor) -> torch.Tensor:
    """The same values through a non-contiguous view (last two dims stored transposed)."""
    out = t.transpose(-1, -2).contiguous().transpose(-1, -2)
    assert not out.is_contiguous() or t.shape[-1] == 1 or t.shape[-2] == 1
    return out


def assert_low_precision_close(kernel: torch.Tensor, eager: torch.Tensor, exact: torch.Tensor, floor: float):
    """The project's low-precision rule: the kernel's error against float64 is at most twice
    the error of the eager reference run in the same low precision (plus a small floor for
    outputs whose eager error happens to be ~0)."""
    k_err = (kernel.double() - exact).abs().max().item()
    e_err = (eager.double() - exact).abs().max().item()
    assert k_err <= 2 * e_err + floor, f"kernel error {k_err:.3e} > 2 x eager error {e_err:.3e} + {floor}"
