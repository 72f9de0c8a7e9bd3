// The compress op's schemas (contract: csrc/compress/compress.h).
#include <torch/library.h>

#include "common/library.h"

SEQOPS_LIBRARY_FRAGMENT(m) {
  SEQOPS_SET_PYTHON_MODULE(m, "compress");
  // Memory compression over windows of `rate` rows (Compressive Transformer): mode 'mean',
  // 'max' or 'conv' (nn.Conv1d(D, Dout, rate, stride=rate) as one GEMM; weight (Dout, D, rate),
  // optional bias (Dout,)). out (B, L // rate, Dout); index (B, W, D) int64 is the max's offset
  // in its window for 'max', empty otherwise. remainder: 'error' (L must be a positive multiple
  // of rate) or 'keep' (the newest L % rate rows are not read; the caller keeps them).
  m.def("compress(Tensor x, int rate, str mode='mean', Tensor? weight=None, Tensor? bias=None,"
        " str remainder='error') -> (Tensor out, Tensor index)");
  // grad_x (B, L, D) (zeros in the tail rows); gradients not asked for come back empty.
  m.def("compress_backward(Tensor grad_out, Tensor x, int rate, str mode, Tensor? weight,"
        " Tensor index, bool x_grad, bool weight_grad, bool bias_grad)"
        " -> (Tensor grad_x, Tensor grad_weight, Tensor grad_bias)");
}
