// Compiled once per CPU ISA with -DCPU_CAPABILITY=<ISA> (and that ISA's -m flags), so
// at::vec::Vectorized is the ISA's real vector type and everything lands in its own namespace.
#include "common/cpu/vector_primitives.h"

#include "common/philox.h"

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>

namespace seqops::cpu::CPU_CAPABILITY {
namespace {

using at::vec::Vectorized;

template <typename T>
using Acc = at::opmath_type<T>;

// Fully unrolls a loop over a compile-time count, so that GCC keeps the arrays of vector
// accumulators it indexes in registers (otherwise it spills them to the stack).
#define SEQOPS_UNROLL _Pragma("GCC unroll 16")

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

// A register tile of RB rows x HB heads (compile-time counts, so the RB * HB accumulators stay
// in registers): each load of V serves RB rows and each load of x serves HB heads. kSum also
// adds the rows into row_sum while they are in registers. kPrefetch (the first sweep over the
// rows) prefetches the rows `next` in step: each row is only a few cache lines long, too short
// for the hardware prefetcher to follow.
template <int RB, int HB, bool kSum, bool kPrefetch, typename T>
void project_tile(const T* const* x, const T* const* next, const Acc<T>* V, int64_t n, Acc<T>* out,
                  int64_t out_stride, const int64_t* rows, Acc<T>* row_sum) {
  using Vec = Vectorized<Acc<T>>;
  Vec s[RB][HB];
  SEQOPS_UNROLL for (int r = 0; r < RB; ++r)
    SEQOPS_UNROLL for (int k = 0; k < HB; ++k) s[r][k] = Vec(0);
  for (int64_t i = 0; i < n; i += Vec::size()) {
    const int64_t c = n - i;
    Vec xv[RB];
    SEQOPS_UNROLL for (int r = 0; r < RB; ++r) xv[r] = load(x[r] + i, c);
    if constexpr (kPrefetch)
      SEQOPS_UNROLL for (int r = 0; r < RB; ++r) __builtin_prefetch(next[r] + i);
    if constexpr (kSum) {
      Vec total = load_acc(row_sum + i, c);
      SEQOPS_UNROLL for (int r = 0; r < RB; ++r) total = total + xv[r];
      store_acc(row_sum + i, total, c);
    }
    SEQOPS_UNROLL for (int k = 0; k < HB; ++k) {
      const Vec v = load_acc(V + k * n + i, c);
      SEQOPS_UNROLL for (int r = 0; r < RB; ++r) s[r][k] = at::vec::fmadd(xv[r], v, s[r][k]);
    }
  }
  const auto sum = [](Vec a, Vec b) { return a + b; };
  SEQOPS_UNROLL for (int r = 0; r < RB; ++r)
    SEQOPS_UNROLL for (int k = 0; k < HB; ++k) out[k * out_stride + rows[r]] = at::vec::vec_reduce_all<Acc<T>>(sum, s[r][k]);
}

// Rows rows[0, RB) against every head; next_rows[0, RB) are prefetched meanwhile.
template <int RB, typename T>
void project_row_block(const T* x, int64_t x_stride, const int64_t* rows, const int64_t* next_rows,
                       const Acc<T>* V, int64_t H, int64_t n, Acc<T>* out, int64_t out_stride,
                       Acc<T>* row_sum) {
  const T* xr[RB];
  const T* next[RB];
  SEQOPS_UNROLL for (int r = 0; r < RB; ++r) {
    xr[r] = x + rows[r] * x_stride;
    next[r] = x + next_rows[r] * x_stride;
  }
  for_head_blocks(H, [&](auto hb, int64_t h) {
    constexpr int HB = decltype(hb)::value;
    if (h > 0) project_tile<RB, HB, false, false>(xr, next, V + h * n, n, out + h * out_stride, out_stride, rows, nullptr);
    else if (row_sum) project_tile<RB, HB, true, true>(xr, next, V, n, out, out_stride, rows, row_sum);
    else project_tile<RB, HB, false, true>(xr, next, V, n, out, out_stride, rows, nullptr);
  });
}

template <typename T>
void project_rows(const T* x, int64_t x_stride, const int64_t* rows, int64_t R, const Acc<T>* V,
                  int64_t H, int64_t n, Acc<T>* out, int64_t out_stride, Acc<T>* row_sum) {
  constexpr int kRows = 4;
  int64_t r = 0;
  for (; r + kRows <= R; r += kRows) {
    // The next block of rows to prefetch (the last block prefetches the tail, or itself).
    const int64_t* next = rows + std::min<int64_t>(r + kRows, R - kRows);
    project_row_block<kRows>(x, x_stride, rows + r, next, V, H, n, out, out_stride, row_sum);
  }
  for (; r < R; ++r) project_row_block<1>(x, x_stride, rows + r, rows + r, V, H, n, out, out_stride, row_sum);
}

// A tile of HB heads x NV vectors of Y held in registers while every row is accumulated: each
// load of x serves HB heads and each broadcast coefficient NV vectors. kFull: all NV vectors lie
// inside n (no masked loads); otherwise `count` lanes are live. Each row also prefetches its
// next tile, as the rows are swept tile by tile, and with kFar the same tile of row t of `far`.
template <int HB, bool kFull, bool kFar, typename T>
void weighted_row_sum_tile(Acc<T>* Y, int64_t n, int64_t i, const Acc<T>* coef, int64_t coef_stride,
                           const T* x, int64_t x_stride, const int64_t* rows, int64_t R, const T* far) {
  using Vec = Vectorized<Acc<T>>;
  constexpr int NV = 4;
  constexpr int64_t W = Vec::size();
  int64_t count[NV];
  SEQOPS_UNROLL for (int j = 0; j < NV; ++j) count[j] = kFull ? W : std::clamp<int64_t>(n - i - j * W, 0, W);
  // The next tile's offset from this one (0 on the last tile, which prefetches itself).
  const int64_t ahead = i + NV * W < n ? NV * W : 0;
  Vec a[HB][NV];
  SEQOPS_UNROLL for (int k = 0; k < HB; ++k)
    SEQOPS_UNROLL for (int j = 0; j < NV; ++j) a[k][j] = load_acc(Y + k * n + i + j * W, count[j]);
  for (int64_t r = 0; r < R; ++r) {
    const int64_t t = rows[r];
    const T* row = x + t * x_stride + i;
    Vec xv[NV];
    SEQOPS_UNROLL for (int j = 0; j < NV; ++j) xv[j] = load(row + j * W, count[j]);
    SEQOPS_UNROLL for (int j = 0; j < NV; ++j) __builtin_prefetch(row + ahead + j * W);
    if constexpr (kFar)
      SEQOPS_UNROLL for (int j = 0; j < NV; ++j) __builtin_prefetch(far + t * x_stride + i + j * W, 0, 2);
    SEQOPS_UNROLL for (int k = 0; k < HB; ++k) {
      const Vec w(coef[k * coef_stride + t]);
      SEQOPS_UNROLL for (int j = 0; j < NV; ++j) a[k][j] = at::vec::fmadd(w, xv[j], a[k][j]);
    }
  }
  SEQOPS_UNROLL for (int k = 0; k < HB; ++k)
    SEQOPS_UNROLL for (int j = 0; j < NV; ++j) store_acc(Y + k * n + i + j * W, a[k][j], count[j]);
}

template <typename T>
void weighted_row_sum(Acc<T>* Y, int64_t H, const Acc<T>* coef, int64_t coef_stride, const T* x,
                      int64_t x_stride, const int64_t* rows, int64_t R, int64_t n, const T* far) {
  constexpr int64_t kTile = 4 * Vectorized<Acc<T>>::size();
  for_head_blocks(H, [&](auto hb, int64_t h) {
    constexpr int HB = decltype(hb)::value;
    // The first head block's sweep prefetches `far`: once per row is enough.
    const auto sweep = [&](auto prefetch_far) {
      constexpr bool kFar = decltype(prefetch_far)::value;
      const int64_t full = n / kTile * kTile;  // columns in whole tiles
      for (int64_t i = 0; i < full; i += kTile)
        weighted_row_sum_tile<HB, true, kFar>(Y + h * n, n, i, coef + h * coef_stride, coef_stride, x, x_stride,
                                              rows, R, far);
      if (full < n)
        weighted_row_sum_tile<HB, false, kFar>(Y + h * n, n, full, coef + h * coef_stride, coef_stride, x,
                                               x_stride, rows, R, far);
    };
    if (far && h == 0) sweep(std::true_type{});
    else sweep(std::false_type{});
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
void rotate_pairs(Acc<T>* y, const Acc<T>* x, const Acc<T>* c, const Acc<T>* s, int64_t half,
                  bool interleaved) {
  using Vec = Vectorized<Acc<T>>;
  constexpr int64_t W = Vec::size();
  if (!interleaved) {
    for (int64_t p = 0; p < half; p += W) {
      const int64_t m = half - p;
      const Vec a = load_acc(x + p, m), b = load_acc(x + half + p, m);
      const Vec cv = load_acc(c + p, m), sv = load_acc(s + p, m);
      store_acc(y + p, a * cv - b * sv, m);
      store_acc(y + half + p, a * sv + b * cv, m);
    }
    return;
  }
  int64_t p = 0;
  for (; p + W <= half; p += W) {  // W pairs: two vectors of features, split into a's and b's
    const auto [a, b] = at::vec::deinterleave2(Vec::loadu(x + 2 * p), Vec::loadu(x + 2 * p + W));
    const Vec cv = Vec::loadu(c + p), sv = Vec::loadu(s + p);
    const auto [lo, hi] = at::vec::interleave2(a * cv - b * sv, a * sv + b * cv);
    lo.store(y + 2 * p);
    hi.store(y + 2 * p + W);
  }
  for (; p < half; ++p) {
    const Acc<T> a = x[2 * p], b = x[2 * p + 1];
    y[2 * p] = a * c[p] - b * s[p];
    y[2 * p + 1] = a * s[p] + b * c[p];
  }
}

constexpr int kPhiloxLanes = 16;

// x86 has no 32-bit vector multiply-high, but vpmuludq multiplies the even 32-bit lanes into
// 64-bit products, so two of them (even lanes, odd lanes shifted down) give every lane's high
// and low words. PhiloxVec names the few instructions that takes, per ISA.
#if defined(CPU_CAPABILITY_AVX512)
struct PhiloxVec {
  using V = __m512i;
  static constexpr int kLanes = 16;
  static V load(const uint32_t* p) { return _mm512_loadu_si512(p); }
  static void store(uint32_t* p, V v) { _mm512_storeu_si512(p, v); }
  static V multiplier(uint32_t m) { return _mm512_set1_epi64(m); }
  static V mul_even(V a, V m) { return _mm512_mul_epu32(a, m); }
  static V down32(V a) { return _mm512_srli_epi64(a, 32); }
  static V up32(V a) { return _mm512_slli_epi64(a, 32); }
  static V odd_lanes_from(V even, V odd) { return _mm512_mask_blend_epi32(0xAAAA, even, odd); }
  static V xor_key(V a, V b, uint32_t k) {
    return _mm512_xor_si512(_mm512_xor_si512(a, b), _mm512_set1_epi32(static_cast<int>(k)));
  }
};
#elif defined(CPU_CAPABILITY_AVX2)
struct PhiloxVec {
  using V = __m256i;
  static constexpr int kLanes = 8;
  static V load(const uint32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
  static void store(uint32_t* p, V v) { _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), v); }
  static V multiplier(uint32_t m) { return _mm256_set1_epi64x(m); }
  static V mul_even(V a, V m) { return _mm256_mul_epu32(a, m); }
  static V down32(V a) { return _mm256_srli_epi64(a, 32); }
  static V up32(V a) { return _mm256_slli_epi64(a, 32); }
  static V odd_lanes_from(V even, V odd) { return _mm256_blend_epi32(even, odd, 0xAA); }
  static V xor_key(V a, V b, uint32_t k) {
    return _mm256_xor_si256(_mm256_xor_si256(a, b), _mm256_set1_epi32(static_cast<int>(k)));
  }
};
#endif

// Philox-4x32-10 on kPhiloxLanes counters, w[word][lane] (common/philox.h): in PhiloxVec
// registers where the ISA has them, else the header's generic rounds on 64-bit lanes, which
// compilers vectorize.
inline void philox_lanes(uint32_t (&w)[4][kPhiloxLanes], uint32_t k0, uint32_t k1) {
#if defined(CPU_CAPABILITY_AVX512) || defined(CPU_CAPABILITY_AVX2)
  using P = PhiloxVec;
  using V = P::V;
  constexpr int kRegs = kPhiloxLanes / P::kLanes;
  static_assert(kRegs * P::kLanes == kPhiloxLanes, "whole registers of 32-bit lanes per word");
  V v[4][kRegs];
  for (int k = 0; k < 4; ++k)
    for (int r = 0; r < kRegs; ++r) v[k][r] = P::load(w[k] + r * P::kLanes);
  const V m0 = P::multiplier(0xD2511F53u), m1 = P::multiplier(0xCD9E8D57u);
  const auto mulhilo = [&](V a, V m, V& hi, V& lo) {
    const V even = P::mul_even(a, m), odd = P::mul_even(P::down32(a), m);
    hi = P::odd_lanes_from(P::down32(even), odd);
    lo = P::odd_lanes_from(even, P::up32(odd));
  };
  for (int round = 0; round < 10; ++round) {
    for (int r = 0; r < kRegs; ++r) {
      V hi0, lo0, hi1, lo1;
      mulhilo(v[0][r], m0, hi0, lo0);
      mulhilo(v[2][r], m1, hi1, lo1);
      v[0][r] = P::xor_key(hi1, v[1][r], k0);
      v[1][r] = lo1;
      v[2][r] = P::xor_key(hi0, v[3][r], k1);
      v[3][r] = lo0;
    }
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  for (int k = 0; k < 4; ++k)
    for (int r = 0; r < kRegs; ++r) P::store(w[k] + r * P::kLanes, v[k][r]);
#else
  uint64_t wide[4][kPhiloxLanes];
  for (int k = 0; k < 4; ++k)
    for (int l = 0; l < kPhiloxLanes; ++l) wide[k][l] = w[k][l];
  philox4x32_10_lanes(wide, k0, k1);
  for (int k = 0; k < 4; ++k)
    for (int l = 0; l < kPhiloxLanes; ++l) w[k][l] = static_cast<uint32_t>(wide[k][l]);
#endif
}

// Calls f(j, word) for j in [j0, j0 + n), word being the Philox word of position j: word j % 4
// of the call on counter(j / 4), kPhiloxLanes calls at a time. f captures by value, or the
// output stores could alias its operands and block vectorization.
template <typename Counter, typename F>
inline void for_dropout_words(uint64_t seed, int64_t j0, int64_t n, Counter counter, F f) {
  constexpr int kSpan = 4 * kPhiloxLanes;  // positions per batch of calls
  const int64_t j_end = j0 + n;
  for (int64_t base = j0 / 4 * 4; base < j_end; base += kSpan) {
    uint32_t w[4][kPhiloxLanes];
    for (int l = 0; l < kPhiloxLanes; ++l) {
      const Philox4 c = counter(base / 4 + l);
      for (int k = 0; k < 4; ++k) w[k][l] = c.v[k];
    }
    philox_lanes(w, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
    uint32_t words[kSpan];  // in position order, so the loop over f vectorizes
    for (int l = 0; l < kPhiloxLanes; ++l)
      for (int k = 0; k < 4; ++k) words[4 * l + k] = w[k][l];
    const int64_t hi = std::min(base + kSpan, j_end);
    for (int64_t j = std::max(base, j0); j < hi; ++j) f(j, words[j - base]);
  }
}

template <typename T>
void attention_dropout_row(uint64_t seed, uint64_t offset, int64_t bh, int64_t i, int64_t j0, int64_t cols,
                           float keep_prob, Acc<T> inv, Acc<T>* out) {
  for_dropout_words(
      seed, j0, cols, [&](int64_t j4) { return attention_dropout_counter(offset, bh, i, j4); },
      [=, threshold = keep_threshold(keep_prob)](int64_t j, uint32_t word) {
        out[j - j0] = dropout_kept(word, threshold) ? inv : Acc<T>(0);
      });
}

template <typename T>
void dropout_apply(uint64_t seed, uint64_t offset, int64_t e0, int64_t n, float keep_prob, Acc<T> scale,
                   const T* x, T* y) {
  for_dropout_words(
      seed, e0, n, [&](int64_t e4) { return element_dropout_counter(offset, e4); },
      [=, threshold = keep_threshold(keep_prob)](int64_t e, uint32_t word) {
        const Acc<T> v = static_cast<Acc<T>>(x[e - e0]) * scale;
        y[e - e0] = static_cast<T>(dropout_kept(word, threshold) ? v : Acc<T>(0));
      });
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
                                         &project_rows<T>, &weighted_row_sum<T>, &activate_inplace<T>,
                                         &exp_sum<T>,    &row_max<T>,    &add<T>,
                                         &scale<T>,      &softmax_grad<T>, &rotate_pairs<T>, &attention_dropout_row<T>, &dropout_apply<T>, &store<T>,
                                         &store_scaled<T>};
  return table;
}

template const VectorPrimitives<float>& primitives();
template const VectorPrimitives<double>& primitives();
template const VectorPrimitives<c10::BFloat16>& primitives();

}  // namespace seqops::cpu::CPU_CAPABILITY
