"""Relative-key positional embeddings: Transformer-XL and Enformer (API in base.py).

Both give logits[b, h, i, j] = (q_i + u_h).k_j + (q_i + v_h).R_h[pk_j - pq_i], with R a
per-distance key (the projected sinusoid of Transformer-XL, the projected feature basis of
Enformer); ``attend`` passes R, u and v to the op's relative-keys policy (one row per distance
the call can see, the positions' offset folded into R's rows), so no (Lq, Lk) tensor is built.
Positions that are not shifted aranges fall back to a materialized bias (op's ``bias`` policy).

- Transformer-XL: the relative shift acts on the (query, key) axes of each (batch, head). The
  distance is computed from positions (query minus key; with positions=None the queries are the
  last Lq keys, as with Transformer-XL memory), and keys after the query (non-causal use) get
  the sinusoid of the negative distance (XLNet's bidirectional extension). ``r_w_bias`` and
  ``r_r_bias`` start at N(0, 0.02) (Transformer-XL's init); an odd embed_dim drops the last
  cosine column.
- Enformer: the module returns (B, H, Lq, Lk) logits; the relative keys are
  R[p] = pos_embed(features(p)).view(H, Dh) for the relative distance p = key - query; any
  H*Dh >= 12 constructs (pos_embed's input width is the actual feature width); the feature
  basis is computed once per length and cached.

How both differ from positional-embeddings-pytorch, with the pinning tests: docs/compat.md.
"""
import math
from typing import Dict, Optional, Tuple

import torch
from torch import Tensor, nn

from ... import ops
from .base import PositionalEmbedding, resolve_scale


class _RelativeKeys(PositionalEmbedding):
    """Shared machinery: subclasses provide ``relative_keys(values, len_q, len_k, start)`` -> R
    (U, H, Dh) for key-minus-query distances ``values`` (U,) (``start`` is given when values is
    arange(start, start + U)) and the biases u, v (H, Dh)."""

    def relative_keys(self, values: Tensor, len_q: int, len_k: int, start: Optional[int]) -> Tensor:
        raise NotImplementedError

    def _biases(self) -> Tuple[Tensor, Tensor]:
        raise NotImplementedError

    def _distance_index(self, positions_q: Optional[Tensor], positions_k: Optional[Tensor],
                        len_q: int, len_k: int,
                        device: torch.device) -> Tuple[Tensor, Tensor, Optional[int]]:
        """Distinct key-minus-query distances (U,), each pair's row (B or 1, Lq, Lk), and the
        first distance when they are consecutive (positions=None)."""
        if positions_q is None and positions_k is None:
            start = -(len_q - 1) - self._query_start(len_q, len_k)
            values = torch.arange(start, start + len_q + len_k - 1, device=device)
            i = torch.arange(len_q, device=device)[:, None]
            j = torch.arange(len_k, device=device)[None, :]
            return values, (j - i + len_q - 1).unsqueeze(0), start
        rel = self._relative(positions_q, positions_k, len_q, len_k, device)
        values, index = torch.unique(rel, return_inverse=True)
        return values, index, None

    def score_terms(self, q: Tensor, k: Tensor, positions_q: Optional[Tensor] = None,
                    positions_k: Optional[Tensor] = None) -> Optional[Tensor]:
        """u.k_j + (q_i + v).R[pk_j - pq_i], unscaled, (B, H, Lq, Lk)."""
        batch, heads, len_q, _ = q.shape
        len_k = k.shape[-2]
        values, index, start = self._distance_index(positions_q, positions_k, len_q, len_k, q.device)
        rel_keys = self.relative_keys(values, len_q, len_k, start).to(q.dtype)  # (U, H, Dh)
        u, v = self._biases()
        content = torch.einsum("hd,bhjd->bhj", u.to(q.dtype), k).unsqueeze(2)
        by_row = torch.einsum("bhid,uhd->bhiu", q + v.to(q.dtype)[None, :, None, :], rel_keys)
        index = index.unsqueeze(1).expand(batch, heads, len_q, len_k)
        return content + by_row.gather(-1, index)

    def attend(self, q: Tensor, k: Tensor, v: Tensor, key_padding_mask: Optional[Tensor] = None,
               causal: bool = False, scale: Optional[float] = None, dropout_p: float = 0.0,
               positions_q: Optional[Tensor] = None, positions_k: Optional[Tensor] = None,
               window: Optional[Tuple[int, int]] = None, query_start: Optional[int] = None,
               cu_seqlens: Optional[Tensor] = None) -> Tensor:
        if cu_seqlens is not None and self.features_scale_with_length:
            raise ValueError("EnformerPositionalEmbedding's relative features scale with the sequence length, so "
                             "packed sequences (cu_seqlens) of different lengths cannot share one call: attend each "
                             "alone")
        window_left, window_right = ops.window_bounds(window)
        scale_ = resolve_scale(q, scale)
        len_q, len_k = q.shape[-2], k.shape[-2]
        offset = self._query_offset(positions_q, positions_k, len_q, len_k, q.device, query_start)
        if offset is None:
            return self._attend_dense(q, k, v, key_padding_mask, causal, scale_, dropout_p,
                                      positions_q, positions_k, window, query_start, cu_seqlens)
        # Row n of R is the distance n - (Lq - 1) - offset, which the op reads for r = j - i
        # (query_offset=0, rel_zero=Lq-1): every row index is in range for any offset.
        start = -(len_q - 1) - offset
        values = torch.arange(start, start + len_q + len_k - 1, device=q.device)
        rel_keys = self.relative_keys(values, len_q, len_k, start).contiguous()
        u, v_bias = self._biases()
        return ops.attention(q, k, v, key_padding_mask, causal, scale_, dropout_p,
                             rel_keys=rel_keys, content_bias=u.contiguous(),
                             position_bias=v_bias.contiguous(), rel_zero=len_q - 1,
                             query_offset=0, window_left=window_left,
                             window_right=window_right, cu_seqlens=cu_seqlens)

    def forward_input(self, input_: Tensor, positions: Optional[Tensor] = None) -> Tensor:
        return input_


