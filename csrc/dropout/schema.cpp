// The dropout op's schema (contract: csrc/dropout/dropout.h).
#include <torch/library.h>

#include "common/library.h"

SEQOPS_LIBRARY_FRAGMENT(m) {
  SEQOPS_SET_PYTHON_MODULE(m, "dropout");
  // Dropout with a counter-based mask: y = x / (1 - p) where kept, 0 where dropped, the keep
  // draws a pure function of rng, a CPU int64 (seed, offset) pair. Its backward is the same op
  // on the output gradient.
  m.def("dropout(Tensor x, float p, Tensor rng) -> Tensor");
}
