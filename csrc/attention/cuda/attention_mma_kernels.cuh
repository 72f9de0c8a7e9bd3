// Attention on tensor cores (float16 / bfloat16, sm_80 and newer; host side in attention.cu,
// which picks these kernels when the head dims allow): the forward and the backward's dK/dV and
// dQ kernels. Same Params, score policies, masks, key band (causal, window), GQA and Philox
// dropout as the SIMT kernels (attention_kernels.cuh), and the same
// per-pair backward step (backward_pair); the products go through mma.sync m16n8k16 with fp32
// accumulators (common/cuda/warp_mma.cuh). 4 warps per block, each owning 16 rows of the block's resident
// tile; the other operand streams through shared memory in tiles that every warp reads. Tiles
// sit in shared memory as 16-bit values, rows padded to dim + 8 elements (16-byte aligned for
// ldmatrix, and consecutive rows start in different banks). Logits, masks, softmax and dS live
// on the accumulator registers: a row's values are spread over the 4 lanes of a quad (lane = 4 g
// + t holds rows g and g + 8, columns 2t, 2t + 1 of each 8-column chunk).
//
// Forward: block (b, q head, 64 queries); per 64-key tile S = Q K^T, online softmax (max and sum
// across the quad with two shuffles), O += P~ V with P~ re-packed in registers as A fragments.
// Relative keys: Q holds q + u, and each warp also takes G = (q + v) R^T over the 80 rows of R
// its pairs reach, staged in shared memory for the diagonal read (logit(i, j) adds G(i, n(i, j))).
// dK/dV: block (b, kv head, 64 keys); over the group's q heads and the visible 32-query tiles in
// order: S^T = K Q^T and dP^T = V dO^T, then P~^T and dS^T per pair, dV += P~^T dO, dK += dS^T Q.
// Relative keys: Q holds q + u, and the tile's G = (q + v) R^T over the 96 rows of R its pairs
// reach is shared by the warps (each computes a quarter).
// dQ: block (b, q head, 64 queries); over the visible 32-key tiles in order: S = Q K^T, dP = dO
// V^T, dS per pair (written to dbias when asked), dQ += dS K. Relative keys: each warp's G over
// the 48 R rows its pairs reach, then dS laid out per R row (dG) and dq_position += dG R, written
// apart from the content part for the bias gradients. Every sum has a fixed order and no
// atomics, so the backward is deterministic; dR and rel_scores' gradient come from the SIMT
// relative pass.
#pragma once
#include <ATen/OpMathType.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "attention/cuda/attention_kernels.cuh"
#include "common/cuda/shared_memory.cuh"
#include "common/cuda/vector_access.cuh"
#include "common/cuda/warp_mma.cuh"
#include "common/philox.h"

