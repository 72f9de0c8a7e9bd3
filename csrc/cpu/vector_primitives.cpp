// Compiled once per CPU ISA with -DCPU_CAPABILITY=<ISA> (and that ISA's -m flags), so
// at::vec::Vectorized is the ISA's real vector type and everything lands in its own namespace.
#include "vector_primitives.h"

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cmath>
#include <type_traits>
#include <limits>

namespace seqops::cpu::CPU_CAPABILITY {
namespace {

using at::vec::Vectorized;

template <typename T>
using Acc = at::opmath_type<T>;

// Loads min(count, lanes) elements of x as accumulator lanes (zero-filled past count).
template <typename T>
inline Vectorized<Acc<T>> load(const T* x, int64_t count) {
  using V = Vectorized<Acc<T>>;
  if constexpr (std::is_same_v<T, Acc<T>>) {
    return count >= V::size() ? V::loadu(x) : V::loadu(x, count);
  } else {
    V out;
    if (count >= V::size()) {
      at::vec::load_to_float<T>(x, out);
    } else {
      T buf[V::size()] = {};
      for (int64_t i = 0; i < count; ++i) buf[i] = x[i];
      at::vec::load_to_float<T>(buf, out);
    }
    return out;
  }
}

template <typename A>
inline Vectorized<A> load_acc(const A* x, int64_t count) {
  using V = Vectorized<A>;
  return count >= V::size() ? V::loadu(x) : V::loadu(x, count);
}

template <typename A>
inline void store_acc(A* y, const Vectorized<A>& v, int64_t count) {
  if (count >= Vectorized<A>::size()) v.store(y);
  else v.store(y, count);
}

// Dot product with four independent accumulators to hide FMA latency.
template <typename X, typename A, typename LoadX>
inline A dot_impl(const X* x, const A* v, int64_t n, LoadX load_x) {
  using V = Vectorized<A>;
  constexpr int64_t W = V::size();
  V s0(0), s1(0), s2(0), s3(0);
  int64_t i = 0;
  for (; i + 4 * W <= n; i += 4 * W) {
    s0 = at::vec::fmadd(load_x(x + i, W), V::loadu(v + i), s0);
    s1 = at::vec::fmadd(load_x(x + i + W, W), V::loadu(v + i + W), s1);
    s2 = at::vec::fmadd(load_x(x + i + 2 * W, W), V::loadu(v + i + 2 * W), s2);
    s3 = at::vec::fmadd(load_x(x + i + 3 * W, W), V::loadu(v + i + 3 * W), s3);
  }
  for (; i < n; i += W) s0 = at::vec::fmadd(load_x(x + i, n - i), load_acc(v + i, n - i), s0);
  return at::vec::vec_reduce_all<A>([](V a, V b) { return a + b; }, (s0 + s1) + (s2 + s3));
}

template <typename T>
Acc<T> dot(const T* x, const Acc<T>* v, int64_t n) {
  return dot_impl(x, v, n, [](const T* p, int64_t c) { return load(p, c); });
}

template <typename T>
Acc<T> dot_acc(const Acc<T>* a, const Acc<T>* b, int64_t n) {
  return dot_impl(a, b, n, [](const Acc<T>* p, int64_t c) { return load_acc(p, c); });
}

template <typename T>
void axpy(Acc<T>* y, Acc<T> a, const T* x, int64_t n) {
  using V = Vectorized<Acc<T>>;
  const V va(a);
  for (int64_t i = 0; i < n; i += V::size())
    store_acc(y + i, at::vec::fmadd(va, load(x + i, n - i), load_acc(y + i, n - i)), n - i);
}

template <typename T>
void axpy_acc(Acc<T>* y, Acc<T> a, const Acc<T>* x, int64_t n) {
  using V = Vectorized<Acc<T>>;
  const V va(a);
  for (int64_t i = 0; i < n; i += V::size())
    store_acc(y + i, at::vec::fmadd(va, load_acc(x + i, n - i), load_acc(y + i, n - i)), n - i);
}

template <typename T>
void scale_axpy(Acc<T>* y, Acc<T> s, Acc<T> a, const T* x, int64_t n) {
  using V = Vectorized<Acc<T>>;
  const V vs(s), va(a);
  for (int64_t i = 0; i < n; i += V::size())
    store_acc(y + i, at::vec::fmadd(va, load(x + i, n - i), vs * load_acc(y + i, n - i)), n - i);
}

template <typename T>
void max_update(Acc<T>* best, int64_t* index, const T* x, int64_t t, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const Acc<T> v = static_cast<Acc<T>>(x[i]);
    const bool best_is_nan = best[i] != best[i];
    if (!best_is_nan && (v > best[i] || v != v || index[i] < 0)) {
      best[i] = v;
      index[i] = t;
    }
  }
}

// HB heads (a compile-time count, so the accumulators stay in registers) against one x;
// kSum also adds x into row_sum while x is in registers.
template <int HB, bool kSum, typename T>
void dot_head_block(const T* x, const Acc<T>* V, int64_t n, Acc<T>* out, Acc<T>* row_sum) {
  using Vec = Vectorized<Acc<T>>;
  Vec s0(0), s1(0), s2(0), s3(0);
  for (int64_t i = 0; i < n; i += Vec::size()) {
    const int64_t c = n - i;
    const Vec xv = load(x + i, c);
    if constexpr (kSum) store_acc(row_sum + i, load_acc(row_sum + i, c) + xv, c);
    s0 = at::vec::fmadd(xv, load_acc(V + i, c), s0);
    if constexpr (HB > 1) s1 = at::vec::fmadd(xv, load_acc(V + n + i, c), s1);
    if constexpr (HB > 2) s2 = at::vec::fmadd(xv, load_acc(V + 2 * n + i, c), s2);
    if constexpr (HB > 3) s3 = at::vec::fmadd(xv, load_acc(V + 3 * n + i, c), s3);
  }
  const auto sum = [](Vec a, Vec b) { return a + b; };
  out[0] = at::vec::vec_reduce_all<Acc<T>>(sum, s0);
  if constexpr (HB > 1) out[1] = at::vec::vec_reduce_all<Acc<T>>(sum, s1);
  if constexpr (HB > 2) out[2] = at::vec::vec_reduce_all<Acc<T>>(sum, s2);
  if constexpr (HB > 3) out[3] = at::vec::vec_reduce_all<Acc<T>>(sum, s3);
}

// Calls f(HB, h) over the heads in blocks of HB <= 4 (HB a compile-time constant), so each
// primitive below writes its per-block kernel once.
template <typename F>
inline void for_head_blocks(int64_t H, F f) {
  int64_t h = 0;
  for (; h + 4 <= H; h += 4) f(std::integral_constant<int, 4>{}, h);
  switch (H - h) {
    case 3: f(std::integral_constant<int, 3>{}, h); break;
    case 2: f(std::integral_constant<int, 2>{}, h); break;
    case 1: f(std::integral_constant<int, 1>{}, h); break;
    default: break;
  }
}

template <typename T>
void dot_heads(const T* x, const Acc<T>* V, int64_t H, int64_t n, Acc<T>* out, Acc<T>* row_sum) {
  for_head_blocks(H, [&](auto hb, int64_t h) {
    // Only the first block's sweep adds x into row_sum.
    if (h == 0 && row_sum) dot_head_block<decltype(hb)::value, true>(x, V, n, out, row_sum);
    else dot_head_block<decltype(hb)::value, false>(x, V + h * n, n, out + h, nullptr);
  });
}

// A tile of HB heads x 2 vectors of Y held in registers while every row is accumulated.
template <int HB, typename T>
void weighted_row_sum_tile(Acc<T>* Y, int64_t n, int64_t i, const Acc<T>* coef, int64_t coef_stride,
                           const T* x, int64_t x_stride, const int64_t* rows, int64_t R) {
  using Vec = Vectorized<Acc<T>>;
  constexpr int64_t W = Vec::size();
  const int64_t c0 = n - i, c1 = n - i - W;  // c1 <= 0: the tile's second vector is unused
  Vec a[HB][2];
  for (int k = 0; k < HB; ++k) {
    a[k][0] = load_acc(Y + k * n + i, c0);
    a[k][1] = c1 > 0 ? load_acc(Y + k * n + i + W, c1) : Vec(0);
  }
  for (int64_t r = 0; r < R; ++r) {
    const int64_t t = rows[r];
    const T* row = x + t * x_stride + i;
    const Vec x0 = load(row, c0);
    const Vec x1 = c1 > 0 ? load(row + W, c1) : Vec(0);
    for (int k = 0; k < HB; ++k) {
      const Vec w(coef[k * coef_stride + t]);
      a[k][0] = at::vec::fmadd(w, x0, a[k][0]);
      a[k][1] = at::vec::fmadd(w, x1, a[k][1]);
    }
  }
  for (int k = 0; k < HB; ++k) {
    store_acc(Y + k * n + i, a[k][0], c0);
    if (c1 > 0) store_acc(Y + k * n + i + W, a[k][1], c1);
  }
}

template <typename T>
void weighted_row_sum(Acc<T>* Y, int64_t H, const Acc<T>* coef, int64_t coef_stride, const T* x,
                      int64_t x_stride, const int64_t* rows, int64_t R, int64_t n) {
  for_head_blocks(H, [&](auto hb, int64_t h) {
    for (int64_t i = 0; i < n; i += 2 * Vectorized<Acc<T>>::size())
      weighted_row_sum_tile<decltype(hb)::value>(Y + h * n, n, i, coef + h * coef_stride, coef_stride, x, x_stride, rows, R);
  });
}

template <typename T>
void activate_inplace(Acc<T>* z, int64_t n, Activation act) {
  using Vec = Vectorized<Acc<T>>;
  if (act == Activation::Identity) return;
  int64_t i = 0;
  for (; i + Vec::size() <= n; i += Vec::size()) {
    const Vec v = Vec::loadu(z + i);
    Vec a;
    switch (act) {
      case Activation::Tanh: a = v.tanh(); break;
      case Activation::Relu: a = at::vec::maximum(v, Vec(0)); break;
      default: a = (Vec(1) + v.neg().exp()).reciprocal(); break;  // sigmoid
    }
    a.store(z + i);
  }
  for (; i < n; ++i) z[i] = activate(act, z[i]);
}

template <typename T>
Acc<T> exp_sum(Acc<T>* z, int64_t n, Acc<T> shift) {
  using Vec = Vectorized<Acc<T>>;
  const Vec vshift(shift);
  Vec total(0);
  int64_t i = 0;
  for (; i + Vec::size() <= n; i += Vec::size()) {
    const Vec e = (Vec::loadu(z + i) - vshift).exp_u20();  // 20-ulp exp, as ATen's flash attention
    e.store(z + i);
    total = total + e;
  }
  Acc<T> sum = at::vec::vec_reduce_all<Acc<T>>([](Vec a, Vec b) { return a + b; }, total);
  for (; i < n; ++i) sum += (z[i] = std::exp(z[i] - shift));
  return sum;
}

template <typename T>
Acc<T> row_max(const Acc<T>* z, int64_t n) {
  using Vec = Vectorized<Acc<T>>;
  Acc<T> best = -std::numeric_limits<Acc<T>>::infinity();
  int64_t i = 0;
  if (n >= Vec::size()) {
    Vec m = Vec::loadu(z);
    for (i = Vec::size(); i + Vec::size() <= n; i += Vec::size()) m = at::vec::maximum(m, Vec::loadu(z + i));
    best = at::vec::vec_reduce_all<Acc<T>>([](Vec a, Vec b) { return at::vec::maximum(a, b); }, m);
  }
  for (; i < n; ++i) best = std::max(best, z[i]);
  return best;
}

template <typename T>
void add(Acc<T>* y, const Acc<T>* x, int64_t n) {
  using Vec = Vectorized<Acc<T>>;
  for (int64_t i = 0; i < n; i += Vec::size())
    store_acc(y + i, load_acc(y + i, n - i) + load_acc(x + i, n - i), n - i);
}

template <typename T>
void scale(Acc<T>* y, Acc<T> s, int64_t n) {
  using Vec = Vectorized<Acc<T>>;
  for (int64_t i = 0; i < n; i += Vec::size()) store_acc(y + i, load_acc(y + i, n - i) * Vec(s), n - i);
}

template <typename T>
void softmax_grad(Acc<T>* ds, const Acc<T>* p, Acc<T> d, int64_t n) {
  using Vec = Vectorized<Acc<T>>;
  for (int64_t i = 0; i < n; i += Vec::size())
    store_acc(ds + i, load_acc(p + i, n - i) * (load_acc(ds + i, n - i) - Vec(d)), n - i);
}

template <typename T>
void store(T* out, const Acc<T>* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(y[i]);
}

template <typename T>
void store_scaled(T* out, Acc<T> s, const Acc<T>* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(s * y[i]);
}

}  // namespace

template <typename T>
const VectorPrimitives<T>& primitives() {
  static const VectorPrimitives<T> table{&dot<T>,        &dot_acc<T>,    &axpy<T>,
                                         &axpy_acc<T>,   &scale_axpy<T>, &max_update<T>,
                                         &dot_heads<T>,  &weighted_row_sum<T>, &activate_inplace<T>,
                                         &exp_sum<T>,    &row_max<T>,    &add<T>,
                                         &scale<T>,      &softmax_grad<T>, &store<T>,
                                         &store_scaled<T>};
  return table;
}

template const VectorPrimitives<float>& primitives();
template const VectorPrimitives<double>& primitives();
template const VectorPrimitives<c10::BFloat16>& primitives();

}  // namespace seqops::cpu::CPU_CAPABILITY
