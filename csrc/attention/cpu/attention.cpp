// attention on CPU: a flash-style kernel, one template over the score policies of
// attention_policies.h.
//
// Forward: tasks (batch, q head, block of queries) in parallel (tiles: tiles_of; blocks:
// row_blocks, which keep each packed sequence's queries apart). For each
// block of keys: S = qs K^T (ATen GEMM), the policy's term, the masks, an online-softmax update
// of the running max / sum and O += P V (GEMM). Nothing of size Lq x Lk is ever allocated.
// Backward: tasks (batch, k head) so every gradient buffer has a single writer (deterministic,
// no atomics); each recomputes P = exp(S - lse) tile by tile (FlashAttention-2's backward).
// bfloat16 inputs run in float32 (converted once; O(L d) memory).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <limits>

#include "attention/cpu/attention_policies.h"
#include "attention/entry.h"
#include "attention/score_tables.h"

namespace seqops::cpu {
namespace {

using namespace attention;

template <typename A>
constexpr A kNegInf = -std::numeric_limits<A>::infinity();

// The rows of a (B, H, L, width) operand read in place: only the columns must be unit-stride, so
// views (a KV cache's filled prefix, a (B, L, H, d) projection transposed) need no copy.
template <typename A>
struct Rows {
  at::Tensor t;  // keeps the storage alive
  const A* data;
  int64_t sb, sh, ld;  // batch, head and row strides
  // Row 0 of (batch b, head h).
  const A* at(int64_t b, int64_t h) const { return data + b * sb + h * sh; }
};

template <typename A>
Rows<A> rows_of(const at::Tensor& x) {
  at::Tensor t = x.to(c10::CppTypeToScalarType<A>::value);
  // Unit-stride columns and rows that do not overlap: what the tile GEMMs take without a copy.
  if ((t.stride(3) != 1 && t.size(3) > 1) || t.stride(2) < t.size(3)) t = t.contiguous();
  return {t, t.data_ptr<A>(), t.stride(0), t.stride(1), t.stride(2)};
}

// The inputs in the compute type A (read in place as rows_of allows), plus the masks and the
// rotary tables every policy shares.
template <typename A>
struct Operands {
  Rows<A> q, k, v;
  at::Tensor key_keep;  // (B, Lk) bool, contiguous: True where a key may be attended; or undefined
  RotaryCosSin rotary_q, rotary_k;  // when a.rotary_dim > 0
  RotaryTable<A> rot_q, rot_k;      // their views (half 0: no rotation)
};

template <typename A>
Operands<A> make_operands(const AttentionArgs& a, const at::Tensor& q, const at::Tensor& k,
                          const at::Tensor& v, const AttentionOptions& s) {
  const auto dt = c10::CppTypeToScalarType<A>::value;
  Operands<A> o{rows_of<A>(q), rows_of<A>(k), rows_of<A>(v), {}};
  if (s.key_padding_mask) o.key_keep = s.key_padding_mask->contiguous();
  if (a.rotary_dim > 0) {
    o.rotary_q = rotary_queries(a, q.options().dtype(dt));
    o.rotary_k = rotary_keys(a, q.options().dtype(dt));
    o.rot_q = o.rotary_q.template table<A>(a);
    o.rot_k = o.rotary_k.template table<A>(a);
  }
  return o;
}

// Rows first .. first + rows - 1 of src (row stride lds), rotated by `table` into dst (row
// stride ldd, d features); dst may be src.
template <typename A>
void rotate_rows(const VectorPrimitives<A>& vp, const RotaryTable<A>& table, const A* src, int64_t lds, A* dst,
                 int64_t ldd, int64_t d, int64_t first, int64_t rows) {
  const int64_t rotated = 2 * table.half;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t row = (first + r) * table.half;
    vp.rotate_pairs(dst + r * ldd, src + r * lds, table.cos + row, table.sin + row, table.half, table.interleaved);
    if (dst != src) std::copy(src + r * lds + rotated, src + r * lds + d, dst + r * ldd + rotated);
  }
}

// Per-row keep factors of attention dropout (0 or 1 / (1 - p)), from the shared Philox stream.
template <typename A>
void dropout_factors(const VectorPrimitives<A>& vp, const AttentionArgs& a, int64_t bh, int64_t i,
                     int64_t j0, int64_t cols, A* out) {
  vp.attention_dropout_row(a.dropout_seed, a.dropout_offset, bh, i, j0, cols,
                           static_cast<float>(1.0 - a.dropout_p),
                           A(1) / (A(1) - static_cast<A>(a.dropout_p)), out);
}

// The tile-level logic forward and backward share.
template <typename A, typename Policy>
struct TileScorer {
  const AttentionArgs& a;
  const Operands<A>& ops;
  Policy& policy;
  const VectorPrimitives<A>& vp;
  std::vector<A> rotated_keys = {};  // with rotary: the last tile's keys, rotated (cols x dim)

