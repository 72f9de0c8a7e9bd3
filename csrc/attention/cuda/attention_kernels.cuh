// Device code of seqops::attention on CUDA: the kernel parameters, the shared-memory plan, the
// score policies and the four kernel templates (forward, dK/dV, dQ, relative-position gradients).
// The host side (tile choice, launches, final reductions) is in attention.cu.
//
// Every kernel is a flash-style loop over shared-memory tiles, 128 threads per block, computing
// in acc_t (float, or double for float64 inputs). Head dims, tile sizes and the shared-memory
// layout are runtime values, so each kernel has one instantiation per (dtype, score policy).
// All products of tiles go through block_gemm (4x4 register micro-tiles over shared memory), the
// score policy is a compile-time struct evaluated per visible (query, key) pair, and every sum
// is taken in a fixed order by one thread: no atomics, so the backward is bitwise deterministic.
#pragma once
#include <ATen/OpMathType.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>
#include <type_traits>

#include "attention/key_band.h"
#include "attention/relative_position.h"
#include "attention/rotary.h"
#include "common/cuda/shared_memory.cuh"
#include "common/host_device.h"
#include "common/philox.h"

namespace seqops::cuda::attention {

constexpr int kThreads = 128;  // threads per block of every attention kernel
constexpr int kMicro = 4;      // block_gemm micro-tile: kMicro x kMicro outputs per thread

// ------------------------------------------------------------------------ shared-memory plan

// The shared-memory buffers a kernel may use. Which exist, their shapes and offsets are decided
// on the host (attention.cu) and passed in Params::plan.
// Shapes: bq x d etc.; in the relative pass bk is bn and "span" is bq + bn - 1.
enum Buffer : int {
  kQ,          // query tile (q + content_bias for relative keys)    bq x d
  kQPos,       // query tile + position_bias (relative keys)         bq x d
  kK,          // key rows (forward: key tile, then value tile)      bk x d, relative pass span x d
  kV,          // value rows                                         bk x dv, relative: span x dv
  kDOut,       // grad_out tile                                      bq x dv
  kAcc,        // forward: output accumulator; dQ: dq (content part) bq x dv / bq x d
  kAccPos,     // dQ, relative keys: dq (position part)              bq x d
  kDK,         // dK accumulator                                     bk x d
  kDV,         // dV accumulator                                     bk x dv
  kScores,     // q.k, then probabilities                            bq x bk, relative: bq x span
  kDProbs,     // dO.v, then dS                                      bq x bk, relative: bq x span
  kRel,        // rows of R                                          (bq+bk-1) x d, rel.: bn x d
  kRelScores,  // (q + v).R per query and R row                      bq x (bq+bk-1), rel.: bq x bn
  kRelGrad,    // dQ pass: dS laid out per query and R row           bq x (bq + bk - 1)
  kBand,       // relative pass: dS per query and relative position  bq x bn
  kDRel,       // relative pass: dR accumulator                      bn x d
  kRowLse,     // per query row: lse (backward) or the rescale factor (forward)
  kRowDelta,   // per query row: rowsum(dO * O)
  kNumBuffers
};

// n rounded up to a multiple of kMicro.
SEQOPS_HOST_DEVICE constexpr int64_t round_up_micro(int64_t n) {
  return (n + kMicro - 1) / kMicro * kMicro;
}

struct SmemBuffer {
  int offset = 0;  // in acc_t elements
  int ld = 0;      // row stride: columns rounded up to kMicro, plus one (odd: no bank conflicts)
};

struct SmemPlan {
  SmemBuffer buffer[kNumBuffers];
  int64_t elements = 0;

