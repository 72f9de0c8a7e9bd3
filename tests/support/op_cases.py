"""Every seqops op (and each attention score policy and compression mode) as a case that draws
its inputs for given sizes: the robustness tests (properties, determinism, stability, threads,
memory) run over this one catalog. Each case gives the seqops call and the pure-PyTorch
reference of seqops.reference, both returning a tuple of tensors.

Inputs are drawn on the CPU (the same values whatever the device) and then moved to
Sizes.device; the tests take that device from CATALOG_DEVICES (support.DEVICES: CPU, CUDA when
present, and any device added to support.DEVICE_TABLE)."""
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

import seqops
from seqops import reference

from support import DEVICES

# The device axis of the catalog's tests (pytest params, skipped where a device is absent).
CATALOG_DEVICES = DEVICES


@dataclass(frozen=True)
class Sizes:
    batch: int = 2
    length: int = 7       # sequence length (the keys' length for attention)
    length_q: int = 5     # attention queries
    dim: int = 8          # feature / head width
    heads: int = 2
    masked: bool = True   # a key-padding mask, row 1 fully masked when batch > 1
    noncontiguous: bool = False
    dtype: torch.dtype = torch.float32
    device: str = "cpu"   # where the tensors live (HOST_ARGS stay on the CPU)


# Arguments that stay on the CPU whatever the device of the data: (seed, offset) pairs, and the
# offsets of packed sequences (which may also live with the data).
HOST_ARGS = ("dropout_rng", "rng", "cu_seqlens")


@dataclass(frozen=True)
class OpCase:
    inputs: Callable[[Sizes, torch.Generator], Dict[str, object]]   # keyword arguments
    run: Callable[..., Tuple[Tensor, ...]]                            # seqops
    reference: Callable[..., Tuple[Tensor, ...]]                      # seqops.reference
    grads: Tuple[str, ...]                                            # inputs with gradients
    min_length: int = 1
    # The CUDA kernels round inputs they derive (rotated q and k; q + u, q + v and R's rows for
    # relative keys) to a 16-bit input dtype before their tensor-core products: float32 results
    # of such inputs (the lse) carry that rounding (the CPU kernels' do not).
    rounds_derived_inputs: bool = False
    # For ops whose gradients sum terms far larger than the result: (float64 inputs, cotangents
    # of the outputs) -> the largest sum of |terms| of a gradient entry, which bounds any float
    # summation's error (per unit of eps) where the result's own magnitude does not.
    gradient_terms: Optional[Callable[[Dict[str, object], Sequence[Tensor]], float]] = None


def _randn(sizes: Sizes, g: torch.Generator, *shape: int, scale: float = 1.0) -> Tensor:
    t = (torch.randn(*shape, generator=g, dtype=torch.float64) * scale).to(device=sizes.device, dtype=sizes.dtype)
    if sizes.noncontiguous and t.dim() >= 2:
        t = t.transpose(-1, -2).contiguous().transpose(-1, -2)
    return t


def _mask(sizes: Sizes, g: torch.Generator, length: int) -> Optional[Tensor]:
    if not sizes.masked:
        return None
    mask = torch.rand(sizes.batch, length, generator=g) > 0.3
    if sizes.batch > 1:
        mask[1] = False
    return mask.to(sizes.device)


def _pool_inputs(sizes: Sizes, g: torch.Generator) -> Dict[str, object]:
    return {"x": _randn(sizes, g, sizes.batch, sizes.length, sizes.dim), "mask": _mask(sizes, g, sizes.length)}


def _seq_pool_inputs(sizes, g):
    return {**_pool_inputs(sizes, g), "weight": _randn(sizes, g, sizes.heads, sizes.dim),
            "bias": _randn(sizes, g, sizes.heads)}


def _lama_inputs(sizes, g):
    return {**_pool_inputs(sizes, g), "p": _randn(sizes, g, sizes.heads, sizes.dim),
            "q": _randn(sizes, g, sizes.heads, sizes.dim)}


def _lama_gradient_terms(kw: Dict[str, object], cotangents: Sequence[Tensor]) -> float:
    """Largest sum of |terms| in lama_pool's x and q gradients: dx_td gets sum_h du_ht q_hd and
    dq_hd gets sum_t du_ht x_td, du being the gradient of u = q . x. Where the heads' activations
    of a row are tiny, the normalization scales du by 1 / |a_t| and those terms cancel to a
    result hundreds of times smaller (measured: terms of 46 summing to 0.045)."""
    x, p, q = (kw[n].detach() for n in ("x", "p", "q"))
    u = torch.einsum("bld,hd->bhl", x, q).requires_grad_()
    outputs = reference.lama_pool_of_projection(x, u, p, kw.get("mask"))
    (du,) = torch.autograd.grad(outputs, u, [c.to(o.dtype) for o, c in zip(outputs, cotangents)])
    dx_terms = torch.einsum("bhl,hd->bld", du.abs(), q.abs())
    dq_terms = torch.einsum("bhl,bld->hd", du.abs(), x.abs())
    return max(dx_terms.max().item(), dq_terms.max().item())


def _slopes(sizes: Sizes, g: torch.Generator, heads: int) -> Tensor:
    """ALiBi slopes in [0, 1) (positive, as ALiBi's are)."""
    return torch.rand(heads, generator=g, dtype=torch.float64).to(device=sizes.device, dtype=sizes.dtype)


