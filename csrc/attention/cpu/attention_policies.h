// The score policies of the CPU attention kernel (attention.cpp): what each adds to a tile of
// logits, how its query side is prepared, and where its gradients go. The kernel template is
// instantiated once per policy; see csrc/attention/attention.h for the math.
//
// A policy provides
//   struct Workspace                                per-task scratch (constructed from the policy)
//   prepare_query(ws, b, h, i0, ni, d, q, ldq, qs)  qs = the content query of rows i0.. (scaled;
//                                                   q's rows ldq apart, qs's contiguous)
//   add_scores(ws, b, h, tile)                      tile.s += term
//   grad_scores(ws, b, h, tile)                     tile.s holds dS: accumulate the term's grads
//   finish_query_grad(ws, b, h, i0, ni, dqc, dq)    dq from dqc = dS . K of the content query
//   collect(grads)                                  reduce its gradient buffers into grads
#pragma once
#include <ATen/ATen.h>

#include <cmath>
#include <vector>

#include "attention/attention.h"
#include "attention/score_tables.h"
#include "common/cpu/vector_primitives.h"

namespace seqops::cpu::attention {

// Tile sizes: a (kBlockQ x kBlockK) float tile of logits is 384 KiB. Large query blocks matter
// most: every GEMM repacks its K / V block, and 128 queries amortize that (64 -> 128 cut the
// forward at n = 2048 from 1.10x to 1.04x SDPA's CPU time; 256 gained nothing more; keys 256 ->
// 512 gained ~2%). Keys 512 -> 768 left n = 2048 unchanged and made 768 keys one tile instead of
// two: the Compressive Transformer step (768 keys, relative keys) went 147 -> 140 ms, as a
// relative-keys tile also computes bq - 1 rows of R it shares with its neighbour.
constexpr int64_t kBlockQ = 128;
constexpr int64_t kBlockK = 768;
constexpr int64_t kMaxBlockQ = 512;

// The tiles of a (len_q x len_k) problem, balanced (1024 keys are two tiles of 512, not 768 +
// 256): key tiles of at most kBlockK, and query blocks of kBlockQ, or up to kMaxBlockQ when the
// key tiles are narrower, so a tile keeps about kBlockQ * kBlockK logits and short key spans
// still get few, large GEMMs that pack K / V once for many queries.
struct TileShape {
  int64_t q, k;
};
inline int64_t balanced_block(int64_t n, int64_t most) {
  const int64_t blocks = (n + most - 1) / most;
  return std::min(most, ((n + blocks - 1) / blocks + 15) / 16 * 16);
}
inline TileShape tile_shape(int64_t len_q, int64_t len_k) {
  const int64_t k = balanced_block(std::max<int64_t>(len_k, 1), kBlockK);
  const int64_t most_q = std::clamp(kBlockQ * kBlockK / k, kBlockQ, kMaxBlockQ);
  return {balanced_block(std::max<int64_t>(len_q, 1), most_q), k};
}

// Query blocks of at most kVectorRows rows (decoding, a few speculative tokens) take the
// register-tiled row primitives (project_rows, weighted_row_sum) instead of GEMM calls: a
// one-row GEMM is a matrix-vector product, memory-bound, and ATen's per-call setup dominated it.
constexpr int64_t kVectorRows = 4;

// 0, 1, ..., kBlockK - 1: the row indices the row primitives take for a tile's consecutive keys.
inline const int64_t* consecutive_rows() {
  static const std::vector<int64_t> rows = [] {
    std::vector<int64_t> r(kBlockK);
    for (int64_t i = 0; i < kBlockK; ++i) r[i] = i;
    return r;
  }();
  return rows.data();
}

// Tiles under a key band of `span` keys per query (hi - lo + 1, see key_band.h). A band narrower
// than the keys (a sliding window) makes a block of q queries read span + q keys for span useful
// ones per query: blocks of about span / 4 queries (at least 32) keep that near 1.25x, and the
// key tiles cover one block's reach.
inline TileShape tile_shape(int64_t len_q, int64_t len_k, int64_t span) {
  if (span >= len_k) return tile_shape(len_q, len_k);
  const int64_t q = balanced_block(std::max<int64_t>(len_q, 1), std::clamp<int64_t>(span / 4, 32, kBlockQ));
  return {q, balanced_block(std::min(len_k, span + q), kBlockK)};
}

// Dense row-major scratch block.
template <typename A>
struct Block {
  std::vector<A> data;
  int64_t ld = 0;
  Block(int64_t rows, int64_t cols) : data(rows * cols), ld(cols) {}
  A* row(int64_t i) { return data.data() + i * ld; }
};

// A (rows x cols) tile of logits (or of their gradients) for queries i0.. and keys j0...
template <typename A>
struct Tile {
  A* s;
  int64_t ld, i0, rows, j0, cols;
  A* row(int64_t i) const { return s + i * ld; }
};

// C (m x n) = [C +] op(X) op(Y) through ATen's GEMM on views of raw blocks; op transposes when
// the flag is set. Single-threaded inside at::parallel_for, as the kernel wants.
template <typename A>
void gemm(A* c, int64_t ldc, const A* x, int64_t ldx, bool tx, const A* y, int64_t ldy, bool ty,
          int64_t m, int64_t n, int64_t k, bool accumulate) {
  const auto opts = at::TensorOptions().dtype(c10::CppTypeToScalarType<A>::value);
  auto view = [&](const A* p, int64_t rows, int64_t cols, int64_t ld, bool t) {
    return t ? at::from_blob(const_cast<A*>(p), {rows, cols}, {1, ld}, opts)
             : at::from_blob(const_cast<A*>(p), {rows, cols}, {ld, 1}, opts);
  };
  at::Tensor C = at::from_blob(c, {m, n}, {ldc, 1}, opts);
  const at::Tensor X = view(x, m, k, ldx, tx), Y = view(y, k, n, ldy, ty);
  if (accumulate) at::addmm_out(C, C, X, Y);
  else at::mm_out(C, X, Y);
}

// The content query is scale * q; dq = scale * dS . K. Every policy but relative keys.
template <typename A>
struct ScaledQuery {
  A scale;
  const VectorPrimitives<A>* vp;
  struct Workspace {
    template <typename P>
    explicit Workspace(const P&) {}
  };
  void prepare_query(Workspace&, int64_t, int64_t, int64_t, int64_t ni, int64_t d, const A* q,
                     int64_t ldq, A* qs) const {
    for (int64_t i = 0; i < ni; ++i)
      for (int64_t e = 0; e < d; ++e) qs[i * d + e] = scale * q[i * ldq + e];
  }
  void finish_query_grad(Workspace&, int64_t, int64_t, int64_t, int64_t ni, int64_t d,
                         const A* dqc, A* dq) const {
    for (int64_t e = 0; e < ni * d; ++e) dq[e] = scale * dqc[e];
  }
};

template <typename A>
struct NoTerm : ScaledQuery<A> {
  void add_scores(typename ScaledQuery<A>::Workspace&, int64_t, int64_t, const Tile<A>&) const {}
  void grad_scores(typename ScaledQuery<A>::Workspace&, int64_t, int64_t, const Tile<A>&) {}
  void collect(AttentionGrads&) const {}
};

// A bias broadcastable to (B, Hq, Lq, Lk), read through its expanded strides.
template <typename A>
struct DenseBias : ScaledQuery<A> {
  at::Tensor bias;            // expanded view in A, last dim contiguous or broadcast
  int64_t sb, sh, si, sj;
  at::Tensor grad;            // (B, Hq, Lq, Lk) dS when the bias needs its gradient
  at::IntArrayRef bias_shape;
  at::ScalarType bias_dtype;

