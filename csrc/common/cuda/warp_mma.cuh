// Warp-level tile products on the tensor cores (tensor_core.cuh's mma.sync and ldmatrix), the
// building blocks of the attention kernels on tensor cores. Operands are 16-bit tiles in shared
// memory, row-major with 16-byte-aligned rows; results are fp32 accumulators in the C layout
// (acc[c] is the 16 x 8 chunk of columns 8c .. 8c + 7). Every helper is called by all 32 lanes.
//   mma_rows_by_rows  acc (16 x kN) += A B^T, A 16 rows and B kN rows of the reduced dim (Q K^T)
//   mma_frags_by_tile acc (16 x n)  += A B, A in registers (16 x kK), B row-major kK x n (P V)
//   to_a_fragments    a 16 x kK accumulator as the A fragments of a product (P into P V)
// Loop bounds on the runtime dims break at multiples of 16, so arrays are sized for the largest.
#pragma once
#include <cstdint>

#include "common/cuda/tensor_core.cuh"

namespace seqops::cuda {

// acc[c] += (A B^T)[:, 8c ..] over k < k_len (a multiple of 16, at most kMaxK): a points to A's
// first row (16 rows, stride lda), b to B's first row (kN rows, stride ldb), kN a multiple of 16.
// B's rows are the columns of the mma's B operand, so no transposing load is needed.
template <MmaInput kIn, int kN, int kMaxK>
__device__ __forceinline__ void mma_rows_by_rows(float (&acc)[kN / 8][4], const uint16_t* a, int lda,
                                                 const uint16_t* b, int ldb, int k_len) {
  static_assert(kN % 16 == 0 && kMaxK % 16 == 0, "tiles are multiples of 16");
  const int lane = threadIdx.x % 32, lrow = lane % 8, ltile = lane / 8;  // ldmatrix row of tile ltile
#pragma unroll
  for (int kc = 0; kc < kMaxK / 16; ++kc) {
    if (kc * 16 >= k_len) break;
    uint32_t af[4];  // quarters top-left, bottom-left, top-right, bottom-right
    ldmatrix<4, false>(af, a + (lrow + 8 * (ltile & 1)) * lda + kc * 16 + 8 * (ltile >> 1));
#pragma unroll
    for (int nc = 0; nc < kN / 8; nc += 2) {  // two 8-row chunks of B per ldmatrix x4
      uint32_t bf[4];
      ldmatrix<4, false>(bf, b + ((nc + (ltile >> 1)) * 8 + lrow) * ldb + kc * 16 + 8 * (ltile & 1));
      const uint32_t b0[2] = {bf[0], bf[1]}, b1[2] = {bf[2], bf[3]};
      mma_m16n8k16<kIn>(acc[nc], af, b0);
      mma_m16n8k16<kIn>(acc[nc + 1], af, b1);
    }
  }
}

// acc[c] += (A B)[:, 8c ..] for c < n_len / 8 (n_len a multiple of 16, at most kMaxN): A is
// 16 x kK as kK / 16 A fragments, b points to B's first row (kK rows of n_len, stride ldb).
template <MmaInput kIn, int kK, int kMaxN>
__device__ __forceinline__ void mma_frags_by_tile(float (&acc)[kMaxN / 8][4], const uint32_t (&a)[kK / 16][4],
                                                  const uint16_t* b, int ldb, int n_len) {
  static_assert(kK % 16 == 0 && kMaxN % 16 == 0, "tiles are multiples of 16");
  const int lane = threadIdx.x % 32, lrow = lane % 8, ltile = lane / 8;
#pragma unroll
  for (int m = 0; m < kK / 16; ++m) {
#pragma unroll
    for (int c = 0; c < kMaxN / 8; c += 2) {  // two 8-column chunks of B per ldmatrix x4.trans
      if (c * 8 >= n_len) break;
      uint32_t bf[4];
      ldmatrix<4, true>(bf, b + (m * 16 + 8 * (ltile & 1) + lrow) * ldb + (c + (ltile >> 1)) * 8);
      const uint32_t b0[2] = {bf[0], bf[1]}, b1[2] = {bf[2], bf[3]};
      mma_m16n8k16<kIn>(acc[c], a[m], b0);
      mma_m16n8k16<kIn>(acc[c + 1], a[m], b1);
    }
  }
}

// The accumulator x (16 x kK, C layout) rounded to scalar_t (a 16-bit type with bit member .x) as
// A fragments: C's element pairs (row g or g + 8, columns 2t, 2t + 1 of chunk c) are exactly A's
// registers of the 16-column slice c / 2, so no value changes lanes.
template <typename scalar_t, int kK>
__device__ __forceinline__ void to_a_fragments(uint32_t (&a)[kK / 16][4], const float (&x)[kK / 8][4]) {
  const auto bits = [](float v) { return static_cast<scalar_t>(v).x; };
#pragma unroll
  for (int c = 0; c < kK / 8; ++c) {
    a[c / 2][2 * (c & 1)] = pack_b16(bits(x[c][0]), bits(x[c][1]));
    a[c / 2][2 * (c & 1) + 1] = pack_b16(bits(x[c][2]), bits(x[c][3]));
  }
}

}  // namespace seqops::cuda