def _attention_inputs(policy: str):
    def inputs(sizes: Sizes, g: torch.Generator) -> Dict[str, object]:
        B, H, Lq, Lk, d = sizes.batch, sizes.heads, sizes.length_q, sizes.length, sizes.dim
        if policy == "packed":  # self-attention: q as long as k
            Lq = Lk
        kw: Dict[str, object] = {"q": _randn(sizes, g, B, H, Lq, d), "k": _randn(sizes, g, B, H, Lk, d),
                                 "v": _randn(sizes, g, B, H, Lk, d), "key_padding_mask": _mask(sizes, g, Lk),
                                 "causal": policy in ("alibi", "rel_keys", "packed")}
        if policy == "bias":
            kw["bias"] = _randn(sizes, g, 1, H, Lq, Lk)
        elif policy == "t5":
            kw["t5_table"] = _randn(sizes, g, H, 8)
            kw["t5_max_distance"] = 16
        elif policy == "alibi":
            kw["alibi_slopes"] = _slopes(sizes, g, H)
        elif policy == "rel_keys":
            kw.update(rel_keys=_randn(sizes, g, Lq + Lk - 1, H, d), rel_scores=_randn(sizes, g, Lq + Lk - 1, H),
                      content_bias=_randn(sizes, g, H, d), position_bias=_randn(sizes, g, H, d))
        elif policy == "rotary_window":  # rotary positions with a T5 term in a sliding window
            kw.update(t5_table=_randn(sizes, g, H, 8), t5_max_distance=16, rotary_dim=2 * (d // 2),
                      rotary_base=100.0, rotary_interleaved=True, window_left=3, window_right=1)
        elif policy == "packed":  # three sequences, the middle one empty (all three when Lk < 3)
            third = Lk // 3
            kw.update(cu_seqlens=torch.tensor([0, third, third, Lk]), rotary_dim=2 * (d // 2),
                      alibi_slopes=_slopes(sizes, g, H))
        return kw
    return inputs


_ATTENTION_GRADS = {"plain": (), "bias": ("bias",), "t5": ("t5_table",), "alibi": ("alibi_slopes",),
                    "rel_keys": ("rel_keys", "rel_scores", "content_bias", "position_bias"),
                    "rotary_window": ("t5_table",), "packed": ("alibi_slopes",)}


def _compress_inputs(mode: str):
    def inputs(sizes: Sizes, g: torch.Generator) -> Dict[str, object]:
        kw: Dict[str, object] = {"x": _randn(sizes, g, sizes.batch, sizes.length, sizes.dim), "rate": 2,
                                 "mode": mode, "remainder": "keep"}
        if mode == "conv":
            kw.update(weight=_randn(sizes, g, sizes.dim, sizes.dim, 2), bias=_randn(sizes, g, sizes.dim))
        return kw
    return inputs


def _dropout_inputs(sizes: Sizes, g: torch.Generator) -> Dict[str, object]:
    rng = torch.randint(-2 ** 62, 2 ** 62, (2,), generator=g, dtype=torch.int64)
    return {"x": _randn(sizes, g, sizes.batch, sizes.length, sizes.dim), "p": 0.3, "rng": rng}


def _attention_reference(**kw):
    return reference.attention(**kw)


CASES: Dict[str, OpCase] = {
    "seq_pool": OpCase(_seq_pool_inputs, lambda **kw: (seqops.seq_pool(**kw),),
                       lambda **kw: (reference.seq_pool(**kw),), ("x", "weight", "bias")),
    "lama_pool": OpCase(_lama_inputs, lambda **kw: seqops.lama_pool(**kw),
                        lambda **kw: reference.lama_pool(**kw), ("x", "p", "q"),
                        gradient_terms=_lama_gradient_terms),
    **{f"masked_pool_{mode}": OpCase(_pool_inputs, lambda mode=mode, **kw: (seqops.masked_pool(**kw, mode=mode),),
                                     lambda mode=mode, **kw: (reference.masked_pool(**kw, mode=mode),), ("x",))
       for mode in ("mean", "max", "sum")},
    **{f"attention_{policy}": OpCase(_attention_inputs(policy), lambda **kw: seqops.ops.attention_with_lse(**kw),
                                     _attention_reference, ("q", "k", "v") + _ATTENTION_GRADS[policy],
                                     rounds_derived_inputs=policy in ("rotary_window", "packed", "rel_keys"))
       for policy in _ATTENTION_GRADS},
    "dropout": OpCase(_dropout_inputs, lambda **kw: (torch.ops.seqops.dropout(**kw),),
                      lambda **kw: (reference.dropout(**kw),), ("x",)),
    **{f"compress_{mode}": OpCase(_compress_inputs(mode), lambda **kw: seqops.ops.compress(**kw),
                                  lambda **kw: reference.compress(**kw),
                                  ("x", "weight", "bias") if mode == "conv" else ("x",))
       for mode in ("mean", "max", "conv")},
}


def with_grads(case: OpCase, kw: Dict[str, object]) -> Dict[str, object]:
    """kw with fresh leaves requiring grad for the case's differentiable inputs."""
    return {k: v.detach().clone().requires_grad_() if k in case.grads and isinstance(v, Tensor) else v
            for k, v in kw.items()}


def input_grads(case: OpCase, kw: Dict[str, object], outputs: Sequence[Tensor],
                cotangents: Optional[Sequence[Tensor]] = None) -> Tuple[List[str], Tuple[Optional[Tensor], ...]]:
    """(names, gradients) of the case's differentiable inputs present in kw, back from the
    outputs that require grad (cotangents default to ones; None for an unused input)."""
    names = [n for n in case.grads if isinstance(kw.get(n), Tensor)]
    outs = [o for o in outputs if o.requires_grad]
    cot = [torch.ones_like(o) for o in outs] if cotangents is None else cotangents
    return names, torch.autograd.grad(outs, [kw[n] for n in names], cot, allow_unused=True)


def as_float64(kw: Dict[str, object]) -> Dict[str, object]:
    return {k: v.double() if isinstance(v, Tensor) and v.is_floating_point() else v for k, v in kw.items()}