  // Rows are padded to a multiple of kMicro and columns to a multiple of kMicro (+1), so
  // block_gemm may read its whole micro-tiles; loaders zero the padding rows.
  void add(Buffer id, int64_t rows, int64_t cols) {
    const int64_t ld = cols == 1 ? 1 : round_up_micro(cols) + 1;
    buffer[id] = SmemBuffer{static_cast<int>(elements), static_cast<int>(ld)};
    elements += round_up_micro(rows) * ld;
  }
};

// ------------------------------------------------------------------------------- parameters

template <typename scalar_t>
struct Params {
  using acc_t = at::opmath_type<scalar_t>;
  // Operands, contiguous: q, dq (B, Hq, Lq, d); k, dk (B, Hk, Lk, d); v, dv (B, Hk, Lk, dv);
  // out, grad_out (B, Hq, Lq, dv); lse, delta (B, Hq, Lq).
  const scalar_t *q, *k, *v, *grad_out;
  scalar_t *out, *dq, *dk, *dv;
  acc_t* lse_out;
  const acc_t *lse, *delta;
  const bool* key_mask;  // (B, Lk), True = attend; null: every key
  int64_t batch, heads_q, heads_k, group, len_q, len_k, dim, dim_v;
  KeyBand band;          // the keys each query sees (causal, window, packed sequences)
  // Packed sequences: each home tile's first row (row_blocks, packed_sequences.h), so that no
  // tile spans two sequences; null: tile * rows (home_rows).
  const int64_t* block_first;
  int64_t query_offset;  // r = j - (i + query_offset)
  acc_t scale;
  // Dropout: keep iff dropout_keep(word, keep_prob); kept probabilities times drop_scale.
  bool dropout;
  float keep_prob;
  acc_t drop_scale;
  uint64_t seed, offset;
  // Score terms, in acc_t.
  const acc_t* bias;        // dense bias, read through bias_stride (0 on broadcast dims)
  int64_t bias_stride[4];
  const acc_t* rel_table;   // T5: (Hq, num_rel) table value of each relative position
  const acc_t* slopes;      // ALiBi: (Hq)
  const acc_t *rel_keys, *rel_scores, *content_bias, *position_bias;  // R (L_rel, Hq, d) ...
  int64_t rel_len, rel_zero;
  int64_t r_lo, num_rel;  // relative positions r_lo .. r_lo + num_rel - 1 (every pair's r)
  RotaryTable<acc_t> rot_q, rot_k;  // rotary positions of q's and k's rows (half 0: none)
  // Backward outputs besides dq, dk, dv (null when not wanted).
  acc_t* dbias;                     // (B, Hq, Lq, Lk) dS
  acc_t *dq_content, *dq_position;  // (B, Hq, Lq, d) the two parts of dq (relative keys)
  acc_t* diag;                      // (B, Hq, num_rel) sum of dS over the pairs of each r
  acc_t* drel;                      // (B, Hq, num_rel, d) sum of dS * (q + v) per r
  // Tiling: bq query rows, bk key rows (relative pass: bk relative positions); the block index is
  // (batch * heads) * tiles + tile.
  int bq, bk;
  int64_t tiles;
  SmemPlan plan;
};

// ------------------------------------------------------------------------------ score terms
// logit(i, j) = scale * q_i.k_j + Policy::term(...), evaluated only for visible pairs. `rel` is
// (q_i + v).R[n] for relative keys (unused by the others).

struct NoScore {
  static constexpr bool kRelativeKeys = false, kRelativeGrad = false;
  template <typename P, typename acc_t>
  __device__ static acc_t term(const P&, int64_t, int64_t, int64_t, int64_t, acc_t) {
    return acc_t(0);
  }
};

struct DenseBiasScore {
  static constexpr bool kRelativeKeys = false, kRelativeGrad = false;
  template <typename P, typename acc_t>
  __device__ static acc_t term(const P& p, int64_t b, int64_t h, int64_t i, int64_t j, acc_t) {
    return p.bias[b * p.bias_stride[0] + h * p.bias_stride[1] + i * p.bias_stride[2] +
                  j * p.bias_stride[3]];
  }
};

struct T5Score {  // the table value per relative position is gathered on the host
  static constexpr bool kRelativeKeys = false, kRelativeGrad = true;
  template <typename P, typename acc_t>
  __device__ static acc_t term(const P& p, int64_t, int64_t h, int64_t i, int64_t j, acc_t) {
    return p.rel_table[h * p.num_rel + (j - i - p.query_offset - p.r_lo)];
  }
};

struct AlibiScore {
  static constexpr bool kRelativeKeys = false, kRelativeGrad = true;
  template <typename P, typename acc_t>
  __device__ static acc_t term(const P& p, int64_t, int64_t h, int64_t i, int64_t j, acc_t) {
    const int64_t r = j - i - p.query_offset;
    return -p.slopes[h] * static_cast<acc_t>(r < 0 ? -r : r);
  }
};

struct RelativeKeysScore {  // q.k is (q + u).k; adds scale * ((q + v).R[n] + S[n])
  static constexpr bool kRelativeKeys = true, kRelativeGrad = true;
  template <typename P, typename acc_t>
  __device__ static acc_t term(const P& p, int64_t, int64_t h, int64_t i, int64_t j, acc_t rel) {
    if (p.rel_scores != nullptr)
      rel += p.rel_scores[(j - i - p.query_offset + p.rel_zero) * p.heads_q + h];
    return p.scale * rel;
  }
};

// ------------------------------------------------------------------------------ block helpers

template <typename acc_t>
struct Tile {
  acc_t* ptr;
  int ld;
  __device__ acc_t& operator()(int r, int c) const { return ptr[r * ld + c]; }
};

template <typename acc_t>
__device__ __forceinline__ acc_t* shared_workspace() {
  return reinterpret_cast<acc_t*>(dynamic_shared_bytes());
}

template <typename acc_t>
__device__ __forceinline__ Tile<acc_t> tile_of(const SmemPlan& plan, acc_t* smem, Buffer id) {
  return Tile<acc_t>{smem + plan.buffer[id].offset, plan.buffer[id].ld};
}

template <typename acc_t>
__device__ __forceinline__ acc_t neg_inf() {
  return -std::numeric_limits<acc_t>::infinity();
}

// The rows a loader reads, [begin, end); the others load as 0. Loaders read a tile's neighbours
// only inside the key band's span (RowSpan(key_begin, key_end)), so that a value outside it (a
// NaN in another packed sequence, past the causal limit) never meets a zero probability.
struct RowSpan {
  int64_t begin = 0, end = 0;
  SEQOPS_HOST_DEVICE RowSpan(int64_t end_) : end(end_) {}  // [0, end)
  SEQOPS_HOST_DEVICE RowSpan(int64_t begin_, int64_t end_) : begin(begin_), end(end_) {}
  SEQOPS_HOST_DEVICE bool contains(int64_t row) const { return row >= begin && row < end; }
};

// dst(r, c) = src[(row0 + r) * row_stride + c] (+ add[c]) for r < rows and row0 + r in `valid`,
// else 0; rows up to the kMicro padding are written. With a rotary table that is on, rows are
// rotated as they are stored (rotary.h; not combined with add).
template <typename T, typename acc_t>
__device__ void load_rows(Tile<acc_t> dst, int rows, int cols, const T* src, int64_t row_stride,
                          int64_t row0, RowSpan valid,
                          const std::type_identity_t<acc_t>* add = nullptr,
                          const RotaryTable<acc_t>& rot = {}) {
  const int n = static_cast<int>(round_up_micro(rows)) * cols;
  for (int idx = threadIdx.x; idx < n; idx += kThreads) {
    const int r = idx / cols, c = idx - r * cols;
    const int64_t row = row0 + r;
    acc_t x = 0;
    if (r < rows && row >= 0 && valid.contains(row)) {
      const T* line = src + row * row_stride;
      if (rot.on()) x = rot.rotated([&](int cc) { return static_cast<acc_t>(line[cc]); }, row, c);
      else x = static_cast<acc_t>(line[c]);
      if (add != nullptr) x += add[c];
    }
    dst(r, c) = x;
  }
}

// dst[r] = src[row0 + r] for row0 + r in `valid`, else 0, for r < rows.
template <typename acc_t>
__device__ void load_vector(acc_t* dst, int rows, const acc_t* src, int64_t row0, RowSpan valid) {
  for (int r = threadIdx.x; r < rows; r += kThreads)
    dst[r] = valid.contains(row0 + r) ? src[row0 + r] : acc_t(0);
}

template <typename acc_t>
__device__ void zero_tile(Tile<acc_t> t, int rows, int cols) {
  const int n = static_cast<int>(round_up_micro(rows)) * cols;
  for (int idx = threadIdx.x; idx < n; idx += kThreads) t(idx / cols, idx % cols) = acc_t(0);
}

// C = A B over shared memory, C (M x N), reduction length K: A(m, k) = A[m * a_m + k * a_k],
// B(k, n) = B[k * b_k + n * b_n] (strides express transposes). Each thread computes kMicro x
// kMicro micro-tiles (rows m0.., columns n0 + u * n_tiles: neighbouring threads read
// neighbouring columns) and hands each finished element to store(m, n, value); every element is
// owned by one thread, summed over k in order. Reads up to the kMicro padding of A's rows and
// B's columns; only elements inside (M, N) are stored.
template <typename acc_t, typename Store>
__device__ __forceinline__ void block_gemm(int M, int N, int K, const acc_t* A, int a_m, int a_k,
                                           const acc_t* B, int b_k, int b_n, Store&& store) {
  const int m_tiles = (M + kMicro - 1) / kMicro, n_tiles = (N + kMicro - 1) / kMicro;
  const int b_u = n_tiles * b_n;
  for (int w = threadIdx.x; w < m_tiles * n_tiles; w += kThreads) {
    const int m0 = (w / n_tiles) * kMicro, n0 = w % n_tiles;
    acc_t acc[kMicro][kMicro];
#pragma unroll
    for (int t = 0; t < kMicro; ++t)
#pragma unroll
      for (int u = 0; u < kMicro; ++u) acc[t][u] = acc_t(0);
    const acc_t* a = A + m0 * a_m;
    const acc_t* b = B + n0 * b_n;
#pragma unroll 2
    for (int k = 0; k < K; ++k) {
      acc_t av[kMicro], bv[kMicro];
#pragma unroll
      for (int t = 0; t < kMicro; ++t) av[t] = a[t * a_m];
#pragma unroll
      for (int u = 0; u < kMicro; ++u) bv[u] = b[u * b_u];
#pragma unroll
      for (int t = 0; t < kMicro; ++t)
#pragma unroll
        for (int u = 0; u < kMicro; ++u) acc[t][u] += av[t] * bv[u];
      a += a_k;
      b += b_k;
    }
#pragma unroll
    for (int t = 0; t < kMicro; ++t)
#pragma unroll
      for (int u = 0; u < kMicro; ++u) {
        const int m = m0 + t, n = n0 + u * n_tiles;
        if (m < M && n < N) store(m, n, acc[t][u]);
      }
  }
}

// max(a, b) that propagates NaN whichever side it is on (so every lane of a group agrees).
template <typename acc_t>
__device__ __forceinline__ acc_t nan_max(acc_t a, acc_t b) {
  return (b > a || b != b) ? b : a;
}

// Max / sum over the `width` consecutive lanes of a row group (width a power of two <= 32); every
// lane gets the same bits (each butterfly step adds the same two values, addition commutes).
template <typename acc_t>
__device__ __forceinline__ acc_t group_max(acc_t x, int width) {
  for (int off = width / 2; off > 0; off /= 2) x = nan_max(x, __shfl_xor_sync(0xffffffffu, x, off));
  return x;
}

template <typename acc_t>
__device__ __forceinline__ acc_t group_sum(acc_t x, int width) {
  for (int off = width / 2; off > 0; off /= 2) x += __shfl_xor_sync(0xffffffffu, x, off);
  return x;
}

template <typename P>
__device__ __forceinline__ bool visible(const P& p, int64_t b, int64_t i, int64_t j) {
  return i < p.len_q && j >= 0 && j < p.len_k && p.band.contains(i, j) &&
         (p.key_mask == nullptr || p.key_mask[b * p.len_k + j]);
}

// Dropout factor of one Philox word: drop_scale if kept, else 0.
template <typename P>
__device__ __forceinline__ typename P::acc_t dropout_factor(const P& p, uint32_t word) {
  using acc_t = typename P::acc_t;
  return dropout_keep(word, p.keep_prob) ? p.drop_scale : acc_t(0);
}

// The dropout factor of pair (i, j) of (batch, q head) bh, from its own Philox call (kernels
// whose lanes hold several keys of one query share one call per 4 keys instead).
template <typename P>
__device__ __forceinline__ typename P::acc_t pair_dropout_factor(const P& p, int64_t bh, int64_t i, int64_t j) {
  return dropout_factor(p, attention_dropout_words(p.seed, p.offset, bh, i, j / 4).v[j % 4]);
}

// exp(x - m) with exp(-inf - m) = 0 (also for m = -inf).
template <typename acc_t>
__device__ __forceinline__ acc_t exp_from(acc_t x, acc_t m) {
  return x == neg_inf<acc_t>() ? acc_t(0) : ::exp(x - m);
}

// The backward's step for one pair (i, j): returns the dropped-out probability P~ and sets ds to
// dS = P (dP~ - delta_i), the gradient of the logit; both 0 for a pair the masks hide. qk =
// q_i.k_j, dp = dO_i.v_j, rel as for Policy::term, keep(): the pair's dropout factor (called for
// visible pairs only, as it costs a Philox call).
template <typename Policy, typename P, typename acc_t, typename Keep>
__device__ __forceinline__ acc_t backward_pair(const P& p, int64_t b, int64_t h, int64_t i, int64_t j,
                                               acc_t qk, acc_t dp, acc_t rel, acc_t lse, acc_t delta,
                                               Keep&& keep, acc_t& ds) {
  ds = 0;
  if (!visible(p, b, i, j)) return acc_t(0);
  const acc_t prob = ::exp(p.scale * qk + Policy::term(p, b, h, i, j, rel) - lse);
  const acc_t factor = p.dropout ? keep() : acc_t(1);
  ds = prob * (dp * factor - delta);
  return prob * factor;
}

// The backward's element step on a (bq x bk) tile of pairs (i0 + il, j0 + jl): on entry
// scores(il, jl) = q_i.k_j and dprobs(il, jl) = dO_i.v_j (rel(il, jl - il + bq - 1) = (q_i +
// v).R[n] for relative keys); on return scores holds P~ and dprobs dS (backward_pair);
// on_grad(il, jl, i, j, dS) sees each.
template <typename Policy, typename P, typename acc_t = typename P::acc_t, typename OnGrad>
__device__ void backward_tile(const P& p, int64_t b, int64_t h, int64_t i0, int64_t j0,
                              Tile<acc_t> scores, Tile<acc_t> dprobs, Tile<acc_t> rel,
                              const acc_t* lse, const acc_t* delta, OnGrad&& on_grad) {
  const int bq = p.bq, chunks = p.bk / 4;
  const int64_t bh = b * p.heads_q + h;
  // One Philox word per 4 keys when the tile starts on a quad; a packed sequence's dK/dV tile
  // starts with its sequence, maybe mid-quad: then each pair draws its own word.
  const bool quads = j0 % 4 == 0;
  for (int w = threadIdx.x; w < bq * chunks; w += kThreads) {
    const int il = w / chunks, jc = (w - il * chunks) * 4;
    const int64_t i = i0 + il;
    Philox4 words{{0u, 0u, 0u, 0u}};
    if (p.dropout && quads && i < p.len_q) words = attention_dropout_words(p.seed, p.offset, bh, i, (j0 + jc) / 4);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int jl = jc + e;
      const int64_t j = j0 + jl;
      const acc_t r = Policy::kRelativeKeys ? rel(il, jl - il + bq - 1) : acc_t(0);
      acc_t ds;
      scores(il, jl) = backward_pair<Policy>(p, b, h, i, j, scores(il, jl), dprobs(il, jl), r, lse[il],
                                             delta[il],
                                             [&] { return quads ? dropout_factor(p, words.v[e]) : pair_dropout_factor(p, bh, i, j); },
                                             ds);
      dprobs(il, jl) = ds;
      on_grad(il, jl, i, j, ds);
    }
  }
}

