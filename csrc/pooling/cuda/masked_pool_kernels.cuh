// The masked_pool kernels (host side: masked_pool.cu), compiled by nvcc and by the host
// emulator (emulator/).
//
// Forward: grid (batch, chunk group, column tile). Each thread owns kVec consecutive columns
// (one 16-byte load per row when rows are 16-byte aligned, see rows_take_vector_loads) and scans one chunk's kept
// rows in order (sum, or max with the first index on ties and NaN sticking, as on CPU); a block's
// threads are row groups of `width` threads (the row's vector count rounded up to a power of two,
// at most the block), group g taking chunk (chunk group) * groups + g, so no thread idles at small
// D and a warp reads whole contiguous row segments. Each chunk writes a partial;
// masked_pool_merge_kernel combines the chunks in sequence order with the same rule, so the
// result equals one sequential scan. Backward: one thread per element of dx, written exactly
// once (no zero fill + scatter).
#pragma once
#include <ATen/OpMathType.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda/launch.cuh"
#include "common/cuda/max_rule.cuh"
#include "common/cuda/vector_access.cuh"

namespace seqops::cuda {

constexpr int kColThreads = 256;  // threads per block in the forward
constexpr int kRowUnroll = 4;     // rows loaded ahead per step
constexpr int kPointThreads = 256;

template <typename T, int kVec, typename acc_t = at::opmath_type<T>>
__global__ void __launch_bounds__(kColThreads)
    masked_pool_chunk_kernel(const T* __restrict__ x, const bool* __restrict__ mask,
                             acc_t* __restrict__ part, int64_t* __restrict__ part_index,
                             int64_t L, int64_t D, int64_t chunks, int64_t d_tiles, int width,
                             bool is_max) {
  const int groups = kColThreads / width;
  const int64_t chunk_groups = chunks / groups;
  const int64_t block = blockIdx.x;  // (b, chunk group, d tile), d tile fastest
  const int64_t dt = block % d_tiles;
  const int64_t c = (block / d_tiles) % chunk_groups * groups + threadIdx.x / width;
  const int64_t b = block / (d_tiles * chunk_groups);
  const int64_t d = (dt * width + threadIdx.x % width) * kVec;  // D is a multiple of kVec
  if (d >= D) return;  // no barriers below
  const int64_t t_begin = chunk_begin(c, chunks, L), t_end = chunk_begin(c + 1, chunks, L);
  const T* xb = x + b * L * D + d;
  const bool* mb = mask ? mask + b * L : nullptr;

  acc_t value[kVec];  // the running sums, or the running maxima (0 while no row is kept)
  int64_t index[kVec];
#pragma unroll
  for (int e = 0; e < kVec; ++e) {
    value[e] = acc_t(0);
    index[e] = -1;
  }
  for (int64_t t = t_begin; t < t_end; t += kRowUnroll) {
    T v[kRowUnroll][kVec];
    bool kept[kRowUnroll];
#pragma unroll
    for (int r = 0; r < kRowUnroll; ++r) {
      kept[r] = t + r < t_end && (mb == nullptr || mb[t + r]);
      if (kept[r]) load_values(v[r], xb + (t + r) * D);  // masked rows are never read
    }
#pragma unroll
    for (int r = 0; r < kRowUnroll; ++r) {
      if (!kept[r]) continue;
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        const acc_t a = static_cast<acc_t>(v[r][e]);
        if (is_max) max_update(value[e], index[e], a, t + r);
        else value[e] += a;
      }
    }
  }
  const int64_t item = (b * chunks + c) * D + d;
#pragma unroll
  for (int e = 0; e < kVec; ++e) {
    part[item + e] = value[e];
    if (is_max) part_index[item + e] = index[e];
  }
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
