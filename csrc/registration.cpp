// The single TORCH_LIBRARY of seqops: every schema lives here. Kernels register per device in
// csrc/cpu/*.cpp and csrc/cuda/*.cu; fake kernels and autograd come from seqops/ops.py.
#include <torch/library.h>

#include "seqops/build_facts.h"

#ifdef SEQOPS_PYTHON_MODULE
#include <Python.h>
// A plain extension module with no methods: importing seqops._C loads this library, which
// runs the static registrations below.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
#endif

TORCH_LIBRARY(seqops, m) {
#ifdef SEQOPS_PYTHON_MODULE
  m.set_python_module("seqops.ops");
#endif
  // Attention pooling: per head h, softmax_t(x_t . w_h + b_h) over unmasked t, then the
  // weighted sum of x. Returns (out (B, H, D), lse (B, H) log-sum-exp of the logits).
  m.def("seq_pool(Tensor x, Tensor weight, Tensor? bias=None, Tensor? mask=None)"
        " -> (Tensor out, Tensor lse)");
  m.def("seq_pool_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor? bias, Tensor? mask,"
        " Tensor out, Tensor lse) -> (Tensor grad_x, Tensor grad_weight)");
  // LAMA pooling: weights (B, H, L) and pooled = weights @ x (B, H, D).
  m.def("lama_pool(Tensor x, Tensor p, Tensor q, Tensor? mask=None, str activation='tanh',"
        " bool normalize=True, float eps=1e-12) -> (Tensor pooled, Tensor weights)");
  m.def("lama_pool_backward(Tensor grad_pooled, Tensor grad_weights, Tensor x, Tensor p,"
        " Tensor q, Tensor? mask, str activation, bool normalize, float eps)"
        " -> (Tensor grad_x, Tensor grad_p, Tensor grad_q)");
  // Masked mean / max / sum over the sequence. index (B, D) holds the argmax for 'max' and is
  // empty otherwise.
  m.def("masked_pool(Tensor x, Tensor? mask=None, str mode='mean') -> (Tensor out, Tensor index)");
  m.def("masked_pool_backward(Tensor grad_out, Tensor? mask, Tensor index, SymInt length, str mode)"
        " -> Tensor");
  // Fused attention with an in-kernel score term (see csrc/include/seqops/attention.h for the
  // exact math): returns out (B, Hq, Lq, dv) and lse (B, Hq, Lq), the log-sum-exp of each
  // query's logits (-inf for a query that sees no key). dropout_rng is a CPU int64 (seed,
  // offset) pair, drawn from torch's generator by seqops.ops.attention so torch.manual_seed
  // reproduces the dropout mask and the backward regenerates it.
#define SEQOPS_ATTENTION_OPTIONS                                                              \
  "Tensor? key_padding_mask=None, bool causal=False, float? scale=None, float dropout_p=0.0, " \
  "Tensor? dropout_rng=None, Tensor? bias=None, Tensor? t5_table=None, "                     \
  "bool t5_bidirectional=True, int t5_max_distance=128, Tensor? alibi_slopes=None, "         \
  "Tensor? rel_keys=None, Tensor? rel_scores=None, Tensor? content_bias=None, "              \
  "Tensor? position_bias=None, SymInt? rel_zero=None, SymInt? query_offset=None"
  m.def("attention(Tensor q, Tensor k, Tensor v, " SEQOPS_ATTENTION_OPTIONS
        ") -> (Tensor out, Tensor lse)");
  // Recompute-based backward. Gradients of absent tensors come back empty; grad_bias is
  // computed only when bias_grad (it costs a (B, Hq, Lq, Lk) buffer).
  m.def("attention_backward(Tensor grad_out, Tensor q, Tensor k, Tensor v, Tensor out, "
        "Tensor lse, bool bias_grad, " SEQOPS_ATTENTION_OPTIONS
        ") -> (Tensor grad_q, Tensor grad_k, Tensor grad_v, Tensor grad_bias, "
        "Tensor grad_t5_table, Tensor grad_alibi_slopes, Tensor grad_rel_keys, "
        "Tensor grad_rel_scores, Tensor grad_content_bias, Tensor grad_position_bias)");
#undef SEQOPS_ATTENTION_OPTIONS
  // Memory compression over windows of `rate` rows (Compressive Transformer): mode 'mean',
  // 'max' or 'conv' (nn.Conv1d(D, Dout, rate, stride=rate) as one GEMM; weight (Dout, D, rate),
  // optional bias (Dout,)). out (B, L // rate, Dout); index (B, W, D) int64 is the max's offset
  // in its window for 'max', empty otherwise. remainder: 'error' (L must be a positive multiple
  // of rate) or 'keep' (the newest L % rate rows are not read; the caller keeps them). Exact
  // contract: csrc/include/seqops/compress.h.
  m.def("compress(Tensor x, int rate, str mode='mean', Tensor? weight=None, Tensor? bias=None,"
        " str remainder='error') -> (Tensor out, Tensor index)");
  // grad_x (B, L, D) (zeros in the tail rows); gradients not asked for come back empty.
  m.def("compress_backward(Tensor grad_out, Tensor x, int rate, str mode, Tensor? weight,"
        " Tensor index, bool x_grad, bool weight_grad, bool bias_grad)"
        " -> (Tensor grad_x, Tensor grad_weight, Tensor grad_bias)");
  // Dropout with a counter-based mask: y = x / (1 - p) where kept, 0 where dropped, the keep
  // draws a pure function of rng, a CPU int64 (seed, offset) pair (csrc/include/seqops/dropout.h).
  // Its backward is the same op on the output gradient.
  m.def("dropout(Tensor x, float p, Tensor rng) -> Tensor");
  // Build facts for `seqops info`.
  m.def("cpu_isa() -> str", [] { return seqops::cpu_isa_name(); });
}