// ------------------------------------------------------------------------------------ kernels

// The block of a grid over (batch, q head, tile): blockIdx.x = bh * tiles + tile.
struct QueryHeadBlock {
  int64_t tile, bh, b, h, bhk;  // bhk: the (batch, kv head) pair q head h reads
  template <typename P>
  __device__ explicit QueryHeadBlock(const P& p)
      : tile(blockIdx.x % p.tiles), bh(blockIdx.x / p.tiles), b(bh / p.heads_q), h(bh % p.heads_q),
        bhk(b * p.heads_k + h / p.group) {}
};

// The rows [first, end) of home tile `tile` (a block's own query rows, or key rows for dK/dV) of
// at most `rows` among `total`: consecutive tiles, or with packed sequences p.block_first's, cut
// at the sequence's end.
struct HomeRows {
  int64_t first, end;
};
template <typename P>
__device__ __forceinline__ HomeRows home_rows(const P& p, int64_t tile, int rows, int64_t total) {
  const int64_t first = p.block_first != nullptr ? p.block_first[tile] : tile * rows;
  int64_t end = first + rows < total ? first + rows : total;
  if (p.block_first != nullptr && p.band.seq_end[first] < end) end = p.band.seq_end[first];
  return {first, end};
}

// The start of the tile of `step` rows that holds row `first`: loops over the tiles the key band
// reaches keep the tiles' alignment.
__device__ __forceinline__ int64_t tile_start(int64_t first, int step) { return first / step * step; }

