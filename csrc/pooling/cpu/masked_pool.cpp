// masked_pool on CPU: mean / max / sum over the kept rows, parallel over (batch, dim block)
// so each thread streams its own columns and no cross-thread merge is needed.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "common/cpu/chunked_pipeline.h"
#include "common/checks.h"
#include "common/tensor_data.h"
#include "pooling/entry.h"
#include "common/cpu/vector_primitives.h"

namespace seqops::cpu {
namespace {

constexpr int64_t kDimBlock = 256;

int64_t kept_rows(const bool* mask, int64_t length) {
  if (!mask) return length;
  int64_t n = 0;
  for (int64_t t = 0; t < length; ++t) n += mask[t];
  return n;
}

template <typename T>
void forward_kernel(const PoolShape& s, PoolMode mode, const at::Tensor& x,
                    const std::optional<at::Tensor>& mask, at::Tensor& out, at::Tensor& index) {
  using acc_t = at::opmath_type<T>;
  const auto& vp = vector_primitives<T>();
  const int64_t L = s.length, D = s.dim, blocks = (D + kDimBlock - 1) / kDimBlock;
  const bool* mask_ptr = data_or_null<const bool>(mask);
  at::parallel_for(0, s.batch * blocks, 1, [&](int64_t i0, int64_t i1) {
    std::vector<acc_t> acc(kDimBlock);
    std::vector<int64_t> arg(kDimBlock);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / blocks, d0 = (i % blocks) * kDimBlock, n = std::min(kDimBlock, D - d0);
      const bool* mb = mask_ptr ? mask_ptr + b * L : nullptr;
      const T* xb = x.data_ptr<T>() + b * L * D + d0;
      T* o = out.data_ptr<T>() + b * D + d0;
      std::fill(acc.begin(), acc.end(), acc_t(0));
      std::fill(arg.begin(), arg.end(), int64_t(-1));
      for (int64_t t = 0; t < L; ++t) {
        if (mb && !mb[t]) continue;
        if (mode == PoolMode::Max) vp.max_update(acc.data(), arg.data(), xb + t * D, t, n);
        else vp.axpy(acc.data(), acc_t(1), xb + t * D, n);
      }
      if (mode == PoolMode::Max) {  // arg = -1 (no kept row) leaves the zero in acc
        std::copy(arg.begin(), arg.begin() + n, index.data_ptr<int64_t>() + b * D + d0);
        vp.store(o, acc.data(), n);
      } else {
        const int64_t kept = kept_rows(mb, L);
        const acc_t scale = mode == PoolMode::Mean && kept > 0 ? acc_t(1) / acc_t(kept) : acc_t(1);
        vp.store_scaled(o, scale, acc.data(), n);
      }
    }
  });
}

template <typename T>
void backward_kernel(const PoolShape& s, PoolMode mode, const at::Tensor& grad,
                     const std::optional<at::Tensor>& mask, const at::Tensor& index,
                     at::Tensor& dx) {
  using acc_t = at::opmath_type<T>;
  const auto& vp = vector_primitives<T>();
  const int64_t L = s.length, D = s.dim;
  const bool* mask_ptr = data_or_null<const bool>(mask);
  at::parallel_for(0, s.batch, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const bool* mb = mask_ptr ? mask_ptr + b * L : nullptr;
      const acc_t* g = grad.data_ptr<acc_t>() + b * D;
      T* dxb = dx.data_ptr<T>() + b * L * D;
      if (mode == PoolMode::Max) {
        std::fill(dxb, dxb + L * D, T(0));
        const int64_t* arg = index.data_ptr<int64_t>() + b * D;
        for (int64_t d = 0; d < D; ++d)
          if (arg[d] >= 0) dxb[arg[d] * D + d] = static_cast<T>(g[d]);
        continue;
      }
      const int64_t kept = kept_rows(mb, L);
      const acc_t scale = mode == PoolMode::Mean && kept > 0 ? acc_t(1) / acc_t(kept) : acc_t(1);
      for (int64_t t = 0; t < L; ++t) {
        if (mb && !mb[t]) std::fill(dxb + t * D, dxb + (t + 1) * D, T(0));
        else vp.store_scaled(dxb + t * D, scale, g, D);
      }
    }
  });
}

struct CpuMaskedPool {
  static void masked_pool(const MaskedPoolOperands& in, at::Tensor& out, at::Tensor& index) {
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, in.x.scalar_type(), "masked_pool_cpu", [&] {
      forward_kernel<scalar_t>(in.s, in.mode, in.x, in.mask, out, index);
    });
  }

  static void masked_pool_backward(const MaskedPoolOperands& in, const at::Tensor& g,
                                   const at::Tensor& index, at::Tensor& dx) {
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, dx.scalar_type(), "masked_pool_backward_cpu", [&] {
      backward_kernel<scalar_t>(in.s, in.mode, g, in.mask, index, dx);
    });
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(seqops, CPU, m) {
  m.impl("masked_pool", &seqops::masked_pool_entry<CpuMaskedPool>);
  m.impl("masked_pool_backward", &seqops::masked_pool_backward_entry<CpuMaskedPool>);
}

}  // namespace seqops::cpu