  // The keys of the tile scores() last computed: K's rows in place, or their rotated copy.
  const A* keys(int64_t b, int64_t h, int64_t j0, int64_t& ld) const {
    if (ops.rot_k.on()) {
      ld = a.dim;
      return rotated_keys.data();
    }
    ld = ops.k.ld;
    return ops.k.at(b, h / (a.heads_q / a.heads_k)) + j0 * ops.k.ld;
  }

  // Keys a query row may see inside the tile: [first, end) (the causal limit and the window);
  // the rest of the row is set to -inf.
  std::pair<int64_t, int64_t> visible(const Tile<A>& t, int64_t i) const {
    return {a.band.key_begin(t.i0 + i) - t.j0, a.band.key_end(t.i0 + i, 1) - t.j0};
  }

  // S = qs K^T + term, masked.
  void scores(typename Policy::Workspace& ws, int64_t b, int64_t h, const A* qs, const Tile<A>& t) {
    if (ops.rot_k.on()) {  // this tile's keys, rotated into a tile-sized scratch
      const A* K = ops.k.at(b, h / (a.heads_q / a.heads_k)) + t.j0 * ops.k.ld;
      rotated_keys.resize(t.cols * a.dim);
      rotate_rows(vp, ops.rot_k, K, ops.k.ld, rotated_keys.data(), a.dim, a.dim, t.j0, t.cols);
    }
    int64_t ldk;
    const A* K = keys(b, h, t.j0, ldk);
    if (t.rows <= kVectorRows)
      vp.project_rows(K, ldk, consecutive_rows(), t.cols, qs, t.rows, a.dim, t.s, t.ld, nullptr);
    else
      gemm(t.s, t.ld, qs, a.dim, false, K, ldk, true, t.rows, t.cols, a.dim, false);
    policy.add_scores(ws, b, h, t);
    const bool* keep = ops.key_keep.defined() ? ops.key_keep.template data_ptr<bool>() + b * a.len_k + t.j0 : nullptr;
    for (int64_t i = 0; i < t.rows; ++i) {
      A* s = t.row(i);
      // A select, not an add of -inf: a NaN or +inf score at a masked key must not leak into the row.
      if (keep)
        for (int64_t j = 0; j < t.cols; ++j) s[j] = keep[j] ? s[j] : kNegInf<A>;
      const auto [first, end] = visible(t, i);
      std::fill(s, s + std::clamp<int64_t>(first, 0, t.cols), kNegInf<A>);
      std::fill(s + std::clamp<int64_t>(end, 0, t.cols), s + t.cols, kNegInf<A>);
    }
  }
};

// The tiles of this call (forward, backward and the relative-keys workspace agree on them):
// sized to the keys a query may see, at most its packed sequence.
TileShape tiles_of(const AttentionArgs& a) {
  const int64_t span = a.band.hi - a.band.lo + 1;
  return tile_shape(a.len_q, a.len_k, a.max_seqlen > 0 ? std::min(span, a.max_seqlen) : span);
}

template <typename A, typename Policy>
void forward_kernel(const AttentionArgs& a, const Operands<A>& ops, Policy& policy, A* out, A* lse) {
  const auto& vp = vector_primitives<A>();
  const auto [bq, bk] = tiles_of(a);
  const std::vector<RowBlock> blocks = row_blocks(a, bq);
  const int64_t blocks_q = static_cast<int64_t>(blocks.size());
  const int64_t d = a.dim, dv = a.dim_v;
  at::parallel_for(0, a.batch * a.heads_q * blocks_q, 1, [&](int64_t begin, int64_t end) {
    TileScorer<A, Policy> scorer{a, ops, policy, vp};
    typename Policy::Workspace ws(policy);
    Block<A> qs(bq, d), S(bq, bk), O(bq, dv), drop(1, bk);
    std::vector<A> m(bq), l(bq);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t bh = task / blocks_q;
      const auto [i0, ni] = blocks[task % blocks_q];
      const int64_t b = bh / a.heads_q, h = bh % a.heads_q;
      const int64_t hk = h / (a.heads_q / a.heads_k);
      policy.prepare_query(ws, b, h, i0, ni, d, ops.q.at(b, h) + i0 * ops.q.ld, ops.q.ld, qs.data.data());
      if (ops.rot_q.on()) rotate_rows(vp, ops.rot_q, qs.data.data(), d, qs.data.data(), d, d, i0, ni);
      std::fill(m.begin(), m.end(), kNegInf<A>);
      std::fill(l.begin(), l.end(), A(0));
      std::fill(O.data.begin(), O.data.end(), A(0));
      const A* V = ops.v.at(b, hk);
      // Only the key tiles the band of these queries reaches.
      for (int64_t j0 = a.band.key_begin(i0), j_end = a.band.key_end(i0, ni); j0 < j_end; j0 += bk) {
        const Tile<A> t{S.data.data(), S.ld, i0, ni, j0, std::min(bk, j_end - j0)};
        scorer.scores(ws, b, h, qs.data.data(), t);
        for (int64_t i = 0; i < ni; ++i) {
          A* s = t.row(i);
          const A m_new = std::max(m[i], vp.row_max(s, t.cols));
          if (m_new == kNegInf<A>) {  // nothing visible yet: this tile adds nothing
            std::fill(s, s + t.cols, A(0));
            continue;
          }
          const A alpha = std::exp(m[i] - m_new);
          l[i] = l[i] * alpha + vp.exp_sum(s, t.cols, m_new);
          if (alpha != A(1)) vp.scale(O.row(i), alpha, dv);
          m[i] = m_new;
          if (a.dropout_p > 0) {
            dropout_factors(vp, a, bh, i0 + i, j0, t.cols, drop.data.data());
            for (int64_t j = 0; j < t.cols; ++j) s[j] *= drop.data[j];
          }
        }
        if (ni <= kVectorRows)
          vp.weighted_row_sum(O.data.data(), ni, t.s, t.ld, V + j0 * ops.v.ld, ops.v.ld, consecutive_rows(), t.cols,
                              dv, nullptr);
        else
          gemm(O.data.data(), dv, t.s, t.ld, false, V + j0 * ops.v.ld, ops.v.ld, false, ni, dv, t.cols, true);
      }
      for (int64_t i = 0; i < ni; ++i) {
        A* o = out + (bh * a.len_q + i0 + i) * dv;
        const A inv = l[i] > 0 ? A(1) / l[i] : A(0);
        for (int64_t e = 0; e < dv; ++e) o[e] = O.row(i)[e] * inv;
        lse[bh * a.len_q + i0 + i] = l[i] > 0 ? m[i] + std::log(l[i]) : kNegInf<A>;
      }
    }
  });
}

