// Shapes and validation of the pooling ops, shared by the CPU and CUDA entry points.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <string>

#include "common/activation.h"
#include "common/dtype.h"

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

// lama_pool's scalar options, parsed once per call.
struct LamaOptions {
  Activation act;
  bool normalize;
  double eps;
};
inline LamaOptions parse_lama_options(const std::string& activation, bool normalize, double eps) {
  return {parse_activation(activation), normalize, eps};
}

enum class PoolMode : int { Mean = 0, Max = 1, Sum = 2 };
PoolMode parse_pool_mode(const std::string& mode);  // raises on unknown modes

PoolShape check_masked_pool(const at::Tensor& x, const std::optional<at::Tensor>& mask);

// The backward ops: the forward's checks plus the incoming gradients and saved outputs.
PoolShape check_seq_pool_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                  const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                  const std::optional<at::Tensor>& mask, const at::Tensor& out,
                                  const at::Tensor& lse);
PoolShape check_lama_pool_backward(const at::Tensor& grad_pooled, const at::Tensor& grad_weights,
                                   const at::Tensor& x, const at::Tensor& p, const at::Tensor& q,
                                   const std::optional<at::Tensor>& mask, double eps);
PoolShape check_masked_pool_backward(const at::Tensor& grad_out,
                                     const std::optional<at::Tensor>& mask,
                                     const at::Tensor& index, int64_t length, PoolMode mode);

}  // namespace seqops
