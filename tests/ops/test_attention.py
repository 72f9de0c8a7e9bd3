"""seqops.ops.attention against the float64 materialized reference (seqops.reference.attention)."""
import pytest
import torch

from seqops import reference as ref
from seqops.ops import attention, attention_with_lse

from support import emulator
from support.attention_cases import (POLICIES, SIMT_KERNELS, TENSOR_CORE_KERNELS, check_against_reference,
                                     check_low_precision_on_tensor_cores, make_qkv, philox_keep_of, score_args)
from support import (DEVICES, LOW_PRECISION_CASES, NATIVE_DEVICES, check_low_precision, kernel_device, low_precision,
                     noncontiguous, random_mask)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("masked", [False, True])
def test_policies_float64(device, policy, causal, masked):
    B, Hq, Hk, Lq, Lk, d, dv = 2, 4, 2, 97, 130, 16, 24
    q, k, v = make_qkv(B, Hq, Hk, Lq, Lk, d, dv, device=device)
    mask = random_mask(B, Lk, device) if masked else None
    check_against_reference(q, k, v, mask, causal, score_args(policy, Hq, Lq, Lk, d, B, device=device), atol=1e-10)


SHAPES = [
    # B, Hq, Hk, Lq, Lk, d, dv
    (1, 1, 1, 1, 1, 16, 16),
    (1, 3, 3, 1, 97, 64, 64),       # decoding: one query
    (2, 8, 1, 7, 7, 80, 80),        # multi-query
    (1, 2, 2, 1025, 1025, 64, 32),  # several key and query blocks, dv != d
    (1, 2, 1, 300, 257, 16, 16),    # Lq > Lk
    (1, 1, 1, 1100, 9, 16, 16),     # few keys: query blocks grow up to 512 (three of 368)
    (1, 1, 1, 40, 1600, 16, 16),    # keys in three balanced tiles of 544
]
MULTI_TILE = [s for s in SHAPES if max(s[3], s[4]) > 1000]


# (dtype, shape, policy): every shape in float32 by the 2x rule; the multi-tile paths also to
# float64 precision, with a key-padding mask.
SHAPE_CASES = ([(torch.float32, shape, policy) for shape in SHAPES for policy in ("none", "bias", "t5", "rel_keys")]
               + [(torch.float64, shape, policy) for shape in MULTI_TILE for policy in ("none", "t5", "alibi", "rel_keys")])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype, shape, policy", SHAPE_CASES)