template <typename A, typename Policy>
void backward_kernel(const AttentionArgs& a, const Operands<A>& ops, Policy& policy,
                     const Rows<A>& grad_out, const A* out, const A* lse, A* dq, A* dk, A* dv_out) {
  const auto& vp = vector_primitives<A>();
  const int64_t group = a.heads_q / a.heads_k;
  const int64_t d = a.dim, dv = a.dim_v;
  const auto [bq, bk] = tiles_of(a);
  const std::vector<RowBlock> blocks = row_blocks(a, bq);
  at::parallel_for(0, a.batch * a.heads_k, 1, [&](int64_t begin, int64_t end) {
    TileScorer<A, Policy> scorer{a, ops, policy, vp};
    typename Policy::Workspace ws(policy);
    Block<A> qs(bq, d), P(bq, bk), dP(bq, bk), drop(bq, bk), dqc(bq, d);
    std::vector<A> D(bq);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / a.heads_k, hk = task % a.heads_k;
      const A* V = ops.v.at(b, hk);
      A* dK = dk + task * a.len_k * d;
      A* dV = dv_out + task * a.len_k * dv;
      // Zeroed here, by the thread that accumulates into them, while they come into its cache.
      std::fill_n(dK, a.len_k * d, A(0));
      std::fill_n(dV, a.len_k * dv, A(0));
      for (int64_t h = hk * group; h < (hk + 1) * group; ++h) {
        const int64_t bh = b * a.heads_q + h;
        for (const auto [i0, ni] : blocks) {
          const int64_t row0 = bh * a.len_q + i0;
          const A* dO = grad_out.at(b, h) + i0 * grad_out.ld;
          policy.prepare_query(ws, b, h, i0, ni, d, ops.q.at(b, h) + i0 * ops.q.ld, ops.q.ld, qs.data.data());
          if (ops.rot_q.on()) rotate_rows(vp, ops.rot_q, qs.data.data(), d, qs.data.data(), d, d, i0, ni);
          for (int64_t i = 0; i < ni; ++i)  // D_i = dO_i . O_i = sum_j P_ij dP_ij
            D[i] = vp.dot_acc(dO + i * grad_out.ld, out + (row0 + i) * dv, dv);
          std::fill(dqc.data.begin(), dqc.data.end(), A(0));
          for (int64_t j0 = a.band.key_begin(i0), j_end = a.band.key_end(i0, ni); j0 < j_end; j0 += bk) {
            const int64_t nj = std::min(bk, j_end - j0);
            const Tile<A> t{P.data.data(), P.ld, i0, ni, j0, nj};
            scorer.scores(ws, b, h, qs.data.data(), t);
            for (int64_t i = 0; i < ni; ++i) {
              const A m = lse[row0 + i];
              if (m == kNegInf<A>) std::fill(t.row(i), t.row(i) + nj, A(0));
              else vp.exp_sum(t.row(i), nj, m);  // P = exp(S - lse)
            }
            // With dropout, dV and dP see the dropped probabilities: each row's keep factors M
            // are drawn once, scale dP, then turn into P * M for dV (the P row itself stays
            // intact for the softmax backward).
            gemm(dP.data.data(), dP.ld, dO, grad_out.ld, false, V + j0 * ops.v.ld, ops.v.ld, true, ni, nj, dv, false);
            for (int64_t i = 0; i < ni; ++i) {
              A* g = dP.row(i);
              if (a.dropout_p > 0) {
                A* f = drop.row(i);
                dropout_factors(vp, a, bh, i0 + i, j0, nj, f);
                for (int64_t j = 0; j < nj; ++j) {
                  g[j] *= f[j];
                  f[j] *= t.row(i)[j];
                }
              }
              vp.softmax_grad(g, t.row(i), D[i], nj);  // dS = P (dP - D)
            }
            const A* Pv = a.dropout_p > 0 ? drop.data.data() : t.s;
            gemm(dV + j0 * dv, dv, Pv, P.ld, true, dO, grad_out.ld, false, nj, dv, ni, true);
            const Tile<A> dS{dP.data.data(), dP.ld, i0, ni, j0, nj};
            policy.grad_scores(ws, b, h, dS);
            int64_t ldk;
            const A* Kt = scorer.keys(b, h, j0, ldk);  // rotated with rotary: dq of the rotated q
            gemm(dqc.data.data(), d, dS.s, dS.ld, false, Kt, ldk, false, ni, d, nj, true);
            gemm(dK + j0 * d, d, dS.s, dS.ld, true, qs.data.data(), d, false, nj, d, ni, true);
          }
          policy.finish_query_grad(ws, b, h, i0, ni, d, dqc.data.data(), dq + row0 * d);
        }
      }
    }
  });
}

