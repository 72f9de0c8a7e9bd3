"""The benchmark cases of each op family: seqops against the baselines a user would pick instead.

A family is a function (device, dtype, profile) -> iterator of Case, where profile is "full",
"quick" (about a minute in all on 2 cores) or "smoke" (tiny sizes, for the CLI's tests); inputs
are made lazily, one case at a time. Every op of seqops.ops.OP_NAMES belongs to a family (FAMILY_OF_OP); the tests
check that the mapping covers every registered op.
"""
import math
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Optional

import torch
import torch.nn.functional as F

from .. import ops, reference


@dataclass
class Case:
    family: str
    name: str                              # what is computed, e.g. "T5 bias, forward"
    length: int                            # the sequence length (the plots' x axis)
    impls: Dict[str, Callable[[], object]]  # "seqops" first, then the baselines
    work: float                            # FLOPs or bytes of one call
    unit: str                              # "GFLOP/s" or "GB/s": how `work` is rated


Family = Callable[[str, torch.dtype, str], Iterator[Case]]


def _fwd_bwd(fn: Callable[..., torch.Tensor], *inputs: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        out = fn(*inputs)
        out.backward(torch.ones_like(out))
    return run


def _no_grad(fn: Callable[[], object]) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad():
            return fn()
    return run


# ----------------------------------------------------------------------------- pooling

def pool(device: str, dtype: torch.dtype, profile: str) -> Iterator[Case]:
    """seq_pool / lama_pool / masked_pool vs the originals' eager formulations (B=16, D=768)."""
    B, D, H = (2, 16, 2) if profile == "smoke" else (16, 768, 8)
    for L in {"full": [256, 1024, 4096], "quick": [256, 1024], "smoke": [8, 16]}[profile]:
        x = torch.randn(B, L, D, device=device, dtype=dtype)
        mask = torch.rand(B, L, device=device) > 0.1
        w = torch.randn(1, D, device=device, dtype=dtype) * 0.02
        read = x.numel() * x.element_size()
        impls = {
            "seqops": _no_grad(lambda: ops.seq_pool(x, w, None, mask)),
            # CCT's attention pool: a 1-unit linear, softmax over the sequence, bmm.
            "eager": _no_grad(lambda: torch.softmax((x @ w.t()).masked_fill(~mask[..., None], float("-inf")), 1)
                              .transpose(1, 2) @ x),
        }
        try:  # the original package (no mask argument: it pools every position)
            from seqpool import CVTSeqPool
            original = CVTSeqPool(D).to(device, dtype)
            original.pool.weight.data.copy_(w)
            impls["seqpool"] = _no_grad(lambda: original(x))
        except ImportError:
            pass
        yield Case("pool", "seq_pool, forward", L, impls, read, "GB/s")
        p = torch.randn(D, H, device=device, dtype=dtype) / H ** 0.5
        q = torch.randn(D, H, device=device, dtype=dtype) / H ** 0.5
        yield Case("pool", "lama_pool, forward", L, {
            "seqops": _no_grad(lambda: ops.lama_pool(x, p.t(), q.t(), mask)),
            "eager": _no_grad(lambda: reference.lama_original(x, p, q, mask) @ x),
        }, 2 * read, "GB/s")
        yield Case("pool", "masked mean", L, {
            "seqops": _no_grad(lambda: ops.masked_pool(x, mask, "mean")),
            "eager": _no_grad(lambda: (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)),
        }, read, "GB/s")


# ----------------------------------------------------------------------------- attention

T5_BUCKETS, T5_MAX_DISTANCE = 32, 128


def t5_bias(table: torch.Tensor, n: int) -> torch.Tensor:
    """The (H, n, n) bias the originals build: bucket matrix, then a gather."""
    rel = reference.relative_positions(n, n, device=table.device)
    return table[:, reference.t5_bucket(rel, True, T5_BUCKETS, T5_MAX_DISTANCE)]


def eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.softmax((q @ k.transpose(-1, -2)) * q.shape[-1] ** -0.5 + bias, dim=-1) @ v


def _t5_bucket_scalar(rel: torch.Tensor) -> torch.Tensor:
    """T5's bidirectional bucket of r = key - query, written with the tensor ops a score_mod can
    use (float32 log, as the T5 codebases compute it)."""
    half = T5_BUCKETS // 2
    max_exact = half // 2
    n = -rel
    offset = (n < 0).to(torch.int64) * half
    n = n.abs()
    ratio = torch.log(n.to(torch.float32).clamp(min=1) / max_exact) / math.log(T5_MAX_DISTANCE / max_exact)
    large = torch.clamp(max_exact + (ratio * (half - max_exact)).to(torch.int64), max=half - 1)
    return offset + torch.where(n < max_exact, n, large)


def flex_t5(table: torch.Tensor, n: int, per_distance: bool = False) -> Callable[..., torch.Tensor]:
    """Compiled flex_attention with the T5 score_mod: table[h, bucket(kv_idx - q_idx)], the bucket
    computed inside the score_mod. per_distance=True instead reads a precomputed (H, 2n - 1)
    per-distance table (a cheaper score_mod than the issue's baseline, shown for comparison)."""
    from torch.nn.attention.flex_attention import flex_attention
    if per_distance:
        distances = torch.arange(-(n - 1), n, device=table.device)
        rel_table = table[:, reference.t5_bucket(distances, True, T5_BUCKETS, T5_MAX_DISTANCE)]

        def score_mod(score, b, h, q_idx, kv_idx):
            return score + rel_table[h, kv_idx - q_idx + n - 1]
    else:
        def score_mod(score, b, h, q_idx, kv_idx):
            return score + table[h, _t5_bucket_scalar(kv_idx - q_idx)]

    # dynamic=False: recompiling for a second length with dynamic shapes hits an inductor CPU
    # codegen error in torch 2.13 (undeclared cur_kvSplitSize<N>).
    compiled = torch.compile(flex_attention, fullgraph=True, dynamic=False)
    return lambda q, k, v: compiled(q, k, v, score_mod=score_mod)


def flex_masked(mask_mod: Callable[..., torch.Tensor], n: int) -> Optional[Callable[..., torch.Tensor]]:
    """Compiled flex_attention over the (n, n) CPU block mask of mask_mod (block-sparse: blocks
    the mask hides entirely are skipped), or None where FlexAttention is missing."""
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except ImportError:
        return None
    block_mask = create_block_mask(mask_mod, None, None, n, n, device="cpu")
    compiled = torch.compile(flex_attention)
    return lambda q, k, v: compiled(q, k, v, block_mask=block_mask)


def attention(device: str, dtype: torch.dtype, profile: str) -> Iterator[Case]:
    """Fused attention (no bias, T5) vs SDPA, SDPA with a materialized bias, eager, and compiled
    FlexAttention (B=1, H=8, d=64; FLOPs by the 4 B H n^2 d convention). FlexAttention is
    compiled once per length (about 8 s each on 2 cores); the smoke profile leaves it out."""
    B, H, d = (1, 2, 8) if profile == "smoke" else (1, 8, 64)
    for n in {"full": [1024, 2048, 4096], "quick": [512, 1024], "smoke": [8, 16]}[profile]:
        q, k, v = (torch.randn(B, H, n, d, device=device, dtype=dtype) for _ in range(3))
        table = torch.randn(H, T5_BUCKETS, device=device, dtype=dtype)
        flops = 4 * B * H * n * n * d
        yield Case("attention", "no bias, forward", n, {
            "seqops": _no_grad(lambda: ops.attention(q, k, v)),
            "sdpa": _no_grad(lambda: F.scaled_dot_product_attention(q, k, v)),
            "eager": _no_grad(lambda: eager_attention(q, k, v, 0.0)),
        }, flops, "GFLOP/s")
        t5 = {
            "seqops": _no_grad(lambda: ops.attention(q, k, v, t5_table=table)),
            "sdpa+bias": _no_grad(lambda: F.scaled_dot_product_attention(q, k, v, attn_mask=t5_bias(table, n))),
            "eager": _no_grad(lambda: eager_attention(q, k, v, t5_bias(table, n))),
        }
        if profile != "smoke":
            flex = flex_t5(table, n)
            t5["flex"] = _no_grad(lambda: flex(q, k, v))
        yield Case("attention", "T5 bias, forward", n, t5, flops, "GFLOP/s")
        if profile != "quick":
            leaves = [t.clone().requires_grad_(True) for t in (q, k, v, table)]
            yield Case("attention", "T5 bias, learnable table, forward+backward", n, {
                "seqops": _fwd_bwd(lambda q, k, v, t: ops.attention(q, k, v, t5_table=t), *leaves),
                "eager": _fwd_bwd(lambda q, k, v, t: eager_attention(q, k, v, t5_bias(t, n)), *leaves),
            }, 2.5 * flops, "GFLOP/s")


# ----------------------------------------------------------------------------- compressive

def _training_step(impl, d: int, heads: int, seq_len: int, layers: int, batch: int) -> Callable[[], None]:
    """One step of compressive_steps' `impl` (seqops or labml) on steady-state memories."""
    from .compressive_steps import VOCAB, steady_memories
    step = impl(d, heads, seq_len, layers, batch, 2 * d)
    step.set_memory(*steady_memories(d, seq_len, layers, batch))
    data = torch.randint(0, VOCAB, (batch, seq_len + 1))
    return lambda: step(data[:, :-1], data[:, 1:])


def compressive(device: str, dtype: torch.dtype, profile: str) -> Iterator[Case]:
    """A Compressive Transformer training step (forward, memory update, LM + reconstruction loss,
    backward; 2 layers, d_model 256, 4 heads, seq = mem = c_mem = n, rate 4, batch 4) vs labml_nn
    when it is installed (CPU float32 only: labml's side is fixed to it); then memory compression
    (rate 4) vs the eager ways: labml's Conv1d over a transposed memory, and reshape + mean / max;
    forward+backward (B=8, D=512, the memory length is n)."""
    if device == "cpu" and dtype == torch.float32:
        from .compressive_steps import LabmlStep, SeqopsStep
        d, heads, layers, batch = (16, 2, 1, 2) if profile == "smoke" else (256, 4, 2, 4)
        for n in {"full": [128, 256, 512], "quick": [128, 256], "smoke": [8]}[profile]:
            impls = {"seqops": _training_step(SeqopsStep, d, heads, n, layers, batch)}
            try:
                impls["labml"] = _training_step(LabmlStep, d, heads, n, layers, batch)
            except ImportError:
                pass
            # Per layer: the projections and the feed-forward (8 + 4) n d^2 x batch, x3 for fwd+bwd.
            yield Case("compressive", "training step", n, impls, 3 * layers * batch * 12 * n * d * d, "GFLOP/s")
    B, D, rate = (2, 16, 4) if profile == "smoke" else (8, 512, 4)
    for L in {"full": [512, 2048, 8192], "quick": [512, 2048], "smoke": [8, 16]}[profile]:
        x = torch.randn(B, L, D, device=device, dtype=dtype, requires_grad=True)
        conv = torch.nn.Conv1d(D, D, rate, stride=rate, device=device, dtype=dtype)
        w, b = conv.weight.detach().requires_grad_(True), conv.bias.detach().requires_grad_(True)
        io = 2 * x.numel() * x.element_size()  # read x, write dx (the GEMM reads the weight once)
        yield Case("compressive", "compress conv, forward+backward", L, {
            "seqops": _fwd_bwd(lambda x, w, b: ops.compress(x, rate, "conv", w, b)[0], x, w, b),
            "eager": _fwd_bwd(lambda x, w, b: F.conv1d(x.transpose(1, 2), w, b, stride=rate).transpose(1, 2), x, w, b),
        }, 4 * B * L * D * D, "GFLOP/s")
        for mode in ("mean", "max"):
            reduce = (lambda t: t.mean(2)) if mode == "mean" else (lambda t: t.amax(2))
            yield Case("compressive", f"compress {mode}, forward+backward", L, {
                "seqops": _fwd_bwd(lambda x, m=mode: ops.compress(x, rate, m)[0], x),
                "eager": _fwd_bwd(lambda x, r=reduce: r(x.view(B, L // rate, rate, D)), x),
            }, io, "GB/s")


# ----------------------------------------------------------------------------- linformer

def linformer(device: str, dtype: torch.dtype, profile: str) -> Iterator[Case]:
    """Linformer(input_size=n, channels=512, dim_k=256, nhead=8, depth=2), forward+backward at batch
    1, vs a torch.nn.TransformerEncoder of the same width / depth / heads (SDPA attention) and
    linformer-pytorch when it is installed (same weights, loaded into ours' layout)."""
    from torch import nn

    from ..nn import Linformer, load_linformer_pytorch
    channels, dim_k, heads, depth, dim_ff = (16, 4, 2, 1, 16) if profile == "smoke" else (512, 256, 8, 2, 256)
    for n in {"full": [1024, 4096, 16384], "quick": [1024, 4096], "smoke": [8, 16]}[profile]:
        k = min(dim_k, n)
        ours = Linformer(input_size=n, channels=channels, dim_k=k, nhead=heads, depth=depth, dim_ff=dim_ff,
                         device=device, dtype=dtype)
        layer = nn.TransformerEncoderLayer(channels, heads, dim_ff, dropout=0.1, activation="gelu",
                                           batch_first=True, device=device, dtype=dtype)
        encoder = nn.TransformerEncoder(layer, depth, enable_nested_tensor=False)
        x = torch.randn(1, n, channels, device=device, dtype=dtype, requires_grad=True)
        impls = {"seqops": _fwd_bwd(ours, x), "sdpa encoder": _fwd_bwd(encoder, x)}
        try:
            import linformer_pytorch
            original = linformer_pytorch.Linformer(input_size=n, channels=channels, dim_k=k, nhead=heads,
                                                   depth=depth, dim_ff=dim_ff).to(device, dtype)
            load_linformer_pytorch(ours, original.state_dict())
            impls["linformer-pytorch"] = _fwd_bwd(original, x)
        except ImportError:
            pass
        # Per layer: QKV/output projections 8 n c^2, E/F 4 n k c, attention 4 n k c; x3 for fwd+bwd.
        flops = 3 * depth * (8 * n * channels ** 2 + 8 * n * k * channels + 4 * n * channels * dim_ff)
        yield Case("linformer", "encoder, forward+backward", n, impls, flops, "GFLOP/s")


def long(device: str, dtype: torch.dtype, profile: str) -> Iterator[Case]:
    """linformer-pytorch's README model, Linformer(input_size=n, channels=64, dim_d=256, dim_k=64,
    dim_ff=128), forward without autograd (eval) at batch 1 for n up to 262144, vs
    linformer-pytorch (same weights) when it is installed: time and peak memory against length.
    benchmarks/bench_linformer_long.py measures the same in fresh processes, with the targets."""
    from ..nn import Linformer, load_linformer_pytorch
    channels, dim_d, dim_k, dim_ff = (16, 32, 4, 16) if profile == "smoke" else (64, 256, 64, 128)
    for n in {"full": [16384, 65536, 262144], "quick": [4096, 16384], "smoke": [512, 1024]}[profile]:
        kwargs = dict(input_size=n, channels=channels, dim_d=dim_d, dim_k=dim_k, dim_ff=dim_ff)
        ours = Linformer(**kwargs, device=device, dtype=dtype).eval()
        x = torch.randn(1, n, channels, device=device, dtype=dtype)
        impls = {"seqops": _no_grad(lambda m=ours, t=x: m(t))}
        try:
            import linformer_pytorch
            original = linformer_pytorch.Linformer(**kwargs).to(device, dtype).eval()
            load_linformer_pytorch(ours, original)
            impls["linformer-pytorch"] = _no_grad(lambda m=original, t=x: m(t))
        except ImportError:
            pass
        # seqops' work: E x, scores and values against 4 heads' folded keys (folded.py), the
        # feed-forward. The original computes ~8x more (Q/K/V/output projections at full length),
        # so its rate in this column reads low: compare times.
        flops = 2 * n * (dim_k * channels + 2 * 4 * dim_k * channels + 2 * channels * dim_ff)
        yield Case("long", "README model, forward", n, impls, flops, "GFLOP/s")


# ----------------------------------------------------------------------------- dropout

def dropout(device: str, dtype: torch.dtype, profile: str) -> Iterator[Case]:
    """seqops.dropout vs torch.nn.functional.dropout, training mode, forward+backward on an
    (n, 512) activation (p = 0.1, as in the Linformer's feed-forward)."""
    width = 16 if profile == "smoke" else 512
    for n in {"full": [1024, 4096, 16384], "quick": [1024, 4096], "smoke": [8, 16]}[profile]:
        x = torch.randn(n, width, device=device, dtype=dtype, requires_grad=True)
        traffic = 4 * x.numel() * x.element_size()  # read x, write y, read dy, write dx
        yield Case("dropout", "p 0.1, forward+backward", n, {
            "seqops": _fwd_bwd(lambda t: ops.dropout(t, 0.1), x),
            "torch": _fwd_bwd(lambda t: F.dropout(t, 0.1), x),
        }, traffic, "GB/s")


# ----------------------------------------------------------------------------- transformers

def have_transformers() -> bool:
    """transformers >= 5 importable (the seqops[hf] extra)."""
    try:
        import transformers
    except ImportError:
        return False
    return int(transformers.__version__.split(".")[0]) >= 5


def hf_t5(kind: str, impl: str, device: str = "cpu", dtype: torch.dtype = torch.float32, small: bool = False,
          layers: int = 6, dropout: float = 0.1):
    """A random-init t5-small-sized model (d_model 512, 8 heads, d_kv 64, d_ff 2048, vocab 32128,
    32 buckets / 128) with attn_implementation `impl`: kind "encoder" (T5EncoderModel) or
    "seq2seq" (T5ForConditionalGeneration, `layers` encoder and decoder layers). small=True: a
    tiny one, for the smoke profile."""
    from transformers import T5Config, T5EncoderModel, T5ForConditionalGeneration

    from ..integrations.transformers import register
    register()
    width = dict(d_model=16, d_kv=8, num_heads=2, d_ff=32, vocab_size=64) if small else \
        dict(d_model=512, d_kv=64, num_heads=8, d_ff=2048, vocab_size=32128)
    config = T5Config(num_layers=layers, num_decoder_layers=layers, dropout_rate=dropout, decoder_start_token_id=0,
                      pad_token_id=0, **width)
    model = (T5EncoderModel if kind == "encoder" else T5ForConditionalGeneration)(config).to(device, dtype)
    model.set_attn_implementation(impl)
    return model


def hf_t5_flops(kind: str, n: int, d_model: int = 512, heads: int = 8, d_kv: int = 64, d_ff: int = 2048,
                layers: int = 6, vocab: int = 32128, target: int = 0) -> float:
    """FLOPs of a T5 encoder forward over n tokens, or (kind "seq2seq") of a training step
    (x3 for forward + backward) with a decoder over `target` tokens."""
    inner = heads * d_kv

    def stack(lq, lk_self, lk_cross=0):
        proj = 2 * lq * d_model * inner * 4 + (2 * 2 * lk_cross * d_model * inner + 2 * lq * d_model * inner * 2
                                               if lk_cross else 0)
        attn = 4 * heads * d_kv * lq * (lk_self + lk_cross)
        return layers * (proj + attn + 4 * lq * d_model * d_ff)
    if kind == "encoder":
        return stack(n, n)
    return 3 * (stack(n, n) + stack(target, target, n) + 2 * target * d_model * vocab)


def transformers_family(device: str, dtype: torch.dtype, profile: str) -> Iterator[Case]:
    """Hugging Face transformers' T5 (t5-small-sized, random init) with attn_implementation
    "seqops" (seqops.integrations.transformers) vs "sdpa" (transformers' default) and "eager":
    the encoder's forward (eval, no_grad, batch 1) and, in the full profile, a training step
    (forward + backward, dropout 0.1, decoder over n / 4 tokens). Skipped (not listed in
    FAMILIES) when transformers >= 5 is not installed; benchmarks/bench_transformers.py is the
    long version."""
    small = profile == "smoke"
    impls = ("seqops", "sdpa", "eager")
    for n in {"full": [512, 2048, 4096], "quick": [256, 512], "smoke": [8, 16]}[profile]:
        ids = torch.randint(1, 64 if small else 32128, (1, n), device=device)
        mask = torch.ones(1, n, dtype=torch.long, device=device)
        models = {impl: hf_t5("encoder", impl, device, dtype, small, layers=2 if small else 6).eval()
                  for impl in impls}
        flops = hf_t5_flops("encoder", n, **(dict(d_model=16, heads=2, d_kv=8, d_ff=32, layers=2) if small else {}))
        yield Case("transformers", "T5 encoder, forward", n,
                   {impl: _no_grad(lambda m=m: m(input_ids=ids, attention_mask=mask)) for impl, m in models.items()},
                   flops, "GFLOP/s")
        if profile == "full" and n <= 2048:
            target = n // 4
            labels = torch.randint(1, 32128, (1, target), device=device)

            def step(model):
                def run():
                    model.zero_grad(set_to_none=True)
                    model(input_ids=ids, attention_mask=mask, labels=labels).loss.backward()
                return run
            yield Case("transformers", "T5 seq2seq, training step", n,
                       {impl: step(hf_t5("seq2seq", impl, device, dtype).train()) for impl in impls},
                       hf_t5_flops("seq2seq", n, target=target), "GFLOP/s")


FAMILIES: Dict[str, Family] = {"pool": pool, "attention": attention, "linformer": linformer, "long": long,
                               "compressive": compressive, "dropout": dropout}
if have_transformers():  # an optional extra: without it the family is not offered at all
    FAMILIES["transformers"] = transformers_family

# The family that benchmarks each op (backward ops are timed inside their forward's family).
FAMILY_OF_OP: Dict[str, str] = {
    "seq_pool": "pool", "lama_pool": "pool", "masked_pool": "pool", "attention": "attention",
    "compress": "compressive", "dropout": "dropout",
}


def family_names() -> List[str]:
    return list(FAMILIES)
