// dropout on CPU: blocks of elements in parallel, each drawn and applied by the ISA's
// dropout_apply primitive (16 Philox calls at a time, vectorized).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "dropout/dropout.h"
#include "common/cpu/vector_primitives.h"

namespace seqops::cpu {
namespace {

constexpr int64_t kGrain = 1 << 15;  // elements per parallel task

at::Tensor dropout_cpu(const at::Tensor& x, double p, const at::Tensor& rng) {
  const DropoutArgs a = check_dropout(x, p, rng);
  const auto xc = x.contiguous();
  auto y = at::empty_like(xc);
  AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "dropout_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto& vp = vector_primitives<scalar_t>();
    const scalar_t* xp = xc.data_ptr<scalar_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    at::parallel_for(0, xc.numel(), kGrain, [&](int64_t begin, int64_t end) {
      vp.dropout_apply(a.stream.seed, a.stream.offset, begin, end - begin, a.keep_prob,
                       static_cast<acc_t>(a.scale), xp + begin, yp + begin);
    });
  });
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(seqops, CPU, m) { m.impl("dropout", &dropout_cpu); }

}  // namespace seqops::cpu
