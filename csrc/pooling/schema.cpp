// The pooling ops' schemas (contract: csrc/pooling/pooling.h).
#include <torch/library.h>

#include "common/library.h"

SEQOPS_LIBRARY_FRAGMENT(m) {
  SEQOPS_SET_PYTHON_MODULE(m, "pooling");
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
}
