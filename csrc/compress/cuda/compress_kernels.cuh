// The compress kernels for 'mean' / 'max' (host side: compress.cu): one kernel template, the
// mode a compile-time policy, one thread per output element (b, w, d) looping over the window's
// `rate` rows; consecutive threads take consecutive d, so every row read is coalesced, and x is
// read in place through its batch / row strides. Backward: one thread per element of dx's
// window rows, each written exactly once. Compiled by nvcc and by the host emulator (emulator/).
#pragma once
#include <ATen/OpMathType.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/cuda/max_rule.cuh"
#include "compress/compress.h"

namespace seqops::cuda {

constexpr int kCompressThreads = 256;

template <typename T, CompressMode M, typename acc_t = at::opmath_type<T>>
__global__ void __launch_bounds__(kCompressThreads)
    compress_kernel(const T* __restrict__ x, T* __restrict__ out, int64_t* __restrict__ index,
                    int64_t B, int64_t W, int64_t D, int64_t rate, int64_t stride_b,
                    int64_t stride_l, acc_t inv_rate) {
  const int64_t n = B * W * D;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t d = i % D, bw = i / D;
    const int64_t w = bw % W, b = bw / W;
    const T* row = x + b * stride_b + w * rate * stride_l + d;
    acc_t acc = 0;
    int64_t arg = -1;
    for (int64_t k = 0; k < rate; ++k) {
      const acc_t v = static_cast<acc_t>(row[k * stride_l]);
      if constexpr (M == CompressMode::Mean) acc += v;
      else max_update(acc, arg, v, k);
    }
    if constexpr (M == CompressMode::Mean) {
      out[i] = static_cast<T>(acc * inv_rate);
    } else {
      out[i] = static_cast<T>(acc);
      index[i] = arg;
    }
  }
}

template <typename T, CompressMode M, typename acc_t = at::opmath_type<T>>
__global__ void __launch_bounds__(kCompressThreads)
    compress_backward_kernel(const acc_t* __restrict__ grad, const int64_t* __restrict__ index,
                             T* __restrict__ dx, int64_t B, int64_t W, int64_t L, int64_t D,
                             int64_t rate, acc_t inv_rate) {
  const int64_t rows = W * rate;  // window rows per batch element
  const int64_t n = B * rows * D;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t d = i % D, br = i / D;
    const int64_t r = br % rows, b = br / rows;
    const int64_t g = (b * W + r / rate) * D + d;
    acc_t value;
    if constexpr (M == CompressMode::Mean) value = grad[g] * inv_rate;
    else value = index[g] == r % rate ? grad[g] : acc_t(0);
    dx[(b * L + r) * D + d] = static_cast<T>(value);
  }
}

}  // namespace seqops::cuda
