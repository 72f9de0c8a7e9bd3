// Validation of the pooling ops' arguments (both devices run the same checks).
#include "common/checks.h"
#include "pooling/pooling.h"

namespace seqops {

static PoolShape check_sequence(const at::Tensor& x, const std::optional<at::Tensor>& mask) {
  check_rank(x, "x", 3, "(batch, length, dim)");
  check_floating_dtype(x, "x");
  TORCH_CHECK(x.size(1) >= 1, "x must have length >= 1, got shape ", x.sizes());
  TORCH_CHECK(x.size(2) >= 1, "x must have dim >= 1, got shape ", x.sizes());
  check_mask(mask, x, x.size(0), x.size(1));
  return PoolShape{x.size(0), x.size(1), x.size(2), 1};
}

PoolShape check_seq_pool(const at::Tensor& x, const at::Tensor& weight,
                         const std::optional<at::Tensor>& bias,
                         const std::optional<at::Tensor>& mask) {
  PoolShape s = check_sequence(x, mask);
  TORCH_CHECK(weight.dim() == 2 || weight.dim() == 3,
              "weight must be (heads, dim) or per-batch (batch, heads, dim), got shape ",
              weight.sizes());
  check_same_device(weight, "weight", x);
  check_same_dtype(weight, "weight", x);
  if (weight.dim() == 3) check_size(weight, "weight", 0, s.batch, "batch of x");
  check_size(weight, "weight", weight.dim() - 1, s.dim, "dim of x");
  s.heads = weight.size(weight.dim() - 2);
  TORCH_CHECK(s.heads >= 1, "weight must have at least one head, got shape ", weight.sizes());
  if (bias) {
    const auto expected = weight.sizes().slice(0, weight.dim() - 1);
    TORCH_CHECK(bias->sizes() == expected, "bias must have shape ", expected,
                " (weight's shape without its last dim), got ", bias->sizes());
    check_same_device(*bias, "bias", x);
    check_same_dtype(*bias, "bias", x);
  }
  return s;
}

PoolShape check_lama_pool(const at::Tensor& x, const at::Tensor& p, const at::Tensor& q,
                          const std::optional<at::Tensor>& mask, double eps) {
  PoolShape s = check_sequence(x, mask);
  check_rank(p, "p", 2, "(heads, dim)");
  check_size(p, "p", 1, s.dim, "dim of x");
  s.heads = p.size(0);
  TORCH_CHECK(s.heads >= 1, "p must have at least one head, got shape ", p.sizes());
  TORCH_CHECK(q.sizes() == p.sizes(), "q must have the same shape as p ", p.sizes(), ", got ",
              q.sizes());
  for (auto [t, name] : {std::pair{&p, "p"}, std::pair{&q, "q"}}) {
    check_same_device(*t, name, x);
    check_same_dtype(*t, name, x);
  }
  TORCH_CHECK(eps > 0, "eps must be > 0, got ", eps);
  return s;
}

PoolShape check_masked_pool(const at::Tensor& x, const std::optional<at::Tensor>& mask) {
  return check_sequence(x, mask);
}

PoolShape check_seq_pool_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                  const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                  const std::optional<at::Tensor>& mask, const at::Tensor& out,
                                  const at::Tensor& lse) {
  const PoolShape s = check_seq_pool(x, weight, bias, mask);
  TORCH_CHECK(grad_out.sizes() == out.sizes() && out.sizes() == at::IntArrayRef({s.batch, s.heads, s.dim}),
              "grad_out and out must have shape (batch, heads, dim) = (", s.batch, ", ", s.heads,
              ", ", s.dim, "), got ", grad_out.sizes(), " and ", out.sizes());
  TORCH_CHECK(lse.sizes() == at::IntArrayRef({s.batch, s.heads}), "lse must have shape (", s.batch,
              ", ", s.heads, "), got ", lse.sizes());
  for (auto [t, name] : {std::pair{&grad_out, "grad_out"}, std::pair{&out, "out"}, std::pair{&lse, "lse"}})
    check_same_device(*t, name, x);
  return s;
}

PoolShape check_lama_pool_backward(const at::Tensor& grad_pooled, const at::Tensor& grad_weights,
                                   const at::Tensor& x, const at::Tensor& p, const at::Tensor& q,
                                   const std::optional<at::Tensor>& mask, double eps) {
  const PoolShape s = check_lama_pool(x, p, q, mask, eps);
  TORCH_CHECK(grad_pooled.sizes() == at::IntArrayRef({s.batch, s.heads, s.dim}),
              "grad_pooled must have shape (", s.batch, ", ", s.heads, ", ", s.dim, "), got ",
              grad_pooled.sizes());
  TORCH_CHECK(grad_weights.sizes() == at::IntArrayRef({s.batch, s.heads, s.length}),
              "grad_weights must have shape (", s.batch, ", ", s.heads, ", ", s.length, "), got ",
              grad_weights.sizes());
  check_same_device(grad_pooled, "grad_pooled", x);
  check_same_device(grad_weights, "grad_weights", x);
  return s;
}

PoolShape check_masked_pool_backward(const at::Tensor& grad_out,
                                     const std::optional<at::Tensor>& mask,
                                     const at::Tensor& index, int64_t length, PoolMode mode) {
  check_rank(grad_out, "grad_out", 2, "(batch, dim)");
  check_floating_dtype(grad_out, "grad_out");
  TORCH_CHECK(length >= 1, "length must be >= 1, got ", length);
  const PoolShape s{grad_out.size(0), length, grad_out.size(1), 1};
  check_mask(mask, grad_out, s.batch, s.length);
  if (mode == PoolMode::Max) {
    TORCH_CHECK(index.sizes() == grad_out.sizes() && index.scalar_type() == at::kLong,
                "index must be an int64 tensor of shape ", grad_out.sizes(), ", got ",
                index.scalar_type(), " ", index.sizes());
    TORCH_CHECK(index.device() == grad_out.device(), "index must be on the same device as grad_out (",
                grad_out.device(), "), got ", index.device());
  }
  return s;
}

PoolMode parse_pool_mode(const std::string& mode) {
  if (mode == "mean") return PoolMode::Mean;
  if (mode == "max") return PoolMode::Max;
  if (mode == "sum") return PoolMode::Sum;
  TORCH_CHECK(false, "mode must be one of 'mean', 'max', 'sum', got '", mode, "'");
}

Activation parse_activation(const std::string& name) {
  if (name == "identity") return Activation::Identity;
  if (name == "tanh") return Activation::Tanh;
  if (name == "relu") return Activation::Relu;
  if (name == "sigmoid") return Activation::Sigmoid;
  TORCH_CHECK(false, "activation must be one of 'identity', 'tanh', 'relu', 'sigmoid', got '",
              name, "'");
}

}  // namespace seqops
