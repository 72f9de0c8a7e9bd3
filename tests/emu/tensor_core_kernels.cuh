// Test kernels for csrc/common/cuda/tensor_core.cuh and warp_mma.cuh, compiled by g++ for the host emulator
// (tensor_core_test.cpp) and by nvcc for a GPU (tensor_core_check.cu), so the emulator's answers
// and the device's can be compared on the same data. One warp each.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda/tensor_core.cuh"
#include "common/cuda/warp_mma.cuh"

namespace seqops::cuda::tensor_core_test {

using seqops::cuda::Fragment;
using seqops::cuda::MmaInput;

// d = a b + c with a (16x16), b (16x8, k x n), c and d (16x8), all row-major, the fragments
// built element by element from the documented layouts (no ldmatrix).
template <MmaInput kIn>
__global__ void fragment_product_kernel(const uint16_t* a, const uint16_t* b, const float* c, float* d) {
  const int lane = threadIdx.x;
  uint32_t fa[4], fb[2];
  float acc[4];
  for (int i = 0; i < 4; ++i) {
    const int at = Fragment::a_row(lane, i) * 16 + Fragment::a_col(lane, i);
    fa[i] = seqops::cuda::pack_b16(a[at], a[at + 1]);
    acc[i] = c[Fragment::c_row(lane, i) * 8 + Fragment::c_col(lane, i)];
  }
  for (int i = 0; i < 2; ++i) {
    const int at = Fragment::b_k(lane, i) * 8 + Fragment::b_n(lane);
    fb[i] = seqops::cuda::pack_b16(b[at], b[at + 8]);
  }
  seqops::cuda::mma_m16n8k16<kIn>(acc, fa, fb);
  for (int i = 0; i < 4; ++i) d[Fragment::c_row(lane, i) * 8 + Fragment::c_col(lane, i)] = acc[i];
}

// The same product with the operands staged in shared memory and loaded by ldmatrix: x4 of a's
// four 8x8 quarters, x2.trans of b's two 8-row halves.
template <MmaInput kIn>
__global__ void ldmatrix_product_kernel(const uint16_t* a, const uint16_t* b, const float* c, float* d) {
  __shared__ __align__(16) uint16_t sa[16][16];
  __shared__ __align__(16) uint16_t sb[16][8];
  const int lane = threadIdx.x;
  for (int i = lane; i < 256; i += 32) sa[i / 16][i % 16] = a[i];
  for (int i = lane; i < 128; i += 32) sb[i / 8][i % 8] = b[i];
  __syncwarp();
  const int tile = lane / 8, row = lane % 8;
  uint32_t fa[4], fb[2];
  seqops::cuda::ldmatrix<4, false>(fa, &sa[row + 8 * (tile & 1)][8 * (tile >> 1)]);
  seqops::cuda::ldmatrix<2, true>(fb, &sb[row + 8 * (tile & 1)][0]);
  float acc[4];
  for (int i = 0; i < 4; ++i) acc[i] = c[Fragment::c_row(lane, i) * 8 + Fragment::c_col(lane, i)];
  seqops::cuda::mma_m16n8k16<kIn>(acc, fa, fb);
  for (int i = 0; i < 4; ++i) d[Fragment::c_row(lane, i) * 8 + Fragment::c_col(lane, i)] = acc[i];
}

// Each lane's ldmatrix registers for a row-major 16x16 b16 matrix m: out[lane * kTiles + j]. Tile j
// is m's quarter (rows 8 (j & 1), columns 8 (j >> 1)), as for A above.
template <int kTiles, bool kTrans>
__global__ void ldmatrix_kernel(const uint16_t* m, uint32_t* out) {
  __shared__ __align__(16) uint16_t sm[16][16];
  const int lane = threadIdx.x;
  for (int i = lane; i < 256; i += 32) sm[i / 16][i % 16] = m[i];
  __syncwarp();
  const int tile = (lane / 8) % kTiles, row = lane % 8;
  uint32_t r[kTiles];
  seqops::cuda::ldmatrix<kTiles, kTrans>(r, &sm[row + 8 * (tile & 1)][8 * (tile >> 1)]);
  for (int j = 0; j < kTiles; ++j) out[lane * kTiles + j] = r[j];
}

// The 16-bit value of an integer-valued float of magnitude < 2^8 (exact in f16 and bf16), with
// the `.x` bit member to_a_fragments reads.
template <MmaInput kIn>
struct ExactInteger16 {
  uint16_t x;
  __host__ __device__ explicit ExactInteger16(float v) {
    const uint16_t sign = v < 0 ? 0x8000 : 0;
    float m = v < 0 ? -v : v;
    int e = 0;
    for (; m >= 2.f; m /= 2.f) ++e;  // m in [1, 2) unless v = 0
    const auto fraction = [&](int bits) { return static_cast<uint16_t>((m - 1.f) * float(1 << bits)); };
    if (v == 0.f) x = sign;
    else if (kIn == MmaInput::kF16) x = sign | static_cast<uint16_t>((e + 15) << 10) | fraction(10);
    else x = sign | static_cast<uint16_t>((e + 127) << 7) | fraction(7);
  }
};

// Sizes of warp_tiles_kernel: A 16 x kWarpK, B kWarpN x kWarpK, C kWarpN x kWarpCols, shared rows
// padded to kWarpLd; the reduced and column lengths stop short of the helpers' maxima (64).
constexpr int kWarpK = 48, kWarpN = 32, kWarpCols = 48, kWarpLd = 56, kWarpMax = 64;

// The warp_mma.cuh helpers chained as attention chains them: ab_t = A B^T (mma_rows_by_rows, 16 x
// kWarpN), then (A B^T) C (to_a_fragments of that accumulator, mma_frags_by_tile, 16 x kWarpCols).
// Row-major inputs and outputs.
template <MmaInput kIn>
__global__ void warp_tiles_kernel(const uint16_t* a, const uint16_t* b, const uint16_t* c, float* ab_t, float* ab_t_c) {
  __shared__ __align__(16) uint16_t sa[16 * kWarpLd], sb[kWarpN * kWarpLd], sc[kWarpN * kWarpLd];
  const int lane = threadIdx.x;
  for (int i = lane; i < 16 * kWarpK; i += 32) sa[i / kWarpK * kWarpLd + i % kWarpK] = a[i];
  for (int i = lane; i < kWarpN * kWarpK; i += 32) sb[i / kWarpK * kWarpLd + i % kWarpK] = b[i];
  for (int i = lane; i < kWarpN * kWarpCols; i += 32) sc[i / kWarpCols * kWarpLd + i % kWarpCols] = c[i];
  __syncwarp();
  float s[kWarpN / 8][4] = {}, o[kWarpMax / 8][4] = {};
  seqops::cuda::mma_rows_by_rows<kIn, kWarpN, kWarpMax>(s, sa, kWarpLd, sb, kWarpLd, kWarpK);
  uint32_t frag[kWarpN / 16][4];
  seqops::cuda::to_a_fragments<ExactInteger16<kIn>, kWarpN>(frag, s);
  seqops::cuda::mma_frags_by_tile<kIn, kWarpN, kWarpMax>(o, frag, sc, kWarpLd, kWarpCols);
  for (int ch = 0; ch < kWarpMax / 8; ++ch)
    for (int i = 0; i < 4; ++i) {
      const int row = Fragment::c_row(lane, i), col = 8 * ch + Fragment::c_col(lane, i);
      if (ch < kWarpN / 8) ab_t[row * kWarpN + col] = s[ch][i];
      if (col < kWarpCols) ab_t_c[row * kWarpCols + col] = o[ch][i];
      else if (o[ch][i] != 0.f) ab_t_c[0] = -1.f;  // a chunk past n_len was touched
    }
}

}  // namespace seqops::cuda::tensor_core_test
