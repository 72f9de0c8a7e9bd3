// Row-shaped building blocks of the CUDA attention poolers (row_ops.h): host side, launching
// the kernels of row_kernels.cuh.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <cuda_runtime.h>

#include <type_traits>

#include "common/cuda/launch.cuh"
#include "common/cuda/cuda_context.h"
#include "common/cuda/row_kernels.cuh"
#include "common/cuda/row_ops.h"
#include "common/cuda/vector_access.cuh"
#include "common/dtype.h"
#include "common/tensor_data.h"

namespace seqops::cuda {
namespace {

template <typename T, int TN>
void launch_row_dots(const at::Tensor& x, const at::Tensor& v, const bool* mask, at::Tensor& out) {
  using acc_t = at::opmath_type<T>;
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2), K = v.size(-2);
  const int64_t row_tiles = ceil_div(L, kDotsRows), k_tiles = ceil_div(K, TN);
  const int64_t v_batch_stride = v.dim() == 3 ? K * D : 0;
  launch_kernel("row_dots_kernel", row_dots_kernel<T, TN>,
                B * row_tiles * k_tiles, kDotsThreads, 0,
                x.data_ptr<T>(), v.data_ptr<acc_t>(), v_batch_stride, mask,
                out.data_ptr<acc_t>(), L, D, K, row_tiles, k_tiles,
                rows_take_vector_loads(x.const_data_ptr<T>(), D));
}

void check_accumulate_tensor(const at::Tensor& t, const at::Tensor& x, const char* name) {
  const auto acc = accumulate_type(x);
  TORCH_INTERNAL_ASSERT(t.scalar_type() == acc && t.is_contiguous() && t.device() == x.device(),
                        name, " must be a contiguous ", acc, " tensor on ", x.device());
}

}  // namespace

at::Tensor row_dots(const at::Tensor& x, const at::Tensor& v,
                    const std::optional<at::Tensor>& mask) {
  TORCH_INTERNAL_ASSERT(x.dim() == 3 && x.is_contiguous() && (v.dim() == 2 || v.dim() == 3));
  check_accumulate_tensor(v, x, "row_dots: v");
  const int64_t B = x.size(0), L = x.size(1), K = v.size(-2);
  auto out = at::empty({B, K, L}, v.options());
  if (B == 0 || K == 0) return out;
  const bool* m = data_or_null<const bool>(mask);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "row_dots", [&] {
    if (K <= 2) launch_row_dots<scalar_t, 2>(x, v, m, out);  // seq_pool's backward with one head
    else if (K <= 8) launch_row_dots<scalar_t, 8>(x, v, m, out);
    else launch_row_dots<scalar_t, 32>(x, v, m, out);
  });
  return out;
}

at::Tensor weighted_rows(const at::Tensor& coef, const at::Tensor& x,
                         const std::optional<at::Tensor>& mask) {
  TORCH_INTERNAL_ASSERT(x.dim() == 3 && x.is_contiguous() && coef.dim() == 3);
  const auto c = coef.contiguous();
  check_accumulate_tensor(c, x, "weighted_rows: coef");
  const int64_t B = x.size(0), L = x.size(1), D = x.size(2), K = c.size(1);
  TORCH_INTERNAL_ASSERT(c.size(0) == B && c.size(2) == L);
  if (B == 0 || K == 0) return at::zeros({B, K, D}, c.options());
  const bool* m = data_or_null<const bool>(mask);
  at::Tensor partial;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "weighted_rows", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const int64_t k_groups = ceil_div(K, kWrHeads), d_tiles = ceil_div(D, wr_col_tile<scalar_t>);
    const int64_t chunks = plan_chunks(B * k_groups * d_tiles, L);
    partial = at::empty({B, chunks, K, D}, c.options());
    launch_kernel("weighted_rows_kernel", weighted_rows_kernel<scalar_t>,
                  B * chunks * d_tiles * k_groups, kWrThreads, 0,
                  c.data_ptr<acc_t>(), x.data_ptr<scalar_t>(), m, partial.data_ptr<acc_t>(), L,
                  D, K, chunks, k_groups, d_tiles,
                  rows_take_vector_loads(x.const_data_ptr<scalar_t>(), D));
  });
  return partial.size(1) == 1 ? partial.squeeze(1) : partial.sum(1);
}

at::Tensor combine_rows(const at::Tensor& coef, const at::Tensor& v,
                        const std::optional<at::Tensor>& base,
                        const std::optional<at::Tensor>& mask, at::ScalarType out_dtype) {
  const auto c = coef.contiguous(), vc = v.contiguous();
  TORCH_INTERNAL_ASSERT(c.dim() == 3 && vc.dim() == 3 && c.size(0) == vc.size(0) &&
                        c.size(1) == vc.size(1));
  const auto acc = accumulate_type(out_dtype);
  TORCH_INTERNAL_ASSERT(c.scalar_type() == acc && vc.scalar_type() == acc);
  const int64_t B = c.size(0), K = c.size(1), L = c.size(2), D = vc.size(2);
  std::optional<at::Tensor> bc;
  if (base) {
    bc = base->contiguous();
    TORCH_INTERNAL_ASSERT(bc->scalar_type() == acc && bc->dim() == 2 && bc->size(0) == B &&
                          bc->size(1) == D);
  }
  auto out = at::empty({B, L, D}, c.options().dtype(out_dtype));
  if (B == 0 || D == 0) return out;
  const int64_t row_tiles = ceil_div(L, kCrRows), d_tiles = ceil_div(D, kCrColTile);
  const bool* m = data_or_null<const bool>(mask);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out_dtype, "combine_rows", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    launch_kernel("combine_rows_kernel", combine_rows_kernel<scalar_t>,
                  B * row_tiles * d_tiles, kCrThreads, 0,
                  c.data_ptr<acc_t>(), vc.data_ptr<acc_t>(), data_or_null<acc_t>(bc), m,
                  out.data_ptr<scalar_t>(), L, D, K, row_tiles, d_tiles);
  });
  return out;
}

}  // namespace seqops::cuda
