// The three row-shaped building blocks that the CUDA attention poolers share (seq_pool's
// backward, lama_pool's forward and backward). Each reads or writes x exactly once and
// accumulates in the accumulate type (float, or double for double) whatever x's dtype, so
// float16/bfloat16 inputs get float32 dot products. Defined in row_kernels.cu (the kernels:
// row_kernels.cuh). The caller has
// validated the arguments and set the device (DeviceGuard); the kernels run on the current stream.
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace seqops::cuda {

// S[b, k, t] = x[b, t, :] . v[b, k, :] for kept rows, exactly 0 for masked ones.
// x (B, L, D) any CUDA float dtype; v (K, D) shared by the batch or (B, K, D), in x's
// accumulate type; mask bool (B, L) or none. Returns S (B, K, L) in the accumulate type.
at::Tensor row_dots(const at::Tensor& x, const at::Tensor& v,
                    const std::optional<at::Tensor>& mask);

// out[b, k, :] = sum over kept t of coef[b, k, t] * x[b, t, :] (masked rows are not read).
// coef (B, K, L) in x's accumulate type. Returns (B, K, D) in the accumulate type; split over sequence chunks, the
// chunk partials summed in a fixed order (deterministic).
at::Tensor weighted_rows(const at::Tensor& coef, const at::Tensor& x,
                         const std::optional<at::Tensor>& mask);

// out[b, t, :] = base[b, :] + sum_k coef[b, k, t] * v[b, k, :] for kept rows, 0 for masked rows.
// coef (B, K, L), v (B, K, D), base (B, D) or none, all in the accumulate type. Returns
// (B, L, D) in out_dtype.
at::Tensor combine_rows(const at::Tensor& coef, const at::Tensor& v,
                        const std::optional<at::Tensor>& base,
                        const std::optional<at::Tensor>& mask, at::ScalarType out_dtype);

}  // namespace seqops::cuda