// ----------------------------------------------------------------------------- policies

template <typename A>
at::TensorOptions compute_options(const at::Tensor& q) {
  return q.options().dtype(c10::CppTypeToScalarType<A>::value);
}

// A policy with the fields every policy has (the scale, the vector primitives) filled in.
template <template <typename> class Policy, typename A>
Policy<A> new_policy(const AttentionArgs& a) {
  Policy<A> p;
  p.scale = static_cast<A>(a.scale);
  p.vp = &vector_primitives<A>();
  return p;
}

template <typename A>
RelativeBias<A> make_relative_bias(const AttentionArgs& a, const at::Tensor& q,
                                   const AttentionOptions& s, bool training) {
  auto p = new_policy<RelativeBias, A>(a);
  p.len_q = a.len_q;
  p.kind = a.policy;
  const auto opts = compute_options<A>(q);
  if (a.policy == ScorePolicy::T5) {
    p.param = *s.t5_table;
    p.buckets = t5_buckets(a, q.device());
    p.table = t5_relative_table(p.param, p.buckets, opts.dtype().toScalarType());
  } else {
    p.param = *s.alibi_slopes;
    p.distance = alibi_distance(a, opts);
    p.table = (p.param.to(opts).unsqueeze(1) * p.distance.unsqueeze(0)).contiguous();
  }
  if (training) p.grad = at::zeros({a.batch, a.heads_q, a.num_relative()}, opts);
  return p;
}

