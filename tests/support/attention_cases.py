"""The attention tests' shared cases: score-policy arguments, random operands, the check of
outputs, lse and every gradient against the float64 reference (seqops.reference.attention), and
the dropout stream's expected mask."""
import torch

from seqops import reference as ref
from seqops.ops import attention, attention_with_lse, dropout_rng

from support import check_low_precision, kernel_device

POLICIES = ["none", "bias", "bias_broadcast", "t5", "t5_causal_table", "alibi", "rel_keys", "rel_keys_partial"]


def score_args(policy, Hq, Lq, Lk, d, B=2, dtype=torch.float64, device="cpu"):
    """Random parameters of one score policy (kwargs of attention)."""
    r = lambda *s: torch.randn(*s, dtype=dtype, device=device)  # noqa: E731
    if policy == "none":
        return {}
    if policy == "bias":
        return {"bias": r(B, Hq, Lq, Lk)}
    if policy == "bias_broadcast":
        return {"bias": r(Hq, 1, Lk)}
    if policy == "t5":
        return {"t5_table": r(Hq, 32), "t5_max_distance": 20}
    if policy == "t5_causal_table":
        return {"t5_table": r(Hq, 16), "t5_bidirectional": False, "t5_max_distance": 64}
    if policy == "alibi":
        return {"alibi_slopes": torch.rand(Hq, dtype=dtype, device=device)}
    L_rel = Lq + Lk - 1  # covers every pair, causal or not
    if policy == "rel_keys":
        return {"rel_keys": r(L_rel, Hq, d), "rel_scores": r(L_rel, Hq), "content_bias": r(Hq, d),
                "position_bias": r(Hq, d), "rel_zero": Lq - 1 + (Lk - Lq)}
    if policy == "rel_keys_partial":
        return {"rel_keys": r(L_rel, Hq, d), "rel_zero": Lq - 1 + (Lk - Lq)}
    raise ValueError(policy)


def make_qkv(B, Hq, Hk, Lq, Lk, d, dv, dtype=torch.float64, device="cpu"):
    return (torch.randn(B, Hq, Lq, d, dtype=dtype, device=device),
            torch.randn(B, Hk, Lk, d, dtype=dtype, device=device),
            torch.randn(B, Hk, Lk, dv, dtype=dtype, device=device))


# The 2x rule's floor for float32, in units of eps32 x max(1, |exact|): the kernel's errors exceed
# twice the float32 eager reference's by at most 5.4 of them on the shapes below (the gradients
# of score parameters, sums over every (query, key) pair, are where they do).
FLOAT32_FLOOR_EPS = 16


