// masked_pool on CUDA: host side (the kernels and their plan: masked_pool_kernels.cuh).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <algorithm>

#include "common/cuda/launch.cuh"
#include "common/library.h"
#include "common/cuda/cuda_context.h"
#include "common/checks.h"
#include "common/tensor_data.h"
#include "pooling/cuda/masked_pool_kernels.cuh"
#include "pooling/entry.h"

namespace seqops::cuda {
namespace {

int64_t point_blocks(int64_t n) { return std::min<int64_t>(ceil_div(n, kPointThreads), 65536); }

// 1 / max(kept, 1) per batch element for 'mean', as the CPU kernel scales (kept > 0 ? 1/kept : 1).
std::optional<at::Tensor> mean_scale(PoolMode mode, int64_t batch, int64_t length,
                                     const std::optional<at::Tensor>& mask,
                                     const at::TensorOptions& acc_options) {
  if (mode != PoolMode::Mean) return std::nullopt;
  const auto kept = mask ? mask->sum(1, /*keepdim=*/false, at::kLong)
                         : at::full({batch}, length, acc_options.dtype(at::kLong));
  return kept.clamp_min(1).to(acc_options.dtype()).reciprocal();
}

struct CudaMaskedPool {
static void masked_pool(const MaskedPoolOperands& in, at::Tensor& out, at::Tensor& index) {
  const PoolShape& s = in.s;
  const PoolMode mode = in.mode;
  const at::Tensor &x = in.x, &xc = in.x;
  const auto& m = in.mask;
  const DeviceGuard guard(x.device());
  const bool is_max = mode == PoolMode::Max;
  const int64_t B = s.batch, L = s.length, D = s.dim;
  if (B == 0) return;
  const auto acc_options = x.options().dtype(accumulate_type(x));
  const auto scale = mean_scale(mode, B, L, m, acc_options);
  const bool* mp = data_or_null<bool>(m);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "masked_pool_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    constexpr int kVec = kValuesPer16Bytes<scalar_t>;
    const bool vector = rows_take_vector_loads(xc.const_data_ptr<scalar_t>(), D);
    const int64_t vcols = vector ? D / kVec : D;
    const int width = static_cast<int>(std::min<int64_t>(kColThreads, pow2_at_least(vcols)));
    const int64_t groups = kColThreads / width, d_tiles = ceil_div(vcols, width);
    // Chunk groups as plan_chunks sizes chunks, each group's chunk of >= kMinChunkRows rows where L allows.
    const int64_t chunks = plan_chunks(B * d_tiles, ceil_div(L, groups)) * groups;
    auto part = at::empty({B, chunks, D}, acc_options);
    auto part_index = is_max ? at::empty({B, chunks, D}, x.options().dtype(at::kLong)) : at::Tensor();
    const auto kernel = vector ? masked_pool_chunk_kernel<scalar_t, kVec> : masked_pool_chunk_kernel<scalar_t, 1>;
    launch_kernel("masked_pool_chunk_kernel", kernel, B * chunks / groups * d_tiles, kColThreads, 0,
                  xc.data_ptr<scalar_t>(), mp, part.data_ptr<acc_t>(),
                  is_max ? part_index.data_ptr<int64_t>() : nullptr, L, D, chunks, d_tiles, width,
                  is_max);
    launch_kernel("masked_pool_merge_kernel", masked_pool_merge_kernel<scalar_t>,
                  point_blocks(B * D), kPointThreads, 0,
                  part.data_ptr<acc_t>(), is_max ? part_index.data_ptr<int64_t>() : nullptr,
                  data_or_null<acc_t>(scale), out.data_ptr<scalar_t>(),
                  is_max ? index.data_ptr<int64_t>() : nullptr, B, D, chunks, is_max);
  });
}

static void masked_pool_backward(const MaskedPoolOperands& in, const at::Tensor& g,
                                 const at::Tensor& idx, at::Tensor& dx) {
  const PoolShape& s = in.s;
  const PoolMode mode = in.mode;
  const auto& m = in.mask;
  const bool is_max = mode == PoolMode::Max;
  const DeviceGuard guard(dx.device());
  if (dx.numel() == 0) return;
  const auto scale = mean_scale(mode, s.batch, s.length, m, g.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dx.scalar_type(),
                                  "masked_pool_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch_kernel("masked_pool_backward_kernel", masked_pool_backward_kernel<scalar_t>,
                  point_blocks(dx.numel()), kPointThreads, 0, g.data_ptr<acc_t>(),
                  data_or_null<bool>(m), is_max ? idx.data_ptr<int64_t>() : nullptr,
                  data_or_null<acc_t>(scale), dx.data_ptr<scalar_t>(), s.batch, s.length, s.dim,
                  is_max);
  });
}
};

}  // namespace

SEQOPS_CUDA_LIBRARY_IMPL(m) {
  m.impl("masked_pool", &masked_pool_entry<CudaMaskedPool>);
  m.impl("masked_pool_backward", &masked_pool_backward_entry<CudaMaskedPool>);
}

}  // namespace seqops::cuda