template <typename A>
DenseBias<A> make_dense_bias(const AttentionArgs& a, const at::Tensor& q, const AttentionOptions& s,
                             bool bias_grad) {
  auto p = new_policy<DenseBias, A>(a);
  const at::Tensor& bias = *s.bias;
  at::Tensor e = bias.to(compute_options<A>(q)).expand({a.batch, a.heads_q, a.len_q, a.len_k});
  if (e.stride(3) > 1) e = e.contiguous();  // rows must be contiguous or broadcast
  p.bias = e;
  p.sb = e.stride(0); p.sh = e.stride(1); p.si = e.stride(2); p.sj = e.stride(3);
  p.bias_shape = bias.sizes();
  p.bias_dtype = bias.scalar_type();
  // Zero-filled: tiles outside the key band (causal, window) are never written.
  if (bias_grad) p.grad = at::zeros({a.batch, a.heads_q, a.len_q, a.len_k}, compute_options<A>(q));
  return p;
}

template <typename A>
RelativeKeys<A> make_relative_keys(const AttentionArgs& a, const at::Tensor& q,
                                   const AttentionOptions& s, bool training) {
  auto p = new_policy<RelativeKeys, A>(a);
  const auto opts = compute_options<A>(q);
  p.heads = a.heads_q;
  p.d = a.dim;
  p.rel_len = a.rel_len;
  p.tiles = tiles_of(a);
  p.n_shift = a.rel_zero - a.query_offset;
  p.R = s.rel_keys->to(opts).contiguous();
  p.R_dtype = s.rel_keys->scalar_type();
  p.has_S = s.rel_scores.has_value();
  if (p.has_S) {
    p.S_scaled = (s.rel_scores->to(opts).t() * a.scale).contiguous();
    p.S_dtype = s.rel_scores->scalar_type();
  }
  p.has_u = s.content_bias.has_value();
  p.has_v = s.position_bias.has_value();
  p.u = p.has_u ? s.content_bias->to(opts).contiguous() : at::zeros({a.heads_q, a.dim}, opts);
  p.v = p.has_v ? s.position_bias->to(opts).contiguous() : at::zeros({a.heads_q, a.dim}, opts);
  if (p.has_u) p.u_dtype = s.content_bias->scalar_type();
  if (p.has_v) p.v_dtype = s.position_bias->scalar_type();
  if (training) {
    p.dR = at::zeros({a.batch, a.rel_len, a.heads_q, a.dim}, opts);
    if (p.has_S) p.dS = at::zeros({a.batch, a.heads_q, a.rel_len}, opts);
    p.du = at::zeros({a.batch, a.heads_q, a.dim}, opts);
    p.dv = at::zeros({a.batch, a.heads_q, a.dim}, opts);
  }
  return p;
}

