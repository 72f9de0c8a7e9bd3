// compress on CUDA. Compile-checked with nvcc for sm_80 / sm_90; not yet run on a GPU.
//
// 'mean' / 'max': one kernel template (the mode a compile-time policy), one thread per output
// element (b, w, d) looping over the window's `rate` rows; consecutive threads take consecutive
// d, so every row read is coalesced, and x is read in place through its batch / row strides.
// Backward: one thread per element of dx's window rows, each written exactly once (the entry
// zeroes the tail rows). 'conv' is the shared GEMM path (cuBLAS through ATen,
// compress/conv_gemm.cpp).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <algorithm>

#include "common/cuda/block_reduce.cuh"
#include "common/cuda/launch.cuh"
#include "common/cuda/cuda_context.h"
#include "common/cuda/max_rule.cuh"
#include "compress/compress.h"

namespace seqops::cuda {
namespace {

constexpr int kThreads = 256;


template <typename T, CompressMode M, typename acc_t = at::opmath_type<T>>
__global__ void __launch_bounds__(kThreads)
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
__global__ void __launch_bounds__(kThreads)
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

int64_t blocks_for(int64_t n) { return std::min<int64_t>(ceil_div(n, kThreads), 65536); }

struct CudaCompress {
  static void forward(const CompressShape& s, CompressMode mode, const at::Tensor& x,
                      at::Tensor& out, at::Tensor& index) {
    const DeviceGuard guard(x.device());
    const int64_t n = out.numel();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "compress_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const acc_t inv_rate = acc_t(1) / static_cast<acc_t>(s.rate);
      auto launch = [&](auto kernel, int64_t* index_ptr) {
        kernel<<<grid_1d(blocks_for(n), "compress_kernel"), kThreads, 0, current_stream()>>>(
            x.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), index_ptr, s.batch, s.windows,
            s.dim, s.rate, x.stride(0), x.stride(1), inv_rate);
        check_launch("compress_kernel");
      };
      if (mode == CompressMode::Mean) launch(compress_kernel<scalar_t, CompressMode::Mean>, nullptr);
      else launch(compress_kernel<scalar_t, CompressMode::Max>, index.data_ptr<int64_t>());
    });
  }

  static void backward(const CompressShape& s, CompressMode mode, const at::Tensor& grad,
                       const at::Tensor& index, at::Tensor& dx) {
    const DeviceGuard guard(dx.device());
    const int64_t n = s.batch * s.windows * s.rate * s.dim;
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dx.scalar_type(),
                                    "compress_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const acc_t inv_rate = acc_t(1) / static_cast<acc_t>(s.rate);
      auto launch = [&](auto kernel, const int64_t* index_ptr) {
        kernel<<<grid_1d(blocks_for(n), "compress_backward_kernel"), kThreads, 0,
                 current_stream()>>>(grad.data_ptr<acc_t>(), index_ptr, dx.data_ptr<scalar_t>(),
                                     s.batch, s.windows, s.length, s.dim, s.rate, inv_rate);
        check_launch("compress_backward_kernel");
      };
      if (mode == CompressMode::Mean)
        launch(compress_backward_kernel<scalar_t, CompressMode::Mean>, nullptr);
      else launch(compress_backward_kernel<scalar_t, CompressMode::Max>, index.data_ptr<int64_t>());
    });
  }
};

}  // namespace
}  // namespace seqops::cuda

TORCH_LIBRARY_IMPL(seqops, CUDA, m) {
  m.impl("compress", &seqops::compress_forward_entry<seqops::cuda::CudaCompress>);
  m.impl("compress_backward", &seqops::compress_backward_entry<seqops::cuda::CudaCompress>);
}
