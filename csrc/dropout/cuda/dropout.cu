// dropout on CUDA: host side (the kernel: dropout_kernels.cuh).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <algorithm>

#include "common/cuda/launch.cuh"
#include "common/library.h"
#include "common/cuda/cuda_context.h"
#include "dropout/cuda/dropout_kernels.cuh"
#include "dropout/dropout.h"

namespace seqops::cuda {
namespace {

constexpr int64_t kMaxBlocks = 65536;

at::Tensor dropout_cuda(const at::Tensor& x, double p, const at::Tensor& rng) {
  const DropoutArgs a = check_dropout(x, p, rng);
  const DeviceGuard guard(x.device());
  const auto xc = x.contiguous();
  auto y = at::empty_like(xc);
  const int64_t n = xc.numel();
  if (n == 0) return y;
  const int64_t calls = ceil_div(n, 4);  // Philox calls, 4 elements each
  const int64_t blocks = std::min(ceil_div(calls, kDropoutThreads), kMaxBlocks);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dropout_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch_kernel("dropout_kernel", dropout_kernel<scalar_t>, blocks,
                  kDropoutThreads, 0, xc.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), n, calls,
                  a.stream.seed, a.stream.offset, a.keep_prob, static_cast<acc_t>(a.scale));
  });
  return y;
}

}  // namespace

SEQOPS_CUDA_LIBRARY_IMPL(m) { m.impl("dropout", &dropout_cuda); }

}  // namespace seqops::cuda
