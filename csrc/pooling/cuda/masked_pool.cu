// masked_pool on CUDA.
//
// Forward: grid (batch, sequence chunk, column tile), one column per thread, so every warp
// reads whole contiguous row segments and no block reduction is needed; each block scans its
// chunk's kept rows in order (sum, or max with the first index on ties and NaN sticking, as on
// CPU) and writes a per-chunk partial; masked_pool_merge_kernel combines the chunks in sequence
// order with the same rule, so the result equals one sequential scan. Backward: one thread per
// element of dx, written exactly once (no zero fill + scatter).
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
#include "common/checks.h"
#include "common/tensor_data.h"
#include "pooling/entry.h"

namespace seqops::cuda {
namespace {

constexpr int kColThreads = 256;  // columns per block in the forward
constexpr int kRowUnroll = 4;     // rows loaded ahead per step
constexpr int kPointThreads = 256;


template <typename T, typename acc_t = at::opmath_type<T>>
__global__ void __launch_bounds__(kColThreads)
    masked_pool_chunk_kernel(const T* __restrict__ x, const bool* __restrict__ mask,
                             acc_t* __restrict__ part, int64_t* __restrict__ part_index,
                             int64_t L, int64_t D, int64_t chunks, int64_t d_tiles, bool is_max) {
  const int64_t block = blockIdx.x;  // (b, chunk, d tile), d tile fastest
  const int64_t dt = block % d_tiles;
  const int64_t c = (block / d_tiles) % chunks;
  const int64_t b = block / (d_tiles * chunks);
  const int64_t d = dt * kColThreads + threadIdx.x;
  if (d >= D) return;  // no barriers below
  const int64_t t_begin = chunk_begin(c, chunks, L), t_end = chunk_begin(c + 1, chunks, L);
  const T* xb = x + b * L * D + d;
  const bool* mb = mask ? mask + b * L : nullptr;

  acc_t value = 0;  // the running sum, or the running max (0 while no row is kept)
  int64_t index = -1;
  for (int64_t t = t_begin; t < t_end; t += kRowUnroll) {
    acc_t v[kRowUnroll];
    bool kept[kRowUnroll];
#pragma unroll
    for (int r = 0; r < kRowUnroll; ++r) {
      kept[r] = t + r < t_end && (mb == nullptr || mb[t + r]);
      v[r] = kept[r] ? static_cast<acc_t>(xb[(t + r) * D]) : acc_t(0);
    }
#pragma unroll
    for (int r = 0; r < kRowUnroll; ++r) {
      if (!kept[r]) continue;
      if (is_max) max_update(value, index, v[r], t + r);
      else value += v[r];
    }
  }
  const int64_t item = (b * chunks + c) * D + d;
  part[item] = value;
  if (is_max) part_index[item] = index;
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
  const int64_t d_tiles = ceil_div(D, kColThreads);
  const int64_t chunks = plan_chunks(B * d_tiles, L);
  auto part = at::empty({B, chunks, D}, acc_options);
  auto part_index = is_max ? at::empty({B, chunks, D}, x.options().dtype(at::kLong)) : at::Tensor();
  const bool* mp = data_or_null<bool>(m);
  const cudaStream_t stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "masked_pool_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    masked_pool_chunk_kernel<scalar_t>
        <<<grid_1d(B * chunks * d_tiles, "masked_pool_chunk_kernel"), kColThreads, 0, stream>>>(
            xc.data_ptr<scalar_t>(), mp, part.data_ptr<acc_t>(),
            is_max ? part_index.data_ptr<int64_t>() : nullptr, L, D, chunks, d_tiles, is_max);
    check_launch("masked_pool_chunk_kernel");
    masked_pool_merge_kernel<scalar_t>
        <<<grid_1d(point_blocks(B * D), "masked_pool_merge_kernel"), kPointThreads, 0, stream>>>(
            part.data_ptr<acc_t>(), is_max ? part_index.data_ptr<int64_t>() : nullptr,
            data_or_null<acc_t>(scale), out.data_ptr<scalar_t>(),
            is_max ? index.data_ptr<int64_t>() : nullptr, B, D, chunks, is_max);
    check_launch("masked_pool_merge_kernel");
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
    masked_pool_backward_kernel<scalar_t>
        <<<grid_1d(point_blocks(dx.numel()), "masked_pool_backward_kernel"), kPointThreads, 0,
           current_stream()>>>(g.data_ptr<acc_t>(), data_or_null<bool>(m),
                               is_max ? idx.data_ptr<int64_t>() : nullptr,
                               data_or_null<acc_t>(scale),
                               dx.data_ptr<scalar_t>(), s.batch, s.length, s.dim, is_max);
    check_launch("masked_pool_backward_kernel");
  });
}
};

}  // namespace

TORCH_LIBRARY_IMPL(seqops, CUDA, m) {
  m.impl("masked_pool", &masked_pool_entry<CudaMaskedPool>);
  m.impl("masked_pool_backward", &masked_pool_backward_entry<CudaMaskedPool>);
}

}  // namespace seqops::cuda
