// BLAS-1 style row primitives that every CPU pooling kernel is built from. The op loops (in
// seq_pool.cpp, lama_pool.cpp, ...) are plain C++; only these primitives are compiled once per
// CPU ISA (vector_primitives.cpp, see setup.py) and chosen at run time.
#pragma once
#include <ATen/OpMathType.h>
#include <c10/util/BFloat16.h>

#include <cstdint>

#include "common/activation.h"

namespace seqops::cpu {

// T is the storage type of x; acc_t (float, or double for double) holds accumulators.
template <typename T>
struct VectorPrimitives {
  using acc_t = at::opmath_type<T>;
  acc_t (*dot)(const T* x, const acc_t* v, int64_t n);                  // sum x*v
  acc_t (*dot_acc)(const acc_t* a, const acc_t* b, int64_t n);          // sum a*b
  void (*axpy)(acc_t* y, acc_t a, const T* x, int64_t n);               // y += a*x
  void (*axpy_acc)(acc_t* y, acc_t a, const acc_t* x, int64_t n);       // y += a*x
  void (*scale_axpy)(acc_t* y, acc_t s, acc_t a, const T* x, int64_t n);  // y = s*y + a*x
  // best = max(best, x) elementwise, index = t where x wins (first on ties, NaN sticks).
  void (*max_update)(acc_t* best, int64_t* index, const T* x, int64_t t, int64_t n);
  // out[h * out_stride + t_r] = x_{t_r} . V_h for the R row indices t_r of `rows` (x rows
  // x_stride apart) and the H rows of V (H, n), in register tiles of several rows x several
  // heads. With a non-null row_sum, also row_sum += x_{t_r} in the same sweep.
  void (*project_rows)(const T* x, int64_t x_stride, const int64_t* rows, int64_t R, const acc_t* V,
                       int64_t H, int64_t n, acc_t* out, int64_t out_stride, acc_t* row_sum);
  // Y_h += sum_r coef[h * coef_stride + t_r] * x[t_r * x_stride : +n] over the R row indices
  // t_r of `rows`, for Y (H, n): a register tile of Y stays in registers across all rows. A
  // non-null `far` (laid out as x) has the same rows prefetched, spread over the sweep.
  void (*weighted_row_sum)(acc_t* Y, int64_t H, const acc_t* coef, int64_t coef_stride,
                           const T* x, int64_t x_stride, const int64_t* rows, int64_t R, int64_t n,
                           const T* far);
  void (*activate)(acc_t* z, int64_t n, Activation act);               // z = act(z)
  acc_t (*exp_sum)(acc_t* z, int64_t n, acc_t shift);  // z = exp(z - shift), returns sum
  acc_t (*row_max)(const acc_t* z, int64_t n);         // max of z (-inf for n = 0)
  void (*add)(acc_t* y, const acc_t* x, int64_t n);    // y += x
  void (*scale)(acc_t* y, acc_t s, int64_t n);         // y *= s
  // The softmax backward of one row: ds = p * (ds - d).
  void (*softmax_grad)(acc_t* ds, const acc_t* p, acc_t d, int64_t n);
  // Rotary positions (attention/rotary.h) on one row's 2 * half rotated features: y = x with
  // each pair (a, b) turned to (a c[p] - b s[p], a s[p] + b c[p]); pairs (p, p + half), or
  // (2p, 2p + 1) when interleaved. y may be x.
  void (*rotate_pairs)(acc_t* y, const acc_t* x, const acc_t* c, const acc_t* s, int64_t half,
                       bool interleaved);
  // out[j] = inv where element (bh, i, j0 + j) of the attention-dropout stream of
  // common/philox.h is kept and 0 where it is dropped, for j < cols.
  void (*attention_dropout_row)(uint64_t seed, uint64_t offset, int64_t bh, int64_t i, int64_t j0,
                                int64_t cols, float keep_prob, acc_t inv, acc_t* out);
  // y[e] = x[e] * scale where element e0 + e of the elementwise dropout stream of
  // common/philox.h is kept and 0 where it is dropped, for e < n.
  void (*dropout_apply)(uint64_t seed, uint64_t offset, int64_t e0, int64_t n, float keep_prob,
                        acc_t scale, const T* x, T* y);
  void (*store)(T* out, const acc_t* y, int64_t n);                     // out = T(y)
  void (*store_scaled)(T* out, acc_t s, const acc_t* y, int64_t n);     // out = T(s*y)
};

// One table per ISA namespace; the kernels ask for the active one.
template <typename T>
const VectorPrimitives<T>& vector_primitives();

#define SEQOPS_DECLARE_ISA(ISA)                                      \
  namespace ISA {                                                    \
  template <typename T>                                              \
  const VectorPrimitives<T>& primitives();                           \
  extern template const VectorPrimitives<float>& primitives();       \
  extern template const VectorPrimitives<double>& primitives();      \
  extern template const VectorPrimitives<c10::BFloat16>& primitives(); \
  }
SEQOPS_DECLARE_ISA(DEFAULT)
#ifdef CPU_ISA_AVX2
SEQOPS_DECLARE_ISA(AVX2)
#endif
#ifdef CPU_ISA_AVX512
SEQOPS_DECLARE_ISA(AVX512)
#endif
#undef SEQOPS_DECLARE_ISA

}  // namespace seqops::cpu
