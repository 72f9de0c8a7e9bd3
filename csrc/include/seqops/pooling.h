// Shapes and validation of the pooling ops, shared by the CPU and CUDA entry points.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <string>

#include "seqops/activation.h"

namespace seqops {

struct PoolShape {
  int64_t batch, length, dim, heads;
};

// x (B, L, D); weight (H, D) or (B, H, D); bias shaped like weight without its last dim.
PoolShape check_seq_pool(const at::Tensor& x, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias,
                         const std::optional<at::Tensor>& mask);

// x (B, L, D); p, q (H, D).
PoolShape check_lama_pool(const at::Tensor& x, const at::Tensor& p, const at::Tensor& q,
                          const std::optional<at::Tensor>& mask, double eps);

enum class PoolMode : int { Mean = 0, Max = 1, Sum = 2 };
PoolMode parse_pool_mode(const std::string& mode);  // raises on unknown modes

PoolShape check_masked_pool(const at::Tensor& x, const std::optional<at::Tensor>& mask);

// The float type a kernel accumulates in for x's dtype: float64 for float64, else float32.
inline at::ScalarType accumulate_type(const at::Tensor& x) {
  return x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace seqops