// Rows of a tile that starts at `start` of `total`, at most `block`.
__device__ __forceinline__ int rows_from(int64_t start, int64_t total, int block) {
  return static_cast<int>(total - start < block ? total - start : block);
}

// Forward. Block: (b, h, query tile of bq rows); loops over the key tiles in order with an
// online softmax. Per key tile: S = Q K^T (and, for relative keys, (Q + v) R^T over the R rows
// the tile's pairs use); then bq row groups of kThreads / bq threads turn S into logits, update
// each row's max and sum and write P~ (dropout applied) back into S; then O = O * rescale + P~ V.
template <typename scalar_t, typename Policy>
__global__ void __launch_bounds__(kThreads) attention_forward_kernel(const Params<scalar_t> p) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr bool kRelKeys = Policy::kRelativeKeys;
  acc_t* smem = shared_workspace<acc_t>();
  const int bq = p.bq, bk = p.bk, d = static_cast<int>(p.dim), dv = static_cast<int>(p.dim_v);
  const QueryHeadBlock blk(p);
  const int64_t tile = blk.tile, bh = blk.bh, b = blk.b, h = blk.h, bhk = blk.bhk;
  const HomeRows home = home_rows(p, tile, bq, p.len_q);
  const int64_t i0 = home.first;
  const int qrows = static_cast<int>(home.end - i0);
  const Tile<acc_t> Q = tile_of(p.plan, smem, kQ), QPos = tile_of(p.plan, smem, kQPos),
                    KV = tile_of(p.plan, smem, kK), O = tile_of(p.plan, smem, kAcc),
                    S = tile_of(p.plan, smem, kScores), R = tile_of(p.plan, smem, kRel),
                    RS = tile_of(p.plan, smem, kRelScores);
  acc_t* row_scale = tile_of(p.plan, smem, kRowLse).ptr;
  const scalar_t* q = p.q + bh * p.len_q * d;
  const scalar_t* k = p.k + bhk * p.len_k * d;
  const scalar_t* v = p.v + bhk * p.len_k * dv;

  load_rows(Q, bq, d, q, d, i0, home.end,
            kRelKeys && p.content_bias != nullptr ? p.content_bias + h * d : nullptr, p.rot_q);
  if constexpr (kRelKeys)
    load_rows(QPos, bq, d, q, d, i0, home.end,
              p.position_bias != nullptr ? p.position_bias + h * d : nullptr);
  zero_tile(O, bq, dv);

  // Softmax phase: row `row` is handled by `width` consecutive lanes, 4 columns at a time.
  const int width = kThreads / bq;
  const int row = threadIdx.x / width, lane = threadIdx.x % width;
  const int64_t i = i0 + row;
  acc_t row_max = neg_inf<acc_t>(), row_sum = 0;
  // The keys' span is rebuilt at each load rather than kept: one live value fewer across the
  // loaders' calls (kept, the relative-keys instantiation spilled on sm_80).
  const int64_t key_end = p.band.key_end(i0, qrows);

  for (int64_t j0 = tile_start(p.band.key_begin(i0), bk); j0 < key_end; j0 += bk) {
    load_rows(KV, bk, d, k, d, j0, RowSpan(p.band.key_begin(i0), key_end), nullptr, p.rot_k);
    if constexpr (kRelKeys) {  // R rows n0 .. n0 + bq + bk - 2 serve the tile's pairs
      const int64_t n0 = j0 - (i0 + bq - 1) - p.query_offset + p.rel_zero;
      load_rows(R, bq + bk - 1, d, p.rel_keys + h * d, p.heads_q * d, n0, p.rel_len);
    }
    __syncthreads();
    block_gemm(bq, bk, d, Q.ptr, Q.ld, 1, KV.ptr, 1, KV.ld,
               [&](int m, int n, acc_t x) { S(m, n) = x; });
    if constexpr (kRelKeys)
      block_gemm(bq, bq + bk - 1, d, QPos.ptr, QPos.ld, 1, R.ptr, 1, R.ld,
                 [&](int m, int n, acc_t x) { RS(m, n) = x; });
    __syncthreads();
    load_rows(KV, bk, dv, v, dv, j0, RowSpan(p.band.key_begin(i0), key_end));  // K is no longer read

    acc_t tile_max = neg_inf<acc_t>();
    for (int c = lane * 4; c < bk; c += width * 4) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t j = j0 + c + e;
        acc_t logit = neg_inf<acc_t>();
        if (visible(p, b, i, j)) {
          const acc_t r = kRelKeys ? RS(row, c + e - row + bq - 1) : acc_t(0);
          logit = p.scale * S(row, c + e) + Policy::term(p, b, h, i, j, r);
        }
        S(row, c + e) = logit;
        tile_max = nan_max(tile_max, logit);
      }
    }
    tile_max = group_max(tile_max, width);
    const acc_t new_max = nan_max(row_max, tile_max);
    const acc_t rescale = row_max == new_max ? acc_t(1) : ::exp(row_max - new_max);
    acc_t tile_sum = 0;
    for (int c = lane * 4; c < bk; c += width * 4) {
      Philox4 words{{0u, 0u, 0u, 0u}};
      if (p.dropout && i < p.len_q) words = attention_dropout_words(p.seed, p.offset, bh, i, (j0 + c) / 4);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        acc_t prob = exp_from(S(row, c + e), new_max);
        tile_sum += prob;
        if (p.dropout) prob *= dropout_factor(p, words.v[e]);
        S(row, c + e) = prob;
      }
    }
    row_sum = row_sum * rescale + group_sum(tile_sum, width);
    row_max = new_max;
    if (lane == 0) row_scale[row] = rescale;
    __syncthreads();
    block_gemm(bq, dv, bk, S.ptr, S.ld, 1, KV.ptr, KV.ld, 1,
               [&](int m, int n, acc_t x) { O(m, n) = O(m, n) * row_scale[m] + x; });
    __syncthreads();
  }

  if (lane == 0) {
    row_scale[row] = row_sum > 0 ? acc_t(1) / row_sum : acc_t(0);
    if (i < home.end)
      p.lse_out[bh * p.len_q + i] = row_sum > 0 ? row_max + ::log(row_sum) : neg_inf<acc_t>();
  }
  __syncthreads();
  scalar_t* out = p.out + (bh * p.len_q + i0) * dv;
  for (int idx = threadIdx.x; idx < qrows * dv; idx += kThreads) {
    const int r = idx / dv, c = idx - r * dv;
    out[static_cast<int64_t>(r) * dv + c] = static_cast<scalar_t>(O(r, c) * row_scale[r]);
  }
}

