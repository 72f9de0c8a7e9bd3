// Runs the three row kernels of csrc/common/cuda/row_kernels.cuh under the emulator on sizes that
// take several tiles of every loop, in each thread order, and checks each result against a
// float64 loop and the orders against each other bit for bit. Exit status 0 when all agree.
// tests/emu/test_barriers.py compiles it once as is and once per __syncthreads removed from a
// scratch copy of the header, and expects every such copy to fail here.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <vector>

#include "common/cuda/row_kernels.cuh"
#include "emulator/control.h"
#include "emulator/launch.h"

namespace emu = seqops::emulator;
using namespace seqops::cuda;

namespace {

constexpr int64_t B = 2, L = 300, D = 40, K = 40;  // 2+ tiles of every loop, K > kCrK

struct Data {
  std::vector<float> x, v, coef;
  bool mask[B * L];
};

Data make_data() {
  Data d;
  std::mt19937 rng(1);
  std::normal_distribution<float> normal;
  for (int64_t i = 0; i < B * L * D; ++i) d.x.push_back(normal(rng));
  for (int64_t i = 0; i < B * K * D; ++i) d.v.push_back(normal(rng));
  for (int64_t i = 0; i < B * K * L; ++i) d.coef.push_back(normal(rng));
  for (int64_t i = 0; i < B * L; ++i) d.mask[i] = (i * 7) % 5 != 0;
  return d;
}

// Every order's outputs, concatenated.
std::vector<float> run_all(const Data& d) {
  // row_dots twice: its 16-byte loads of x (std::vector's data are 16-byte aligned, D % 4 == 0)
  // into the first half of `dots`, its scalar loads into the second.
  std::vector<float> dots(2 * B * K * L), partial, combined(B * L * D);
  const unsigned dot_blocks = B * ceil_div(L, kDotsRows) * ceil_div(K, 32);
  for (const bool vector : {true, false}) {
    emu::launch("row_dots_kernel", nullptr, dim3(dot_blocks), dim3(kDotsThreads), 0, [&] {
      row_dots_kernel<float, 32>(d.x.data(), d.v.data(), K * D, d.mask, dots.data() + (vector ? 0 : B * K * L),
                                 L, D, K, ceil_div(L, kDotsRows), ceil_div(K, 32), vector);
    });
  }
  // weighted_rows twice too: 16-byte loads into the first half of `partial`, scalar loads into
  // the second.
  const int64_t chunks = 3, k_groups = ceil_div(K, kWrHeads), d_tiles = ceil_div(D, wr_col_tile<float>);
  const int64_t partial_size = B * chunks * K * D;
  partial.assign(2 * partial_size, 0.0f);
  for (const bool vector : {true, false}) {
    emu::launch("weighted_rows_kernel", nullptr, dim3(B * chunks * k_groups * d_tiles),
                dim3(kWrThreads), 0, [&] {
                  weighted_rows_kernel<float>(d.coef.data(), d.x.data(), d.mask,
                                              partial.data() + (vector ? 0 : partial_size), L, D, K,
                                              chunks, k_groups, d_tiles, vector);
                });
  }
  const int64_t row_tiles = ceil_div(L, kCrRows), cr_tiles = ceil_div(D, kCrColTile);
  emu::launch("combine_rows_kernel", nullptr, dim3(B * row_tiles * cr_tiles), dim3(kCrThreads), 0,
              [&] {
                combine_rows_kernel<float, float>(d.coef.data(), d.v.data(), nullptr, d.mask,
                                           combined.data(), L, D, K, row_tiles, cr_tiles);
              });
  // Reference checks (float64): each output is a sum over kept rows t of products x * v, x * coef
  // or coef * v; `dot` sums a[i * sa] * b[i * sb] over i < n.
  const auto dot = [](const float* a, int64_t sa, const float* b, int64_t sb, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += double(a[i * sa]) * b[i * sb];
    return s;
  };
  double worst = 0;
  for (int64_t half = 0; half < 2; ++half)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t k = 0; k < K; ++k)
        for (int64_t t = 0; t < L; ++t) {
          const double want = d.mask[b * L + t] ? dot(&d.x[(b * L + t) * D], 1, &d.v[(b * K + k) * D], 1, D) : 0.0;
          worst = std::max(worst, std::abs(want - dots[((half * B + b) * K + k) * L + t]));
        }
  for (int64_t half = 0; half < 2; ++half)
    for (int64_t b = 0; b < B; ++b)
      for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < D; ++j) {
          double want = 0, got = 0;
          for (int64_t t = 0; t < L; ++t)
            if (d.mask[b * L + t]) want += double(d.coef[(b * K + k) * L + t]) * d.x[(b * L + t) * D + j];
          for (int64_t c = 0; c < chunks; ++c) got += partial[half * partial_size + ((b * chunks + c) * K + k) * D + j];
          worst = std::max(worst, std::abs(want - got));
        }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t j = 0; j < D; ++j) {
        const double want =
            d.mask[b * L + t] ? dot(&d.coef[b * K * L + t], L, &d.v[b * K * D + j], D, K) : 0.0;
        worst = std::max(worst, std::abs(want - combined[(b * L + t) * D + j]));
      }
  if (!(worst < 1e-3)) {
    std::printf("FAIL: max error %g against float64\n", worst);
    throw std::runtime_error("wrong result");
  }
  std::vector<float> all = dots;
  all.insert(all.end(), partial.begin(), partial.end());
  all.insert(all.end(), combined.begin(), combined.end());
  return all;
}

}  // namespace

int main() {
  const Data d = make_data();
  try {
    std::vector<float> first;
    for (emu::Order order : {emu::Order::Forward, emu::Order::Reverse, emu::Order::Random}) {
      emu::set_order(order, 5);
      const std::vector<float> out = run_all(d);
      if (first.empty()) first = out;
      else if (std::memcmp(first.data(), out.data(), out.size() * sizeof(float)) != 0) {
        std::printf("FAIL: thread orders disagree\n");
        return 1;
      }
    }
  } catch (const std::exception& e) {
    std::printf("FAIL: %s\n", e.what());
    return 1;
  }
  std::printf("PASS\n");
  return 0;
}