namespace seqops::cuda::attention {

constexpr int kMmaRows = 64;     // resident rows per block (queries, or keys for dK/dV), 16 per warp
constexpr int kMmaKeys = 64;     // forward: keys per streamed tile
constexpr int kMmaStep = 32;     // backward: streamed queries (dK/dV) or keys (dQ) per tile
constexpr int kMmaMaxDim = 128;  // head dims up to this, multiples of 16
constexpr int kMmaPad = 8;       // row padding in 16-bit elements

SEQOPS_HOST_DEVICE constexpr int mma_row_stride(int64_t dim) { return static_cast<int>(dim) + kMmaPad; }

// Bytes of `rows` rows of 16-bit q/k rows (d) and v/dO rows (dv), padded.
SEQOPS_HOST_DEVICE constexpr int64_t mma_pair_bytes(int64_t rows, int64_t d, int64_t dv) {
  return rows * (mma_row_stride(d) + mma_row_stride(dv)) * 2;
}

// Relative keys in the forward: a (query block, key tile) reads R rows n0 .. n0 + 126 (padded
// to 128), a warp's 16 rows 79 of them (padded to 80), its products G = (q + v) R^T staged in
// shared memory (the logit of (i, j) reads G along a diagonal, across the quad's lanes). G
// takes the R band's place once every warp has its product: at d = 128 that keeps a block at
// 102 KiB, two per SM.
constexpr int kRelBand = kMmaRows + kMmaKeys;
constexpr int kRelWarpBand = 16 + kMmaKeys;

SEQOPS_HOST_DEVICE constexpr int64_t mma_relative_band_bytes(int64_t d) {
  const int64_t band = kRelBand * mma_row_stride(d) * 2, products = kMmaRows * kRelWarpBand * 4;
  return band > products ? band : products;
}

// Dynamic shared memory: forward Q, K (64 x (d + 8)) and V (64 x (dv + 8)), with relative keys
// also (q + v) and the R band or G; dK/dV: K, V, and the query tile's Q, dO, lse and delta; dQ:
// Q, dO, and the key tile's K, V.
SEQOPS_HOST_DEVICE constexpr int64_t mma_forward_shared_bytes(int64_t d, int64_t dv, bool rel_keys) {
  const int64_t rel = kMmaRows * mma_row_stride(d) * 2 + mma_relative_band_bytes(d);
  return mma_pair_bytes(kMmaKeys, d, dv) + kMmaRows * mma_row_stride(d) * 2 + (rel_keys ? rel : 0);
}
// Relative keys in the backward: a step of 64 resident rows and 32 streamed ones reaches R rows
// n0 .. n0 + 94 (padded to 96). dK/dV: G = (q + v) R^T for the step's 32 queries over them,
// computed once per step by the 4 warps (16 rows x 48 band rows each, in two 32 x 48 panels) and
// read by every warp's pairs; G then takes the band's place. dQ: each warp's 16 queries reach 47
// of the rows (padded to 48), its G staged per warp, then overwritten by dG (dS laid out per R
// row) for dq_position += dG R.
constexpr int kStepRelBand = kMmaRows + kMmaStep;
constexpr int kStepRelWarpBand = 16 + kMmaStep;
constexpr int kStepRelPanel = kStepRelBand / 2;

SEQOPS_HOST_DEVICE constexpr int64_t mma_dkdv_relative_bytes(int64_t d) {
  const int64_t band = kStepRelBand * mma_row_stride(d) * 2, products = kMmaStep * kStepRelBand * 4;
  return kMmaStep * mma_row_stride(d) * 2 + (band > products ? band : products);
}
SEQOPS_HOST_DEVICE constexpr int64_t mma_dq_relative_bytes(int64_t d) {
  return (kMmaRows + kStepRelBand) * mma_row_stride(d) * 2 + kMmaRows * kStepRelWarpBand * 4;
}

// dK/dV: K, V, the query tile's Q, dO, lse and delta, with relative keys also the tile's q + v
// and its R band, then G in the band's place. dQ: Q, dO, and the key tile's K, V, with relative
// keys also q + v, the key tile's R band and each warp's G.
SEQOPS_HOST_DEVICE constexpr int64_t mma_dkdv_shared_bytes(int64_t d, int64_t dv, bool rel_keys) {
  const int64_t rel = rel_keys ? mma_dkdv_relative_bytes(d) : 0;
  return mma_pair_bytes(kMmaRows + kMmaStep, d, dv) + 2 * kMmaStep * 4 + rel;
}
SEQOPS_HOST_DEVICE constexpr int64_t mma_dq_shared_bytes(int64_t d, int64_t dv, bool rel_keys) {
  return mma_pair_bytes(kMmaRows + kMmaStep, d, dv) + (rel_keys ? mma_dq_relative_bytes(d) : 0);
}

// The input types the tensor cores take here.
template <typename scalar_t>
constexpr bool kTensorCoreType = std::is_same_v<scalar_t, at::Half> || std::is_same_v<scalar_t, at::BFloat16>;

template <typename scalar_t>
constexpr MmaInput mma_input() {
  return std::is_same_v<scalar_t, at::BFloat16> ? MmaInput::kBF16 : MmaInput::kF16;
}

// rows x cols of src (row stride cols) from row row0 into dst (row stride ld), 0 outside `valid`.
// 16-byte accesses when src is 16-byte aligned (then every row is: cols is a multiple of 16 and
// ld of 8); 2-byte ones otherwise (an input whose storage offset is not a multiple of 8). With a
// rotary table that is on, element by element, each rotated in float and rounded once.
template <typename scalar_t>
__device__ void load_tile_16bit(uint16_t* dst, int ld, const scalar_t* src, int cols, int64_t row0,
                                RowSpan valid, int rows, const RotaryTable<float>& rot = {}) {
  if (rot.on()) {
    for (int idx = threadIdx.x; idx < rows * cols; idx += kThreads) {
      const int r = idx / cols, c = idx - r * cols;
      const int64_t row = row0 + r;
      const scalar_t* line = src + row * cols;
      dst[r * ld + c] =
          valid.contains(row) ? scalar_t(rot.rotated([&](int cc) { return static_cast<float>(line[cc]); }, row, c)).x
                      : uint16_t(0);
    }
    return;
  }
  if (aligned16(src)) {
    const int vcols = cols / 8;
    for (int idx = threadIdx.x; idx < rows * vcols; idx += kThreads) {
      const int r = idx / vcols, c = (idx - r * vcols) * 8;
      const int64_t row = row0 + r;
      store_vec16(dst + r * ld + c, valid.contains(row) ? load_vec16(src + row * cols + c) : Vec16{});
    }
    return;
  }
  for (int idx = threadIdx.x; idx < rows * cols; idx += kThreads) {
    const int r = idx / cols, c = idx - r * cols;
    const int64_t row = row0 + r;
    dst[r * ld + c] = valid.contains(row) ? src[row * cols + c].x : uint16_t(0);
  }
}

// rows x cols of src (row stride src_ld, any element type) from row row0 into dst (row stride
// ld), each element plus add[c] (when given) in float, rounded once to scalar_t; 0 outside
// `valid`. Relative keys' derived operands: q + u, q + v and R's rows.
template <typename scalar_t, typename src_t>
__device__ void load_tile_sum_16bit(uint16_t* dst, int ld, const src_t* src, int64_t src_ld, int cols,
                                    int64_t row0, RowSpan valid, int rows, const float* add) {
  for (int idx = threadIdx.x; idx < rows * cols; idx += kThreads) {
    const int r = idx / cols, c = idx - r * cols;
    const int64_t row = row0 + r;
    if (!valid.contains(row)) {
      dst[r * ld + c] = 0;
      continue;
    }
    dst[r * ld + c] = scalar_t(static_cast<float>(src[row * src_ld + c]) + (add ? add[c] : 0.f)).x;
  }
}

template <int kChunks>
__device__ __forceinline__ void zero(float (&acc)[kChunks][4]) {
#pragma unroll
  for (int c = 0; c < kChunks; ++c)
#pragma unroll
    for (int e = 0; e < 4; ++e) acc[c][e] = 0.f;
}

// Loads rows [row0, row0 + rows) of q (stride d) as q + u into qu and q + v into qv (u, v the
// head's content and position biases, 0 when absent), each rounded once: relative keys' queries.
template <typename scalar_t>
__device__ void load_relative_queries(uint16_t* qu, uint16_t* qv, int ld, const Params<scalar_t>& p, int64_t h,
                                      const scalar_t* q, int64_t row0, RowSpan valid, int rows) {
  const int d = static_cast<int>(p.dim);
  const float* u = p.content_bias ? p.content_bias + h * d : nullptr;
  const float* v = p.position_bias ? p.position_bias + h * d : nullptr;
  load_tile_sum_16bit<scalar_t>(qu, ld, q, d, d, row0, valid, rows, u);
  load_tile_sum_16bit<scalar_t>(qv, ld, q, d, d, row0, valid, rows, v);
}

// The R rows of head h (zeros outside R) that the pairs of keys from first_key and queries up to
// last_query reach, `rows` of them from n = first_key - last_query - query_offset + rel_zero,
// into dst: a relative-keys band.
template <typename scalar_t>
__device__ void load_relative_band(uint16_t* dst, int ld, const Params<scalar_t>& p, int64_t h, int64_t first_key,
                                   int64_t last_query, int rows) {
  const int d = static_cast<int>(p.dim);
  const int64_t n0 = first_key - last_query - p.query_offset + p.rel_zero;
  load_tile_sum_16bit<scalar_t>(dst, ld, p.rel_keys + h * d, p.heads_q * d, d, n0, RowSpan(0, p.rel_len), rows,
                                nullptr);
}

// Writes a warp's 16-row accumulator (rows rows[0] = g and rows[1] = g + 8 of this lane, `cols`
// columns) times `scale` to dst (row stride cols), rows below `total` only.
template <typename T, int kChunks>
__device__ __forceinline__ void store_rows(T* dst, const float (&acc)[kChunks][4], const int64_t (&rows)[2],
                                           int64_t total, int cols, float scale) {
  const int t = threadIdx.x % 4;
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    if (c * 8 >= cols) break;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t row = rows[e >> 1];
      if (row < total) dst[row * cols + c * 8 + 2 * t + (e & 1)] = static_cast<T>(acc[c][e] * scale);
    }
  }
}

