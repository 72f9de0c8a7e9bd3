// The tensor-core test kernels (tensor_core_kernels.cuh) on a real GPU, on the data the emulator's
// tensor_core_test.cpp uses: each product (and the warp_mma.cuh chain) must equal the reference bit
// for bit (the data make every sum exact in float) and each ldmatrix must leave the PTX ISA's layout. CI compiles it (no GPU
// there); a session lent a GPU (sm_80 or newer) runs it:
//   nvcc -std=c++20 -arch=sm_90 -I csrc tests/emu/tensor_core_check.cu -o /tmp/tc && /tmp/tc
// Prints PASS / FAIL lines, and what the device gives for the emulator's rounding case; exit 0
// only if every check passed.
#include <cuda_runtime.h>

#include <cstdio>
#include <vector>

#include "tensor_core_data.h"
#include "tensor_core_kernels.cuh"

namespace {

using seqops::cuda::MmaInput;
using namespace tensor_core_data;
namespace kernels = seqops::cuda::tensor_core_test;

int failures = 0;

void expect(bool ok, const char* what) {
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", what);
  if (!ok) ++failures;
}

void check(cudaError_t e) {
  if (e != cudaSuccess) {
    std::printf("FAIL CUDA error: %s\n", cudaGetErrorString(e));
    std::exit(1);
  }
}

template <typename T>
T* to_device(const std::vector<T>& host) {
  T* p = nullptr;
  check(cudaMalloc(&p, host.size() * sizeof(T)));
  check(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  return p;
}

template <typename T>
std::vector<T> to_host(const T* p, size_t n) {
  std::vector<T> host(n);
  check(cudaMemcpy(host.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost));
  return host;
}

template <MmaInput kIn>
std::vector<float> device_product(const Problem& p, bool through_ldmatrix) {
  const bool bf16 = kIn == MmaInput::kBF16;
  uint16_t* a = to_device(bits(p.a, bf16));
  uint16_t* b = to_device(bits(p.b, bf16));
  float* c = to_device(std::vector<float>(p.c.begin(), p.c.end()));
  float* d = to_device(std::vector<float>(128));
  if (through_ldmatrix) kernels::ldmatrix_product_kernel<kIn><<<1, 32>>>(a, b, c, d);
  else kernels::fragment_product_kernel<kIn><<<1, 32>>>(a, b, c, d);
  check(cudaGetLastError());
  const auto out = to_host(d, 128);
  for (void* q : {static_cast<void*>(a), static_cast<void*>(b), static_cast<void*>(c), static_cast<void*>(d)})
    check(cudaFree(q));
  return out;
}

template <MmaInput kIn>
void check_products(const char* type) {
  const Problem integers = random_problem(8, 1.0, 1), fractions = random_problem(255, 64.0, 2);
  for (const bool ldm : {false, true}) {
    char what[96];
    std::snprintf(what, sizeof what, "%s products, %s", type, ldm ? "through ldmatrix" : "fragments by hand");
    expect(device_product<kIn>(integers, ldm) == reference_product(integers) &&
               device_product<kIn>(fractions, ldm) == reference_product(fractions),
           what);
  }
}

template <int kTiles, bool kTrans>
bool device_ldmatrix_matches(const std::vector<uint16_t>& m) {
  uint16_t* dm = to_device(m);
  uint32_t* out = to_device(std::vector<uint32_t>(32 * kTiles));
  kernels::ldmatrix_kernel<kTiles, kTrans><<<1, 32>>>(dm, out);
  check(cudaGetLastError());
  const bool ok = to_host(out, 32 * kTiles) == expected_ldmatrix(m, kTiles, kTrans);
  check(cudaFree(dm));
  check(cudaFree(out));
  return ok;
}

template <MmaInput kIn>
bool device_warp_tiles_match(const WarpProblem& p) {
  const bool bf16 = kIn == MmaInput::kBF16;
  uint16_t* a = to_device(bits(p.a, bf16));
  uint16_t* b = to_device(bits(p.b, bf16));
  uint16_t* c = to_device(bits(p.c, bf16));
  float* ab_t = to_device(std::vector<float>(16 * p.n));
  float* ab_t_c = to_device(std::vector<float>(16 * p.cols));
  kernels::warp_tiles_kernel<kIn><<<1, 32>>>(a, b, c, ab_t, ab_t_c);
  check(cudaGetLastError());
  const auto [want_ab_t, want_ab_t_c] = warp_reference(p);
  const bool ok = to_host(ab_t, 16 * p.n) == want_ab_t && to_host(ab_t_c, 16 * p.cols) == want_ab_t_c;
  for (void* q : {static_cast<void*>(a), static_cast<void*>(b), static_cast<void*>(c), static_cast<void*>(ab_t),
                  static_cast<void*>(ab_t_c)})
    check(cudaFree(q));
  return ok;
}

}  // namespace

int main() {
  check_products<MmaInput::kF16>("f16");
  check_products<MmaInput::kBF16>("bf16");
  std::vector<uint16_t> m(256);
  for (int i = 0; i < 256; ++i) m[i] = static_cast<uint16_t>(i * 7 + 3);
  expect(device_ldmatrix_matches<1, false>(m) && device_ldmatrix_matches<1, true>(m) &&
             device_ldmatrix_matches<2, false>(m) && device_ldmatrix_matches<2, true>(m) &&
             device_ldmatrix_matches<4, false>(m) && device_ldmatrix_matches<4, true>(m),
         "ldmatrix x1 / x2 / x4 (.trans) layouts");
  const WarpProblem wp = warp_problem(kernels::kWarpK, kernels::kWarpN, kernels::kWarpCols, 3);
  expect(device_warp_tiles_match<MmaInput::kF16>(wp) && device_warp_tiles_match<MmaInput::kBF16>(wp),
         "warp_mma.cuh chain A B^T, (A B^T) C in f16 and bf16");
  // The emulator rounds the exact sum once (16777224); a device may round differently.
  Problem p{std::vector<double>(256, 1.0), std::vector<double>(128, 0.5), std::vector<double>(128, 16777216.0)};
  std::printf("INFO 2^24 + 16 x 0.5 on this device: %.1f (emulator: 16777224.0)\n",
              device_product<MmaInput::kF16>(p, false)[0]);
  return failures == 0 ? 0 : 1;
}
