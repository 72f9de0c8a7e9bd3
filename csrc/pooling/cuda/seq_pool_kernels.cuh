// The seq_pool forward kernels (host side and backward: seq_pool.cu), compiled by nvcc and by
// the host emulator (emulator/).
//
// Forward (one read of x): a Flash-Decoding split. Grid = (batch, sequence chunk, head), head
// fastest so the blocks of all heads of one chunk run together and share x through L2. Each
// block streams its rows with an online softmax: every thread keeps its slice of the row
// (kSlots elements, strided by the block size, so loads are coalesced) and of the weighted-sum
// accumulator in registers; a step takes kRows rows, one block reduction yields their logits.
// The per-chunk (max, sum, accumulator) partials are merged by seq_pool_merge_kernel with the
// log-sum-exp rule.
#pragma once
#include <ATen/OpMathType.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>

#include "common/cuda/block_reduce.cuh"
#include "common/cuda/launch.cuh"

namespace seqops::cuda {

constexpr int kPoolThreads = 256;
constexpr int kMaxSlots = 32;                         // row elements per thread at most
constexpr int64_t kMaxDim = kPoolThreads * kMaxSlots;  // 8192
constexpr int kMergeThreads = 256;

// Rows per online-softmax step: as many as fit in 32 registers of row values per thread.
template <int kSlots>
constexpr int rows_per_step() {
  return 32 / kSlots < 8 ? 32 / kSlots : 8;
}

template <typename T, int kSlots, typename acc_t = at::opmath_type<T>>
__global__ void __launch_bounds__(kPoolThreads)
    seq_pool_chunk_kernel(const T* __restrict__ x, const acc_t* __restrict__ w,
                          int64_t w_batch_stride, const acc_t* __restrict__ bias,
                          int64_t bias_batch_stride, const bool* __restrict__ mask,
                          acc_t* __restrict__ part_max, acc_t* __restrict__ part_sum,
                          acc_t* __restrict__ part_acc, int64_t L, int64_t D, int64_t H,
                          int64_t chunks) {
  constexpr int kRows = rows_per_step<kSlots>();
  __shared__ BlockSum<kPoolThreads, kRows, acc_t> reducer;

  const int64_t block = blockIdx.x;
  const int64_t h = block % H;
  const int64_t c = (block / H) % chunks;
  const int64_t b = block / (H * chunks);
  const int64_t t_begin = chunk_begin(c, chunks, L), t_end = chunk_begin(c + 1, chunks, L);
  const int tid = threadIdx.x;
  const T* xb = x + b * L * D;
  const bool* mb = mask ? mask + b * L : nullptr;

  acc_t wv[kSlots], acc[kSlots];
#pragma unroll
  for (int i = 0; i < kSlots; ++i) {
    const int64_t d = tid + static_cast<int64_t>(i) * kPoolThreads;
    wv[i] = d < D ? w[b * w_batch_stride + h * D + d] : acc_t(0);
    acc[i] = acc_t(0);
  }
  const acc_t bias_h = bias ? bias[b * bias_batch_stride + h] : acc_t(0);
  acc_t run_max = -std::numeric_limits<acc_t>::infinity(), run_sum = 0;
  int parity = 0;

  for (int64_t t = t_begin; t < t_end; t += kRows) {
    acc_t xv[kRows][kSlots], logit[kRows];
    bool kept[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int64_t tr = t + r;
      kept[r] = tr < t_end && (mb == nullptr || mb[tr]);  // masked rows are never read
#pragma unroll
      for (int i = 0; i < kSlots; ++i) {
        const int64_t d = tid + static_cast<int64_t>(i) * kPoolThreads;
        xv[r][i] = (kept[r] && d < D) ? static_cast<acc_t>(xb[tr * D + d]) : acc_t(0);
      }
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      acc_t s = 0;
#pragma unroll
      for (int i = 0; i < kSlots; ++i) s += xv[r][i] * wv[i];
      logit[r] = s;
    }
    reducer.reduce(logit, parity);  // every thread now holds the same logits
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
      acc_t a = acc[i] * scale;
#pragma unroll
      for (int r = 0; r < kRows; ++r) a += p[r] * xv[r][i];
      acc[i] = a;
    }
    run_max = new_max;
  }

  const int64_t item = (b * chunks + c) * H + h;
  if (tid == 0) {
    part_max[item] = run_max;
    part_sum[item] = run_sum;
  }
#pragma unroll
  for (int i = 0; i < kSlots; ++i) {
    const int64_t d = tid + static_cast<int64_t>(i) * kPoolThreads;
    if (d < D) part_acc[item * D + d] = acc[i];
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