// The column of a warp's band products G (16 rows by the R rows they reach, the first one that
// of the warp's last row and the band's first key) that pair (row, key) reads.
__device__ __forceinline__ int warp_band_column(int row, int key) { return key - row + 15; }

// A warp's 16 x (8 kChunks) accumulator into dst (row stride 8 kChunks), for its lanes to read
// across the quad after a __syncwarp.
template <int kChunks>
__device__ __forceinline__ void stage_rows(float* dst, const float (&acc)[kChunks][4]) {
  const int64_t rows[2] = {threadIdx.x % 32 / 4, threadIdx.x % 32 / 4 + 8};
  store_rows(dst, acc, rows, 16, kChunks * 8, 1.f);
}

template <typename scalar_t, typename Policy>
__global__ void __launch_bounds__(kThreads) attention_forward_mma_kernel(const Params<scalar_t> p) {
  constexpr bool kRelKeys = Policy::kRelativeKeys;
  constexpr MmaInput kIn = mma_input<scalar_t>();
  constexpr int kVChunks = kMmaMaxDim / 8, kKeyChunks = kMmaKeys / 8;
  const int d = static_cast<int>(p.dim), dv = static_cast<int>(p.dim_v);
  const int ldq = mma_row_stride(d), ldv = mma_row_stride(dv);
  uint16_t* Qs = reinterpret_cast<uint16_t*>(dynamic_shared_bytes());  // q, or q + u (relative keys)
  uint16_t* Ks = Qs + kMmaRows * ldq;
  uint16_t* Vs = Ks + kMmaKeys * ldq;
  uint16_t* QPs = Vs + kMmaKeys * ldv;   // relative keys: q + v
  uint16_t* Rs = QPs + kMmaRows * ldq;   // relative keys: the tile's R band, then G

  const QueryHeadBlock blk(p);
  const int64_t b = blk.b, h = blk.h, bh = blk.bh;
  const HomeRows home = home_rows(p, blk.tile, kMmaRows, p.len_q);
  const int64_t i0 = home.first;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const scalar_t* k = p.k + blk.bhk * p.len_k * d;
  const scalar_t* v = p.v + blk.bhk * p.len_k * dv;
  const scalar_t* q = p.q + bh * p.len_q * d;
  float* Gw = reinterpret_cast<float*>(Rs) + warp * 16 * kRelWarpBand;  // this warp's G
  if constexpr (kRelKeys) {
    load_relative_queries(Qs, QPs, ldq, p, h, q, i0, home.end, kMmaRows);
  } else {
    load_tile_16bit(Qs, ldq, q, d, i0, home.end, kMmaRows, p.rot_q);
  }
  const uint16_t* Qw = Qs + warp * 16 * ldq;  // this warp's 16 rows

  float o[kVChunks][4];
  zero(o);
  // Rows g and g + 8 of the warp's 16: their running max and this lane's part of the sum.
  float row_max[2] = {neg_inf<float>(), neg_inf<float>()}, row_sum[2] = {0.f, 0.f};
  const int64_t rows_i[2] = {i0 + warp * 16 + g, i0 + warp * 16 + g + 8};
  const RowSpan keys(p.band.key_begin(i0), p.band.key_end(i0, home.end - i0));

  for (int64_t j0 = tile_start(keys.begin, kMmaKeys); j0 < keys.end; j0 += kMmaKeys) {
    __syncthreads();  // every warp is done with the previous K and V tiles
    load_tile_16bit(Ks, ldq, k, d, j0, keys, kMmaKeys, p.rot_k);
    load_tile_16bit(Vs, ldv, v, dv, j0, keys, kMmaKeys);
    if constexpr (kRelKeys) {  // R rows n(i0 + 63, j0) .. n(i0, j0 + 63), n = j - i - offset + zero
      load_relative_band(Rs, ldq, p, h, j0, i0 + kMmaRows - 1, kRelBand);
    }
    __syncthreads();
    float s[kKeyChunks][4];
    zero(s);
    mma_rows_by_rows<kIn, kMmaKeys, kMmaMaxDim>(s, Qw, ldq, Ks, ldq, d);
    if constexpr (kRelKeys) {
      // G (16 x 80): the warp's rows (q + v) times the 80 R rows they reach, which start 16 rows
      // later per earlier warp; G(r, c) is row r's n = n0 + 48 - 16 warp + c.
      float gr[kRelWarpBand / 8][4];
      zero(gr);
      mma_rows_by_rows<kIn, kRelWarpBand, kMmaMaxDim>(gr, QPs + warp * 16 * ldq, ldq,
                                                      Rs + (kMmaRows - 16 - 16 * warp) * ldq, ldq, d);
      __syncthreads();  // every warp is done reading R: G goes in its place
      stage_rows(Gw, gr);
      __syncwarp();
    }

    // Logits (masked pairs -inf), then the tile's max per row across the quad.
    float tile_max[2] = {neg_inf<float>(), neg_inf<float>()};
#pragma unroll
    for (int c = 0; c < kKeyChunks; ++c)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int jl = c * 8 + 2 * t + (e & 1), rl = g + 8 * (e >> 1);  // key in tile, row in warp
        const int64_t i = rows_i[e >> 1], j = j0 + jl;
        float logit = neg_inf<float>();
        if (visible(p, b, i, j)) {
          const float rel = kRelKeys ? Gw[rl * kRelWarpBand + warp_band_column(rl, jl)] : 0.f;  // G(rl, n(i, j))
          logit = p.scale * s[c][e] + Policy::term(p, b, h, i, j, rel);
        }
        s[c][e] = logit;
        tile_max[e >> 1] = nan_max(tile_max[e >> 1], logit);
      }
    float rescale[2];
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const float new_max = nan_max(row_max[r], group_max(tile_max[r], 4));
      rescale[r] = row_max[r] == new_max ? 1.f : ::exp(row_max[r] - new_max);
      row_sum[r] *= rescale[r];
      row_max[r] = new_max;
    }
    // P~ (dropout applied after the sum, as on the SIMT path).