// dK and dV. Block: (b, kv head, key tile of bk rows), K and V tiles and the dK, dV
// accumulators resident; loops over the q heads of the group and the query tiles (from the
// band of visible keys reaches: causal, window) in order: recompute S, dP, then P~ and dS
// (backward_tile), dV += P~^T dO, dK += dS^T Q. dK gets the scale at the end.
template <typename scalar_t, typename Policy>
__global__ void __launch_bounds__(kThreads) attention_dkdv_kernel(const Params<scalar_t> p) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr bool kRelKeys = Policy::kRelativeKeys;
  acc_t* smem = shared_workspace<acc_t>();
  const int bq = p.bq, bk = p.bk, d = static_cast<int>(p.dim), dv = static_cast<int>(p.dim_v);
  const int64_t tile = blockIdx.x % p.tiles, bhk = blockIdx.x / p.tiles;
  const int64_t b = bhk / p.heads_k, hk = bhk % p.heads_k;
  const HomeRows home = home_rows(p, tile, bk, p.len_k);
  const int64_t j0 = home.first;
  const int krows = static_cast<int>(home.end - j0);
  const Tile<acc_t> K = tile_of(p.plan, smem, kK), V = tile_of(p.plan, smem, kV),
                    dK = tile_of(p.plan, smem, kDK), dV = tile_of(p.plan, smem, kDV),
                    Q = tile_of(p.plan, smem, kQ), QPos = tile_of(p.plan, smem, kQPos),
                    dO = tile_of(p.plan, smem, kDOut), S = tile_of(p.plan, smem, kScores),
                    dP = tile_of(p.plan, smem, kDProbs), R = tile_of(p.plan, smem, kRel),
                    RS = tile_of(p.plan, smem, kRelScores);
  acc_t* lse = tile_of(p.plan, smem, kRowLse).ptr;
  acc_t* delta = tile_of(p.plan, smem, kRowDelta).ptr;

  load_rows(K, bk, d, p.k + bhk * p.len_k * d, d, j0, home.end, nullptr, p.rot_k);
  load_rows(V, bk, dv, p.v + bhk * p.len_k * dv, dv, j0, home.end);
  zero_tile(dK, bk, d);
  zero_tile(dV, bk, dv);

  const RowSpan queries(p.band.query_begin(j0), p.band.query_end(j0, krows));
  const int64_t i_first = tile_start(queries.begin, bq), i_end = queries.end;
  for (int64_t h = hk * p.group; h < (hk + 1) * p.group; ++h) {
    const int64_t bh = b * p.heads_q + h;
    const scalar_t* q = p.q + bh * p.len_q * d;
    for (int64_t i0 = i_first; i0 < i_end; i0 += bq) {
      load_rows(Q, bq, d, q, d, i0, queries,
                kRelKeys && p.content_bias != nullptr ? p.content_bias + h * d : nullptr, p.rot_q);
      load_rows(dO, bq, dv, p.grad_out + bh * p.len_q * dv, dv, i0, queries);
      load_vector(lse, bq, p.lse + bh * p.len_q, i0, queries);
      load_vector(delta, bq, p.delta + bh * p.len_q, i0, queries);
      if constexpr (kRelKeys) {
        load_rows(QPos, bq, d, q, d, i0, queries,
                  p.position_bias != nullptr ? p.position_bias + h * d : nullptr);
        const int64_t n0 = j0 - (i0 + bq - 1) - p.query_offset + p.rel_zero;
        load_rows(R, bq + bk - 1, d, p.rel_keys + h * d, p.heads_q * d, n0, p.rel_len);
      }
      __syncthreads();
      block_gemm(bq, bk, d, Q.ptr, Q.ld, 1, K.ptr, 1, K.ld,
                 [&](int m, int n, acc_t x) { S(m, n) = x; });
      block_gemm(bq, bk, dv, dO.ptr, dO.ld, 1, V.ptr, 1, V.ld,
                 [&](int m, int n, acc_t x) { dP(m, n) = x; });
      if constexpr (kRelKeys)
        block_gemm(bq, bq + bk - 1, d, QPos.ptr, QPos.ld, 1, R.ptr, 1, R.ld,
                   [&](int m, int n, acc_t x) { RS(m, n) = x; });
      __syncthreads();
      backward_tile<Policy>(p, b, h, i0, j0, S, dP, RS, lse, delta,
                            [](int, int, int64_t, int64_t, acc_t) {});
      __syncthreads();
      block_gemm(bk, dv, bq, S.ptr, 1, S.ld, dO.ptr, dO.ld, 1,
                 [&](int m, int n, acc_t x) { dV(m, n) += x; });
      block_gemm(bk, d, bq, dP.ptr, 1, dP.ld, Q.ptr, Q.ld, 1,
                 [&](int m, int n, acc_t x) { dK(m, n) += x; });
      __syncthreads();
    }
  }

  scalar_t* dk = p.dk + (bhk * p.len_k + j0) * d;
  scalar_t* dvp = p.dv + (bhk * p.len_k + j0) * dv;
  for (int idx = threadIdx.x; idx < krows * d; idx += kThreads) {
    const int r = idx / d, c = idx - r * d;
    dk[static_cast<int64_t>(r) * d + c] = static_cast<scalar_t>(dK(r, c) * p.scale);
  }
  for (int idx = threadIdx.x; idx < krows * dv; idx += kThreads) {
    const int r = idx / dv, c = idx - r * dv;
    dvp[static_cast<int64_t>(r) * dv + c] = static_cast<scalar_t>(dV(r, c));
  }
}

