"""The build: import-time checks, the `seqops info` command, run-time ISA selection."""
import json
import os
import subprocess
import sys

import pytest
import torch

import seqops


def run_python(code: str, **env) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=300)


def test_build_info_matches_running_torch():
    info = seqops.build_info()
    assert info["torch_version"] == torch.__version__
    assert "DEFAULT" in info["cpu_isas"]


def test_info_command_lists_ops_and_devices():
    r = subprocess.run([sys.executable, "-m", "seqops", "info"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "torch (built against)" in r.stdout and torch.__version__ in r.stdout
    for op in seqops.ops.OP_NAMES:
        assert f"seqops::{op}" in r.stdout
    assert "CPU vector ISA in use" in r.stdout


def test_import_refuses_a_different_torch(tmp_path):
    # A copy of the package whose build info names another torch must not import.
    pkg = os.path.dirname(seqops.__file__)
    info = json.load(open(os.path.join(pkg, "_build_info.json")))
    info["torch_version"] = "0.0.1"
    code = (
        "import json, seqops._build as b, unittest.mock as m\n"
        f"info = {info!r}\n"
        "with m.patch.object(b, 'build_info', return_value=info):\n"
        "    b.load_library()\n"
    )
    r = run_python(code)
    assert r.returncode != 0
    assert "compiled against torch 0.0.1" in r.stderr and torch.__version__ in r.stderr


# ----------------------------------------------------------------------------- CPU ISA variants
# ATEN_CPU_CAPABILITY selects a lower ISA, as it does for PyTorch's own kernels. Each ISA the CPU
# supports runs ISA_SCRIPT in its own process: a representative subset of the kernels, forward and
# backward (the attention score policies, attention dropout, dropout, seq_pool, lama_pool,
# masked_pool max/mean/sum, compress max/mean/conv) against the float64 reference, in float64
# and float32 (+ bfloat16 masked sum); the results are saved and the ISAs compared with each other.

ISAS = ["default", "avx2", "avx512"]
# /proc/cpuinfo flags each ISA needs (ATen's AVX2 needs FMA; its AVX512 needs F, BW, VL, DQ).
ISA_FLAGS = {"default": set(), "avx2": {"avx2", "fma"}, "avx512": {"avx512f", "avx512bw", "avx512vl", "avx512dq"}}

ISA_SCRIPT = r"""
import sys
import torch, seqops
from seqops import reference as ref
ops = torch.ops.seqops
isa = ops.cpu_isa()
print(isa)
results, failures = {}, []
TOL = {torch.float64: 1e-10, torch.float32: 2e-4}


def check(name, got, want, tol):
    results[name] = got.detach().clone()
    if got.shape != want.shape or not torch.allclose(got.double(), want.double(), rtol=tol, atol=tol):
        err = (got.double() - want.double()).abs().max().item() if got.shape == want.shape else "shape"
        failures.append(f"{name}: max error {err} > {tol}")


def case(name, fn, inputs, dtype, n_grad, exact_fn=None):
    # fn (the kernel) in dtype and exact_fn (the reference, default fn) in float64 on the same
    # values; outputs and the gradients of the first n_grad inputs.
    exact_fn = exact_fn or fn
    tol = TOL[dtype]
    low = [t.detach().clone().to(dtype).requires_grad_(i < n_grad) if t.is_floating_point() else t
           for i, t in enumerate(inputs)]
    exact = [t.detach().double().requires_grad_(i < n_grad) if t.is_floating_point() else t
             for i, t in enumerate(low)]
    outs, wants = fn(*low), exact_fn(*exact)
    outs = outs if isinstance(outs, tuple) else (outs,)
    wants = wants if isinstance(wants, tuple) else (wants,)
    g = torch.Generator().manual_seed(7)
    cot = [torch.randn(w.shape, generator=g, dtype=torch.float64) for w in wants]
    for i, (o, w) in enumerate(zip(outs, wants)):
        check(f"{name}/{dtype}/out{i}", o, w, tol)
    diff = [(o, c) for o, c in zip(outs, cot) if o.requires_grad and o.is_floating_point()]
    got = torch.autograd.grad([o for o, _ in diff], low[:n_grad], [c.to(o.dtype) for o, c in diff])
    diff = [(w, c) for w, c in zip(wants, cot) if w.requires_grad and w.is_floating_point()]
    want = torch.autograd.grad([w for w, _ in diff], exact[:n_grad], [c for _, c in diff])
    for i, (a, b) in enumerate(zip(got, want)):
        check(f"{name}/{dtype}/grad{i}", a, b, tol * 10)


gen = torch.Generator().manual_seed(0)
rnd = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
B, H, Lq, Lk, d = 2, 3, 19, 37, 24            # odd lengths: vector bodies and scalar tails
q, k, v = rnd(B, H, Lq, d), rnd(B, H, Lk, d), rnd(B, H, Lk, d)
mask = torch.rand(B, Lk, generator=gen) > 0.3
mask[:, -1] = True
rng = torch.tensor([1234567, 89], dtype=torch.int64)
POLICIES = {"plain": {}, "bias": {"bias": rnd(B, H, Lq, Lk)}, "t5_table": {"t5_table": rnd(H, 16)},
            "alibi_slopes": {"alibi_slopes": rnd(H).abs()},
            "rel_keys": {"rel_keys": rnd(Lq + Lk - 1, H, d), "rel_scores": rnd(Lq + Lk - 1, H),
                         "content_bias": rnd(H, d), "position_bias": rnd(H, d)}}
keep = ref.attention_dropout_keep(rng, B * H, Lq, Lk, 0.25).view(B, H, Lq, Lk)
for dtype in (torch.float64, torch.float32):
    for policy, terms in POLICIES.items():
        names = list(terms)
        for causal in (False, True):
            extra = {"rel_zero": Lk - 1} if "rel_keys" in names else {}   # rows: r in [-(Lk - 1), Lq - 1]
            # (out, lse): lse compared, not differentiated (the op's backward ignores its gradient).
            def kernel(q, k, v, *t, causal=causal, names=names, extra=extra):
                out, lse = ops.attention(q, k, v, mask, causal, None, 0.0, None, **dict(zip(names, t)), **extra)
                return out, lse.detach()
            def exact(q, k, v, *t, causal=causal, names=names, extra=extra):
                out, lse = ref.attention(q, k, v, mask, causal, **dict(zip(names, t)), **extra)
                return out, lse.detach()
            case(f"attention/{policy}/causal={causal}", kernel, [q, k, v, *terms.values()], dtype, 3 + len(names),
                 exact)
    # Attention dropout: the kernels' Philox keep-mask, forward and backward.
    case("attention/dropout", lambda q, k, v: ops.attention(q, k, v, mask, True, None, 0.25, rng)[0], [q, k, v],
         dtype, 3, lambda q, k, v: ref.attention(q, k, v, mask, True, keep, 0.25)[0])
    x = rnd(3, 41, 29)
    case("dropout", lambda x: ops.dropout(x, 0.3, rng), [x], dtype, 1, lambda x: ref.dropout(x, 0.3, rng))
    pmask = torch.rand(3, 41, generator=gen) > 0.35
    pmask[:, 0] = True
    pmask[1] = False                                     # a fully masked row
    w, b = rnd(4, 29), rnd(4)
    case("seq_pool", lambda x, w, b: ops.seq_pool(x, w, b, pmask)[0], [x, w, b], dtype, 3,
         lambda x, w, b: ref.seq_pool(x, w, b, pmask))
    for act in ("tanh", "relu", "sigmoid", "identity"):
        case(f"lama_pool/{act}", lambda x, p, q: ops.lama_pool(x, p, q, pmask, act, True, 1e-12), [x, w, w.flip(0)],
             dtype, 3, lambda x, p, q: ref.lama_pool(x, p, q, pmask, act))
    for mode in ("max", "mean", "sum"):
        case(f"masked_pool/{mode}", lambda x: ops.masked_pool(x, pmask, mode)[0], [x], dtype, 1,
             lambda x: ref.masked_pool(x, pmask, mode))
    xc = rnd(3, 40, 29)
    for mode in ("max", "mean"):
        case(f"compress/{mode}", lambda x: ops.compress(x, 4, mode, None, None, "error")[0], [xc], dtype, 1,
             lambda x: ref.compress(x, 4, mode)[0])
    case("compress/conv", lambda x, w, b: ops.compress(x, 4, "conv", w, b, "error")[0], [xc, rnd(7, 29, 4), rnd(7)],
         dtype, 3, lambda x, w, b: ref.compress(x, 4, "conv", w, b)[0])
xb = x.bfloat16()
check("masked_pool/sum/bfloat16", ops.masked_pool(xb, None, "sum")[0].double(), xb.double().sum(1), 0.05)
torch.save(results, sys.argv[1])
print(f"{len(results)} results")
if failures:
    sys.exit("\n".join(failures))
"""


def cpu_flags() -> set:
    try:
        with open("/proc/cpuinfo") as f:
            return {flag for line in f if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    except OSError:
        return set()


def isa_unavailable(isa: str):
    """Why `isa` cannot run here (None when it can)."""
    if isa.upper() not in seqops.build_info()["cpu_isas"]:
        return f"the library was not compiled with {isa.upper()} (cpu_isas {seqops.build_info()['cpu_isas']})"
    flags = cpu_flags()
    if flags:
        lacking = ISA_FLAGS[isa] - flags
        return f"this CPU lacks {isa} ({', '.join(sorted(lacking))} not in /proc/cpuinfo)" if lacking else None
    # No /proc/cpuinfo: what torch selects by itself is the highest the CPU supports.
    best = run_python("import torch; print(torch.backends.cpu.get_cpu_capability())",
                      ATEN_CPU_CAPABILITY="").stdout.strip().lower()
    best = best if best in ISAS else "default"
    return None if ISAS.index(isa) <= ISAS.index(best) else f"this CPU lacks {isa} (torch selects {best})"


@pytest.fixture(scope="module")
def isa_runs(tmp_path_factory):
    """ISA -> (completed process, results path), for each ISA this machine can run."""
    runs, out = {}, tmp_path_factory.mktemp("isa")
    for isa in ISAS:
        if isa_unavailable(isa) is None:
            path = out / f"{isa}.pt"
            runs[isa] = (subprocess.run([sys.executable, "-c", ISA_SCRIPT, str(path)], capture_output=True,
                                        text=True, env={**os.environ, "ATEN_CPU_CAPABILITY": isa}, timeout=300), path)
    return runs


@pytest.mark.parametrize("isa", ISAS)
def test_isa_variant_matches_float64_reference(isa, isa_runs):
    reason = isa_unavailable(isa)
    if reason:
        pytest.skip(f"ISA {isa} not tested: {reason}")
    r, path = isa_runs[isa]
    assert r.returncode == 0, f"under ATEN_CPU_CAPABILITY={isa}:\n{r.stdout}\n{r.stderr}"
    assert r.stdout.split()[0] == isa.upper(), f"cpu_isa() reports {r.stdout.split()[0]}, not {isa.upper()}"
    assert path.exists()


def test_isa_variants_agree_with_each_other(isa_runs):
    ok = {isa: torch.load(path) for isa, (r, path) in isa_runs.items() if r.returncode == 0}
    skipped = [f"{isa} ({isa_unavailable(isa)})" for isa in ISAS if isa not in isa_runs]
    if len(ok) < 2:
        pytest.skip(f"fewer than two ISAs ran; not tested: {', '.join(skipped) or 'none'}")
    base_isa, base = next(iter(ok.items()))
    for isa, results in ok.items():
        assert results.keys() == base.keys()
        for name, t in results.items():
            # Same math, other vector widths and summation orders: float64 to ~1e-12, float32 to
            # ~1e-5; the dropout keep-masks (zeros) exactly.
            tol = 1e-5 if "float32" in name or "bfloat16" in name else 1e-12
            torch.testing.assert_close(t, base[name], rtol=tol, atol=tol,
                                       msg=lambda m, name=name, isa=isa: f"{name}: {isa} vs {base_isa}: {m}")
            if name.startswith("dropout/") and name.endswith("out0"):
                assert torch.equal(t == 0, base[name] == 0), f"{name}: {isa}'s dropout mask differs"
