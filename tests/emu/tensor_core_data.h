// Host-side data for the tensor-core tests (tensor_core_test.cpp on the emulator,
// tensor_core_check.cu on a GPU): operands exactly representable in f16 and bf16 whose products
// sum exactly in float (so any correct fp32 accumulation gives the reference bit for bit), the
// reference product, and the PTX ISA's ldmatrix layout written out independently of the emulator.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
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

}  // namespace tensor_core_data