#pragma unroll
    for (int c = 0; c < kKeyChunks; ++c) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        s[c][e] = exp_from(s[c][e], row_max[e >> 1]);
        row_sum[e >> 1] += s[c][e];
      }
      if (p.dropout) {
        const int64_t j = j0 + c * 8 + 2 * t;  // this lane's pair shares one Philox call per row
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          if (rows_i[r] >= p.len_q) continue;
          const Philox4 words = attention_dropout_words(p.seed, p.offset, bh, rows_i[r], j / 4);
          s[c][2 * r] *= dropout_factor(p, words.v[j % 4]);
          s[c][2 * r + 1] *= dropout_factor(p, words.v[j % 4 + 1]);
        }
      }
    }
    uint32_t pa[kMmaKeys / 16][4];
    to_a_fragments<scalar_t, kMmaKeys>(pa, s);
#pragma unroll
    for (int c = 0; c < kVChunks; ++c)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[c][e] *= rescale[e >> 1];
    mma_frags_by_tile<kIn, kMmaKeys, kMmaMaxDim>(o, pa, Vs, ldv, dv);
  }

  float inv_sum[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float sum = group_sum(row_sum[r], 4);
    if (rows_i[r] < home.end && t == 0)
      p.lse_out[bh * p.len_q + rows_i[r]] = sum > 0 ? row_max[r] + ::log(sum) : neg_inf<float>();
    inv_sum[r] = sum > 0 ? 1.f / sum : 0.f;
  }