  void add_scores(typename ScaledQuery<A>::Workspace&, int64_t b, int64_t h,
                  const Tile<A>& t) const {
    const A* base = bias.data_ptr<A>() + b * sb + h * sh;
    for (int64_t i = 0; i < t.rows; ++i) {
      const A* row = base + (t.i0 + i) * si + t.j0 * sj;
      A* s = t.row(i);
      if (sj == 1) this->vp->add(s, row, t.cols);
      else for (int64_t j = 0; j < t.cols; ++j) s[j] += row[j * sj];
    }
  }
  void grad_scores(typename ScaledQuery<A>::Workspace&, int64_t b, int64_t h, const Tile<A>& t) {
    if (!grad.defined()) return;
    const int64_t Lq = grad.size(2), Lk = grad.size(3);
    A* base = grad.data_ptr<A>() + (b * grad.size(1) + h) * Lq * Lk;
    for (int64_t i = 0; i < t.rows; ++i)
      std::copy(t.row(i), t.row(i) + t.cols, base + (t.i0 + i) * Lk + t.j0);
  }
  void collect(AttentionGrads& g) const {
    if (grad.defined()) g.bias = grad.sum_to_size(bias_shape).to(bias_dtype);
  }
};

// A per-head term that depends only on r = j - (i + query_offset): T5 buckets and ALiBi. The
// term is tabulated per head over the Lq + Lk - 1 possible r (index m = j - i + Lq - 1), and its
// gradient is accumulated the same way per (batch, head), then mapped back to the parameters.
template <typename A>
struct RelativeBias : ScaledQuery<A> {
  at::Tensor table;    // (Hq, Lq + Lk - 1)
  at::Tensor grad;     // (B, Hq, Lq + Lk - 1), when training
  int64_t len_q;
  ScorePolicy kind;    // T5 or Alibi
  at::Tensor buckets;  // T5: (Lq + Lk - 1) bucket of each r
  at::Tensor distance; // ALiBi: (Lq + Lk - 1) -|r| in A
  at::Tensor param;    // the t5_table or alibi_slopes as given

