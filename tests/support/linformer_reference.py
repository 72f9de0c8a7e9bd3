"""A float64 per-head reference of seqops.nn's Linformer: it loops over heads and builds every
attention matrix densely (keys, the visibility of each (query, key) pair, softmax) from the
modules' own parameters. Only the chunk geometry of causal compression (a design choice,
seqops.nn.linformer.projection.causal_chunks) is shared with the implementation."""
import torch
import torch.nn.functional as F

from seqops.nn import MHAttention
from seqops.nn.linformer.projection import causal_chunks

F64 = torch.float64


def ref_project(t, weight, bias, rows, input_size, block):
    """One head's E: t (B, L, d) -> (B, R, d); weight (k, n) or Conv1d (d, d, kernel)."""
    L = t.shape[1]
    if weight.dim() == 2:
        w = weight[:rows, :L] * block
        out = w @ t
        return out if bias is None else out + bias[:rows, None]
    kernel = weight.shape[-1]
    R = min(-(-L // kernel), input_size // kernel)
    seq = F.pad(t.transpose(1, 2), (0, max(0, R * kernel - L)))[:, :, :R * kernel]
    return F.conv1d(seq, weight, bias, stride=kernel).transpose(1, 2)


def ref_head(q, k, v, E, Eb, Fw, Fb, dim_k, input_size, mask, causal, full):
    """Dense attention of one head: q (B, L, d), k/v (B, Lk, d)."""
    B, L, d = q.shape
    Lk = k.shape[1]
    kept = torch.ones(B, Lk, dtype=torch.bool) if mask is None else mask
    i, j = torch.arange(L)[:, None], torch.arange(Lk)[None, :]
    if full:
        keys, vals = k, v
        visible = kept[:, None, :] & ((j <= i) if causal else torch.ones(L, Lk, dtype=torch.bool))
    else:
        k0, v0 = k * kept[..., None], v * kept[..., None]
        kernel = E.shape[-1] if E.dim() == 3 else 0
        R = dim_k if kernel == 0 else min(-(-Lk // kernel), input_size // kernel)
        r = torch.arange(R)[:, None]
        m, c = causal_chunks(input_size, dim_k, kernel) if causal else (R, max(Lk, 1))
        if kernel:
            support = j // kernel == r
        elif causal:
            support = r // m == j // c
        else:
            support = torch.ones(R, Lk, dtype=torch.bool)
        block = support.to(F64) if causal else torch.ones(R, Lk, dtype=F64)
        kbar = ref_project(k0, E, Eb, R, input_size, block)
        vbar = ref_project(v0, Fw, Fb, R, input_size, block)
        row_ok = (kept[:, None, :] & support[None]).any(-1)  # (B, R)
        if not causal:
            keys, vals, visible = kbar, vbar, row_ok[:, None, :].expand(B, L, R)
        else:
            keys, vals = torch.cat([kbar, k], 1), torch.cat([vbar, v], 1)
            rows_seen = (torch.arange(R)[None, :] // m) < (torch.arange(L)[:, None] // c)
            local = (j <= i) & (j // c == i // c)
            visible = torch.cat([rows_seen[None] & row_ok[:, None, :], local[None] & kept[:, None, :]], -1)
    logits = (q @ keys.transpose(1, 2)) / d ** 0.5
    p = torch.softmax(logits.masked_fill(~visible, float("-inf")), -1).nan_to_num(0.0)
    return p @ vals


def ref_mha(attn, x, mask, emb, emb_mask, shared):
    Hn, d = attn.nhead, attn.dim
    W = attn.in_proj_weight
    src, smask = (emb, emb_mask) if attn.decoder_mode else (x, mask)
    full = attn.heads.full_attention
    E = attn.heads.E if attn.heads.E is not None else shared
    Fp = attn.heads.F if attn.heads.F is not None else E
    outs = []
    for h in range(Hn):
        q = x @ W[h * d:(h + 1) * d].t()
        k = src @ W[(Hn + h) * d:(Hn + h + 1) * d].t()
        v = src @ W[(2 * Hn + h) * d:(2 * Hn + h + 1) * d].t()
        if full:
            proj = (None,) * 4
        else:
            e, f = (h if E.heads > 1 else 0), (h if Fp.heads > 1 else 0)
            proj = (E.weight[e], None if E.bias is None else E.bias[e], Fp.weight[f],
                    None if Fp.bias is None else Fp.bias[f])
        outs.append(ref_head(q, k, v, *proj, attn.heads.dim_k, attn.input_size, smask, attn.heads.causal, full))
    out = torch.cat(outs, -1)
    return attn.w_o(out) if attn.w_o is not None else attn.w_o_2(attn.w_o_1(out))


def ref_linformer(model, x, mask=None, emb=None, emb_mask=None):
    for block in model.seq:
        if isinstance(block.fn, MHAttention):
            y = ref_mha(block.fn, x, mask, emb, emb_mask, model.E)
        else:
            y = block.fn(x)
        x = block.norm((x if block.resample is None else block.resample(x)) + y)
    return x