#pragma unroll
  for (int c = 0; c < kVChunks; ++c)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[c][e] *= inv_sum[e >> 1];
  store_rows(p.out + bh * p.len_q * dv, o, rows_i, home.end, dv, 1.f);
}

template <typename scalar_t, typename Policy>
__global__ void __launch_bounds__(kThreads) attention_dkdv_mma_kernel(const Params<scalar_t> p) {
  constexpr bool kRelKeys = Policy::kRelativeKeys;
  constexpr MmaInput kIn = mma_input<scalar_t>();
  constexpr int kCols = kMmaMaxDim / 8, kQChunks = kMmaStep / 8;
  const int d = static_cast<int>(p.dim), dv = static_cast<int>(p.dim_v);
  const int ldk = mma_row_stride(d), ldv = mma_row_stride(dv);
  uint16_t* Ks = reinterpret_cast<uint16_t*>(dynamic_shared_bytes());
  uint16_t* Vs = Ks + kMmaRows * ldk;
  uint16_t* Qs = Vs + kMmaRows * ldv;
  uint16_t* dOs = Qs + kMmaStep * ldk;
  float* lse = reinterpret_cast<float*>(dOs + kMmaStep * ldv);
  float* delta = lse + kMmaStep;
  uint16_t* QPs = reinterpret_cast<uint16_t*>(delta + kMmaStep);  // relative keys: q + v
  uint16_t* Rs = QPs + kMmaStep * ldk;                            // relative keys: R band, then G
  float* G = reinterpret_cast<float*>(Rs);

  const int64_t tile = blockIdx.x % p.tiles, bhk = blockIdx.x / p.tiles;
  const int64_t b = bhk / p.heads_k, hk = bhk % p.heads_k;
  const HomeRows home = home_rows(p, tile, kMmaRows, p.len_k);
  const int64_t j0 = home.first;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  load_tile_16bit(Ks, ldk, p.k + bhk * p.len_k * d, d, j0, home.end, kMmaRows, p.rot_k);
  load_tile_16bit(Vs, ldv, p.v + bhk * p.len_k * dv, dv, j0, home.end, kMmaRows);
  const uint16_t* Kw = Ks + warp * 16 * ldk;  // this warp's 16 keys
  const uint16_t* Vw = Vs + warp * 16 * ldv;
  const int64_t keys_j[2] = {j0 + warp * 16 + g, j0 + warp * 16 + g + 8};

  float dk[kCols][4], dvacc[kCols][4];
  zero(dk);
  zero(dvacc);
  // Only the query tiles the key band (causal, window) lets see these keys.
  const RowSpan queries(p.band.query_begin(j0), p.band.query_end(j0, home.end - j0));
  const int64_t i_first = tile_start(queries.begin, kMmaStep), i_end = queries.end;
  for (int64_t h = hk * p.group; h < (hk + 1) * p.group; ++h) {
    const int64_t bh = b * p.heads_q + h;
    for (int64_t i0 = i_first; i0 < i_end; i0 += kMmaStep) {
      __syncthreads();  // every warp is done with the previous query tile
      const scalar_t* q = p.q + bh * p.len_q * d;
      if constexpr (kRelKeys) {
        load_relative_queries(Qs, QPs, ldk, p, h, q, i0, queries, kMmaStep);
        load_relative_band(Rs, ldk, p, h, j0, i0 + kMmaStep - 1, kStepRelBand);
      } else {
        load_tile_16bit(Qs, ldk, q, d, i0, queries, kMmaStep, p.rot_q);
      }
      load_tile_16bit(dOs, ldv, p.grad_out + bh * p.len_q * dv, dv, i0, queries, kMmaStep);
      load_vector(lse, kMmaStep, p.lse + bh * p.len_q, i0, queries);
      load_vector(delta, kMmaStep, p.delta + bh * p.len_q, i0, queries);
      __syncthreads();
      if constexpr (kRelKeys) {  // G(il, c) = (q + v)_il . R[n0 + c]; warp w: rows 16 (w % 2), panel w / 2
        float gr[kStepRelPanel / 8][4];
        zero(gr);
        mma_rows_by_rows<kIn, kStepRelPanel, kMmaMaxDim>(gr, QPs + 16 * (warp % 2) * ldk, ldk,
                                                          Rs + kStepRelPanel * (warp / 2) * ldk, ldk, d);
        __syncthreads();  // every warp is done reading R: G goes in its place
        stage_rows(G + (warp / 2) * kMmaStep * kStepRelPanel + 16 * (warp % 2) * kStepRelPanel, gr);
        __syncthreads();
      }
      float s[kQChunks][4], dp[kQChunks][4];  // rows: the warp's keys; columns: the tile's queries
      zero(s);
      zero(dp);
      mma_rows_by_rows<kIn, kMmaStep, kMmaMaxDim>(s, Kw, ldk, Qs, ldk, d);
      mma_rows_by_rows<kIn, kMmaStep, kMmaMaxDim>(dp, Vw, ldv, dOs, ldv, dv);
#pragma unroll
      for (int c = 0; c < kQChunks; ++c)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int il = c * 8 + 2 * t + (e & 1);
          const int64_t i = i0 + il, j = keys_j[e >> 1];
          float rel = 0.f;
          if constexpr (kRelKeys) {  // band row of (i, j): (j - j0) - il + 31
            const int band = warp * 16 + g + 8 * (e >> 1) - il + kMmaStep - 1;
            const float* panel = G + (band / kStepRelPanel) * kMmaStep * kStepRelPanel;
            rel = panel[il * kStepRelPanel + band % kStepRelPanel];
          }
          float ds;
          s[c][e] = backward_pair<Policy>(p, b, h, i, j, s[c][e], dp[c][e], rel, lse[il], delta[il],
                                          [&] { return pair_dropout_factor(p, bh, i, j); }, ds);
          dp[c][e] = ds;
        }
      uint32_t pa[kMmaStep / 16][4], dsa[kMmaStep / 16][4];
      to_a_fragments<scalar_t, kMmaStep>(pa, s);
      to_a_fragments<scalar_t, kMmaStep>(dsa, dp);
      mma_frags_by_tile<kIn, kMmaStep, kMmaMaxDim>(dvacc, pa, dOs, ldv, dv);
      mma_frags_by_tile<kIn, kMmaStep, kMmaMaxDim>(dk, dsa, Qs, ldk, d);
    }
  }
  store_rows(p.dk + bhk * p.len_k * d, dk, keys_j, home.end, d, p.scale);
  store_rows(p.dv + bhk * p.len_k * dv, dvacc, keys_j, home.end, dv, 1.f);
}

