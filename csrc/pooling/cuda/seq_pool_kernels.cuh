// The seq_pool forward kernels (host side and backward: seq_pool.cu), compiled by nvcc and by
// the host emulator (emulator/).
//
// Forward (one read of x): a Flash-Decoding split. Grid = (batch, chunk group, head), head
// fastest so the blocks of all heads of one chunk run together and share x through L2. A block's
// threads are row groups of `width` threads (the row's vector count rounded up to a power of two,
// at most the block), group g streaming chunk (chunk group) * groups + g with an online softmax,
// so no thread idles at small dim. Each thread keeps kSlots runs of kVec consecutive row elements
// (one 16-byte load each when rows are 16-byte aligned, see rows_take_vector_loads; runs strided
// by width * kVec, so a warp's loads are contiguous) and its share of the weighted-sum
// accumulator in registers; a step takes kRows rows, and one group reduction (shuffles, plus
// shared memory when a group spans warps) yields their logits. The per-chunk (max, sum,
// accumulator) partials are merged by seq_pool_merge_kernel with the log-sum-exp rule.
#pragma once
#include <ATen/OpMathType.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>

#include "common/cuda/block_reduce.cuh"
#include "common/cuda/launch.cuh"
#include "common/cuda/vector_access.cuh"

namespace seqops::cuda {

constexpr int kPoolThreads = 256;
constexpr int kMaxValues = 32;                          // row elements per thread at most
constexpr int64_t kMaxDim = kPoolThreads * kMaxValues;  // 8192
constexpr int kMergeThreads = 256;

// Rows per online-softmax step: as many as fit in 128 bytes (32 registers) of row values per
// thread, at most 8.
template <typename T, int kValues>
constexpr int rows_per_step() {
  constexpr int rows = static_cast<int>(128 / (kValues * sizeof(T)));
  return rows < 1 ? 1 : (rows > 8 ? 8 : rows);
}

template <typename T, int kVec, int kSlots, typename acc_t = at::opmath_type<T>>
__global__ void __launch_bounds__(kPoolThreads)
    seq_pool_chunk_kernel(const T* __restrict__ x, const acc_t* __restrict__ w,
                          int64_t w_batch_stride, const acc_t* __restrict__ bias,
                          int64_t bias_batch_stride, const bool* __restrict__ mask,
                          acc_t* __restrict__ part_max, acc_t* __restrict__ part_sum,
                          acc_t* __restrict__ part_acc, int64_t L, int64_t D, int64_t H,
                          int64_t chunks, int width) {
  constexpr int kRows = rows_per_step<T, kSlots * kVec>();
  __shared__ GroupSum<kPoolThreads, kRows, acc_t> reducer;

  const int tid = threadIdx.x;
  const int groups = kPoolThreads / width, lane = tid % width;
  const int64_t block = blockIdx.x;
  const int64_t h = block % H;
  const int64_t c = (block / H) % (chunks / groups) * groups + tid / width;
  const int64_t b = block / (H * (chunks / groups));
  const int64_t t_begin = chunk_begin(c, chunks, L), t_end = chunk_begin(c + 1, chunks, L);
  // Every group takes the same number of steps (the longest chunk's): the reduction's shuffles
  // and barriers need every thread.
  const int64_t steps = ceil_div(ceil_div(L, chunks), kRows);
  const T* xb = x + b * L * D;
  const bool* mb = mask ? mask + b * L : nullptr;

  // Column of this thread's run i (D is a multiple of kVec, so a run is in or out whole).
  auto column = [&](int i) { return (static_cast<int64_t>(i) * width + lane) * kVec; };
  acc_t wv[kSlots][kVec], acc[kSlots][kVec];
#pragma unroll
  for (int i = 0; i < kSlots; ++i) {
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      const int64_t d = column(i) + e;
      wv[i][e] = d < D ? w[b * w_batch_stride + h * D + d] : acc_t(0);
      acc[i][e] = acc_t(0);
    }
  }
  const acc_t bias_h = bias ? bias[b * bias_batch_stride + h] : acc_t(0);
  acc_t run_max = -std::numeric_limits<acc_t>::infinity(), run_sum = 0;
  int parity = 0;

