// Device helpers shared by the CUDA kernels: warp/block reductions and the online-softmax
// state. (Grid sizes and sequence chunking: common/cuda/launch.cuh.)
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <limits>

namespace seqops::cuda {

constexpr int kWarp = 32;

// ------------------------------------------------------------------------------ reductions

template <typename acc_t>
__device__ inline acc_t warp_sum(acc_t v) {
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

// Sums N values over each row group of `width` threads (a power of two dividing NT; groups are
// consecutive threads) and returns the group's totals to each of its threads. All threads of the
// block must call it (NT threads, a multiple of 32), with the same width. Within a warp the
// shuffles suffice; a group that spans warps also goes through `buffer`, whose two halves are
// used alternately by consecutive calls (`parity` flips each call), so one __syncthreads per
// call suffices: a warp can only overwrite a half after every warp has passed the barrier of
// the call in between, i.e. after everyone finished reading it. The summation order is fixed
// (and a shuffle butterfly adds the same pairs on every lane), so every thread of a group gets
// bitwise the same totals.
template <int NT, int N, typename acc_t>
struct GroupSum {
  static constexpr int kWarps = NT / kWarp;
  static_assert(NT % kWarp == 0, "block size must be a multiple of the warp size");
  acc_t buffer[2][N][kWarps];

  __device__ inline void reduce(acc_t (&v)[N], int width, int& parity) {
    const int lanes = width < kWarp ? width : kWarp;
#pragma unroll
    for (int i = 0; i < N; ++i) {
      for (int offset = lanes / 2; offset > 0; offset /= 2) v[i] += __shfl_xor_sync(0xffffffffu, v[i], offset);
    }
    if (width <= kWarp) return;  // uniform over the block
    const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
    const int group_warps = width / kWarp, first = warp / group_warps * group_warps;
    if (lane == 0) {
#pragma unroll
      for (int i = 0; i < N; ++i) buffer[parity][i][warp] = v[i];
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < N; ++i) {
      acc_t total = 0;
      for (int w = first; w < first + group_warps; ++w) total += buffer[parity][i][w];
      v[i] = total;
    }
    parity ^= 1;
  }
};

// Online softmax state over a stream of values: the running maximum and the running sum of
// exp(value - maximum). NaN values propagate into the sum; -inf values add nothing.
template <typename acc_t>
struct OnlineSoftmax {
  acc_t max = -std::numeric_limits<acc_t>::infinity();
  acc_t sum = 0;

  // exp(v - m), with exp(-inf - -inf) taken as 0 (nothing kept yet contributes nothing).
  __device__ static acc_t rel_exp(acc_t v, acc_t m) {
    return v == -std::numeric_limits<acc_t>::infinity() ? acc_t(0) : ::exp(v - m);
  }
  // Factor that rescales a sum taken relative to `from` to one relative to `to` >= from.
  __device__ static acc_t rescale(acc_t from, acc_t to) {
    return from == to ? acc_t(1) : ::exp(from - to);
  }

  __device__ void add(acc_t v) {
    if (v > max) {
      sum = sum * rescale(max, v) + acc_t(1);
      max = v;
    } else {
      sum += rel_exp(v, max);
    }
  }
  __device__ void merge(const OnlineSoftmax& o) {
    const acc_t m = o.max > max ? o.max : max;
    sum = sum * rescale(max, m) + o.sum * rescale(o.max, m);
    max = m;
  }
};

// Merges every thread's OnlineSoftmax over the block; every thread gets the result. `smem`
// needs 2 * NT / 32 entries (plain values: no constructor runs on shared memory). Ends with a
// barrier, so smem may be reused right after.
template <int NT, typename acc_t>
__device__ inline OnlineSoftmax<acc_t> block_online_softmax(OnlineSoftmax<acc_t> s, acc_t* smem) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    OnlineSoftmax<acc_t> other;
    other.max = __shfl_xor_sync(0xffffffffu, s.max, offset);
    other.sum = __shfl_xor_sync(0xffffffffu, s.sum, offset);
    s.merge(other);
  }
  if (lane == 0) {
    smem[2 * warp] = s.max;
    smem[2 * warp + 1] = s.sum;
  }
  __syncthreads();
  OnlineSoftmax<acc_t> total;
  for (int w = 0; w < NT / kWarp; ++w) {
    OnlineSoftmax<acc_t> part;
    part.max = smem[2 * w];
    part.sum = smem[2 * w + 1];
    total.merge(part);
  }
  __syncthreads();
  return total;
}

// Sum of one value over the block, returned to every thread; `smem` needs NT / 32 entries.
// Ends with a barrier, so smem may be reused right after.
template <int NT, typename acc_t>
__device__ inline acc_t block_sum(acc_t v, acc_t* smem) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
  v = warp_sum(v);
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  acc_t total = 0;
  for (int w = 0; w < NT / kWarp; ++w) total += smem[w];
  __syncthreads();
  return total;
}

// Max of one value over the block (comparison based: NaN loses, as with std::max), returned to
// every thread; `smem` needs NT / 32 entries. Ends with a barrier.
template <int NT, typename acc_t>
__device__ inline acc_t block_max(acc_t v, acc_t* smem) {
  const int lane = threadIdx.x % kWarp, warp = threadIdx.x / kWarp;
#pragma unroll
  for (int offset = kWarp / 2; offset > 0; offset /= 2) {
    const acc_t o = __shfl_xor_sync(0xffffffffu, v, offset);
    v = o > v ? o : v;
  }
  if (lane == 0) smem[warp] = v;
  __syncthreads();
  acc_t total = smem[0];
  for (int w = 1; w < NT / kWarp; ++w) total = smem[w] > total ? smem[w] : total;
  __syncthreads();
  return total;
}

}  // namespace seqops::cuda
