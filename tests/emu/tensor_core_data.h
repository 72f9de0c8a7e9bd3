// Host-side data for the tensor-core tests (tensor_core_test.cpp on the emulator,
// tensor_core_check.cu on a GPU): operands exactly representable in f16 and bf16 whose products
// sum exactly in float (so any correct fp32 accumulation gives the reference bit for bit), the
// reference product, and the PTX ISA's ldmatrix layout written out independently of the emulator.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <utility>
#include <vector>

namespace tensor_core_data {

// Bits of v, which must be 0, infinite or a normal f16 / bf16 value.
inline uint16_t f16_bits(double v) {
  const uint16_t sign = std::signbit(v) ? 0x8000 : 0;
  if (v == 0) return sign;
  if (std::isinf(v)) return sign | 0x7c00;
  int e;
  const double m = std::frexp(std::fabs(v), &e);  // |v| = m 2^e, m in [0.5, 1)
  return sign | static_cast<uint16_t>((e + 14) << 10) | static_cast<uint16_t>((2 * m - 1) * 1024);
}
inline uint16_t bf16_bits(double v) {
  const float f = static_cast<float>(v);
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return static_cast<uint16_t>(bits >> 16);
}

struct Problem {
  std::vector<double> a, b, c;  // 16x16, 16x8 (k x n), 16x8
};

// Entries k / scale with |k| <= limit.
inline Problem random_problem(int limit, double scale, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> pick(-limit, limit);
  Problem p{std::vector<double>(256), std::vector<double>(128), std::vector<double>(128)};
  for (auto* m : {&p.a, &p.b, &p.c})
    for (double& x : *m) x = pick(gen) / scale;
  return p;
}

inline std::vector<float> reference_product(const Problem& p) {
  std::vector<float> d(128);
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      double s = p.c[m * 8 + n];
      for (int k = 0; k < 16; ++k) s += p.a[m * 16 + k] * p.b[k * 8 + n];
      d[m * 8 + n] = static_cast<float>(s);
    }
  return d;
}

// The 16-bit patterns of m's entries as f16, or as bf16.
inline std::vector<uint16_t> bits(const std::vector<double>& m, bool bf16) {
  std::vector<uint16_t> out;
  for (double x : m) out.push_back(bf16 ? bf16_bits(x) : f16_bits(x));
  return out;
}

// What ldmatrix of `tiles` quarters of the row-major 16x16 m (tile j at rows 8 (j & 1), columns
// 8 (j >> 1)) leaves in each lane: out[lane * tiles + j].
inline std::vector<uint32_t> expected_ldmatrix(const std::vector<uint16_t>& m, int tiles, bool trans) {
  std::vector<uint32_t> out(32 * tiles);
  for (int lane = 0; lane < 32; ++lane) {
    const int g = lane / 4, t = lane % 4;
    for (int j = 0; j < tiles; ++j) {
      const int r0 = 8 * (j & 1), c0 = 8 * (j >> 1);
      const uint16_t lo = trans ? m[(r0 + 2 * t) * 16 + c0 + g] : m[(r0 + g) * 16 + c0 + 2 * t];
      const uint16_t hi = trans ? m[(r0 + 2 * t + 1) * 16 + c0 + g] : m[(r0 + g) * 16 + c0 + 2 * t + 1];
      out[lane * tiles + j] = lo | static_cast<uint32_t>(hi) << 16;
    }
  }
  return out;
}

// Integer matrices for the warp-tile chain (tensor_core_kernels.cuh's warp_tiles_kernel) with
// entries in [-2, 2]: A B^T stays below 2^8 in magnitude (exact in f16 and bf16), so both
// products are exact, and the references below are bit for bit.
struct WarpProblem {
  int k, n, cols;
  std::vector<double> a, b, c;  // 16 x k, n x k, n x cols, row-major
};

inline WarpProblem warp_problem(int k, int n, int cols, unsigned seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int> pick(-2, 2);
  WarpProblem p{k, n, cols, std::vector<double>(16 * k), std::vector<double>(n * k), std::vector<double>(n * cols)};
  for (auto* m : {&p.a, &p.b, &p.c})
    for (double& x : *m) x = pick(gen);
  return p;
}

// A B^T (16 x n) and (A B^T) C (16 x cols).
inline std::pair<std::vector<float>, std::vector<float>> warp_reference(const WarpProblem& p) {
  std::vector<double> ab(16 * p.n, 0.0);
  for (int m = 0; m < 16; ++m)
    for (int j = 0; j < p.n; ++j)
      for (int kk = 0; kk < p.k; ++kk) ab[m * p.n + j] += p.a[m * p.k + kk] * p.b[j * p.k + kk];
  std::vector<float> abc(16 * p.cols, 0.f);
  for (int m = 0; m < 16; ++m)
    for (int col = 0; col < p.cols; ++col) {
      double s = 0;
      for (int j = 0; j < p.n; ++j) s += ab[m * p.n + j] * p.c[j * p.cols + col];
      abc[m * p.cols + col] = static_cast<float>(s);
    }
  return {std::vector<float>(ab.begin(), ab.end()), abc};
}

}  // namespace tensor_core_data