// dQ. Block: (b, h, query tile of bq rows), Q, dO and the dq accumulator resident; loops over
// the visible key tiles in order: recompute S, dP, then dS (backward_tile), dq += dS K. Writes
// dS to dbias when asked. Relative keys: dS is also laid out per R row (kRelGrad, whose cells
// outside the tile's band stay 0) and dq_position += that R, kept apart so that the host can sum
// dq's two parts into the content_bias and position_bias gradients.
template <typename scalar_t, typename Policy>
__global__ void __launch_bounds__(kThreads) attention_dq_kernel(const Params<scalar_t> p) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr bool kRelKeys = Policy::kRelativeKeys;
  acc_t* smem = shared_workspace<acc_t>();
  const int bq = p.bq, bk = p.bk, d = static_cast<int>(p.dim), dv = static_cast<int>(p.dim_v);
  const QueryHeadBlock blk(p);
  const int64_t tile = blk.tile, bh = blk.bh, b = blk.b, h = blk.h, bhk = blk.bhk;
  const HomeRows home = home_rows(p, tile, bq, p.len_q);
  const int64_t i0 = home.first;
  const int qrows = static_cast<int>(home.end - i0);
  const Tile<acc_t> Q = tile_of(p.plan, smem, kQ), QPos = tile_of(p.plan, smem, kQPos),
                    dO = tile_of(p.plan, smem, kDOut), dQ = tile_of(p.plan, smem, kAcc),
                    dQPos = tile_of(p.plan, smem, kAccPos), K = tile_of(p.plan, smem, kK),
                    V = tile_of(p.plan, smem, kV), S = tile_of(p.plan, smem, kScores),
                    dP = tile_of(p.plan, smem, kDProbs), R = tile_of(p.plan, smem, kRel),
                    RS = tile_of(p.plan, smem, kRelScores), G = tile_of(p.plan, smem, kRelGrad);
  acc_t* lse = tile_of(p.plan, smem, kRowLse).ptr;
  acc_t* delta = tile_of(p.plan, smem, kRowDelta).ptr;
  const scalar_t* q = p.q + bh * p.len_q * d;
  const scalar_t* k = p.k + bhk * p.len_k * d;
  const scalar_t* v = p.v + bhk * p.len_k * dv;

  load_rows(Q, bq, d, q, d, i0, home.end,
            kRelKeys && p.content_bias != nullptr ? p.content_bias + h * d : nullptr, p.rot_q);
  load_rows(dO, bq, dv, p.grad_out + bh * p.len_q * dv, dv, i0, home.end);
  load_vector(lse, bq, p.lse + bh * p.len_q, i0, home.end);
  load_vector(delta, bq, p.delta + bh * p.len_q, i0, home.end);
  zero_tile(dQ, bq, d);
  if constexpr (kRelKeys) {
    load_rows(QPos, bq, d, q, d, i0, home.end,
              p.position_bias != nullptr ? p.position_bias + h * d : nullptr);
    zero_tile(dQPos, bq, d);
    zero_tile(G, bq, bq + bk - 1);
  }
  const RowSpan keys(p.band.key_begin(i0), p.band.key_end(i0, qrows));

  for (int64_t j0 = tile_start(keys.begin, bk); j0 < keys.end; j0 += bk) {
    load_rows(K, bk, d, k, d, j0, keys, nullptr, p.rot_k);
    load_rows(V, bk, dv, v, dv, j0, keys);
    if constexpr (kRelKeys) {
      const int64_t n0 = j0 - (i0 + bq - 1) - p.query_offset + p.rel_zero;
      load_rows(R, bq + bk - 1, d, p.rel_keys + h * d, p.heads_q * d, n0, p.rel_len);
    }
    __syncthreads();
    block_gemm(bq, bk, d, Q.ptr, Q.ld, 1, K.ptr, 1, K.ld,
               [&](int m, int n, acc_t x) { S(m, n) = x; });
    block_gemm(bq, bk, dv, dO.ptr, dO.ld, 1, V.ptr, 1, V.ld,
               [&](int m, int n, acc_t x) { dP(m, n) = x; });
    if constexpr (kRelKeys)
      block_gemm(bq, bq + bk - 1, d, QPos.ptr, QPos.ld, 1, R.ptr, 1, R.ld,
                 [&](int m, int n, acc_t x) { RS(m, n) = x; });
    __syncthreads();
    acc_t* dbias = p.dbias;
    backward_tile<Policy>(p, b, h, i0, j0, S, dP, RS, lse, delta,
                          [&](int il, int jl, int64_t i, int64_t j, acc_t ds) {
                            if constexpr (kRelKeys) G(il, jl - il + bq - 1) = ds;
                            if (dbias != nullptr && i < home.end && j < p.len_k)
                              dbias[(bh * p.len_q + i) * p.len_k + j] = ds;
                          });
    __syncthreads();
    block_gemm(bq, d, bk, dP.ptr, dP.ld, 1, K.ptr, K.ld, 1,
               [&](int m, int n, acc_t x) { dQ(m, n) += x; });
    if constexpr (kRelKeys)
      block_gemm(bq, d, bq + bk - 1, G.ptr, G.ld, 1, R.ptr, R.ld, 1,
                 [&](int m, int n, acc_t x) { dQPos(m, n) += x; });
    __syncthreads();
  }

  const int64_t base = (bh * p.len_q + i0) * d;
  for (int idx = threadIdx.x; idx < qrows * d; idx += kThreads) {
    const int r = idx / d, c = idx - r * d;
    const int64_t pos = base + static_cast<int64_t>(r) * d + c;
    const acc_t content = dQ(r, c) * p.scale;
    if constexpr (kRelKeys) {
      const acc_t position = dQPos(r, c) * p.scale;
      if (p.dq_content != nullptr) p.dq_content[pos] = content;
      if (p.dq_position != nullptr) p.dq_position[pos] = position;
      p.dq[pos] = static_cast<scalar_t>(content + position);
    } else {
      p.dq[pos] = static_cast<scalar_t>(content);
    }
  }
}

