// The masked_pool kernels (host side: masked_pool.cu), compiled by nvcc and by the host
// emulator (emulator/).
//
// Forward: grid (batch, sequence chunk, column tile), one column per thread, so every warp
// reads whole contiguous row segments and no block reduction is needed; each block scans its
// chunk's kept rows in order (sum, or max with the first index on ties and NaN sticking, as on
// CPU) and writes a per-chunk partial; masked_pool_merge_kernel combines the chunks in sequence
// order with the same rule, so the result equals one sequential scan. Backward: one thread per
// element of dx, written exactly once (no zero fill + scatter).
#pragma once
#include <ATen/OpMathType.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda/launch.cuh"
#include "common/cuda/max_rule.cuh"

namespace seqops::cuda {

constexpr int kColThreads = 256;  // columns per block in the forward
constexpr int kRowUnroll = 4;     // rows loaded ahead per step
constexpr int kPointThreads = 256;

template <typename T, typename acc_t = at::opmath_type<T>>
__global__ void __launch_bounds__(kColThreads)
    masked_pool_chunk_kernel(const T* __restrict__ x, const bool* __restrict__ mask,
                             acc_t* __restrict__ part, int64_t* __restrict__ part_index,
                             int64_t L, int64_t D, int64_t chunks, int64_t d_tiles, bool is_max) {
  const int64_t block = blockIdx.x;  // (b, chunk, d tile), d tile fastest
  const int64_t dt = block % d_tiles;
  const int64_t c = (block / d_tiles) % chunks;
  const int64_t b = block / (d_tiles * chunks);
  const int64_t d = dt * kColThreads + threadIdx.x;
  if (d >= D) return;  // no barriers below
  const int64_t t_begin = chunk_begin(c, chunks, L), t_end = chunk_begin(c + 1, chunks, L);
  const T* xb = x + b * L * D + d;
  const bool* mb = mask ? mask + b * L : nullptr;

  acc_t value = 0;  // the running sum, or the running max (0 while no row is kept)
  int64_t index = -1;
  for (int64_t t = t_begin; t < t_end; t += kRowUnroll) {
    acc_t v[kRowUnroll];
    bool kept[kRowUnroll];
#pragma unroll
    for (int r = 0; r < kRowUnroll; ++r) {
      kept[r] = t + r < t_end && (mb == nullptr || mb[t + r]);
      v[r] = kept[r] ? static_cast<acc_t>(xb[(t + r) * D]) : acc_t(0);
    }
#pragma unroll
    for (int r = 0; r < kRowUnroll; ++r) {
      if (!kept[r]) continue;
      if (is_max) max_update(value, index, v[r], t + r);
      else value += v[r];
    }
  }
  const int64_t item = (b * chunks + c) * D + d;
  part[item] = value;
  if (is_max) part_index[item] = index;
}

// One thread per (b, d): combines the chunks in order; `scale` (B) is 1 / max(kept, 1) for
// 'mean' and null otherwise.
template <typename T, typename acc_t = at::opmath_type<T>>
__global__ void __launch_bounds__(kPointThreads)
    masked_pool_merge_kernel(const acc_t* __restrict__ part, const int64_t* __restrict__ part_index,
                             const acc_t* __restrict__ scale, T* __restrict__ out,
                             int64_t* __restrict__ index, int64_t B, int64_t D, int64_t chunks,
                             bool is_max) {
  const int64_t n = B * D;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / D, d = i % D;
    const int64_t first = b * chunks * D + d;
    if (is_max) {
      acc_t best = 0;
      int64_t arg = -1;
      for (int64_t c = 0; c < chunks; ++c) {
        const int64_t chunk_arg = part_index[first + c * D];
        if (chunk_arg >= 0) max_update(best, arg, part[first + c * D], chunk_arg);
      }
      out[i] = static_cast<T>(best);  // 0 when no row is kept (arg = -1)
      index[i] = arg;
    } else {
      acc_t total = 0;
      for (int64_t c = 0; c < chunks; ++c) total += part[first + c * D];
      out[i] = static_cast<T>((scale ? scale[b] : acc_t(1)) * total);
    }
  }
}

// One thread per element of dx: 'max' routes grad to the recorded index, 'mean' / 'sum' spread
// scale * grad over the kept rows; masked rows and rows that are not the argmax get 0.
template <typename T, typename acc_t = at::opmath_type<T>>
__global__ void __launch_bounds__(kPointThreads)
    masked_pool_backward_kernel(const acc_t* __restrict__ grad, const bool* __restrict__ mask,
                                const int64_t* __restrict__ index, const acc_t* __restrict__ scale,
                                T* __restrict__ dx, int64_t B, int64_t L, int64_t D, bool is_max) {
  const int64_t n = B * L * D;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t d = i % D, bt = i / D;
    const int64_t t = bt % L, b = bt / L;
    const int64_t bd = b * D + d;
    T value = T(0);
    if (is_max) {
      if (index[bd] == t) value = static_cast<T>(grad[bd]);
    } else if (mask == nullptr || mask[bt]) {
      value = static_cast<T>((scale ? scale[b] : acc_t(1)) * grad[bd]);
    }
    dx[i] = value;
  }
}

}  // namespace seqops::cuda
