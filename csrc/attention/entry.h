// The attention ops' dispatcher entry points, written once from SEQOPS_ATTENTION_OPTIONS
// (attention/attention.h): each device file registers attention_forward_entry<Kernels> /
// attention_backward_entry<Kernels>, where Kernels provides
//   static std::tuple<at::Tensor, at::Tensor> forward(const AttentionArgs&, q, k, v,
//                                                   const AttentionOptions&);
//   static AttentionGrads backward(const AttentionArgs&, grad_out, q, k, v, out, lse,
//                                  const AttentionOptions&, bool bias_grad);
#pragma once
#include <tuple>

#include "attention/attention.h"
#include "attention/packed_sequences.h"

namespace seqops {

// The options as dispatcher parameters (", Param name" each) and as AttentionOptions's
// initializers.
#define SEQOPS_OPTION_PARAM(Param, name, schema) , Param name
#define SEQOPS_OPTION_INIT(Param, name, schema) name,

template <typename Kernels>
std::tuple<at::Tensor, at::Tensor> attention_forward_entry(
    const at::Tensor& q, const at::Tensor& k,
    const at::Tensor& v SEQOPS_ATTENTION_OPTIONS(SEQOPS_OPTION_PARAM)) {
  const AttentionOptions o{SEQOPS_ATTENTION_OPTIONS(SEQOPS_OPTION_INIT)};
  const AttentionArgs a = check_attention(q, k, v, o);
  const PackedSequences packed = packed_sequences(a, o, q.device());
  return Kernels::forward(packed.restrict(a), q, k, v, o);
}

// (grad_q, grad_k, grad_v, then one gradient per SEQOPS_ATTENTION_SCORE_GRADS entry).
#define SEQOPS_GRAD_TYPE(name) , at::Tensor
using AttentionGradTuple = std::tuple<at::Tensor, at::Tensor,
                                      at::Tensor SEQOPS_ATTENTION_SCORE_GRADS(SEQOPS_GRAD_TYPE)>;
#undef SEQOPS_GRAD_TYPE

template <typename Kernels>
AttentionGradTuple attention_backward_entry(
    const at::Tensor& grad_out, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
    const at::Tensor& out, const at::Tensor& lse,
    bool bias_grad SEQOPS_ATTENTION_OPTIONS(SEQOPS_OPTION_PARAM)) {
  const AttentionOptions o{SEQOPS_ATTENTION_OPTIONS(SEQOPS_OPTION_INIT)};
  const AttentionArgs a = check_attention(q, k, v, o);
  check_attention_backward(a, q, grad_out, out, lse);
  TORCH_CHECK(!bias_grad || a.policy == ScorePolicy::DenseBias, "bias_grad needs a bias");
  const PackedSequences packed = packed_sequences(a, o, q.device());
  AttentionGrads g = Kernels::backward(packed.restrict(a), grad_out, q, k, v, out, lse, o, bias_grad);
  // Absent gradients come back as empty tensors of q's dtype and device.
#define SEQOPS_FILL_ABSENT(name) \
  if (!g.name.defined()) g.name = at::empty({0}, q.options());
  SEQOPS_ATTENTION_SCORE_GRADS(SEQOPS_FILL_ABSENT)
#undef SEQOPS_FILL_ABSENT
#define SEQOPS_GRAD_VALUE(name) , g.name
  return {g.q, g.k, g.v SEQOPS_ATTENTION_SCORE_GRADS(SEQOPS_GRAD_VALUE)};
#undef SEQOPS_GRAD_VALUE
}

#undef SEQOPS_OPTION_INIT
#undef SEQOPS_OPTION_PARAM

}  // namespace seqops
