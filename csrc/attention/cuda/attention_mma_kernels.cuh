// The attention forward on tensor cores (float16 / bfloat16, sm_80 and newer; host side in
// attention.cu, which picks it when the head dims allow). Same Params, score policies, masks,
// causal offset, GQA and Philox dropout as attention_forward_kernel (attention_kernels.cuh); the
// products go through mma.sync m16n8k16 with fp32 accumulators (common/cuda/tensor_core.cuh).
//
// Block: 4 warps, 64 query rows (16 per warp) of one (batch, q head); loops over key tiles of 64.
// Q, K and V tiles sit in shared memory as 16-bit values, rows padded to d + 8 elements (16-byte
// aligned for ldmatrix, and consecutive rows start in different banks). Per key tile each warp:
// S (16 x 64) = Q K^T from ldmatrix'd fragments (K's rows are B's columns: no transpose); the
// logits, masks and the online softmax on the accumulator registers (a row's 64 values are spread
// over the 4 lanes of a quad: max and sum need two shuffles); P~ converted to 16 bits in
// registers, where S's accumulator layout is exactly the A fragment of P~ V; O += P~ V with V's
// fragments from ldmatrix.trans. The row sums stay per lane until the end.
#pragma once
#include <ATen/OpMathType.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "attention/cuda/attention_kernels.cuh"
#include "common/cuda/shared_memory.cuh"
#include "common/cuda/tensor_core.cuh"
#include "common/philox.h"