  void add_scores(typename ScaledQuery<A>::Workspace&, int64_t, int64_t h, const Tile<A>& t) const {
    const A* base = table.data_ptr<A>() + h * table.size(1) + len_q - 1 + t.j0;
    for (int64_t i = 0; i < t.rows; ++i) this->vp->add(t.row(i), base - (t.i0 + i), t.cols);
  }
  void grad_scores(typename ScaledQuery<A>::Workspace&, int64_t b, int64_t h, const Tile<A>& t) {
    A* base = grad.data_ptr<A>() + (b * grad.size(1) + h) * grad.size(2) + len_q - 1 + t.j0;
    for (int64_t i = 0; i < t.rows; ++i) this->vp->add(base - (t.i0 + i), t.row(i), t.cols);
  }
  void collect(AttentionGrads& g) const {
    const at::Tensor per_head = grad.sum(0);  // (Hq, Lq + Lk - 1)
    if (kind == ScorePolicy::T5)
      g.t5_table = t5_table_grad(per_head, buckets, param, index_add_bucket_sum);
    else
      g.alibi_slopes = alibi_slopes_grad(per_head, distance, param);
  }
};

// Transformer-XL / Enformer / Compressive relative keys:
//   logit = (qc_i . k_j) + (qp_i . R[n]) + scale * S[n],  qc = scale (q + u), qp = scale (q + v),
// n = j - i - query_offset + rel_zero. Per tile, G = qp . R[n_lo..n_hi]^T is one GEMM over the
// rows the tile touches, and row i reads G along its diagonal (no shift tensor).
template <typename A>
struct RelativeKeys {
  A scale;
  const VectorPrimitives<A>* vp;
  int64_t heads, d, rel_len, n_shift;  // n = j - i + n_shift
  at::Tensor R;                        // (L_rel, Hq, d)
  at::Tensor S_scaled;                 // (Hq, L_rel) scale * S, or undefined
  at::Tensor u, v;                     // (Hq, d), zeros when absent
  bool has_u, has_v;
  // Gradients per batch element, summed over the batch at the end (deterministic).
  at::Tensor dR, dS, du, dv;           // (B, L_rel, Hq, d), (B, Hq, L_rel), (B, Hq, d) x 2
  at::ScalarType R_dtype, S_dtype, u_dtype, v_dtype;
  bool has_S;

  TileShape tiles;                     // the kernels' tiles (tiles_of in attention.cpp)

  struct Workspace {
    Block<A> qp, g, dqp;
    int64_t i0 = 0, ni = 0;
    explicit Workspace(const RelativeKeys& p)
        : qp(p.tiles.q, p.d), g(p.tiles.q, p.tiles.q + p.tiles.k - 1), dqp(p.tiles.q, p.d) {}
  };

  // The rows of R a tile reads, clamped to R: pairs outside are causally masked (checked at
  // the op's entry), so their term is never needed.
  void row_range(const Tile<A>& t, int64_t& lo, int64_t& hi) const {
    lo = std::max<int64_t>(t.j0 - (t.i0 + t.rows - 1) + n_shift, 0);
    hi = std::min<int64_t>(t.j0 + t.cols - 1 - t.i0 + n_shift, rel_len - 1);
  }

