// The attention ops' schemas, from the one list of their options (SEQOPS_ATTENTION_OPTIONS in
// attention/attention.h, where the exact math is documented).
#include <torch/library.h>

#include "attention/attention.h"
#include "common/library.h"

// ", Tensor? key_padding_mask=None, bool causal=False, ..." and
// ", Tensor grad_bias, Tensor grad_t5_table, ...".
#define SEQOPS_OPTION_SCHEMA(Param, name, schema) ", " schema
#define SEQOPS_GRAD_SCHEMA(name) ", Tensor grad_" #name

SEQOPS_LIBRARY_FRAGMENT(m) {
  SEQOPS_SET_PYTHON_MODULE(m, "attention");
  // Fused attention with an in-kernel score term: returns out (B, Hq, Lq, dv) and lse
  // (B, Hq, Lq), the log-sum-exp of each query's logits (-inf for a query that sees no key).
  // dropout_rng is a CPU int64 (seed, offset) pair, drawn from torch's generator by
  // seqops.ops.attention so torch.manual_seed reproduces the dropout mask and the backward
  // regenerates it.
  m.def("attention(Tensor q, Tensor k, Tensor v" SEQOPS_ATTENTION_OPTIONS(SEQOPS_OPTION_SCHEMA)
        ") -> (Tensor out, Tensor lse)");
  // Recompute-based backward. Gradients of absent tensors come back empty; grad_bias is
  // computed only when bias_grad (it costs a (B, Hq, Lq, Lk) buffer).
  m.def("attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, "
        "Tensor lse, bool bias_grad" SEQOPS_ATTENTION_OPTIONS(SEQOPS_OPTION_SCHEMA)
        ") -> (Tensor grad_q, Tensor grad_k, Tensor grad_v"
        SEQOPS_ATTENTION_SCORE_GRADS(SEQOPS_GRAD_SCHEMA) ")");
}
