// Test kernels for csrc/common/cuda/tensor_core.cuh, compiled by g++ for the host emulator
// (tensor_core_test.cpp) and by nvcc for a GPU (tensor_core_check.cu), so the emulator's answers
// and the device's can be compared on the same data. One warp each.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda/tensor_core.cuh"

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

}  // namespace seqops::cuda::tensor_core_test
