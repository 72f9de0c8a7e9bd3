// compress on CUDA: host side. 'mean' / 'max' run the kernels of compress_kernels.cuh (the
// entry zeroes dx's tail rows); 'conv' is the shared GEMM path (cuBLAS through ATen,
// compress/conv_gemm.cpp).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <algorithm>

#include "common/cuda/launch.cuh"
#include "common/library.h"
#include "common/cuda/cuda_context.h"
#include "compress/compress.h"
#include "compress/cuda/compress_kernels.cuh"

namespace seqops::cuda {
namespace {

int64_t blocks_for(int64_t n) { return std::min<int64_t>(ceil_div(n, kCompressThreads), 65536); }

struct CudaCompress {
  static void forward(const CompressShape& s, CompressMode mode, const at::Tensor& x,
                      at::Tensor& out, at::Tensor& index) {
    const DeviceGuard guard(x.device());
    const int64_t n = out.numel();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "compress_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const acc_t inv_rate = acc_t(1) / static_cast<acc_t>(s.rate);
      auto launch = [&](auto kernel, int64_t* index_ptr) {
        launch_kernel("compress_kernel", kernel, blocks_for(n),
                      kCompressThreads, 0, x.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), index_ptr,
                      s.batch, s.windows, s.dim, s.rate, x.stride(0), x.stride(1), inv_rate);
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
        launch_kernel("compress_backward_kernel", kernel,
                      blocks_for(n), kCompressThreads, 0,
                      grad.data_ptr<acc_t>(), index_ptr, dx.data_ptr<scalar_t>(), s.batch,
                      s.windows, s.length, s.dim, s.rate, inv_rate);
      };
      if (mode == CompressMode::Mean)
        launch(compress_backward_kernel<scalar_t, CompressMode::Mean>, nullptr);
      else launch(compress_backward_kernel<scalar_t, CompressMode::Max>, index.data_ptr<int64_t>());
    });
  }
};

}  // namespace
}  // namespace seqops::cuda

SEQOPS_CUDA_LIBRARY_IMPL(m) {
  m.impl("compress", &seqops::compress_forward_entry<seqops::cuda::CudaCompress>);
  m.impl("compress_backward", &seqops::compress_backward_entry<seqops::cuda::CudaCompress>);
}