  for (int64_t step = 0; step < steps; ++step) {
    const int64_t t = t_begin + step * kRows;
    T xv[kRows][kSlots][kVec];
    acc_t logit[kRows];
    bool kept[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      kept[r] = t + r < t_end && (mb == nullptr || mb[t + r]);  // masked rows are never read
#pragma unroll
      for (int i = 0; i < kSlots; ++i) {
        if (kept[r] && column(i) < D) {
          load_values(xv[r][i], xb + (t + r) * D + column(i));
        } else {
#pragma unroll
          for (int e = 0; e < kVec; ++e) xv[r][i][e] = T(0);
        }
      }
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      acc_t s = 0;
#pragma unroll
      for (int i = 0; i < kSlots; ++i) {
#pragma unroll
        for (int e = 0; e < kVec; ++e) s += static_cast<acc_t>(xv[r][i][e]) * wv[i][e];
      }
      logit[r] = s;
    }
    reducer.reduce(logit, width, parity);  // every thread of the group now holds its logits
    acc_t new_max = run_max;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      logit[r] += bias_h;
      if (kept[r] && logit[r] > new_max) new_max = logit[r];
    }
    // Rescale what was accumulated to the new maximum (exactly 1 when it did not move); a NaN
    // logit keeps the maximum and turns the sums into NaN, as on CPU.
    const acc_t scale = OnlineSoftmax<acc_t>::rescale(run_max, new_max);
    acc_t p[kRows], p_total = 0;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      p[r] = kept[r] ? OnlineSoftmax<acc_t>::rel_exp(logit[r], new_max) : acc_t(0);
      p_total += p[r];
    }
    run_sum = run_sum * scale + p_total;
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
#pragma unroll
      for (int e = 0; e < kVec; ++e) {
        acc_t a = acc[i][e] * scale;
#pragma unroll
        for (int r = 0; r < kRows; ++r) a += p[r] * static_cast<acc_t>(xv[r][i][e]);
        acc[i][e] = a;
      }
    }
    run_max = new_max;
  }

  const int64_t item = (b * chunks + c) * H + h;
  if (lane == 0) {
    part_max[item] = run_max;
    part_sum[item] = run_sum;
  }
#pragma unroll
  for (int i = 0; i < kSlots; ++i) {
#pragma unroll
    for (int e = 0; e < kVec; ++e) {
      if (column(i) < D) part_acc[item * D + column(i) + e] = acc[i][e];
    }
  }
}

// Log-sum-exp merge of the chunk partials: grid (batch * head, d tile), one column per thread.
template <typename T, typename acc_t = at::opmath_type<T>>
__global__ void __launch_bounds__(kMergeThreads)
    seq_pool_merge_kernel(const acc_t* __restrict__ part_max, const acc_t* __restrict__ part_sum,
                          const acc_t* __restrict__ part_acc, T* __restrict__ out,
                          acc_t* __restrict__ lse, int64_t D, int64_t H, int64_t chunks,
                          int64_t d_tiles) {
  __shared__ acc_t chunk_weight[kMaxChunks];
  __shared__ acc_t scratch[kMergeThreads / kWarp];
  const int64_t block = blockIdx.x;
  const int64_t dt = block % d_tiles;
  const int64_t bh = block / d_tiles;  // b * H + h
  const int64_t b = bh / H, h = bh % H;
  const int tid = threadIdx.x;
  const int64_t d = dt * kMergeThreads + tid;
  constexpr acc_t kNegInf = -std::numeric_limits<acc_t>::infinity();

  acc_t top = kNegInf;
  for (int64_t c = tid; c < chunks; c += kMergeThreads) {
    const acc_t m = part_max[(b * chunks + c) * H + h];
    top = m > top ? m : top;
  }
  top = block_max<kMergeThreads>(top, scratch);
  if (top == kNegInf) {  // every row masked: zeros, and lse = -inf (uniform branch)
    if (d < D) out[bh * D + d] = T(0);
    if (dt == 0 && tid == 0) lse[bh] = kNegInf;
    return;
  }
  acc_t denom_part = 0;
  for (int64_t c = tid; c < chunks; c += kMergeThreads) {
    const int64_t item = (b * chunks + c) * H + h;
    const acc_t weight = ::exp(part_max[item] - top);  // 0 for chunks with no kept row
    chunk_weight[c] = weight;
    denom_part += part_sum[item] * weight;
  }
  const acc_t denom = block_sum<kMergeThreads>(denom_part, scratch);  // also publishes weights
  if (d < D) {
    acc_t total = 0;
    for (int64_t c = 0; c < chunks; ++c)
      total += chunk_weight[c] * part_acc[((b * chunks + c) * H + h) * D + d];
    out[bh * D + d] = static_cast<T>(total * (acc_t(1) / denom));
  }
  if (dt == 0 && tid == 0) lse[bh] = top + ::log(denom);
}

}  // namespace seqops::cuda