class _SinusoidPositions(nn.Module):
    """Transformer-XL's sinusoid of a distance: [sin(d f) | cos(d f)], f = 10000^(-2i/E).

    The buffer ``inv_freq`` is kept for the original's state_dict layout (``pos_emb.inv_freq``);
    the sinusoid is computed in float64 from the formula (a float32 buffer would put 1e-7
    errors into float64 logits) and returned in float64."""

    def __init__(self, embed_dim: int, device=None) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.register_buffer("inv_freq", self._frequencies(device, torch.float32))

    def _frequencies(self, device: Optional[torch.device], dtype: torch.dtype) -> Tensor:
        exponent = torch.arange(0.0, self.embed_dim, 2.0, device=device, dtype=torch.float64)
        return (10000.0 ** (-exponent / self.embed_dim)).to(dtype)

    def forward(self, distance: Tensor) -> Tensor:
        """distance (N,) -> (N, embed_dim), float64."""
        arg = distance.double()[:, None] * self._frequencies(distance.device, torch.float64)[None, :]
        return torch.cat([arg.sin(), arg.cos()], dim=-1)[:, :self.embed_dim]


class TransformerXLPositionalEmbedding(_RelativeKeys):
    """Transformer-XL relative attention (Dai et al. 2019):
    logits = (q_i + r_w_bias).k_j + (q_i + r_r_bias).r_net(dropout(sinusoid(pq_i - pk_j))).

    Parameters as the original (state_dict keys ``r_net.weight``, ``pos_emb.inv_freq``,
    ``r_w_bias``, ``r_r_bias`` (1, H, 1, Dh)). With positions=None the queries are the last Lq of
    the Lk keys (memory first). The dropout acts on the sinusoid rows, so the fused path keeps it.
    """

    def __init__(self, *, embed_dim: int, num_heads: int, head_dim: int,
                 dropout_p: Optional[float] = None, device=None, dtype=None) -> None:
        super().__init__(embed_dim=embed_dim, num_heads=num_heads, head_dim=head_dim,
                         dropout_p=dropout_p)
        self.features_scale_with_length = False  # Enformer's do: no packed sequences there
        factory = {"device": device, "dtype": dtype}
        self.r_net = nn.Linear(embed_dim, num_heads * head_dim, bias=False, **factory)
        self.pos_emb = _SinusoidPositions(embed_dim, device=device)
        if dtype is not None:
            self.pos_emb.to(dtype)
        self.r_w_bias = nn.Parameter(torch.empty(1, num_heads, 1, head_dim, **factory))
        self.r_r_bias = nn.Parameter(torch.empty(1, num_heads, 1, head_dim, **factory))
        nn.init.normal_(self.r_w_bias, std=0.02)
        nn.init.normal_(self.r_r_bias, std=0.02)

    def _query_start(self, len_q: int, len_k: int) -> int:
        return len_k - len_q

    def relative_keys(self, values: Tensor, len_q: int, len_k: int, start: Optional[int]) -> Tensor:
        r = self.pos_emb(-values).to(self.r_net.weight.dtype)  # distance = query - key
        return self.r_net(self.positional_embedding_dropout(r)).unflatten(-1, (self.num_heads, self.head_dim))

    def _biases(self) -> Tuple[Tensor, Tensor]:
        return (self.r_w_bias.view(self.num_heads, self.head_dim),
                self.r_r_bias.view(self.num_heads, self.head_dim))


