// The dropout kernel (host side: dropout.cu): one thread per Philox call, i.e. per four
// consecutive elements, grid-stride. Compiled by nvcc and by the host emulator (emulator/).
#pragma once
#include <ATen/OpMathType.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common/philox.h"

namespace seqops::cuda {

constexpr int kDropoutThreads = 256;

template <typename T, typename acc_t = at::opmath_type<T>>
__global__ void __launch_bounds__(kDropoutThreads)
    dropout_kernel(const T* __restrict__ x, T* __restrict__ y, int64_t n, int64_t calls,
                   uint64_t seed, uint64_t offset, float keep_prob, acc_t scale) {
  for (int64_t e4 = blockIdx.x * int64_t(kDropoutThreads) + threadIdx.x; e4 < calls;
       e4 += int64_t(gridDim.x) * kDropoutThreads) {
    const Philox4 w = philox4x32_10(element_dropout_counter(offset, e4), static_cast<uint32_t>(seed),
                                    static_cast<uint32_t>(seed >> 32));
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const int64_t e = 4 * e4 + k;
      if (e < n)
        y[e] = static_cast<T>(dropout_keep(w.v[k], keep_prob) ? static_cast<acc_t>(x[e]) * scale : acc_t(0));
    }
  }
}

}  // namespace seqops::cuda