// Gradients that sum dS along relative positions (T5, ALiBi, relative keys). Block: (b, h,
// tile of bn relative positions r0 ..); loops over the query tiles in order. A query tile's
// pairs with r in the tile are the band j = i + r + query_offset of the keys jb .. jb + bq + bn
// - 2 (jb = i0 + r0 + query_offset): S and dP are recomputed on that rectangle and read on the
// band, dS is laid out per (query, r) (kBand); then each thread owning an r sums its column in
// order, and for relative keys dR += band^T (Q + v). Writes diag (b, h, r) and drel (b, h, r, :)
// unscaled; the host sums them over the batch.
template <typename scalar_t, typename Policy>
__global__ void __launch_bounds__(kThreads) attention_relative_kernel(const Params<scalar_t> p) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr bool kRelKeys = Policy::kRelativeKeys;
  acc_t* smem = shared_workspace<acc_t>();
  const int bq = p.bq, bn = p.bk, span = bq + bn - 1;
  const int d = static_cast<int>(p.dim), dv = static_cast<int>(p.dim_v);
  const QueryHeadBlock blk(p);
  const int64_t tile = blk.tile, bh = blk.bh, b = blk.b, h = blk.h, bhk = blk.bhk;
  const int64_t r0 = p.r_lo + tile * bn;
  const int rcount = rows_from(r0, p.r_lo + p.num_rel, bn);
  const Tile<acc_t> Q = tile_of(p.plan, smem, kQ), QPos = tile_of(p.plan, smem, kQPos),
                    dO = tile_of(p.plan, smem, kDOut), K = tile_of(p.plan, smem, kK),
                    V = tile_of(p.plan, smem, kV), S = tile_of(p.plan, smem, kScores),
                    dP = tile_of(p.plan, smem, kDProbs), R = tile_of(p.plan, smem, kRel),
                    RS = tile_of(p.plan, smem, kRelScores), band = tile_of(p.plan, smem, kBand),
                    dR = tile_of(p.plan, smem, kDRel);
  acc_t* lse = tile_of(p.plan, smem, kRowLse).ptr;
  acc_t* delta = tile_of(p.plan, smem, kRowDelta).ptr;
  const scalar_t* q = p.q + bh * p.len_q * d;
  const scalar_t* k = p.k + bhk * p.len_k * d;
  const scalar_t* v = p.v + bhk * p.len_k * dv;

  if constexpr (kRelKeys) {
    load_rows(R, bn, d, p.rel_keys + h * d, p.heads_q * d, r0 + p.rel_zero, p.rel_len);
    zero_tile(dR, bn, d);
  }
  acc_t diag_sum = 0;  // thread c < bn: the sum for r0 + c
  // Queries with a key in [0, Lk) for some r of the tile; none when the key band (causal,
  // window) hides the whole tile (j - i = r + query_offset outside [band.lo, band.hi]).
  int64_t i_begin = -(r0 + bn - 1) - p.query_offset, i_end = p.len_k - r0 - p.query_offset;
  if (i_begin < 0) i_begin = 0;
  if (i_end > p.len_q) i_end = p.len_q;
  if (r0 + p.query_offset > p.band.hi || r0 + rcount - 1 + p.query_offset < p.band.lo) i_end = i_begin;

  for (int64_t i0 = i_begin; i0 < i_end; i0 += bq) {
    const int64_t jb = i0 + r0 + p.query_offset;
    load_rows(Q, bq, d, q, d, i0, p.len_q,
              kRelKeys && p.content_bias != nullptr ? p.content_bias + h * d : nullptr, p.rot_q);
    load_rows(dO, bq, dv, p.grad_out + bh * p.len_q * dv, dv, i0, p.len_q);
    load_vector(lse, bq, p.lse + bh * p.len_q, i0, p.len_q);
    load_vector(delta, bq, p.delta + bh * p.len_q, i0, p.len_q);
    load_rows(K, span, d, k, d, jb, p.len_k, nullptr, p.rot_k);
    load_rows(V, span, dv, v, dv, jb, p.len_k);
    if constexpr (kRelKeys)
      load_rows(QPos, bq, d, q, d, i0, p.len_q,
                p.position_bias != nullptr ? p.position_bias + h * d : nullptr);
    __syncthreads();
    block_gemm(bq, span, d, Q.ptr, Q.ld, 1, K.ptr, 1, K.ld,
               [&](int m, int n, acc_t x) { S(m, n) = x; });
    block_gemm(bq, span, dv, dO.ptr, dO.ld, 1, V.ptr, 1, V.ld,
               [&](int m, int n, acc_t x) { dP(m, n) = x; });
    if constexpr (kRelKeys)
      block_gemm(bq, bn, d, QPos.ptr, QPos.ld, 1, R.ptr, 1, R.ld,
                 [&](int m, int n, acc_t x) { RS(m, n) = x; });
    __syncthreads();
    for (int w = threadIdx.x; w < bq * bn; w += kThreads) {
      const int il = w / bn, c = w - il * bn;
      const int64_t i = i0 + il, j = jb + il + c;
      acc_t ds = 0;
      if (c < rcount)
        backward_pair<Policy>(p, b, h, i, j, S(il, il + c), dP(il, il + c), kRelKeys ? RS(il, c) : acc_t(0),
                              lse[il], delta[il], [&] { return pair_dropout_factor(p, bh, i, j); }, ds);
      band(il, c) = ds;
    }
    __syncthreads();
    if (threadIdx.x < bn) {
      for (int il = 0; il < bq; ++il) diag_sum += band(il, threadIdx.x);
    }
    if constexpr (kRelKeys)
      block_gemm(bn, d, bq, band.ptr, 1, band.ld, QPos.ptr, QPos.ld, 1,
                 [&](int m, int n, acc_t x) { dR(m, n) += x; });
    __syncthreads();
  }

  const int64_t base = bh * p.num_rel + (r0 - p.r_lo);
  if (static_cast<int>(threadIdx.x) < rcount) p.diag[base + threadIdx.x] = diag_sum;
  if constexpr (kRelKeys) {
    for (int idx = threadIdx.x; idx < rcount * d; idx += kThreads) {
      const int r = idx / d, c = idx - r * d;
      p.drel[(base + r) * d + c] = dR(r, c);
    }
  }
}

// T5 table gradient from the per-relative-position sums g (Hq, num_rel): thread (h, bucket)
// adds, in order, the g of every r whose bucket it is.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
    t5_table_grad_kernel(const acc_t* __restrict__ g, const int64_t* __restrict__ bucket,
                         acc_t* __restrict__ grad, int64_t heads, int64_t num_rel,
                         int64_t num_buckets) {
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (idx >= heads * num_buckets) return;
  const int64_t h = idx / num_buckets, target = idx % num_buckets;
  acc_t sum = 0;
  for (int64_t r = 0; r < num_rel; ++r)
    if (bucket[r] == target) sum += g[h * num_rel + r];
  grad[idx] = sum;
}

// T5's bucket of every relative position r = r_min + n, n < num_rel, from the step form
// (relative_position.h): built on the device, so no table crosses from the host.
__global__ void __launch_bounds__(kThreads)
    t5_buckets_kernel(const T5BucketSteps steps, int64_t r_min, int64_t num_rel,
                      int64_t* __restrict__ bucket) {
  const int64_t n = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (n < num_rel) bucket[n] = steps(r_min + n);
}

}  // namespace seqops::cuda::attention