class EnformerPositionalEmbedding(_RelativeKeys):
    """Enformer relative attention (Avsec et al. 2021):
    logits = (q_i + content_bias).k_j + (q_i + pos_embed_bias).R[p], p = pk_j - pq_i,
    R[p] = pos_embed(dropout(features(p))).view(H, Dh).

    features(p) = [exponential (f+1), central_mask (f), gamma (f), cosine (f), linear_masks (f),
    sin (ceil((f+1)/2)), cos (same)] of |p|, then the same times sign(p); f = H*Dh // 12, with the
    original's formulas and characteristic length S = max(Lq, Lk) (the original used Lq; equal
    for self-attention). Gamma features are normalized by their maximum over |p| < S, so a
    distance's features do not depend on which distances a call evaluates. Computed in float64
    once per (S, device, dtype) and cached for p in [-(S-1), S-1] (TorchScript, torch.compile
    and torch.export recompute them per call, inside the graph, so S may be dynamic); distances
    outside that range (given positions) are computed per call. Parameters: ``pos_embed``
    Linear(feature width -> H*Dh), ``content_bias`` (1, H, 1, Dh), ``pos_embed_bias``
    (H, 1, Dh), both zero-initialized.
    """

    _cache_size = 8
    __jit_ignored_attributes__ = ["_feature_cache"]  # eager-only

    def __init__(self, *, num_heads: int, head_dim: int, dropout_p: Optional[float] = None,
                 device=None, dtype=None) -> None:
        super().__init__(num_heads=num_heads, head_dim=head_dim, dropout_p=dropout_p)
        self.features_scale_with_length = True  # (attend refuses packed sequences)
        hd = num_heads * head_dim
        if hd < 12:
            raise ValueError(f"EnformerPositionalEmbedding needs num_heads * head_dim >= 12 (6 "
                             f"feature functions, symmetric and antisymmetric), got {hd}")
        self.feature_size = hd // 12
        f = self.feature_size
        self.num_features = 2 * (5 * f + 1 + 2 * ((f + 2) // 2))
        factory = {"device": device, "dtype": dtype}
        self.pos_embed = nn.Linear(self.num_features, hd, **factory)
        self.content_bias = nn.Parameter(torch.zeros(1, num_heads, 1, head_dim, **factory))
        self.pos_embed_bias = nn.Parameter(torch.zeros(num_heads, 1, head_dim, **factory))
        self._feature_cache: Dict[Tuple[int, str, torch.dtype], Tuple[Tensor, Tensor]] = {}

    # -- the feature basis
    def _features(self, p: Tensor, seq_length: int, gamma_max: Optional[Tensor]) -> Tensor:
        """float64 features of distances p (N,) -> (N, num_features); gamma divided by gamma_max
        (None: by its own maximum)."""
        f = self.feature_size
        device = p.device
        f64 = torch.float64
        a = p.double().abs()[:, None]
        # S as a 0-d tensor and linspace written out: no Python float of the length, so the
        # basis stays symbolic in S under torch.export / torch.compile(dynamic=True).
        S = torch.full((), seq_length, dtype=f64, device=device)
        steps = torch.arange(f + 1, dtype=f64, device=device) / f         # linspace(0, 1, f + 1)
        half_life = torch.pow(2.0, 3.0 + (torch.log2(S) - 3.0) * steps)   # 2^linspace(3, log2 S)
        exponential = torch.exp(-math.log(2.0) / half_life * a)
        m = torch.arange(f, dtype=f64, device=device)
        central = ((torch.pow(2.0, m + 1) - 1) > a).to(f64)
        mean = S * (m + 1) / f                                             # linspace(S / f, S, f)
        stddev = S / (2 * f)
        concentration = (mean / stddev) ** 2
        rate = mean / stddev ** 2
        log_pdf = (torch.xlogy(concentration - 1.0, a) - rate * a
                   - (torch.lgamma(concentration) - concentration * torch.log(rate)))
        gamma = torch.exp(log_pdf) + 1e-8
        if gamma_max is None:
            gamma = gamma / gamma.max()
        else:
            gamma = gamma / gamma_max
        cosine = torch.cos(2 * math.pi * a / (1.25 * torch.pow(2.0, m)))
        linear = (m == a).to(f64)
        i = torch.arange(0, f + 1, 2, dtype=f64, device=device)
        arg = a / torch.pow(10000.0, i / f + 1)
        feats = torch.cat([exponential, central, gamma, cosine, linear, arg.sin(), arg.cos()], -1)
        return torch.cat([feats, torch.sign(p.double())[:, None] * feats], dim=-1)

    def _gamma_max(self, seq_length: int, device: torch.device) -> Tensor:
        # The gamma columns come after exponential (f + 1) and central_mask (f). A 0-d tensor,
        # not a float: torch.export traces it without a data-dependent guard.
        a = torch.arange(seq_length, dtype=torch.float64, device=device)
        f = self.feature_size
        return self._features(a, seq_length, torch.ones((), dtype=torch.float64, device=device))[
            :, 2 * f + 1:3 * f + 1].max()

    def _compute_table(self, seq_length: int, device: torch.device,
                       dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
        p = torch.arange(-(seq_length - 1), seq_length, dtype=torch.float64, device=device)
        gamma_max = self._gamma_max(seq_length, device)
        return self._features(p, seq_length, gamma_max).to(dtype), gamma_max

    @torch.jit.unused
    def _cached_table(self, seq_length: int, device: torch.device,
                      dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
        key = (seq_length, str(device), dtype)
        hit = self._feature_cache.get(key)
        if hit is None:
            hit = self._compute_table(seq_length, device, dtype)
            if len(self._feature_cache) >= self._cache_size:
                self._feature_cache.pop(next(iter(self._feature_cache)))
            self._feature_cache[key] = hit
        return hit

    def _feature_table(self, seq_length: int, device: torch.device,
                       dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
        """Features of p = -(S-1)..S-1 (2S-1, num_features) and the gamma normalizer; cached
        per (S, device, dtype) in eager mode."""
        if torch.jit.is_scripting() or torch.compiler.is_compiling():
            return self._compute_table(seq_length, device, dtype)
        return self._cached_table(seq_length, device, dtype)

    def positional_features_all(self, positions: Tensor, seq_length: int) -> Tensor:
        """Features of relative positions of any shape -> positions.shape + (num_features,)."""
        dtype = self.pos_embed.weight.dtype
        gamma_max = self._feature_table(seq_length, positions.device, dtype)[1]
        out = self._features(positions.reshape(-1), seq_length, gamma_max).to(dtype)
        return out.view(positions.shape + (self.num_features,))

    def relative_keys(self, values: Tensor, len_q: int, len_k: int, start: Optional[int]) -> Tensor:
        seq_length = max(len_q, len_k)
        dtype = self.pos_embed.weight.dtype
        table, gamma_max = self._feature_table(seq_length, values.device, dtype)
        count = values.shape[0]
        if start is not None and start >= -(seq_length - 1) and start + count <= seq_length:
            feats = table[start + seq_length - 1:start + seq_length - 1 + count]
        else:  # distances outside the cached range (positions given): computed for this call
            feats = self._features(values, seq_length, gamma_max).to(dtype)
        feats = self.positional_embedding_dropout(feats)
        return self.pos_embed(feats).unflatten(-1, (self.num_heads, self.head_dim))

    def _biases(self) -> Tuple[Tensor, Tensor]:
        return (self.content_bias.view(self.num_heads, self.head_dim),
                self.pos_embed_bias.view(self.num_heads, self.head_dim))