template <typename scalar_t, typename Policy>
__global__ void __launch_bounds__(kThreads) attention_dq_mma_kernel(const Params<scalar_t> p) {
  constexpr bool kRelKeys = Policy::kRelativeKeys;
  constexpr MmaInput kIn = mma_input<scalar_t>();
  constexpr int kCols = kMmaMaxDim / 8, kKeyChunks = kMmaStep / 8, kBandChunks = kStepRelWarpBand / 8;
  const int d = static_cast<int>(p.dim), dv = static_cast<int>(p.dim_v);
  const int ldq = mma_row_stride(d), ldv = mma_row_stride(dv);
  uint16_t* Qs = reinterpret_cast<uint16_t*>(dynamic_shared_bytes());  // q, or q + u (relative keys)
  uint16_t* dOs = Qs + kMmaRows * ldq;
  uint16_t* Ks = dOs + kMmaRows * ldv;
  uint16_t* Vs = Ks + kMmaStep * ldq;
  uint16_t* QPs = Vs + kMmaStep * ldv;    // relative keys: q + v
  uint16_t* Rs = QPs + kMmaRows * ldq;    // relative keys: the key tile's R band

  const QueryHeadBlock blk(p);
  const int64_t b = blk.b, h = blk.h, bh = blk.bh;
  const HomeRows home = home_rows(p, blk.tile, kMmaRows, p.len_q);
  const int64_t i0 = home.first;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
  const scalar_t* k = p.k + blk.bhk * p.len_k * d;
  const scalar_t* v = p.v + blk.bhk * p.len_k * dv;
  const scalar_t* q = p.q + bh * p.len_q * d;
  if constexpr (kRelKeys) load_relative_queries(Qs, QPs, ldq, p, h, q, i0, home.end, kMmaRows);
  else load_tile_16bit(Qs, ldq, q, d, i0, home.end, kMmaRows, p.rot_q);
  load_tile_16bit(dOs, ldv, p.grad_out + bh * p.len_q * dv, dv, i0, home.end, kMmaRows);
  const uint16_t* Qw = Qs + warp * 16 * ldq;
  const uint16_t* dOw = dOs + warp * 16 * ldv;
  // Relative keys: this warp's G, then dG (16 x 48), and the 48 R rows its pairs reach.
  float* Gw = reinterpret_cast<float*>(Rs + kStepRelBand * ldq) + warp * 16 * kStepRelWarpBand;
  const uint16_t* Rw = Rs + (kMmaRows - 16 - 16 * warp) * ldq;
  const int64_t rows_i[2] = {i0 + warp * 16 + g, i0 + warp * 16 + g + 8};
  float lse[2], delta[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const bool in = rows_i[r] < home.end;
    lse[r] = in ? p.lse[bh * p.len_q + rows_i[r]] : 0.f;
    delta[r] = in ? p.delta[bh * p.len_q + rows_i[r]] : 0.f;
  }

  float dq[kCols][4], dqp[kRelKeys ? kCols : 1][4];  // dqp: relative keys' position part
  zero(dq);
  zero(dqp);
  const RowSpan keys(p.band.key_begin(i0), p.band.key_end(i0, home.end - i0));
  for (int64_t j0 = tile_start(keys.begin, kMmaStep); j0 < keys.end; j0 += kMmaStep) {
    __syncthreads();  // every warp is done with the previous key tile
    load_tile_16bit(Ks, ldq, k, d, j0, keys, kMmaStep, p.rot_k);
    load_tile_16bit(Vs, ldv, v, dv, j0, keys, kMmaStep);
    if constexpr (kRelKeys)
      load_relative_band(Rs, ldq, p, h, j0, i0 + kMmaRows - 1, kStepRelBand);
    __syncthreads();
    float s[kKeyChunks][4], dp[kKeyChunks][4];
    zero(s);
    zero(dp);
    mma_rows_by_rows<kIn, kMmaStep, kMmaMaxDim>(s, Qw, ldq, Ks, ldq, d);
    mma_rows_by_rows<kIn, kMmaStep, kMmaMaxDim>(dp, dOw, ldv, Vs, ldv, dv);
    if constexpr (kRelKeys) {  // G(r, c) = (q + v)_r . R row c of the warp's 48: pair (r, jl) at warp_band_column
      float gr[kBandChunks][4];
      zero(gr);
      mma_rows_by_rows<kIn, kStepRelWarpBand, kMmaMaxDim>(gr, QPs + warp * 16 * ldq, ldq, Rw, ldq, d);
      stage_rows(Gw, gr);
      __syncwarp();
    }
#pragma unroll
    for (int c = 0; c < kKeyChunks; ++c) {
      const int64_t jc = j0 + c * 8 + 2 * t;  // this lane's pair shares one Philox call per row
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int64_t i = rows_i[r];
        Philox4 words{{0u, 0u, 0u, 0u}};
        if (p.dropout && i < p.len_q) words = attention_dropout_words(p.seed, p.offset, bh, i, jc / 4);
#pragma unroll
        for (int u = 0; u < 2; ++u) {
          const int e = 2 * r + u;
          const int64_t j = jc + u;
          // This lane alone reads and writes its pair's cell: G in, dS out.
          float* cell = Gw + (g + 8 * r) * kStepRelWarpBand + warp_band_column(g + 8 * r, c * 8 + 2 * t + u);
          float ds;
          backward_pair<Policy>(p, b, h, i, j, s[c][e], dp[c][e], kRelKeys ? *cell : 0.f, lse[r], delta[r],
                                [&] { return dropout_factor(p, words.v[j % 4]); }, ds);
          dp[c][e] = ds;
          if constexpr (kRelKeys) *cell = ds;
          if (p.dbias != nullptr && i < home.end && j < p.len_k) p.dbias[(bh * p.len_q + i) * p.len_k + j] = ds;
        }
      }
    }
    uint32_t dsa[kMmaStep / 16][4];
    to_a_fragments<scalar_t, kMmaStep>(dsa, dp);
    mma_frags_by_tile<kIn, kMmaStep, kMmaMaxDim>(dq, dsa, Ks, ldq, d);
    if constexpr (kRelKeys) {
      // Row r's pairs fill its kMmaStep columns from warp_band_column(r, 0) of dG; its other 16
      // cells are 0.
      for (int idx = lane; idx < 16 * 16; idx += 32) {
        const int r = idx / 16, x = idx % 16;
        Gw[r * kStepRelWarpBand + (x < warp_band_column(r, 0) ? x : x + kMmaStep)] = 0.f;
      }
      __syncwarp();
      float dg[kBandChunks][4];  // dG in the accumulator layout, then as A fragments for dG R
#pragma unroll
      for (int c = 0; c < kBandChunks; ++c)
#pragma unroll
        for (int e = 0; e < 4; ++e) dg[c][e] = Gw[(g + 8 * (e >> 1)) * kStepRelWarpBand + c * 8 + 2 * t + (e & 1)];
      uint32_t dga[kStepRelWarpBand / 16][4];
      to_a_fragments<scalar_t, kStepRelWarpBand>(dga, dg);
      mma_frags_by_tile<kIn, kStepRelWarpBand, kMmaMaxDim>(dqp, dga, Rw, ldq, d);
    }
  }
  scalar_t* dq_out = p.dq + bh * p.len_q * d;
  if constexpr (kRelKeys) {  // the two parts apart (for the bias gradients), then their sum
    if (p.dq_content != nullptr) store_rows(p.dq_content + bh * p.len_q * d, dq, rows_i, home.end, d, p.scale);
    if (p.dq_position != nullptr) store_rows(p.dq_position + bh * p.len_q * d, dqp, rows_i, home.end, d, p.scale);
#pragma unroll
    for (int c = 0; c < kCols; ++c)
#pragma unroll
      for (int e = 0; e < 4; ++e) dq[c][e] += dqp[c][e];
  }
  store_rows(dq_out, dq, rows_i, home.end, d, p.scale);
}

}  // namespace seqops::cuda::attention