// Builds the policy the arguments select and runs fn(policy).
template <typename A, typename Fn>
void with_policy(const AttentionArgs& a, const at::Tensor& q, const AttentionOptions& s,
                 bool training, bool bias_grad, Fn&& fn) {
  switch (a.policy) {
    case ScorePolicy::None: { auto p = new_policy<NoTerm, A>(a); fn(p); break; }
    case ScorePolicy::DenseBias: { auto p = make_dense_bias<A>(a, q, s, bias_grad); fn(p); break; }
    case ScorePolicy::T5:
    case ScorePolicy::Alibi: { auto p = make_relative_bias<A>(a, q, s, training); fn(p); break; }
    case ScorePolicy::RelativeKeys: { auto p = make_relative_keys<A>(a, q, s, training); fn(p); break; }
  }
}

// float64 runs in double; float32 and bfloat16 in float.
template <typename Fn>
void dispatch_compute_type(const at::Tensor& q, Fn&& fn) {
  if (q.scalar_type() == at::kDouble) fn(double{});
  else fn(float{});
}

struct CpuAttention {
  static std::tuple<at::Tensor, at::Tensor> forward(const AttentionArgs& a, const at::Tensor& q,
                                                    const at::Tensor& k, const at::Tensor& v,
                                                    const AttentionOptions& s) {
    at::Tensor out, lse;
    dispatch_compute_type(q, [&](auto zero) {
      using A = decltype(zero);
      const Operands<A> ops = make_operands<A>(a, q, k, v, s);
      const auto opts = compute_options<A>(q);
      at::Tensor out_acc = at::empty({a.batch, a.heads_q, a.len_q, a.dim_v}, opts);
      lse = at::empty({a.batch, a.heads_q, a.len_q}, opts);
      with_policy<A>(a, q, s, false, false, [&](auto& policy) {
        forward_kernel<A>(a, ops, policy, out_acc.data_ptr<A>(), lse.data_ptr<A>());
      });
      out = out_acc.to(q.scalar_type());
    });
    return {out, lse};
  }

  static AttentionGrads backward(const AttentionArgs& a, const at::Tensor& grad_out,
                                 const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& out, const at::Tensor& lse,
                                 const AttentionOptions& s, bool bias_grad) {
    AttentionGrads g;
    dispatch_compute_type(q, [&](auto zero) {
      using A = decltype(zero);
      const Operands<A> ops = make_operands<A>(a, q, k, v, s);
      const auto opts = compute_options<A>(q);
      const Rows<A> go = rows_of<A>(grad_out);
      const at::Tensor o = out.to(opts).contiguous();
      const at::Tensor l = lse.contiguous();
      at::Tensor dq = at::empty({a.batch, a.heads_q, a.len_q, a.dim}, opts);
      at::Tensor dk = at::empty({a.batch, a.heads_k, a.len_k, a.dim}, opts);
      at::Tensor dv = at::empty({a.batch, a.heads_k, a.len_k, a.dim_v}, opts);
      with_policy<A>(a, q, s, true, bias_grad, [&](auto& policy) {
        backward_kernel<A>(a, ops, policy, go, o.data_ptr<A>(), l.data_ptr<A>(),
                           dq.data_ptr<A>(), dk.data_ptr<A>(), dv.data_ptr<A>());
        policy.collect(g);
      });
      if (a.rotary_dim > 0) {  // the kernel's dq, dk are those of the rotated q, k
        unrotate_(dq, ops.rotary_q, a);
        unrotate_(dk, ops.rotary_k, a);
      }
      g.q = dq.to(q.scalar_type());
      g.k = dk.to(k.scalar_type());
      g.v = dv.to(v.scalar_type());
    });
    return g;
  }
};

}  // namespace
}  // namespace seqops::cpu

TORCH_LIBRARY_IMPL(seqops, CPU, m) {
  m.impl("attention", &seqops::attention_forward_entry<seqops::cpu::CpuAttention>);
  m.impl("attention_backward", &seqops::attention_backward_entry<seqops::cpu::CpuAttention>);
}
