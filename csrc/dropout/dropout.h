// The dropout op's contract, shared by the CPU and CUDA entry points.
//
// dropout(x, p, rng) -> y, contiguous, with y[e] = x[e] / (1 - p) where element e (in x's
// row-major order) is kept and 0 where it is dropped. The keep draws are the elementwise stream
// of common/philox.h under (seed, offset) = rng, so a call is a pure function of its inputs: the
// backward is the same op on the output gradient, and no mask is ever stored.
#pragma once
#include <ATen/ATen.h>

#include "common/checks.h"

namespace seqops {

struct DropoutArgs {
  DropoutStream stream;
  float keep_prob;  // 1 - p, as the keep test compares it
  double scale;     // 1 / (1 - p)
};

DropoutArgs check_dropout(const at::Tensor& x, double p, const at::Tensor& rng);

}  // namespace seqops