def test_shapes(device, dtype, shape, policy):
    B, Hq, Hk, Lq, Lk, d, dv = shape
    q, k, v = make_qkv(B, Hq, Hk, Lq, Lk, d, dv, dtype, device)
    score = score_args(policy, Hq, Lq, Lk, d, B, dtype, device)
    if dtype == torch.float32:
        check_against_reference(q, k, v, None, Lq <= Lk, score)
    else:
        check_against_reference(q, k, v, random_mask(B, Lk, device, fully_masked_row=False), Lq <= Lk, score,
                                atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_noncontiguous_inputs(device):
    B, Hq, Hk, Lq, Lk, d = 2, 4, 2, 33, 45, 16
    q, k, v = make_qkv(B, Hq, Hk, Lq, Lk, d, d, device=device)
    score = score_args("rel_keys", Hq, Lq, Lk, d, B, device=device)
    score = {n: noncontiguous(t) if isinstance(t, torch.Tensor) and t.dim() >= 2 else t for n, t in score.items()}
    check_against_reference(noncontiguous(q), noncontiguous(k), noncontiguous(v), None, True, score, atol=1e-10)
    bias = torch.randn(B, Hq, Lk, Lq, dtype=torch.float64, device=device).transpose(-1, -2)
    check_against_reference(noncontiguous(q), k, v, None, False, {"bias": bias}, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["cache_prefix", "sequence_major", "broadcast_heads"])
def test_strided_operands(device, layout):
    """Queries, keys, values and the output gradient with unit-stride columns but other strides
    (the CPU kernels read them in place): a KV cache's filled prefix, (B, L, H, d) projections
    transposed, one head expanded over the heads. Outputs, lse and the gradients (through the
    views, to the tensors they view) equal those of contiguous copies to rounding."""
    B, H, Lq, Lk, d = 2, 4, 9, 37, 16
    q, k, v = make_qkv(B, H, H, Lq, Lk, d, d, device=device)
    cot = torch.randn_like(q)
    if layout == "cache_prefix":
        bases = [torch.randn(B, H, 2 * t.shape[2], d, dtype=t.dtype) for t in (q, k, v, cot)]
        view = lambda t: t[:, :, :t.shape[2] // 2]  # noqa: E731
    elif layout == "sequence_major":
        bases = [t.transpose(1, 2).contiguous() for t in (q, k, v, cot)]
        view = lambda t: t.transpose(1, 2)  # noqa: E731
    else:
        bases = [t[:, :1].clone() for t in (q, k, v, cot)]
        view = lambda t: t.expand(B, H, -1, d)  # noqa: E731
    score = {"t5_table": torch.randn(H, 32, dtype=torch.float64, device=device), "t5_max_distance": 20}
    mask = random_mask(B, Lk, device)
    runs = []
    for copy in (False, True):
        leaves = [t.detach().clone().to(device).requires_grad_(True) for t in bases[:3]]
        operands = [view(t) for t in leaves] + [view(bases[3].to(device))]
        assert all(t.stride(3) == 1 and not t.is_contiguous() for t in operands)
        if copy:
            operands = [t.contiguous() for t in operands]
        out, lse = attention_with_lse(*operands[:3], mask, True, **score)
        runs.append([out, lse, *torch.autograd.grad(out, leaves, operands[3])])
    for name, a, b in zip(["out", "lse", "dq", "dk", "dv"], *runs):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=lambda m: f"{name}: {m}")


@pytest.mark.parametrize("device,dtype", LOW_PRECISION_CASES)
@pytest.mark.parametrize("policy", ["none", "t5", "rel_keys"])
def test_low_precision(device, dtype, policy):
    B, Hq, Hk, Lq, Lk, d = 2, 4, 2, 97, 130, 32
    q, k, v = make_qkv(B, Hq, Hk, Lq, Lk, d, d, device=device)
    score = score_args(policy, Hq, Lq, Lk, d, B, device=device)
    tensors = {n: t for n, t in score.items() if isinstance(t, torch.Tensor)}
    options = {n: t for n, t in score.items() if not isinstance(t, torch.Tensor)}

    def run(fn):
        return lambda q, k, v, *ts: fn(q, k, v, causal=True, **options, **dict(zip(tensors, ts)))

    check_low_precision(run(attention), run(lambda *a, **kw: ref.attention(*a, **kw)[0]),
                        [q, k, v, *tensors.values()], dtype, grad_inputs=3, floor=2e-3)


# Head dims (d, dv) and score terms of the tensor-core kernels (CUDA, float16 / bfloat16, head
# dims multiples of 16 up to 128: attention_mma_kernels.cuh).
TENSOR_CORE_CASES = [(16, 16, "none"), (64, 32, "bias"), (128, 128, "t5"), (32, 64, "alibi"), (64, 64, "dropout"),
                     (128, 64, "rel_keys"), (32, 48, "rel_keys_partial")]


@pytest.mark.parametrize("device,dtype", LOW_PRECISION_CASES)
@pytest.mark.parametrize("d,dv,policy", TENSOR_CORE_CASES)
def test_tensor_core_head_dims(device, dtype, d, dv, policy):
    """Causal with a query offset, GQA, key padding with a fully masked row, query and key tiles
    whose last ones are partial (forward and dQ: 64 queries a block, dK/dV: 64 keys a block, 32
    queries or keys a step), each score term and dropout (the Philox stream's mask in the
    reference): outputs and the gradients of q, k, v and the score tensor by the low-precision
    rule; on the emulator the tensor-core kernels must be the ones that ran."""
    B, Hq, Hk, Lq, Lk = 2, 4, 2, 70, 150
    q, k, v = make_qkv(B, Hq, Hk, Lq, Lk, d, dv, device=device)
    mask = random_mask(B, Lk, device)
    p = 0.25 if policy == "dropout" else 0.0
    score = score_args("none" if p else policy, Hq, Lq, Lk, d, B, device=device)
    tensors = {n: t for n, t in score.items() if isinstance(t, torch.Tensor)}
    options = {n: t for n, t in score.items() if not isinstance(t, torch.Tensor)}
    keep = philox_keep_of(7, B, Hq, Lq, Lk, p, device) if p else None

    def kernel(q, k, v, *ts):
        torch.manual_seed(7)
        return attention(q, k, v, mask, True, None, p, query_offset=60, **options, **dict(zip(tensors, ts)))

    def eager(q, k, v, *ts):
        drop = {"dropout_mask": keep, "dropout_p": p} if p else {}
        return ref.attention(q, k, v, mask, True, query_offset=60, **drop, **options, **dict(zip(tensors, ts)))[0]

    check_low_precision_on_tensor_cores(device, kernel, eager, [q, k, v, *tensors.values()], dtype, 3 + len(tensors))


@pytest.mark.parametrize("device,dtype", LOW_PRECISION_CASES)
def test_tensor_core_unaligned_inputs(device, dtype):
    """Inputs whose data start off the 16-byte grid (a storage offset of one element) take the
    tile loaders' 2-byte path: the same bits as aligned copies, forward and backward."""
    B, H, Lq, Lk, d = 1, 2, 37, 45, 32

    def offset_by_one(t):
        flat = torch.empty(t.numel() + 1, dtype=dtype, device=device)
        flat[1:] = t.reshape(-1).to(dtype)
        return flat[1:].view(t.shape)

    qkv = make_qkv(B, H, H, Lq, Lk, d, d, device=device)
    grad = torch.randn(B, H, Lq, d, device=device).to(dtype)
    runs = []
    for inputs in ([t.to(dtype) for t in qkv], [offset_by_one(t) for t in qkv]):
        assert inputs[0].is_contiguous()
        leaves = [t.requires_grad_(True) for t in inputs]
        out = attention(*leaves, causal=True)
        runs.append([out, *torch.autograd.grad(out, leaves, grad)])
    assert all(torch.equal(a, b) for a, b in zip(*runs))


@pytest.mark.skipif(not emulator.AVAILABLE, reason=emulator.WHY)
@pytest.mark.parametrize("major,d,kernels", [(9, 32, TENSOR_CORE_KERNELS), (7, 32, SIMT_KERNELS), (9, 24, SIMT_KERNELS)])
def test_emulated_tensor_core_dispatch(major, d, kernels):
    """Tensor cores from sm_80 on, for head dims that are multiples of 16; the SIMT kernels
    otherwise, with the same results by the low-precision rule."""
    q, k, v = make_qkv(1, 2, 2, 20, 33, d, d)
    torch.ops.seqops_emu.take_launches()
    with emulator.emulated():
        emulator.set_device_attribute("compute_capability_major", major)
        check_low_precision(lambda *a: attention(*a, causal=True), lambda *a: ref.attention(*a, causal=True)[0],
                            [q, k, v], torch.float16, grad_inputs=3, floor=2e-3)
    launched = set(torch.ops.seqops_emu.take_launches())
    assert set(kernels) <= launched and (set(TENSOR_CORE_KERNELS + SIMT_KERNELS) - set(kernels)).isdisjoint(launched)


@pytest.mark.parametrize("device", DEVICES)
def test_scale_and_query_offset(device):
    B, H, Lq, Lk, d = 1, 2, 9, 20, 16
    q, k, v = make_qkv(B, H, H, Lq, Lk, d, d, device=device)
    for score in ({"t5_table": torch.randn(H, 32, dtype=torch.float64, device=device), "query_offset": 0},
                  {"alibi_slopes": torch.rand(H, dtype=torch.float64, device=device), "query_offset": 5},
                  {"rel_keys": torch.randn(40, H, d, dtype=torch.float64, device=device), "rel_zero": 15,
                   "query_offset": 0}):
        check_against_reference(q, k, v, None, False, {**score, "scale": 0.3}, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("buckets,max_distance,bidirectional", [(32, 128, True), (32, 128, False), (128, 40, True), (8, 20, False)])
def test_t5_buckets_at_every_distance(device, buckets, max_distance, bidirectional):
    """Every relative position from -299 to 299: past max_distance, and through steps that skip
    buckets (64 per direction over distances 32 .. 40). Each pair reads the reference's bucket
    (on CUDA the buckets come from the step form of the bucket function, built on the device)."""
    q, k, v = make_qkv(1, 2, 2, 300, 300, 4, 4, device=device)
    table = torch.randn(2, buckets, dtype=torch.float64, device=device) * 4
    check_against_reference(q, k, v, None, False, {"t5_table": table, "t5_bidirectional": bidirectional,
                                                   "t5_max_distance": max_distance}, atol=1e-9)


def offset_score_args(policy, H, Lq, Lk, d, offset, device, dtype=torch.float64):
    """Score parameters whose relative positions follow query_offset. rel_keys covers every pair
    (rel_zero = Lq - 1 + offset); rel_keys_tight has exactly the rows a causal call may read, r up
    to min(r_max, (Lk - Lq) - offset)."""
    r = lambda *s: torch.randn(*s, dtype=dtype, device=device)  # noqa: E731
    if policy == "none":
        return {"query_offset": offset}
    if policy == "t5":
        return {"t5_table": r(H, 16), "t5_max_distance": 20, "query_offset": offset}
    if policy == "t5_causal_table":
        return {"t5_table": r(H, 16), "t5_bidirectional": False, "t5_max_distance": 20, "query_offset": offset}
    if policy == "alibi":
        return {"alibi_slopes": torch.rand(H, dtype=dtype, device=device), "query_offset": offset}
    r_min, r_max = -(Lq - 1) - offset, Lk - 1 - offset
    if policy == "rel_keys_tight":
        r_max = min(r_max, (Lk - Lq) - offset)
    L_rel = max(r_max - r_min + 1, 1)
    score = {"rel_keys": r(L_rel, H, d), "rel_scores": r(L_rel, H), "rel_zero": -r_min, "query_offset": offset}
    if policy == "rel_keys":
        score.update(content_bias=r(H, d), position_bias=r(H, d))
    return score


CAUSAL_OFFSET_SHAPES = [(2, 9, 20), (2, 12, 5)]  # (H, Lq, Lk): Lq < Lk, and Lq > Lk (rows 0..6 see nothing)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("H,Lq,Lk", CAUSAL_OFFSET_SHAPES)
@pytest.mark.parametrize("policy", ["none", "t5", "t5_causal_table", "alibi", "rel_keys", "rel_keys_tight"])
def test_causal_with_query_offset(device, H, Lq, Lk, policy):
    """The contract (attention.h, AttentionArgs::causal_shift): causal visibility is j <= i + (Lk - Lq)
    whatever query_offset is; query_offset moves only the relative positions the score terms see.
    Offsets: 0, the default Lk - Lq, off by a few either way, and ones under which a causal limit
    following the offset (j <= i + query_offset) would hide every key from every query (-Lk) or
    show every key to every query (Lq + Lk). Forward, lse and every gradient vs float64."""
    B, d = 2, 8
    q, k, v = make_qkv(B, H, H, Lq, Lk, d, d, device=device)
    mask = random_mask(B, Lk, device, fully_masked_row=False)
    i = torch.arange(Lq, device=device)[:, None]
    j = torch.arange(Lk, device=device)[None, :]
    visible = (j <= i + (Lk - Lq)) & mask[:, None, None, :]        # (B, 1, Lq, Lk), offset-free
    for offset in sorted({0, Lk - Lq, Lk - Lq + 3, Lk - Lq - 4, -Lk, Lq + Lk}):
        score = offset_score_args(policy, H, Lq, Lk, d, offset, device)
        check_against_reference(q, k, v, mask, True, score, atol=1e-10)
        # Independently of the reference's mask: the causal op is the offset-aware logits
        # softmaxed over exactly the offset-free visible keys.
        tensors = {n: t for n, t in score.items() if isinstance(t, torch.Tensor)}
        logits = ref.attention_logits(q, k, **score).masked_fill(~visible, float("-inf"))
        want_lse = torch.logsumexp(logits, -1)
        want = torch.nan_to_num(torch.softmax(logits, -1), nan=0.0) @ v
        out, lse = attention_with_lse(q, k, v, mask, True, **{**score, **tensors})
        torch.testing.assert_close(out, want, atol=1e-10, rtol=0, msg=lambda m: f"offset {offset}: {m}")
        assert torch.equal(lse.isinf(), ~visible.any(-1).expand_as(lse)), f"offset {offset}: rows seeing nothing"
        torch.testing.assert_close(lse[lse.isfinite()], want_lse[lse.isfinite()], atol=1e-10, rtol=0)
    if policy == "none":  # no score term: the offset changes nothing at all
        base = attention_with_lse(q, k, v, mask, True)
        for offset in (0, -Lk, Lq + Lk):
            assert all(torch.equal(a, b) for a, b in zip(attention_with_lse(q, k, v, mask, True, query_offset=offset), base))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("policy", ["t5_causal_table", "alibi", "rel_keys_tight"])
def test_gradcheck_causal_with_query_offset(device, policy):
    B, H, Lq, Lk, d = 1, 2, 6, 4, 3   # Lq > Lk: queries 0 and 1 see nothing
    q, k, v = make_qkv(B, H, H, Lq, Lk, d, 2, device=device)
    for offset in (-3, 5):
        score = offset_score_args(policy, H, Lq, Lk, d, offset, device)
        names = [n for n, t in score.items() if isinstance(t, torch.Tensor)]
        inputs = [t.detach().clone().requires_grad_(True) for t in (q, k, v, *(score[n] for n in names))]

        def fn(*ts):
            return attention(*ts[:3], None, True, **{**score, **dict(zip(names, ts[3:]))})

        assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("policy", ["none", "bias", "t5", "rel_keys"])
def test_queries_with_no_visible_key(device, policy):
    """Causal with Lk < Lq: the first queries see nothing; a fully padded batch row neither."""
    B, H, Lq, Lk, d = 2, 2, 12, 5, 8
    q, k, v = make_qkv(B, H, H, Lq, Lk, d, d, device=device)
    mask = torch.ones(B, Lk, dtype=torch.bool, device=device)
    mask[1] = False
    score = score_args(policy, H, Lq, Lk, d, B, device=device)
    if policy == "rel_keys":
        score["rel_keys"] = torch.randn(Lq + Lk + 20, H, d, dtype=torch.float64, device=device)
        score["rel_zero"] = Lq + 5
        del score["rel_scores"]
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v)]
    out, lse = attention_with_lse(*leaves, mask, True, **score)
    hidden = Lq - Lk  # queries 0 .. Lq - Lk - 1 see no key
    assert torch.all(out[:, :, :hidden] == 0) and torch.all(out[1] == 0)
    assert torch.all(lse[:, :, :hidden] == float("-inf")) and torch.all(lse[1] == float("-inf"))
    grads = torch.autograd.grad(out.sum(), leaves)
    assert all(torch.isfinite(g).all() for g in grads)
    assert torch.all(grads[0][:, :, :hidden] == 0) and torch.all(grads[0][1] == 0)
    check_against_reference(q, k, v, mask, True, score, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("policy", ["none", "bias", "t5", "alibi", "rel_keys"])
@pytest.mark.parametrize("causal,window", [(True, (-1, -1)), (False, (2, 1))])  # plain causal; a sliding window
def test_gradcheck(device, policy, causal, window):
    B, Hq, Hk, Lq, Lk, d = 1, 2, 1, 5, 7, 3
    q, k, v = make_qkv(B, Hq, Hk, Lq, Lk, d, 2, device=device)
    score = score_args(policy, Hq, Lq, Lk, d, B, device=device)
    names = [n for n, t in score.items() if isinstance(t, torch.Tensor)]
    mask = torch.tensor([[True, False, True, True, True, True, False]], device=device)
    inputs = [t.requires_grad_(True) for t in (q, k, v, *(score[n] for n in names))]

    def fn(*ts):
        return attention(*ts[:3], mask, causal, window_left=window[0], window_right=window[1],
                         **{**score, **dict(zip(names, ts[3:]))})

    assert torch.autograd.gradcheck(fn, inputs)


# The score policies, and options beyond them (a sliding window; rotary positions, with a window;
# packed sequences, "packed" standing for offsets cut to the call's length by with_sizes).
OPTION_CASES = [(policy, {}) for policy in ["none", "bias", "t5", "alibi", "rel_keys"]] + [
    ("t5", {"window_left": 3, "window_right": 1}),
    ("t5", {"rotary_dim": 6, "rotary_interleaved": True, "window_left": 5, "window_right": 0}),
    ("none", {"rotary_dim": 8, "rotary_base": 100.0}),
    ("alibi", {"rotary_dim": 4, "cu_seqlens": "packed"}),
]
OPTION_IDS = [policy + "".join(f"-{k}={v}" for k, v in extra.items()) for policy, extra in OPTION_CASES]


def with_sizes(extra, Lq, Lk):
    """(Lq, extra) for a call with Lk keys: packed sequences are self-attention (Lq = Lk), three
    sequences, the middle one empty."""
    if extra.get("cu_seqlens") != "packed":
        return Lq, extra
    return Lk, {**extra, "cu_seqlens": torch.tensor([0, Lk // 3, Lk // 3, Lk])}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("policy,extra", OPTION_CASES, ids=OPTION_IDS)
def test_opcheck(device, policy, extra):
    B, Hq, Hk, Lq, Lk, d = 2, 4, 2, 9, 11, 8
    Lq, extra = with_sizes(extra, Lq, Lk)
    q, k, v = [t.float().requires_grad_(True) for t in make_qkv(B, Hq, Hk, Lq, Lk, d, d, device=device)]
    score = {n: (t.float().requires_grad_(True) if isinstance(t, torch.Tensor) else t)
             for n, t in score_args(policy, Hq, Lq, Lk, d, B, device=device).items()}
    mask = random_mask(B, Lk, device, fully_masked_row=False)
    kwargs = {"key_padding_mask": mask, "causal": True, **score, **extra}
    torch.library.opcheck(torch.ops.seqops.attention, (q, k, v), kwargs)


@pytest.mark.parametrize("device", NATIVE_DEVICES)
@pytest.mark.parametrize("policy,extra", OPTION_CASES, ids=OPTION_IDS)
def test_compile_fullgraph(device, policy, extra):
    B, Hq, Hk, Lq, Lk, d = 1, 2, 1, 17, 23, 8
    Lq, extra = with_sizes(extra, Lq, Lk)
    torch._dynamo.reset()  # the cases share fn's code: each would count toward its recompile limit
    q, k, v = make_qkv(B, Hq, Hk, Lq, Lk, d, d, torch.float32, device)
    score = {n: (t.float() if isinstance(t, torch.Tensor) else t)
             for n, t in score_args(policy, Hq, Lq, Lk, d, B, device=device).items()}
    tensors = {n: t.requires_grad_(True) for n, t in score.items() if isinstance(t, torch.Tensor)}
    options = {**{n: t for n, t in score.items() if not isinstance(t, torch.Tensor)}, **extra}
    leaves = [t.requires_grad_(True) for t in (q, k, v)]

    def fn(q, k, v, *ts):
        return attention(q, k, v, None, True, None, 0.0, **options, **dict(zip(tensors, ts)))

    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    want, got = fn(*leaves, *tensors.values()), compiled(*leaves, *tensors.values())
    torch.testing.assert_close(got, want)
    all_in = leaves + list(tensors.values())
    for g, w in zip(torch.autograd.grad(got.sum(), all_in), torch.autograd.grad(want.sum(), all_in)):
        torch.testing.assert_close(g, w)


# ----------------------------------------------------------------------------- dropout

def dropout_mask_of(q, k, p, seed, causal=False):
    """The keep-mask the op draws for (seed, shapes): with v = I, out = P * M / (1 - p)."""
    B, Hq, Lq, _ = q.shape
    Lk = k.shape[2]
    eye = torch.eye(Lk, dtype=q.dtype, device=q.device).expand(B, k.shape[1], Lk, Lk)
    torch.manual_seed(seed)
    dropped = attention(q, k, eye, None, causal, None, p)
    return dropped != 0


@pytest.mark.parametrize("device", DEVICES)
def test_dropout_reproducible_and_consistent_backward(device):
    B, Hq, Hk, Lq, Lk, d, p = 2, 2, 1, 13, 29, 8, 0.3
    q, k, v = make_qkv(B, Hq, Hk, Lq, Lk, d, d, device=device)
    table = torch.randn(Hq, 32, dtype=torch.float64, device=device)
    keep = philox_keep_of(7, B, Hq, Lq, Lk, p, device)  # the documented stream, not the op's own mask
    leaves = [t.clone().requires_grad_(True) for t in (q, k, v, table)]
    torch.manual_seed(7)
    out = attention(*leaves[:3], None, True, None, p, t5_table=leaves[3])
    torch.manual_seed(7)
    again = attention(*leaves[:3], None, True, None, p, t5_table=leaves[3])
    assert torch.equal(out, again)
    exact = [t.detach().clone().requires_grad_(True) for t in (q, k, v, table)]
    ref_out, _ = ref.attention(*exact[:3], None, True, dropout_mask=keep, dropout_p=p, t5_table=exact[3])
    torch.testing.assert_close(out, ref_out, atol=1e-12, rtol=0)
    grad = torch.randn_like(out)
    for g, w in zip(torch.autograd.grad(out, leaves, grad), torch.autograd.grad(ref_out, exact, grad)):
        torch.testing.assert_close(g, w, atol=1e-11, rtol=0)
    torch.manual_seed(8)
    assert not torch.equal(attention(q, k, v, None, True, None, p), out.detach())


def test_philox_known_answers():
    # Known-answer vectors of Philox-4x32-10 published with Random123 (Salmon et al.).
    assert ref.philox4x32_10((0, 0, 0, 0), (0, 0)) == [0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8]
    assert ref.philox4x32_10((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2) == [0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD]
    assert ref.philox4x32_10((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0)) == \
        [0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("Lk", [1, 37, 150])
def test_dropout_mask_is_the_philox_stream(device, Lk):
    # 150 keys span several of the CPU kernel's 64-key Philox batches; 37 and 1 end inside one.
    B, H, Lq, d, p = 1, 2, 3, 4, 0.3
    q, k, _ = make_qkv(B, H, H, Lq, Lk, d, d, device=device)
    keep = dropout_mask_of(q, k, p, seed=11)
    assert torch.equal(keep, philox_keep_of(11, B, H, Lq, Lk, p, device))


@pytest.mark.parametrize("device", DEVICES)
def test_dropout_keep_rate(device):
    B, H, L, d, p = 2, 4, 128, 8, 0.25
    q, k, _ = make_qkv(B, H, H, L, L, d, d, device=device)
    keep = dropout_mask_of(q, k, p, seed=3)
    n = keep.numel()
    rate = keep.double().mean().item()
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs(rate - (1 - p)) < 5 * sigma, f"keep rate {rate:.4f} vs {1 - p} (5 sigma = {5 * sigma:.4f})"


# ----------------------------------------------------------------------------- determinism

@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("policy,dtype", [("none", torch.float32), ("bias", torch.float32), ("t5", torch.float32),
                                          ("rel_keys", torch.float32), ("bias", torch.float16), ("t5", torch.bfloat16)])
def test_backward_bitwise_deterministic(device, policy, dtype):
    """Three runs give the same bits (on CUDA in 16 bits: the tensor-core kernels)."""
    if dtype != torch.float32 and dtype not in low_precision(device):
        pytest.skip(f"no {dtype} kernels on {device}")
    B, Hq, Hk, Lq, Lk, d = 2, 4, 2, 300, 300, 32
    q, k, v = make_qkv(B, Hq, Hk, Lq, Lk, d, d, dtype, device)
    score = {n: (t.to(dtype).requires_grad_(True) if isinstance(t, torch.Tensor) else t)
             for n, t in score_args(policy, Hq, Lq, Lk, d, B, device=device).items()}
    leaves = [t.requires_grad_(True) for t in (q, k, v)] + [t for t in score.values() if isinstance(t, torch.Tensor)]
    grad = torch.randn(B, Hq, Lq, d, device=device, dtype=dtype)
    runs = []
    for _ in range(3):
        out = attention(*leaves[:3], None, True, **score)
        runs.append([out] + list(torch.autograd.grad(out, leaves, grad)))
    for other in runs[1:]:
        assert all(torch.equal(a, b) for a, b in zip(runs[0], other))


# ----------------------------------------------------------------------------- bad input

@pytest.mark.parametrize("device", DEVICES)
def test_bad_inputs(device):
    q, k, v = make_qkv(2, 4, 2, 5, 6, 8, 8, torch.float32, device)
    rnd = lambda *shape, dtype=torch.float32: torch.randn(*shape, device=device).to(dtype)  # noqa: E731
    ones = lambda *shape, dtype=torch.float32: torch.ones(*shape, dtype=dtype, device=device)  # noqa: E731
    cases = [
        (dict(q=q[0]), "q must have 4 dimensions"),
        (dict(k=k[:, :, :, :4]), "k.size(3) must equal head_dim of q"),
        (dict(k=rnd(2, 3, 6, 8), v=rnd(2, 3, 6, 8)), "must divide q's heads"),
        (dict(v=v[:, :, :5]), "v.size(2) must equal length of k"),
        (dict(k=k.double()), "k must have the same dtype as q"),
        (dict(key_padding_mask=ones(2, 6)), "key_padding_mask must be a bool tensor"),
        (dict(key_padding_mask=ones(2, 5, dtype=torch.bool)), "key_padding_mask must have shape (batch, key length) = (2, 6)"),
        (dict(dropout_p=1.0), "dropout_p must be in [0, 1)"),
        (dict(bias=rnd(3, 1, 1)), "bias must be broadcastable to (batch, heads, Lq, Lk) = (2, 4, 5, 6)"),
        (dict(bias=rnd(4, 5, 6), t5_table=rnd(4, 32)), "one score term per call"),
        (dict(t5_table=rnd(3, 32)), "t5_table must have shape [4, 32]"),
        (dict(t5_table=rnd(4, 32), t5_max_distance=8), "t5_max_distance must exceed"),
        (dict(alibi_slopes=rnd(4, 1)), "alibi_slopes must have shape [4]"),
        (dict(rel_keys=rnd(5, 4, 8)), "rel_keys has 5 rows but this call reads rows"),
        (dict(rel_scores=rnd(10, 4)), "rel_scores belongs to the relative-keys score term"),
        (dict(rel_keys=rnd(20, 4, 7)), "rel_keys must have shape [20, 4, 8]"),
        (dict(t5_table=ones(4, 32, dtype=torch.long)), "t5_table must be a floating tensor"),
        # a stride-0 query of 2^32 + 1 rows: the dropout counters' word would wrap
        (dict(q=q[:1, :1, :1].expand(1, 1, 2 ** 32 + 1, 8), k=k[:1, :1], v=v[:1, :1], dropout_p=0.1),
         "attention dropout numbers its draws with 32-bit counters"),
    ]
    if kernel_device(device) == "cpu":  # CUDA takes float16
        cases.append((dict(q=q.half(), k=k.half(), v=v.half()), "on CPU must be bfloat16, float32 or float64"))
    for overrides, message in cases:
        args = dict(q=q, k=k, v=v, **{n: t for n, t in overrides.items() if n not in ("q", "k", "v")})
        args.update({n: t for n, t in overrides.items() if n in ("q", "k", "v")})
        with pytest.raises(RuntimeError, match=None) as info:
            attention(**args)
        assert message in str(info.value), f"{overrides.keys()}: {info.value}"


@pytest.mark.parametrize("device", DEVICES)
def test_backward_rejects_bad_saved_tensors(device):
    q, k, v = make_qkv(1, 2, 2, 5, 6, 8, 8, torch.float32, device)
    out, lse = attention_with_lse(q, k, v)
    with pytest.raises(RuntimeError, match="lse must have shape"):
        torch.ops.seqops.attention_backward(out, q, k, v, out, lse[:, :, :3], False)
    with pytest.raises(RuntimeError, match="bias_grad needs a bias"):
        torch.ops.seqops.attention_backward(out, q, k, v, out, lse, True)


def test_every_option_of_the_schema_reaches_the_wrappers_and_the_reference():
    """The options are described once (the C++ schema, read back as seqops.ops.attention's
    OPTIONS); the typed wrappers and the reference spell them out for TorchScript and clarity,
    so a new score option missing from any of them fails here."""
    import inspect

    from seqops.ops.attention import OPTION_NAMES, OPTIONS

    assert len(OPTIONS) == len(OPTION_NAMES) >= 16
    python_side = [n for n in OPTION_NAMES if n != "dropout_rng"]  # drawn inside the wrapper
    for fn in (attention, attention_with_lse):
        assert list(inspect.signature(fn).parameters)[3:] == python_side
    reference_side = (list(inspect.signature(ref.attention_logits).parameters)[2:]
                      + [n for n in inspect.signature(ref.attention).parameters
                         if n not in ("q", "k", "v", "dropout_mask", "score")])
    assert sorted(reference_side) == sorted(python_side)
    assert {o.name for o in OPTIONS if o.grad} >= {"bias", "t5_table", "alibi_slopes", "rel_keys"}


# The CUDA kernels choose their tiles from the device's shared memory (attention.cu's candidate
# lists): the emulated device, from the H100's opt-in maximum down to where only the smallest
# tiles fit, drives every choice, each giving the reference's result; below that the op raises.
@pytest.mark.skipif(not emulator.AVAILABLE, reason=emulator.WHY)
@pytest.mark.parametrize("shared_kib", [227, 48, 24, 12, 6])
@pytest.mark.parametrize("policy", ["none", "t5", "rel_keys"])
def test_emulated_cuda_tile_choices(shared_kib, policy):
    B, Hq, Hk, Lq, Lk, d, dv = 2, 2, 1, 37, 70, 16, 8
    q, k, v = make_qkv(B, Hq, Hk, Lq, Lk, d, dv)
    with emulator.emulated():
        emulator.set_device_attribute("max_shared_per_block_optin", shared_kib * 1024)
        check_against_reference(q, k, v, random_mask(B, Lk, "cpu"), True, score_args(policy, Hq, Lq, Lk, d, B),
                                atol=1e-9)


@pytest.mark.skipif(not emulator.AVAILABLE, reason=emulator.WHY)
def test_emulated_cuda_too_little_shared_memory():
    q, k, v = make_qkv(1, 2, 2, 5, 5, 64, 64)
    with emulator.emulated():
        emulator.set_device_attribute("max_shared_per_block_optin", 1024)
        with pytest.raises(RuntimeError, match=r"kernel needs \d+ bytes of shared memory per block for head_dim 64"):
            attention(q, k, v)
