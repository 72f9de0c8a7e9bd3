// Validation of the dropout op's arguments (both devices run the same checks).
#include "dropout/dropout.h"

namespace seqops {

DropoutArgs check_dropout(const at::Tensor& x, double p, const at::Tensor& rng) {
  check_floating_dtype(x, "x");
  check_dropout_p(p, "p");
  return DropoutArgs{read_dropout_rng(rng, "rng"), static_cast<float>(1.0 - p), 1.0 / (1.0 - p)};
}

}  // namespace seqops