def assert_close_to_exact(name, got, exact, eager, atol, rtol):
    """got vs the float64 exact value: within atol / rtol when atol is given, else (float32) by the
    2x rule: error <= 2 x the float32 eager reference's error + FLOAT32_FLOOR_EPS ulps of the
    magnitude."""
    if atol is not None:
        torch.testing.assert_close(got.double(), exact, atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")
        return
    floor = FLOAT32_FLOOR_EPS * torch.finfo(torch.float32).eps * max(1.0, exact.abs().max().item())
    k_err = (got.double() - exact).abs().max().item()
    e_err = (eager.double() - exact).abs().max().item()
    assert k_err <= 2 * e_err + floor, \
        f"{name}: kernel error {k_err:.3e} > 2 x float32 eager error {e_err:.3e} + floor {floor:.2e}"


def check_against_reference(q, k, v, mask, causal, score, atol=None, rtol=0.0):
    """Outputs, lse and every gradient (q, k, v, score tensors) vs the float64 reference: within
    atol / rtol, or (atol None, float32 inputs) by the 2x rule against the reference run in
    float32."""
    # Differentiable: the floating tensors (not the integer offsets of packed sequences).
    names = ["q", "k", "v"] + [n for n, t in score.items() if isinstance(t, torch.Tensor) and t.is_floating_point()]
    inputs = [q, k, v] + [score[n] for n in names[3:]]
    assert atol is not None or q.dtype == torch.float32, "the 2x rule is for float32 inputs"
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    exact = [t.detach().double().requires_grad_(True) for t in inputs]
    eager = [t.detach().clone().requires_grad_(True) for t in inputs]
    kw = lambda ts: {**score, **dict(zip(names[3:], ts[3:]))}  # noqa: E731
    out, lse = attention_with_lse(*leaves[:3], mask, causal, **kw(leaves))
    ref_out, ref_lse = ref.attention(*exact[:3], mask, causal, **kw(exact))
    eager_out, eager_lse = ref.attention(*eager[:3], mask, causal, **kw(eager)) if atol is None else (None, None)
    assert_close_to_exact("out", out, ref_out, eager_out, atol, rtol)
    finite = ref_lse.isfinite()
    assert torch.equal(lse.isfinite(), finite)
    assert torch.equal(lse[~finite].double(), ref_lse[~finite]), "lse must be -inf where nothing is visible"
    assert_close_to_exact("lse", lse[finite], ref_lse[finite], None if atol is not None else eager_lse[finite],
                          atol, rtol)
    grad = torch.randn_like(ref_out)
    got = torch.autograd.grad(out, leaves, grad.to(out.dtype))
    want = torch.autograd.grad(ref_out, exact, grad)
    eager_grads = torch.autograd.grad(eager_out, eager, grad.to(eager_out.dtype)) if atol is None else want
    for name, g, w, e in zip(names, got, want, eager_grads):
        assert g.shape == w.shape and g.dtype == leaves[names.index(name)].dtype, name
        assert_close_to_exact(f"grad of {name}", g, w, e, None if atol is None else atol * max(1.0, w.abs().max().item()),
                              rtol)


def philox_keep_of(seed, B, Hq, Lq, Lk, p, device):
    """The keep-mask (B, Hq, Lq, Lk) the op must draw after torch.manual_seed(seed): the Python
    Philox of seqops.reference on the (seed, offset) pair dropout_rng takes from the generator."""
    torch.manual_seed(seed)
    return ref.attention_dropout_keep(dropout_rng(), B * Hq, Lq, Lk, p).reshape(B, Hq, Lq, Lk).to(device)


TENSOR_CORE_KERNELS = ("attention_forward_mma_kernel", "attention_dkdv_mma_kernel", "attention_dq_mma_kernel")
SIMT_KERNELS = ("attention_forward_kernel", "attention_dkdv_kernel", "attention_dq_kernel")


def check_low_precision_on_tensor_cores(device, kernel, eager, inputs, dtype, grad_inputs):
    """check_low_precision of kernel against eager (floor 2e-3); on the emulator the tensor-core
    kernels (forward, dK/dV, dQ) must be among those that ran."""
    emulated = kernel_device(device) == "emu"
    if emulated:
        torch.ops.seqops_emu.take_launches()
    check_low_precision(kernel, eager, inputs, dtype, grad_inputs=grad_inputs, floor=2e-3)
    if emulated:
        assert set(TENSOR_CORE_KERNELS) <= set(torch.ops.seqops_emu.take_launches())


def check_options_low_precision(device, dtype, q, k, v, mask, causal, options, **score_tensors):
    """check_low_precision_on_tensor_cores of attention(q, k, v, mask, causal, **options, **score_tensors)
    against the eager reference, with the gradients of q, k, v and every score tensor."""
    names = list(score_tensors)

    def kernel(q, k, v, *ts):
        return attention(q, k, v, mask, causal, **options, **dict(zip(names, ts)))

    def eager(q, k, v, *ts):
        return ref.attention(q, k, v, mask, causal, **options, **dict(zip(names, ts)))[0]

    check_low_precision_on_tensor_cores(device, kernel, eager, [q, k, v, *score_tensors.values()], dtype, 3 + len(names))
