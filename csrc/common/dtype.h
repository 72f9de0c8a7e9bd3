// The dtype rule every kernel follows: accumulate in float64 for float64 inputs, else in float32
// (float16 / bfloat16 / float32 inputs). seqops/ops/_common.py's acc_dtype is its Python twin.
#pragma once
#include <ATen/ATen.h>

namespace seqops {

inline at::ScalarType accumulate_type(at::ScalarType st) {
  return st == at::kDouble ? at::kDouble : at::kFloat;
}
inline at::ScalarType accumulate_type(const at::Tensor& x) { return accumulate_type(x.scalar_type()); }

}  // namespace seqops