namespace seqops::cuda::attention {

constexpr int kMmaRows = 64;     // query rows per block, 16 per warp
constexpr int kMmaKeys = 64;     // keys per tile
constexpr int kMmaMaxDim = 128;  // head dims up to this, multiples of 16
constexpr int kMmaPad = 8;       // row padding in 16-bit elements

SEQOPS_HOST_DEVICE constexpr int mma_row_stride(int64_t dim) { return static_cast<int>(dim) + kMmaPad; }

// Dynamic shared memory of the tensor-core forward: Q, K (64 x (d + 8)) and V (64 x (dv + 8)).
SEQOPS_HOST_DEVICE constexpr int64_t mma_forward_shared_bytes(int64_t d, int64_t dv) {
  return ((kMmaRows + kMmaKeys) * mma_row_stride(d) + kMmaKeys * mma_row_stride(dv)) * 2;
}

// The input types the tensor cores take here.
template <typename scalar_t>
constexpr bool kTensorCoreType = std::is_same_v<scalar_t, at::Half> || std::is_same_v<scalar_t, at::BFloat16>;

template <typename scalar_t>
constexpr MmaInput mma_input() {
  return std::is_same_v<scalar_t, at::BFloat16> ? MmaInput::kBF16 : MmaInput::kF16;
}

template <typename scalar_t>
__device__ __forceinline__ uint16_t bits_of(float x) {
  return static_cast<scalar_t>(x).x;
}

// rows x cols of src (row stride cols) from row row0 into dst (row stride ld), 0 past `total`.
template <typename scalar_t>
__device__ void load_tile_16bit(uint16_t* dst, int ld, const scalar_t* src, int cols, int64_t row0,
                                int64_t total, int rows) {
  for (int idx = threadIdx.x; idx < rows * cols; idx += kThreads) {
    const int r = idx / cols, c = idx - r * cols;
    const int64_t row = row0 + r;
    dst[r * ld + c] = row < total ? src[row * cols + c].x : uint16_t(0);
  }
}

template <typename scalar_t, typename Policy>
__global__ void __launch_bounds__(kThreads) attention_forward_mma_kernel(const Params<scalar_t> p) {
  static_assert(!Policy::kRelativeKeys, "relative keys stay on the SIMT forward");
  using acc_t = float;
  constexpr MmaInput kIn = mma_input<scalar_t>();
  constexpr int kDChunks = kMmaMaxDim / 16, kVChunks = kMmaMaxDim / 8, kKeyChunks = kMmaKeys / 8;
  const int d = static_cast<int>(p.dim), dv = static_cast<int>(p.dim_v);
  const int ldq = mma_row_stride(d), ldv = mma_row_stride(dv);
  uint16_t* Qs = reinterpret_cast<uint16_t*>(dynamic_shared_bytes());
  uint16_t* Ks = Qs + kMmaRows * ldq;
  uint16_t* Vs = Ks + kMmaKeys * ldq;

  const QueryHeadBlock blk(p);
  const int64_t b = blk.b, h = blk.h, bh = blk.bh;
  const int64_t i0 = blk.tile * kMmaRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int lrow = lane % 8, ltile = lane / 8;  // ldmatrix: this lane's row of tile ltile
  const scalar_t* q = p.q + bh * p.len_q * d;
  const scalar_t* k = p.k + blk.bhk * p.len_k * d;
  const scalar_t* v = p.v + blk.bhk * p.len_k * dv;

  load_tile_16bit(Qs, ldq, q, d, i0, p.len_q, kMmaRows);
  __syncthreads();
  const int r0 = warp * 16;  // this warp's rows in the tile
  uint32_t qa[kDChunks][4];
#pragma unroll
  for (int kc = 0; kc < kDChunks; ++kc)
    if (kc * 16 < d)
      ldmatrix<4, false>(qa[kc], Qs + (r0 + lrow + 8 * (ltile & 1)) * ldq + kc * 16 + 8 * (ltile >> 1));

  float o[kVChunks][4];
#pragma unroll
  for (int c = 0; c < kVChunks; ++c)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[c][e] = 0.f;
  // Rows g and g + 8 of the warp's 16: their running max and this lane's part of the sum.
  float row_max[2] = {neg_inf<float>(), neg_inf<float>()}, row_sum[2] = {0.f, 0.f};
  const int64_t rows_i[2] = {i0 + r0 + g, i0 + r0 + g + 8};

  const int qrows = rows_from(i0, p.len_q, kMmaRows);
  int64_t key_end = p.len_k;
  if (p.causal && i0 + qrows + p.causal_shift < key_end) key_end = i0 + qrows + p.causal_shift;

  for (int64_t j0 = 0; j0 < key_end; j0 += kMmaKeys) {
    __syncthreads();  // every warp is done with the previous K and V tiles
    load_tile_16bit(Ks, ldq, k, d, j0, p.len_k, kMmaKeys);
    load_tile_16bit(Vs, ldv, v, dv, j0, p.len_k, kMmaKeys);
    __syncthreads();

    float s[kKeyChunks][4];
#pragma unroll
    for (int c = 0; c < kKeyChunks; ++c)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[c][e] = 0.f;
#pragma unroll
    for (int kc = 0; kc < kDChunks; ++kc) {
      if (kc * 16 >= d) break;
#pragma unroll
      for (int nc = 0; nc < kKeyChunks; nc += 2) {  // two 8-key chunks per ldmatrix x4
        uint32_t kb[4];
        ldmatrix<4, false>(kb, Ks + ((nc + (ltile >> 1)) * 8 + lrow) * ldq + kc * 16 + 8 * (ltile & 1));
        const uint32_t b0[2] = {kb[0], kb[1]}, b1[2] = {kb[2], kb[3]};
        mma_m16n8k16<kIn>(s[nc], qa[kc], b0);
        mma_m16n8k16<kIn>(s[nc + 1], qa[kc], b1);
      }
    }

    // Logits (masked pairs -inf), then the tile's max per row across the quad.
    float tile_max[2] = {neg_inf<float>(), neg_inf<float>()};
#pragma unroll
    for (int c = 0; c < kKeyChunks; ++c)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t i = rows_i[e >> 1], j = j0 + c * 8 + 2 * t + (e & 1);
        float logit = neg_inf<float>();
        if (visible(p, b, i, j)) logit = p.scale * s[c][e] + Policy::term(p, b, h, i, j, 0.f);
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
    // P~ (dropout applied after the sum, as on the SIMT path), packed as P~ V's A fragments:
    // key chunks 2m and 2m + 1 make the m-th 16-key slice.
    uint32_t pa[kKeyChunks / 2][4];
#pragma unroll
    for (int c = 0; c < kKeyChunks; ++c) {
      float prob[4];
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        prob[e] = exp_from(s[c][e], row_max[e >> 1]);
        row_sum[e >> 1] += prob[e];
      }
      if (p.dropout) {
        const int64_t j = j0 + c * 8 + 2 * t;  // this lane's pair shares one Philox call per row
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          if (rows_i[r] >= p.len_q) continue;
          const Philox4 words = attention_dropout_words(p.seed, p.offset, bh, rows_i[r], j / 4);
          prob[2 * r] *= dropout_factor(p, words.v[j % 4]);
          prob[2 * r + 1] *= dropout_factor(p, words.v[j % 4 + 1]);
        }
      }
      pa[c / 2][2 * (c & 1)] = pack_b16(bits_of<scalar_t>(prob[0]), bits_of<scalar_t>(prob[1]));
      pa[c / 2][2 * (c & 1) + 1] = pack_b16(bits_of<scalar_t>(prob[2]), bits_of<scalar_t>(prob[3]));
    }

#pragma unroll
    for (int c = 0; c < kVChunks; ++c)
#pragma unroll
      for (int e = 0; e < 4; ++e) o[c][e] *= rescale[e >> 1];
#pragma unroll
    for (int m = 0; m < kKeyChunks / 2; ++m) {
#pragma unroll
      for (int c = 0; c < kVChunks; c += 2) {  // two 8-column chunks of V per ldmatrix x4
        if (c * 8 >= dv) break;
        uint32_t vb[4];
        ldmatrix<4, true>(vb, Vs + (m * 16 + 8 * (ltile & 1) + lrow) * ldv + (c + (ltile >> 1)) * 8);
        const uint32_t b0[2] = {vb[0], vb[1]}, b1[2] = {vb[2], vb[3]};
        mma_m16n8k16<kIn>(o[c], pa[m], b0);
        mma_m16n8k16<kIn>(o[c + 1], pa[m], b1);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float sum = group_sum(row_sum[r], 4);
    const int64_t i = rows_i[r];
    if (i < p.len_q && t == 0)
      p.lse_out[bh * p.len_q + i] = sum > 0 ? row_max[r] + ::log(sum) : neg_inf<float>();
    row_sum[r] = sum > 0 ? 1.f / sum : 0.f;
  }
  scalar_t* out = p.out + bh * p.len_q * dv;
#pragma unroll
  for (int c = 0; c < kVChunks; ++c) {
    if (c * 8 >= dv) break;
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t i = rows_i[e >> 1];
      if (i < p.len_q) out[i * dv + c * 8 + 2 * t + (e & 1)] = static_cast<scalar_t>(o[c][e] * row_sum[e >> 1]);
    }
  }
}

}  // namespace seqops::cuda::attention
