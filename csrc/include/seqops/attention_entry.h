// The attention ops' dispatcher signatures, written once: each device file registers
// attention_forward_entry<Kernels> / attention_backward_entry<Kernels>, where Kernels provides
//   static std::tuple<at::Tensor, at::Tensor> forward(const AttentionArgs&, q, k, v,
//                                                   const ScoreTensors&);
//   static AttentionGrads backward(const AttentionArgs&, grad_out, q, k, v, out, lse,
//                                  const ScoreTensors&, bool bias_grad);
#pragma once
#include <tuple>

#include "seqops/attention.h"

namespace seqops {

using OptTensor = std::optional<at::Tensor>;

// The options both ops take after their tensors, and their parsing into (s, a).
#define SEQOPS_ATTENTION_OPTION_PARAMS                                                           \
  const OptTensor &key_padding_mask, bool causal, std::optional<double> scale, double dropout_p, \
      const OptTensor &dropout_rng, const OptTensor &bias, const OptTensor &t5_table,            \
      bool t5_bidirectional, int64_t t5_max_distance, const OptTensor &alibi_slopes,             \
      const OptTensor &rel_keys, const OptTensor &rel_scores, const OptTensor &content_bias,     \
      const OptTensor &position_bias, std::optional<int64_t> rel_zero,                           \
      std::optional<int64_t> query_offset
#define SEQOPS_ATTENTION_PARSE_OPTIONS                                                          \
  const ScoreTensors s{key_padding_mask, dropout_rng, bias,         t5_table,     alibi_slopes, \
                       rel_keys,         rel_scores,  content_bias, position_bias};             \
  const AttentionArgs a = check_attention(q, k, v, s, causal, scale, dropout_p,                 \
                                          t5_bidirectional, t5_max_distance, rel_zero, query_offset)

template <typename Kernels>
std::tuple<at::Tensor, at::Tensor> attention_forward_entry(const at::Tensor& q, const at::Tensor& k,
                                                           const at::Tensor& v,
                                                           SEQOPS_ATTENTION_OPTION_PARAMS) {
  SEQOPS_ATTENTION_PARSE_OPTIONS;
  return Kernels::forward(a, q, k, v, s);
}

using AttentionGradTuple =
    std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor,
               at::Tensor, at::Tensor, at::Tensor>;

template <typename Kernels>
AttentionGradTuple attention_backward_entry(const at::Tensor& grad_out, const at::Tensor& q,
                                            const at::Tensor& k, const at::Tensor& v,
                                            const at::Tensor& out, const at::Tensor& lse,
                                            bool bias_grad, SEQOPS_ATTENTION_OPTION_PARAMS) {
  SEQOPS_ATTENTION_PARSE_OPTIONS;
  check_attention_backward(a, q, grad_out, out, lse);
  TORCH_CHECK(!bias_grad || a.policy == ScorePolicy::DenseBias, "bias_grad needs a bias");
  AttentionGrads g = Kernels::backward(a, grad_out, q, k, v, out, lse, s, bias_grad);
  // Absent gradients come back as empty tensors of q's dtype and device.
  for (at::Tensor* t : {&g.bias, &g.t5_table, &g.alibi_slopes, &g.rel_keys, &g.rel_scores,
                        &g.content_bias, &g.position_bias}) {
    if (!t->defined()) *t = at::empty({0}, q.options());
  }
  return {g.q, g.k, g.v, g.bias, g.t5_table, g.alibi_slopes, g.rel_keys, g.rel_scores,
          g.content_bias, g.position_bias};
}

#undef SEQOPS_ATTENTION_PARSE_OPTIONS
#undef SEQOPS_ATTENTION_OPTION_PARAMS

}  // namespace seqops
