"""Plain-PyTorch references of every seqops op: the oracle of the tests (run them in float64).

They follow the ops' documented semantics, including the edge cases (rows with nothing kept
give zeros), and are written for clarity, not speed.
"""
import math
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .relative_position import relative_positions, t5_bucket  # noqa: F401  (part of the oracle's API)


def _masked_softmax(logits: Tensor, keep: Optional[Tensor]) -> Tensor:
    """Softmax over the last dim restricted to `keep` (broadcastable); all-masked rows -> 0."""
    if keep is None:
        return torch.softmax(logits, dim=-1)
    logits = logits.masked_fill(~keep, float("-inf"))
    any_kept = keep.any(dim=-1, keepdim=True)
    return torch.where(any_kept, torch.softmax(logits.masked_fill(~any_kept, 0.0), dim=-1), 0.0)


def _seq_pool_logits(x: Tensor, weight: Tensor, bias: Optional[Tensor]) -> Tensor:
    if weight.dim() == 2:
        logits = torch.einsum("bld,hd->bhl", x, weight)
    else:
        logits = torch.einsum("bld,bhd->bhl", x, weight)
    return logits if bias is None else logits + bias.unsqueeze(-1)


def seq_pool(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
             mask: Optional[Tensor] = None) -> Tensor:
    logits = _seq_pool_logits(x, weight, bias)
    p = _masked_softmax(logits, None if mask is None else mask[:, None, :])
    return torch.einsum("bhl,bld->bhd", p, x)


def seq_pool_lse(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                 mask: Optional[Tensor] = None) -> Tensor:
    """(B, H) log-sum-exp of seq_pool's kept logits (the op's second output); -inf where a row
    keeps nothing."""
    logits = _seq_pool_logits(x, weight, bias)
    if mask is not None:
        logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
    return torch.logsumexp(logits, dim=-1)


_ACTIVATIONS = {"identity": lambda z: z, "tanh": torch.tanh, "relu": torch.relu,
                "sigmoid": torch.sigmoid}


def lama_pool(x: Tensor, p: Tensor, q: Tensor, mask: Optional[Tensor] = None,
              activation: str = "tanh", normalize: bool = True,
              eps: float = 1e-12) -> Tuple[Tensor, Tensor]:
    u = torch.einsum("bld,hd->bhl", x, q)           # (B, H, L)
    return lama_pool_of_projection(x, u, p, mask, activation, normalize, eps)


def lama_pool_of_projection(x: Tensor, u: Tensor, p: Tensor, mask: Optional[Tensor] = None,
                            activation: str = "tanh", normalize: bool = True,
                            eps: float = 1e-12) -> Tuple[Tensor, Tensor]:
    """lama_pool given u = einsum("bld,hd->bhl", x, q): the tests differentiate with respect to
    u to size the terms the gradients of x and q sum."""
    if mask is None:
        context = x.mean(dim=1)
    else:
        m = mask.to(x.dtype).unsqueeze(-1)
        context = (x * m).sum(1) / m.sum(1).clamp_min(1.0)
    g = context @ p.t()                             # (B, H)
    a = _ACTIVATIONS[activation](g.unsqueeze(-1) * u)
    ahat = a / a.norm(dim=1, keepdim=True).clamp_min(eps)
    keep = None if mask is None else mask[:, None, :]
    if normalize:
        weights = _masked_softmax(ahat, keep)
    else:
        weights = ahat if keep is None else ahat.masked_fill(~keep, 0.0)
    return weights @ x, weights


def _first_max(x: Tensor, scores: Tensor, dim: int) -> Tensor:
    """x at the first position of the maximum of scores along dim (dim removed): that position
    alone takes the gradient, as the ops do (amax would split it among ties)."""
    return x.gather(dim, scores.argmax(dim, keepdim=True)).squeeze(dim)


def masked_pool(x: Tensor, mask: Optional[Tensor] = None, mode: str = "mean") -> Tensor:
    keep = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device) if mask is None else mask
    k = keep.unsqueeze(-1)
    if mode == "max":
        out = _first_max(x, x.masked_fill(~k, float("-inf")), 1)
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


