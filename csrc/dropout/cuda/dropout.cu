// dropout on CUDA: one thread per Philox call, i.e. per four consecutive elements (grid-stride).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <algorithm>

#include "common/cuda/block_reduce.cuh"
#include "common/cuda/launch.cuh"
#include "common/cuda/cuda_context.h"
#include "dropout/dropout.h"
#include "common/philox.h"

namespace seqops::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 65536;

template <typename T, typename acc_t = at::opmath_type<T>>
__global__ void __launch_bounds__(kThreads)
    dropout_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n, int64_t calls,
                   uint64_t seed, uint64_t offset, float keep_prob, acc_t scale) {
  for (int64_t e4 = blockIdx.x * int64_t(kThreads) + threadIdx.x; e4 < calls;
       e4 += int64_t(gridDim.x) * kThreads) {
    const Philox4 w = philox4x32_10(element_dropout_counter(offset, e4), static_cast<uint32_t>(seed),
                                    static_cast<uint32_t>(seed >> 32));
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t e = 4 * e4 + k;
      if (e < n)
        y[e] = static_cast<T>(dropout_keep(w.v[k], keep_prob) ? static_cast<acc_t>(x[e]) * scale : acc_t(0));
    }
  }
}

at::Tensor dropout_cuda(const at::Tensor& x, double p, const at::Tensor& rng) {
  const DropoutArgs a = check_dropout(x, p, rng);
  const DeviceGuard guard(x.device());
  const auto xc = x.contiguous();
  auto y = at::empty_like(xc);
  const int64_t n = xc.numel();
  if (n == 0) return y;
  const int64_t calls = ceil_div(n, 4);  // Philox calls, 4 elements each
  const int64_t blocks = std::min(ceil_div(calls, kThreads), kMaxBlocks);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "dropout_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    dropout_kernel<scalar_t><<<grid_1d(blocks, "dropout_kernel"), kThreads, 0, current_stream()>>>(
        xc.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), n, calls, a.stream.seed, a.stream.offset,
        a.keep_prob, static_cast<acc_t>(a.scale));
    check_launch("dropout_kernel");
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(seqops, CUDA, m) { m.impl("dropout", &dropout_cuda); }

}  // namespace seqops::cuda