  void prepare_query(Workspace& ws, int64_t, int64_t h, int64_t, int64_t ni, int64_t, const A* q,
                     int64_t ldq, A* qs) const {
    const A* uh = u.data_ptr<A>() + h * d;
    const A* vh = v.data_ptr<A>() + h * d;
    for (int64_t i = 0; i < ni; ++i)
      for (int64_t e = 0; e < d; ++e) {
        qs[i * d + e] = scale * (q[i * ldq + e] + uh[e]);
        ws.qp.row(i)[e] = scale * (q[i * ldq + e] + vh[e]);
      }
    std::fill(ws.dqp.data.begin(), ws.dqp.data.end(), A(0));
  }

  void add_scores(Workspace& ws, int64_t, int64_t h, const Tile<A>& t) const {
    int64_t lo, hi;
    row_range(t, lo, hi);
    if (lo > hi) return;
    const int64_t width = hi - lo + 1;
    gemm(ws.g.data.data(), ws.g.ld, ws.qp.data.data(), d, false,
         R.data_ptr<A>() + lo * heads * d + h * d, heads * d, true, t.rows, width, d, false);
    const A* sh = has_S ? S_scaled.data_ptr<A>() + h * rel_len : nullptr;
    for (int64_t i = 0; i < t.rows; ++i) {
      A* s = t.row(i);
      const A* g = ws.g.row(i);
      const int64_t n0 = t.j0 - (t.i0 + i) + n_shift;  // n of column 0
      const int64_t j_lo = std::max<int64_t>(lo - n0, 0), j_hi = std::min<int64_t>(hi - n0 + 1, t.cols);
      for (int64_t j = j_lo; j < j_hi; ++j) s[j] += g[n0 + j - lo] + (sh ? sh[n0 + j] : A(0));
    }
  }

  void grad_scores(Workspace& ws, int64_t b, int64_t h, const Tile<A>& t) {
    int64_t lo, hi;
    row_range(t, lo, hi);
    if (lo > hi) return;
    const int64_t width = hi - lo + 1;
    // dG[i, n - lo] = dS[i, j]; the diagonal map is one-to-one within a row.
    for (int64_t i = 0; i < t.rows; ++i) std::fill_n(ws.g.row(i), width, A(0));  // what the GEMMs read
    A* dSh = has_S ? dS.data_ptr<A>() + (b * heads + h) * rel_len : nullptr;
    for (int64_t i = 0; i < t.rows; ++i) {
      const A* s = t.row(i);
      A* g = ws.g.row(i);
      const int64_t n0 = t.j0 - (t.i0 + i) + n_shift;
      const int64_t j_lo = std::max<int64_t>(lo - n0, 0), j_hi = std::min<int64_t>(hi - n0 + 1, t.cols);
      for (int64_t j = j_lo; j < j_hi; ++j) g[n0 + j - lo] = s[j];
      if (dSh) for (int64_t j = j_lo; j < j_hi; ++j) dSh[n0 + j] += scale * s[j];
    }
    // dqp += dG . R[lo..hi];  dR[lo..hi] += dG^T . qp
    const A* Rh = R.data_ptr<A>() + lo * heads * d + h * d;
    gemm(ws.dqp.data.data(), d, ws.g.data.data(), ws.g.ld, false, Rh, heads * d, false, t.rows, d,
         width, true);
    A* dRh = dR.data_ptr<A>() + ((b * rel_len + lo) * heads + h) * d;
    gemm(dRh, heads * d, ws.g.data.data(), ws.g.ld, true, ws.qp.data.data(), d, false, width, d,
         t.rows, true);
  }

  // dq = scale (dqc + dqp); du += scale dqc; dv += scale dqp.
  void finish_query_grad(Workspace& ws, int64_t b, int64_t h, int64_t, int64_t ni, int64_t,
                         const A* dqc, A* dq) const {
    A* duh = du.data_ptr<A>() + (b * heads + h) * d;
    A* dvh = dv.data_ptr<A>() + (b * heads + h) * d;
    for (int64_t i = 0; i < ni; ++i)
      for (int64_t e = 0; e < d; ++e) {
        const A c = scale * dqc[i * d + e], p = scale * ws.dqp.row(i)[e];
        dq[i * d + e] = c + p;
        duh[e] += c;
        dvh[e] += p;
      }
  }

  void collect(AttentionGrads& g) const {
    g.rel_keys = dR.sum(0).to(R_dtype);
    if (has_S) g.rel_scores = dS.sum(0).t().contiguous().to(S_dtype);  // the fake promises contiguous
    if (has_u) g.content_bias = du.sum(0).to(u_dtype);
    if (has_v) g.position_bias = dv.sum(0).to(v_dtype);
  }
};

}  // namespace seqops::cpu::attention
