// The pooling ops' dispatcher entry points, shared by both devices (as attention/entry.h and
// compress/compress.h are for theirs): the argument checks, then the operands as every kernel
// reads them (x contiguous in its own dtype; parameters and incoming gradients in the
// accumulate type, contiguous; the mask contiguous), then the device's kernels, then the
// common epilogue. Each device file registers seq_pool_entry<Kernels> etc., where Kernels has
//   static std::tuple<at::Tensor, at::Tensor> seq_pool(const SeqPoolOperands&);        // out, lse
//   static std::tuple<at::Tensor, at::Tensor> seq_pool_backward(const SeqPoolOperands&,
//       dy, out (the forward's, x's dtype), lse);        // dx, dw per batch entry (B, H, D), acc
//   static std::tuple<at::Tensor, at::Tensor> lama_pool(const LamaOperands&);    // pooled, weights
//   static std::tuple<at::Tensor, at::Tensor, at::Tensor> lama_pool_backward(const LamaOperands&,
//       dpooled, dweights);                                          // dx, dp, dq (H, D), acc
//   static void masked_pool(const MaskedPoolOperands&, at::Tensor& out, at::Tensor& index);
//   static void masked_pool_backward(const MaskedPoolOperands&, grad (B, D) acc, index,
//       at::Tensor& dx);
#pragma once
#include <optional>
#include <string>
#include <tuple>

#include "common/checks.h"
#include "pooling/pooling.h"

namespace seqops {

using OptTensor = std::optional<at::Tensor>;

inline OptTensor to_acc_or_none(const OptTensor& t, at::ScalarType acc) {
  if (!t) return std::nullopt;
  return t->to(acc).contiguous();
}

struct SeqPoolOperands {
  PoolShape s;
  at::ScalarType acc;
  at::Tensor x, weight;  // weight (H, D) or (B, H, D) in acc
  OptTensor bias, mask;  // bias in acc
};

struct LamaOperands {
  PoolShape s;
  LamaOptions o;
  at::ScalarType acc;
  at::Tensor x, p, q;  // p, q (H, D) in acc
  OptTensor mask;
};

struct MaskedPoolOperands {
  PoolShape s;
  PoolMode mode;
  at::Tensor x;  // forward only (undefined in the backward)
  OptTensor mask;
};

inline SeqPoolOperands seq_pool_operands(const PoolShape& s, const at::Tensor& x,
                                         const at::Tensor& weight, const OptTensor& bias,
                                         const OptTensor& mask) {
  const auto acc = accumulate_type(x);
  return {s, acc, x.contiguous(), weight.to(acc).contiguous(), to_acc_or_none(bias, acc),
          contiguous_or_none(mask)};
}

inline LamaOperands lama_operands(const PoolShape& s, const at::Tensor& x, const at::Tensor& p,
                                  const at::Tensor& q, const OptTensor& mask,
                                  const std::string& activation, bool normalize, double eps) {
  const auto acc = accumulate_type(x);
  return {s, parse_lama_options(activation, normalize, eps), acc, x.contiguous(),
          p.to(acc).contiguous(), q.to(acc).contiguous(), contiguous_or_none(mask)};
}

template <typename Kernels>
std::tuple<at::Tensor, at::Tensor> seq_pool_entry(const at::Tensor& x, const at::Tensor& weight,
                                                  const OptTensor& bias, const OptTensor& mask) {
  const PoolShape s = check_seq_pool(x, weight, bias, mask);
  return Kernels::seq_pool(seq_pool_operands(s, x, weight, bias, mask));
}

template <typename Kernels>
std::tuple<at::Tensor, at::Tensor> seq_pool_backward_entry(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight,
    const OptTensor& bias, const OptTensor& mask, const at::Tensor& out, const at::Tensor& lse) {
  const PoolShape s = check_seq_pool_backward(grad_out, x, weight, bias, mask, out, lse);
  const SeqPoolOperands ops = seq_pool_operands(s, x, weight, bias, mask);
  const auto dy = grad_out.to(ops.acc).contiguous();
  auto [dx, dw] = Kernels::seq_pool_backward(ops, dy, out, lse.to(ops.acc).contiguous());
  if (weight.dim() == 2) dw = dw.sum(0);  // a weight shared by the batch
  return {dx, dw.to(weight.scalar_type())};
}

template <typename Kernels>
std::tuple<at::Tensor, at::Tensor> lama_pool_entry(const at::Tensor& x, const at::Tensor& p,
                                                   const at::Tensor& q, const OptTensor& mask,
                                                   const std::string& activation, bool normalize,
                                                   double eps) {
  const PoolShape s = check_lama_pool(x, p, q, mask, eps);
  return Kernels::lama_pool(lama_operands(s, x, p, q, mask, activation, normalize, eps));
}

template <typename Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor> lama_pool_backward_entry(
    const at::Tensor& grad_pooled, const at::Tensor& grad_weights, const at::Tensor& x,
    const at::Tensor& p, const at::Tensor& q, const OptTensor& mask,
    const std::string& activation, bool normalize, double eps) {
  const PoolShape s = check_lama_pool_backward(grad_pooled, grad_weights, x, p, q, mask, eps);
  const LamaOperands ops = lama_operands(s, x, p, q, mask, activation, normalize, eps);
  auto [dx, dp, dq] = Kernels::lama_pool_backward(ops, grad_pooled.to(ops.acc).contiguous(),
                                                  grad_weights.to(ops.acc).contiguous());
  return {dx, dp.to(p.scalar_type()), dq.to(q.scalar_type())};
}

template <typename Kernels>
std::tuple<at::Tensor, at::Tensor> masked_pool_entry(const at::Tensor& x, const OptTensor& mask,
                                                     const std::string& mode_name) {
  const PoolShape s = check_masked_pool(x, mask);
  const MaskedPoolOperands ops{s, parse_pool_mode(mode_name), x.contiguous(),
                               contiguous_or_none(mask)};
  const auto index_options = x.options().dtype(at::kLong);
  auto out = at::empty({s.batch, s.dim}, x.options());
  auto index = ops.mode == PoolMode::Max ? at::empty({s.batch, s.dim}, index_options)
                                         : at::empty({0}, index_options);
  Kernels::masked_pool(ops, out, index);
  return {out, index};
}

template <typename Kernels>
at::Tensor masked_pool_backward_entry(const at::Tensor& grad_out, const OptTensor& mask,
                                      const at::Tensor& index, int64_t length,
                                      const std::string& mode_name) {
  const PoolMode mode = parse_pool_mode(mode_name);
  const PoolShape s = check_masked_pool_backward(grad_out, mask, index, length, mode);
  const MaskedPoolOperands ops{s, mode, at::Tensor(), contiguous_or_none(mask)};
  auto dx = at::empty({s.batch, s.length, s.dim}, grad_out.options());
  Kernels::masked_pool_backward(ops, grad_out.to(accumulate_type(grad_out)).contiguous(),
                                mode == PoolMode::Max ? index.contiguous() : at::Tensor(), dx);
  return dx;
}

}  // namespace seqops