# ----------------------------------------------------------------------------- attention

def rotary(x: Tensor, positions: Tensor, rotary_dim: int, base: float = 10000.0,
           interleaved: bool = False) -> Tensor:
    """Rotary position embedding of x (..., L, D) at positions (L,), as complex multiplication:
    each feature pair (a, b) is a + ib times exp(i * position * base^(-2p / rotary_dim))."""
    half = rotary_dim // 2
    theta = base ** (torch.arange(half, dtype=torch.float64, device=x.device) * (-2.0 / rotary_dim))
    turn = torch.polar(torch.ones(len(positions), half, dtype=torch.float64, device=x.device),
                       positions.to(torch.float64)[:, None] * theta)
    rot = x[..., :rotary_dim].to(torch.float64)
    pairs = rot.unflatten(-1, (half, 2)) if interleaved else rot.unflatten(-1, (2, half)).transpose(-1, -2)
    turned = torch.view_as_real(torch.view_as_complex(pairs.contiguous()) * turn)
    turned = turned.flatten(-2) if interleaved else turned.transpose(-1, -2).flatten(-2)
    return torch.cat([turned.to(x.dtype), x[..., rotary_dim:]], dim=-1)


def attention_logits(q: Tensor, k: Tensor, scale: Optional[float] = None,
                     bias: Optional[Tensor] = None, t5_table: Optional[Tensor] = None,
                     t5_bidirectional: bool = True, t5_max_distance: int = 128,
                     alibi_slopes: Optional[Tensor] = None, rel_keys: Optional[Tensor] = None,
                     rel_scores: Optional[Tensor] = None, content_bias: Optional[Tensor] = None,
                     position_bias: Optional[Tensor] = None, rel_zero: Optional[int] = None,
                     query_offset: Optional[int] = None, rotary_dim: int = 0,
                     rotary_base: float = 10000.0, rotary_interleaved: bool = False) -> Tensor:
    """The (B, Hq, Lq, Lk) logits of seqops.ops.attention, materialized (k in (B, Hk, Lk, d)).
    With rotary_dim, q and k are rotated first (query i at i + query_offset, key j at j)."""
    B, Hq, Lq, d = q.shape
    Lk = k.shape[2]
    k = k.repeat_interleave(Hq // k.shape[1], dim=1)
    scale = d ** -0.5 if scale is None else scale
    if rotary_dim > 0:
        first = Lk - Lq if query_offset is None else query_offset
        q = rotary(q, torch.arange(first, first + Lq, device=q.device), rotary_dim, rotary_base,
                   rotary_interleaved)
        k = rotary(k, torch.arange(Lk, device=k.device), rotary_dim, rotary_base, rotary_interleaved)
    r = relative_positions(Lq, Lk, query_offset, q.device)
    if rel_keys is not None:
        rel_zero = rel_keys.shape[0] - 1 if rel_zero is None else rel_zero
        idx = r + rel_zero                                   # (Lq, Lk) rows of R
        idx = idx.clamp(0, rel_keys.shape[0] - 1)            # rows outside R are never visible
        qc = q if content_bias is None else q + content_bias[None, :, None, :]
        qp = q if position_bias is None else q + position_bias[None, :, None, :]
        # qp . R[idx[i, j]]: every row of R against every query, then each pair's row picked
        # (the same sums as gathering R per pair, without an (Lq, Lk, H, d) table).
        G = torch.einsum("bhid,nhd->bhin", qp, rel_keys.to(q.dtype))   # (B, H, Lq, L_rel)
        positional = G.gather(-1, idx.expand(B, Hq, Lq, Lk))
        logits = qc @ k.transpose(-1, -2) + positional
        if rel_scores is not None:
            logits = logits + rel_scores.to(q.dtype)[idx].permute(2, 0, 1)[None]
        return scale * logits
    logits = scale * (q @ k.transpose(-1, -2))
    if bias is not None:
        logits = logits + bias.to(q.dtype)
    if t5_table is not None:
        buckets = t5_bucket(r, t5_bidirectional, t5_table.shape[1], t5_max_distance)
        logits = logits + t5_table.to(q.dtype)[:, buckets][None]
    if alibi_slopes is not None:
        logits = logits - alibi_slopes.to(q.dtype)[None, :, None, None] * r.abs().to(q.dtype)
    return logits


def attention_keep(batch: int, len_q: int, len_k: int, key_padding_mask: Optional[Tensor] = None,
                   causal: bool = False, device=None, window_left: int = -1,
                   window_right: int = -1) -> Tensor:
    """(B, 1, Lq, Lk) bool: which keys each query may attend. Causal and the window measure the
    key's offset j - (i + Lk - Lq) from the query's diagonal: <= 0 (causal), >= -window_left,
    <= window_right (-1: no limit)."""
    keep = torch.ones(batch, 1, len_q, len_k, dtype=torch.bool, device=device)
    i = torch.arange(len_q, device=device)[:, None]
    j = torch.arange(len_k, device=device)[None, :]
    offset = j - (i + len_k - len_q)
    if causal:
        keep = keep & (offset <= 0)
    if window_left >= 0:
        keep = keep & (offset >= -window_left)
    if window_right >= 0:
        keep = keep & (offset <= window_right)
    if key_padding_mask is not None:
        keep = keep & key_padding_mask[:, None, None, :]
    return keep


_M32 = 0xFFFFFFFF


def philox4x32_10(counter: Tuple[int, int, int, int], key: Tuple[int, int]) -> List[int]:
    """Philox-4x32-10 (Salmon et al., SC 2011) on Python ints: four 32-bit words from a 4-word
    counter and a 2-word key. The kernels' dropout stream (csrc/common/philox.h)."""
    c, (k0, k1) = list(counter), key
    for _ in range(10):
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [((p1 >> 32) ^ c[1] ^ k0) & _M32, p1 & _M32, ((p0 >> 32) ^ c[3] ^ k1) & _M32, p0 & _M32]
        k0, k1 = (k0 + 0x9E3779B9) & _M32, (k1 + 0xBB67AE85) & _M32
    return c


def _philox_keep(rng: Tensor, p: float, n: int, counter) -> Tensor:
    """Keep draws (n,) of one Philox stream under the (seed, offset) pair rng: position j is word
    j % 4 of Philox(counter(j // 4, offset mod 2^32), key seed), kept when its top 24 bits as a
    uniform in [0, 1) are below float32(1 - p)."""
    seed, offset = (int(v) & 0xFFFFFFFFFFFFFFFF for v in rng.tolist())
    key = (seed & _M32, seed >> 32)
    keep_prob = torch.tensor(1.0 - p, dtype=torch.float32).item()
    keep = torch.empty(n, dtype=torch.bool)
    for j4 in range((n + 3) // 4):
        words = philox4x32_10(counter(j4, offset & _M32), key)
        for j in range(4 * j4, min(4 * j4 + 4, n)):
            keep[j] = (words[j % 4] >> 8) / 16777216.0 < keep_prob
    return keep


def attention_dropout_keep(rng: Tensor, batch_heads: int, len_q: int, len_k: int, p: float) -> Tensor:
    """The keep-mask (batch_heads, len_q, len_k) that attention draws from the (seed, offset)
    pair rng: row (bh, i) is the stream of counters (j // 4, i, bh, offset)."""
    rows = [_philox_keep(rng, p, len_k, lambda j4, offset, i=i, bh=bh: (j4, i, bh, offset))
            for bh in range(batch_heads) for i in range(len_q)]
    return torch.stack(rows).reshape(batch_heads, len_q, len_k)


def dropout_keep(rng: Tensor, numel: int, p: float) -> Tensor:
    """The keep-mask (numel,) that seqops.ops.dropout draws from the (seed, offset) pair rng: the
    stream of counters ((e // 4) mod 2^32, (e // 4) >> 32, 0, offset)."""
    return _philox_keep(rng, p, numel, lambda e4, offset: (e4 & _M32, e4 >> 32, 0, offset))


def dropout(x: Tensor, p: float, rng: Tensor) -> Tensor:
    """seqops.ops.dropout's op: x * (1 / (1 - p)) where kept (dropout_keep over x's row-major
    order), 0 elsewhere."""
    keep = dropout_keep(rng, x.numel(), p).reshape(x.shape).to(x.device)
    return torch.where(keep, x * (1.0 / (1.0 - p)), 0.0)


def attention(q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor] = None,
              causal: bool = False, dropout_mask: Optional[Tensor] = None, dropout_p: float = 0.0,
              window_left: int = -1, window_right: int = -1, cu_seqlens: Optional[Tensor] = None,
              **score) -> Tuple[Tensor, Tensor]:
    """softmax(logits, masked) @ v and the log-sum-exp per query, materialized.

    dropout_mask (B, Hq, Lq, Lk) bool, True = kept, scaled by 1 / (1 - dropout_p). The window
    and causal as in attention_keep. Queries that see no key give zeros and lse = -inf.
    cu_seqlens (packed sequences): each sequence cut out of the rows and attended alone."""
    if cu_seqlens is not None:
        return _packed_attention(q, k, v, cu_seqlens, key_padding_mask, causal, dropout_mask, dropout_p,
                                 window_left, window_right, **score)
    B, Hq, Lq, _ = q.shape
    Lk = k.shape[2]
    logits = attention_logits(q, k, **score)
    keep = attention_keep(B, Lq, Lk, key_padding_mask, causal, q.device, window_left, window_right)
    p = _masked_softmax(logits, keep)
    lse = torch.logsumexp(logits.masked_fill(~keep, float("-inf")), dim=-1)
    if dropout_mask is not None:
        p = p * dropout_mask / (1.0 - dropout_p)
    out = p @ v.repeat_interleave(Hq // v.shape[1], dim=1)
    return out, lse


def _packed_attention(q: Tensor, k: Tensor, v: Tensor, cu_seqlens: Tensor, key_padding_mask: Optional[Tensor],
                      causal: bool, dropout_mask: Optional[Tensor], dropout_p: float, window_left: int,
                      window_right: int, **score) -> Tuple[Tensor, Tensor]:
    """attention of each packed sequence alone (tokens cu_seqlens[s] .. cu_seqlens[s + 1] - 1 of
    q, k, v, the mask and the dense bias), concatenated. Raises where the op must."""
    offsets = cu_seqlens.tolist()
    if (q.shape[2] != k.shape[2] or offsets[0] != 0 or offsets[-1] != q.shape[2]
            or any(b < a for a, b in zip(offsets, offsets[1:])) or score.get("query_offset") is not None):
        raise ValueError("cu_seqlens must run from 0 to Lq = Lk, non-decreasing, without query_offset")
    outs, lses = [], []
    for start, end in zip(offsets, offsets[1:]):
        if end == start:
            continue
        cut = slice(start, end)
        part = dict(score)
        if part.get("bias") is not None:  # broadcast dimensions stay whole
            bias = part["bias"]
            part["bias"] = bias[..., cut if bias.shape[-2] > 1 else slice(None), cut if bias.shape[-1] > 1 else slice(None)]
        out, lse = attention(q[:, :, cut], k[:, :, cut], v[:, :, cut],
                             None if key_padding_mask is None else key_padding_mask[:, cut], causal,
                             None if dropout_mask is None else dropout_mask[..., cut, cut], dropout_p,
                             window_left, window_right, **part)
        outs.append(out)
        lses.append(lse)
    return torch.cat(outs, dim=2), torch.cat(lses, dim=2)


# ----------------------------------------------------------------------------- compress

def compress(x: Tensor, rate: int, mode: str = "mean", weight: Optional[Tensor] = None,
             bias: Optional[Tensor] = None, remainder: str = "error") -> Tuple[Tensor, Tensor]:
    """seqops.ops.compress materialized: (compressed (B, L // rate, Dout), tail (B, L % rate, D))."""
    B, L, D = x.shape
    if remainder == "error" and (L < rate or L % rate != 0):
        raise ValueError(f"length {L} is not a positive multiple of rate {rate}")
    W = L // rate
    head = x[:, :W * rate]
    if W == 0:  # empty, still attached to x's graph (conv1d rejects an input shorter than its kernel)
        out = x[:, :0, :1].expand(B, 0, weight.shape[0] if mode == "conv" else D)
    elif mode == "conv":
        out = F.conv1d(head.transpose(1, 2), weight, bias, stride=rate).transpose(1, 2)
    elif mode == "mean":
        out = head.reshape(B, W, rate, D).mean(2)
    else:
        windows = head.reshape(B, W, rate, D)
        out = _first_max(windows, windows, 2)
    return out, x[:, W * rate:]


def compressive_layer(state: dict[str, Tensor], x: Tensor, mem: Optional[Tensor] = None,
                      c_mem: Optional[Tensor] = None, key_padding_mask: Optional[Tensor] = None,
                      causal: bool = True, heads: int = 1, eps: float = 1e-5) -> Tensor:
    """One Compressive Transformer layer (labml's pre-LayerNorm math) from a state_dict in
    labml's layout, batch-first and fully materialized.

    x (B, Lq, D); mem (B, Lm, D) and c_mem (B, Lc, D) un-normalized, keys = [c_mem; mem; x];
    key_padding_mask bool (B, Lc + Lm + Lq). The relative tables key_pos_embeddings (2P, H, d)
    and key_pos_bias (2P, H) are indexed P + (key position - query position), clamped to the
    table (labml: P = 4096 and no clamping, i.e. spans up to P):
    logit = ((q_i + query_pos_bias).k_j + q_i.R[idx] + S[idx]) / sqrt(d).
    """
    def norm(t: Tensor, name: str) -> Tensor:
        return F.layer_norm(t, t.shape[-1:], state[name + ".weight"], state[name + ".bias"], eps)

    B, Lq, D = x.shape
    d = D // heads
    z = norm(x, "norm_self_attn")
    memory = [t for t in (c_mem, mem) if t is not None]
    kv = torch.cat([norm(torch.cat(memory, 1), "norm_self_attn"), z], 1) if memory else z
    Lk = kv.shape[1]
    a = "self_attn."
    q = F.linear(z, state[a + "query.linear.weight"]).view(B, Lq, heads, d)
    k = F.linear(kv, state[a + "key.linear.weight"]).view(B, Lk, heads, d)
    v = F.linear(kv, state[a + "value.linear.weight"], state[a + "value.linear.bias"]).view(B, Lk, heads, d)
    R, S, u = state[a + "key_pos_embeddings"], state[a + "key_pos_bias"], state[a + "query_pos_bias"]
    P = R.shape[0] // 2
    i = torch.arange(Lq, device=x.device)[:, None]
    j = torch.arange(Lk, device=x.device)[None, :]
    idx = (P + j - (i + Lk - Lq)).clamp(0, 2 * P - 1)            # (Lq, Lk)
    logits = (torch.einsum("bihd,bjhd->bhij", q + u, k)
              + torch.einsum("bihd,ijhd->bhij", q, R[idx])
              + S[idx].permute(2, 0, 1)[None]) / math.sqrt(d)
    keep = attention_keep(B, Lq, Lk, key_padding_mask, causal, x.device)
    p = _masked_softmax(logits, keep)
    attn = torch.einsum("bhij,bjhd->bihd", p, v).reshape(B, Lq, D)
    x = x + F.linear(attn, state[a + "output.weight"], state[a + "output.bias"])
    hidden = torch.relu(F.linear(norm(x, "norm_ff"), state["feed_forward.layer1.weight"],
                                 state["feed_forward.layer1.bias"]))
    return x + F.linear(hidden, state["feed_forward.layer2.weight"], state["feed_forward.layer2.bias"])
