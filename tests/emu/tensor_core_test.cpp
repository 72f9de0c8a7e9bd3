// The emulator's tensor-core instructions on their own (no torch): mma.sync m16n8k16 and ldmatrix
// (csrc/common/cuda/tensor_core.cuh, emulator/src/tensor_core.cpp) against a plain matrix product
// and the PTX ISA's layouts written out independently here, in every thread order; the warp-tile
// helpers the attention kernels chain (warp_mma.cuh) against exact products; and the faults
// a GPU would leave undefined. Data are exactly representable in f16 and bf16, and the products'
// sums exact in float, so results must match bit for bit.
#include <cmath>
#include <vector>

#include "case_runner.h"
#include "tensor_core_data.h"
#include "tensor_core_kernels.cuh"
#include "common/cuda/vector_access.cuh"

namespace {

using case_runner::expect;
using case_runner::expect_fault;
using case_runner::launch_error;
using seqops::cuda::MmaInput;
using namespace tensor_core_data;
namespace kernels = seqops::cuda::tensor_core_test;

const std::vector<std::pair<emu::Order, const char*>> kOrders = {
    {emu::Order::Forward, "forward"}, {emu::Order::Reverse, "reverse"}, {emu::Order::Random, "random"}};

template <MmaInput kIn>
std::vector<float> run_product(const Problem& p, bool through_ldmatrix) {
  const auto a = bits(p.a, kIn == MmaInput::kBF16), b = bits(p.b, kIn == MmaInput::kBF16);
  const std::vector<float> c(p.c.begin(), p.c.end());
  std::vector<float> d(128);
  emu::launch("tile_product", nullptr, dim3(1), dim3(32), 0, [&] {
    if (through_ldmatrix) kernels::ldmatrix_product_kernel<kIn>(a.data(), b.data(), c.data(), d.data());
    else kernels::fragment_product_kernel<kIn>(a.data(), b.data(), c.data(), d.data());
  });
  return d;
}

template <MmaInput kIn>
void check_products(const char* type) {
  const Problem integers = random_problem(8, 1.0, 1), fractions = random_problem(255, 64.0, 2);
  for (const auto& [order, order_name] : kOrders) {
    emu::set_order(order, 5);
    for (const bool ldm : {false, true}) {
      const std::string how = std::string(type) + (ldm ? ", through ldmatrix, " : ", fragments by hand, ") + order_name;
      expect(run_product<kIn>(integers, ldm) == reference_product(integers), "integer product " + how);
      expect(run_product<kIn>(fractions, ldm) == reference_product(fractions), "fractional product " + how);
    }
  }
}

void mma_f16() { check_products<MmaInput::kF16>("f16"); }
void mma_bf16() { check_products<MmaInput::kBF16>("bf16"); }

// The emulator's documented rounding: the exact sum, rounded once (a float running sum would stay
// at 2^24 here), and IEEE specials propagate.
void mma_rounding_and_specials() {
  Problem p{std::vector<double>(256, 1.0), std::vector<double>(128, 0.5), std::vector<double>(128, 16777216.0)};
  expect(run_product<MmaInput::kF16>(p, false)[0] == 16777224.0f, "2^24 + 16 x 0.5 is rounded once");
  p.a[0] = INFINITY;  // row 0 times column n: inf; b[0][1] = 0 makes inf x 0 = NaN in column 1
  p.b[1] = 0.0;
  const auto d = run_product<MmaInput::kBF16>(p, false);
  expect(std::isinf(d[0]) && std::isnan(d[1]) && d[8] == 16777224.0f, "inf and inf x 0 propagate");
}

// The warp_mma.cuh chain (A B^T, then (A B^T) C through its A fragments) against the exact
// products, both 16-bit types, every order.
template <MmaInput kIn>
bool warp_tiles_match(const WarpProblem& p) {
  const bool bf16 = kIn == MmaInput::kBF16;
  const auto a = bits(p.a, bf16), b = bits(p.b, bf16), c = bits(p.c, bf16);
  std::vector<float> ab_t(16 * p.n), ab_t_c(16 * p.cols);
  emu::launch("warp_tiles", nullptr, dim3(1), dim3(32), 0, [&] {
    kernels::warp_tiles_kernel<kIn>(a.data(), b.data(), c.data(), ab_t.data(), ab_t_c.data());
  });
  const auto [want_ab_t, want_ab_t_c] = warp_reference(p);
  return ab_t == want_ab_t && ab_t_c == want_ab_t_c;
}

void warp_tiles() {
  const WarpProblem p = warp_problem(kernels::kWarpK, kernels::kWarpN, kernels::kWarpCols, 3);
  for (const auto& [order, order_name] : kOrders) {
    emu::set_order(order, 7);
    expect(warp_tiles_match<MmaInput::kF16>(p), std::string("f16 warp tiles, ") + order_name);
    expect(warp_tiles_match<MmaInput::kBF16>(p), std::string("bf16 warp tiles, ") + order_name);
  }
}

template <int kTiles, bool kTrans>
bool ldmatrix_matches_layout(const std::vector<uint16_t>& m) {
  std::vector<uint32_t> out(32 * kTiles);
  emu::launch("ldmatrix", nullptr, dim3(1), dim3(32), 0,
              [&] { kernels::ldmatrix_kernel<kTiles, kTrans>(m.data(), out.data()); });
  return out == expected_ldmatrix(m, kTiles, kTrans);
}

void ldmatrix_layouts() {
  std::vector<uint16_t> m(256);
  for (int i = 0; i < 256; ++i) m[i] = static_cast<uint16_t>(i * 7 + 3);
  expect(ldmatrix_matches_layout<1, false>(m) && ldmatrix_matches_layout<1, true>(m), "ldmatrix x1 (.trans)");
  expect(ldmatrix_matches_layout<2, false>(m) && ldmatrix_matches_layout<2, true>(m), "ldmatrix x2 (.trans)");
  expect(ldmatrix_matches_layout<4, false>(m) && ldmatrix_matches_layout<4, true>(m), "ldmatrix x4 (.trans)");
}

// ------------------------------------------------------------------------------ detection

void ldmatrix_misaligned() {
  expect_fault(launch_error("misaligned", dim3(1), dim3(32), 0,
                            [&] {
                              __shared__ __align__(16) uint16_t s[16][16];
                              uint32_t r[1];
                              seqops::cuda::ldmatrix<1, false>(r, &s[threadIdx.x % 8][1]);
                            }),
               "is not 16-byte aligned", "an ldmatrix row address off the 16-byte grid is a fault");
}

void ldmatrix_outside_shared() {
  std::vector<uint16_t> global(256);
  expect_fault(launch_error("global", dim3(1), dim3(32), 0,
                            [&] {
                              uint32_t r[1];
                              seqops::cuda::ldmatrix<1, false>(r, global.data() + 16 * (threadIdx.x % 8));
                            }),
               "is not in shared memory", "ldmatrix from global memory is a fault");
}

void vec16_misaligned() {
  expect_fault(launch_error("vec16", dim3(1), dim3(32), 0,
                            [&] {
                              __shared__ __align__(16) uint16_t s[64];
                              seqops::cuda::store_vec16(s + 8 * (threadIdx.x % 4) + 4, seqops::cuda::Vec16{});
                            }),
               "not 16-byte aligned", "a 16-byte store off the 16-byte grid is a fault");
}

void mma_half_warp() {
  expect_fault(launch_error("half_warp", dim3(1), dim3(32), 0,
                            [&] {
                              if (threadIdx.x >= 16) return;
                              const uint32_t a[4] = {}, b[2] = {};
                              float d[4] = {};
                              seqops::cuda::mma_m16n8k16<MmaInput::kF16>(d, a, b);
                            }),
               "which has exited", "an mma that half the warp skips is a fault");
}

}  // namespace

int main(int argc, char** argv) {
  const case_runner::Cases cases = {
      {"mma_f16", mma_f16},
      {"mma_bf16", mma_bf16},
      {"mma_rounding_and_specials", mma_rounding_and_specials},
      {"ldmatrix_layouts", ldmatrix_layouts},
      {"warp_tiles", warp_tiles},
      {"ldmatrix_misaligned", ldmatrix_misaligned},
      {"ldmatrix_outside_shared", ldmatrix_outside_shared},
      {"vec16_misaligned", vec16_misaligned},
      {"mma_half_warp", mma_half_warp},
  };
  return case_runner::run_cases(argc, argv, cases);
}
