"""Plain-PyTorch references of every seqops op: the oracle of the tests (run them in float64).

They follow the ops' documented semantics, including the edge cases (rows with nothing kept
give zeros), and are written for clarity, not speed.
"""
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor


def _masked_softmax(logits: Tensor, keep: Optional[Tensor]) -> Tensor:
    """Softmax over the last dim restricted to `keep` (broadcastable); all-masked rows -> 0."""
    if keep is None:
        return torch.softmax(logits, dim=-1)
    logits = logits.masked_fill(~keep, float("-inf"))
    any_kept = keep.any(dim=-1, keepdim=True)
    return torch.where(any_kept, torch.softmax(logits.masked_fill(~any_kept, 0.0), dim=-1), 0.0)


def seq_pool(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
             mask: Optional[Tensor] = None) -> Tensor:
    if weight.dim() == 2:
        logits = torch.einsum("bld,hd->bhl", x, weight)
    else:
        logits = torch.einsum("bld,bhd->bhl", x, weight)
    if bias is not None:
        logits = logits + bias.unsqueeze(-1)
    p = _masked_softmax(logits, None if mask is None else mask[:, None, :])
    return torch.einsum("bhl,bld->bhd", p, x)


_ACTIVATIONS = {"identity": lambda z: z, "tanh": torch.tanh, "relu": torch.relu,
                "sigmoid": torch.sigmoid}


def lama_pool(x: Tensor, p: Tensor, q: Tensor, mask: Optional[Tensor] = None,
              activation: str = "tanh", normalize: bool = True,
              eps: float = 1e-12) -> Tuple[Tensor, Tensor]:
    if mask is None:
        context = x.mean(dim=1)
    else:
        m = mask.to(x.dtype).unsqueeze(-1)
        context = (x * m).sum(1) / m.sum(1).clamp_min(1.0)
    g = context @ p.t()                             # (B, H)
    u = torch.einsum("bld,hd->bhl", x, q)           # (B, H, L)
    a = _ACTIVATIONS[activation](g.unsqueeze(-1) * u)
    ahat = a / a.norm(dim=1, keepdim=True).clamp_min(eps)
    keep = None if mask is None else mask[:, None, :]
    if normalize:
        weights = _masked_softmax(ahat, keep)
    else:
        weights = ahat if keep is None else ahat.masked_fill(~keep, 0.0)
    return weights @ x, weights


def masked_pool(x: Tensor, mask: Optional[Tensor] = None, mode: str = "mean") -> Tensor:
    keep = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask
    k = keep.unsqueeze(-1)
    if mode == "max":
        out = x.masked_fill(~k, float("-inf")).amax(dim=1)
        return torch.where(keep.any(1, keepdim=True), out, 0.0)
    total = (x * k.to(x.dtype)).sum(1)
    if mode == "sum":
        return total
    return total / keep.sum(1, keepdim=True).clamp_min(1).to(x.dtype)


def lama_original(x: Tensor, p_dh: Tensor, q_dh: Tensor, mask: Optional[Tensor] = None,
                  activation=torch.tanh, normalize: bool = True) -> Tensor:
    """The original LAMA forward (weights (B, H, L)), parameters stored (D, H), as the seed
    repository computes it: -1e9 mask fill, no epsilon, weights over padding when normalize is
    False. Used to check that our LAMA matches it where its behaviour is sound."""
    if mask is None:
        context = x.mean(1)
    else:
        m = mask.to(x.dtype)
        context = (x * m.unsqueeze(-1)).sum(1) / m.sum(1, keepdim=True).clamp_min(1e-9)
    g = (context @ p_dh).unsqueeze(-1)              # (B, H, 1)
    u = q_dh.t() @ x.transpose(1, 2)                # (B, H, L)
    act = activation if activation is not None else (lambda z: z)
    a = act(g * u)
    a = a / a.norm(dim=1, keepdim=True)
    if not normalize:
        return a
    if mask is not None:
        a = a.masked_fill(mask.unsqueeze(1) == 0, -1e9)
    return F.softmax(a, dim=-1)
