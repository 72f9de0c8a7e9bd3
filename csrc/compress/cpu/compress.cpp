// compress on CPU. 'mean' / 'max' are one window-reduction template (the mode a compile-time
// policy) over tasks (batch, window, block of kDimBlock columns), each streaming its window's
// rows through the vector primitives; x is read in place through its batch and row strides.
// 'conv' is the shared GEMM path (compress/conv_gemm.cpp).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "compress/compress.h"
#include "common/cpu/vector_primitives.h"

namespace seqops::cpu {
namespace {

constexpr int64_t kDimBlock = 256;

template <typename T, CompressMode M>
void forward_kernel(const CompressShape& s, const at::Tensor& x, at::Tensor& out,
                    at::Tensor& index) {
  static_assert(M == CompressMode::Mean || M == CompressMode::Max);
  using acc_t = at::opmath_type<T>;
  const auto& vp = vector_primitives<T>();
  const int64_t D = s.dim, blocks = (D + kDimBlock - 1) / kDimBlock;
  const int64_t stride_b = x.stride(0), stride_l = x.stride(1);
  const T* xp = x.data_ptr<T>();
  T* op = out.data_ptr<T>();
  int64_t* ip = M == CompressMode::Max ? index.data_ptr<int64_t>() : nullptr;
  const acc_t inv_rate = acc_t(1) / static_cast<acc_t>(s.rate);
  // Enough tasks per chunk that a chunk streams ~16K elements.
  const int64_t grain = std::max<int64_t>(1, 16384 / (s.rate * std::min(D, kDimBlock)));
  at::parallel_for(0, s.batch * s.windows * blocks, grain, [&](int64_t i0, int64_t i1) {
    acc_t acc[kDimBlock];
    int64_t arg[kDimBlock];
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t bw = i / blocks, d0 = (i % blocks) * kDimBlock;
      const int64_t n = std::min(kDimBlock, D - d0);
      const int64_t b = bw / s.windows, w = bw % s.windows;
      const T* row = xp + b * stride_b + w * s.rate * stride_l + d0;
      std::fill(acc, acc + n, acc_t(0));
      if constexpr (M == CompressMode::Mean) {
        for (int64_t k = 0; k < s.rate; ++k) vp.axpy(acc, acc_t(1), row + k * stride_l, n);
        vp.store_scaled(op + bw * D + d0, inv_rate, acc, n);
      } else {
        std::fill(arg, arg + n, int64_t(-1));  // -1: nothing held yet, the first row wins
        for (int64_t k = 0; k < s.rate; ++k) vp.max_update(acc, arg, row + k * stride_l, k, n);
        vp.store(op + bw * D + d0, acc, n);
        std::copy(arg, arg + n, ip + bw * D + d0);
      }
    }
  });
}

// grad (B, W, D) in the accumulate type; writes every window row of dx (B, L, D).
template <typename T, CompressMode M>
void backward_kernel(const CompressShape& s, const at::Tensor& grad, const at::Tensor& index,
                     at::Tensor& dx) {
  using acc_t = at::opmath_type<T>;
  const auto& vp = vector_primitives<T>();
  const int64_t D = s.dim;
  const acc_t* gp = grad.data_ptr<acc_t>();
  const int64_t* ip = M == CompressMode::Max ? index.data_ptr<int64_t>() : nullptr;
  T* dp = dx.data_ptr<T>();
  const acc_t inv_rate = acc_t(1) / static_cast<acc_t>(s.rate);
  const int64_t grain = std::max<int64_t>(1, 16384 / (s.rate * D));
  at::parallel_for(0, s.batch * s.windows, grain, [&](int64_t i0, int64_t i1) {
    for (int64_t bw = i0; bw < i1; ++bw) {
      const int64_t b = bw / s.windows, w = bw % s.windows;
      const acc_t* g = gp + bw * D;
      T* rows = dp + (b * s.length + w * s.rate) * D;
      for (int64_t k = 0; k < s.rate; ++k) {
        T* r = rows + k * D;
        if constexpr (M == CompressMode::Mean) {
          vp.store_scaled(r, inv_rate, g, D);
        } else {
          const int64_t* arg = ip + bw * D;
          for (int64_t d = 0; d < D; ++d) r[d] = arg[d] == k ? static_cast<T>(g[d]) : T(0);
        }
      }
    }
  });
}

struct CpuCompress {
  static void forward(const CompressShape& s, CompressMode mode, const at::Tensor& x,
                      at::Tensor& out, at::Tensor& index) {
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, x.scalar_type(), "compress_cpu", [&] {
      if (mode == CompressMode::Mean) forward_kernel<scalar_t, CompressMode::Mean>(s, x, out, index);
      else forward_kernel<scalar_t, CompressMode::Max>(s, x, out, index);
    });
  }

  static void backward(const CompressShape& s, CompressMode mode, const at::Tensor& grad,
                       const at::Tensor& index, at::Tensor& dx) {
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, dx.scalar_type(), "compress_backward_cpu", [&] {
      if (mode == CompressMode::Mean) backward_kernel<scalar_t, CompressMode::Mean>(s, grad, index, dx);
      else backward_kernel<scalar_t, CompressMode::Max>(s, grad, index, dx);
    });
  }
};

}  // namespace
}  // namespace seqops::cpu

TORCH_LIBRARY_IMPL(seqops, CPU, m) {
  m.impl("compress", &seqops::compress_forward_entry<seqops::cpu::CpuCompress>);
  m.impl("compress_backward", &seqops::compress_backward_entry<seqops::cpu::CpuCompress>);
}
