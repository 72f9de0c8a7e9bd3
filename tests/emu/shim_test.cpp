// The emulator's shim on its own (no torch): each case launches a small kernel and checks its
// result, or that the emulator rejects it with the expected message (case_runner.h runs them;
// shared_overflow runs alone, since it must crash a sanitizer build).
#include <cmath>
#include <cstring>
#include <functional>
#include <vector>

#include "case_runner.h"

// A template kernel's shared memory (GCC ignores the section attribute there; shared_memory.ld
// gathers what namespace seqops::cuda holds).
namespace seqops::cuda {
template <int N>
float read_unwritten_shared() {
  __shared__ float never_written[N];
  return never_written[N - 1];
}
}  // namespace seqops::cuda

namespace {

using case_runner::expect;
using case_runner::expect_fault;
using case_runner::launch_error;

const std::vector<std::pair<emu::Order, const char*>> kOrders = {
    {emu::Order::Forward, "forward"}, {emu::Order::Reverse, "reverse"}, {emu::Order::Random, "random"}};

// ------------------------------------------------------------------------------ semantics

void shuffles() {
  for (const auto& [order, name] : kOrders) {
    emu::set_order(order, 7);
    std::vector<float> xor_sum(64), down(64), up(64), idx(64), seg(64);
    emu::launch("shuffles", nullptr, dim3(1), dim3(64), 0, [&] {
      const unsigned t = threadIdx.x;
      float v = static_cast<float>(t);
      for (int o = 16; o > 0; o /= 2) v += __shfl_xor_sync(0xffffffffu, v, o);
      xor_sum[t] = v;
      down[t] = __shfl_down_sync(0xffffffffu, static_cast<float>(t), 3);
      up[t] = __shfl_up_sync(0xffffffffu, static_cast<float>(t), 5, 16);
      idx[t] = __shfl_sync(0xffffffffu, static_cast<float>(t * 10), 37);
      seg[t] = __shfl_xor_sync(0xffffffffu, static_cast<float>(t), 4, 4);
    });
    bool ok = true;
    for (unsigned t = 0; t < 64; ++t) {
      const unsigned warp = t / 32 * 32, lane = t % 32;
      ok &= xor_sum[t] == static_cast<float>(32 * warp + 496);
      ok &= down[t] == static_cast<float>(lane + 3 < 32 ? t + 3 : t);
      ok &= up[t] == static_cast<float>(lane % 16 >= 5 ? t - 5 : t);
      ok &= idx[t] == static_cast<float>((warp + 37 % 32) * 10);
      // xor 4 in 4-wide segments: a later segment gives the own value, an earlier one its lane's
      ok &= seg[t] == static_cast<float>(t & 4 ? t - 4 : t);
    }
    expect(ok, std::string("shuffle xor/down/up/idx/width semantics, ") + name + " order");
  }
}

void votes() {
  std::vector<unsigned> ballot(32), any(32), all(32);
  emu::launch("votes", nullptr, dim3(1), dim3(32), 0, [&] {
    const unsigned t = threadIdx.x;
    ballot[t] = __ballot_sync(0xffffffffu, t % 3 == 0);
    any[t] = __any_sync(0xffffffffu, t == 31);
    all[t] = __all_sync(0xffffffffu, t < 31);
    __syncwarp();
  });
  unsigned want = 0;
  for (unsigned t = 0; t < 32; t += 3) want |= 1u << t;
  bool ok = true;
  for (unsigned t = 0; t < 32; ++t) ok &= ballot[t] == want && any[t] == 1 && all[t] == 0;
  expect(ok, "ballot / any / all / __syncwarp");
}

void partial_mask_ok() {
  std::vector<int> out(32, -1);
  emu::launch("partial_mask", nullptr, dim3(1), dim3(32), 0, [&] {
    const unsigned t = threadIdx.x;
    if (t < 16) out[t] = __shfl_xor_sync(0x0000ffffu, static_cast<int>(t), 1);
  });
  bool ok = true;
  for (unsigned t = 0; t < 16; ++t) ok &= out[t] == static_cast<int>(t ^ 1);
  expect(ok, "a partial mask whose lanes all take part is fine");
}

void block_reduction_and_indices() {
  for (const auto& [order, name] : kOrders) {
    emu::set_order(order, 11);
    std::vector<float> sums(6);
    std::vector<int> seen(6 * 4 * 8 * 2, 0);
    emu::launch("block_sum", nullptr, dim3(3, 2), dim3(4, 8, 2), 0, [&] {
      __shared__ float partial[64];
      const unsigned t = threadIdx.x + 4 * (threadIdx.y + 8 * threadIdx.z);
      const unsigned b = blockIdx.x + gridDim.x * blockIdx.y;
      partial[t] = static_cast<float>(t + b);
      seen[b * 64 + t] += 1;
      __syncthreads();
      for (unsigned s = 32; s > 0; s /= 2) {
        if (t < s) partial[t] += partial[t + s];
        __syncthreads();
      }
      if (t == 0) sums[b] = partial[0];
    });
    bool ok = true;
    for (unsigned b = 0; b < 6; ++b) ok &= sums[b] == static_cast<float>(2016 + 64 * b);
    for (int s : seen) ok &= s == 1;
    expect(ok, std::string("shared-memory tree reduction over a 3-D block, 2-D grid, ") + name);
  }
}

void atomics() {
  int counter = 0;
  double total = 0;
  emu::launch("atomics", nullptr, dim3(5), dim3(96), 0, [&] {
    atomicAdd(&counter, 1);
    atomicAdd(&total, 0.5);
  });
  int m = 0, cas = 0;
  emu::launch("atomic_max", nullptr, dim3(1), dim3(64), 0, [&] {
    atomicMax(&m, static_cast<int>(threadIdx.x));
    atomicCAS(&cas, 0, static_cast<int>(threadIdx.x) + 1);
  });
  expect(counter == 480 && total == 240.0 && m == 63 && cas >= 1, "atomicAdd / atomicMax / atomicCAS");
}

void dynamic_shared() {
  std::vector<float> out(128);
  emu::allow_dynamic_shared(reinterpret_cast<const void*>(&dynamic_shared), 100 * 1024);
  emu::launch("dynamic", reinterpret_cast<const void*>(&dynamic_shared), dim3(2), dim3(128),
              100 * 1024, [&] {
                float* s = reinterpret_cast<float*>(emu::dynamic_shared());
                s[threadIdx.x * 200] = static_cast<float>(threadIdx.x);
                __syncthreads();
                out[threadIdx.x] = s[(127 - threadIdx.x) * 200];
              });
  bool ok = true;
  for (unsigned t = 0; t < 128; ++t) ok &= out[t] == static_cast<float>(127 - t);
  expect(ok, "100 KiB of dynamic shared memory after the opt-in");
}

// ------------------------------------------------------------------------------ detection

void poisoned_shared_memory() {
  float read = 0, read_in_template = 0;
  emu::launch("poison", nullptr, dim3(1), dim3(32), 0, [&] {
    __shared__ float never_written[32];
    if (threadIdx.x == 0) read = never_written[5];
    if (threadIdx.x == 1) read_in_template = seqops::cuda::read_unwritten_shared<8>();
  });
  expect(std::isnan(read) && std::isnan(read_in_template),
         "shared memory (of a plain and of a template kernel) reads NaN before the block writes it");
}

void missing_barrier_is_order_dependent() {
  std::vector<std::vector<float>> results;
  for (const auto& [order, name] : kOrders) {
    emu::set_order(order, 3);
    std::vector<float> out(64);
    emu::launch("racy", nullptr, dim3(1), dim3(64), 0, [&] {
      __shared__ float s[64];
      s[threadIdx.x] = static_cast<float>(threadIdx.x);
      // (no __syncthreads here: the race)
      out[threadIdx.x] = s[(threadIdx.x + 1) % 64];
    });
    results.push_back(out);
  }
  const auto same = [](const std::vector<float>& a, const std::vector<float>& b) {
    return std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
  };
  expect(!same(results[0], results[1]) && !same(results[0], results[2]),
         "a missing barrier gives different results in different thread orders");
}

void barrier_after_return() {
  expect_fault(launch_error("early_return", dim3(1), dim3(64), 0,
                            [&] {
                              if (threadIdx.x >= 40) return;
                              __syncthreads();
                            }),
               "have already returned", "a barrier after some threads returned is a fault");
}

void divergent_barriers() {
  expect_fault(launch_error("divergent", dim3(1), dim3(64), 0,
                            [&] {
                              if (threadIdx.x < 32) __syncthreads();
                              else __syncthreads();
                            }),
               "different __syncthreads", "threads at different barriers are a fault");
}

void shuffle_partial_participation() {
  expect_fault(launch_error("partial", dim3(1), dim3(32), 0,
                            [&] {
                              if (threadIdx.x < 16) (void)__shfl_xor_sync(0xffffffffu, 1.0f, 1);
                            }),
               "which has exited", "a full-mask shuffle that half the warp skips is a fault");
}

void shuffle_mask_without_caller() {
  expect_fault(launch_error("self", dim3(1), dim3(32), 0,
                            [&] { (void)__shfl_xor_sync(0x1u, 1.0f, 1); }),
               "which the mask leaves out", "a lane calling with a mask that leaves it out is a fault");
}

void shuffle_reads_outside_mask() {
  expect_fault(launch_error("outside", dim3(1), dim3(32), 0,
                            [&] {
                              if (threadIdx.x < 16)
                                (void)__shfl_xor_sync(0x0000ffffu, 1.0f, 16);
                            }),
               "outside the mask", "a shuffle reading a lane outside its mask is a fault");
}

void shuffle_in_partial_warp() {
  expect_fault(launch_error("partial_warp", dim3(1), dim3(48), 0,
                            [&] { (void)__shfl_xor_sync(0xffffffffu, 1.0f, 1); }),
               "does not exist", "a full mask in a 16-lane last warp is a fault");
}

void shuffle_against_barrier() {
  expect_fault(launch_error("deadlock", dim3(1), dim3(32), 0,
                            [&] {
                              if (threadIdx.x == 0) __syncthreads();
                              else (void)__shfl_xor_sync(0xffffffffu, 1.0f, 1);
                            }),
               "waits at __syncthreads", "a lane at a barrier while its warp shuffles is a fault");
}

void too_much_shared() {
  expect_fault(launch_error("big", dim3(1), dim3(32), 64 * 1024, [&] {}),
               "too many resources requested", "64 KiB of dynamic shared memory without the opt-in fails");
  std::string err;
  try {
    emu::allow_dynamic_shared(reinterpret_cast<const void*>(&too_much_shared), 300 * 1024);
  } catch (const std::exception& e) {
    err = e.what();
  }
  expect_fault(err, "opt-in maximum", "an opt-in above the device maximum fails");
  expect_fault(launch_error("threads", dim3(1), dim3(2048), 0, [&] {}), "threads per block",
               "2048 threads per block fail");
}

// Writes one float past the end of the dynamic shared buffer: the canary (plain build) or
// AddressSanitizer (sanitizer build, where this case must crash) reports it.
void shared_overflow() {
  expect_fault(launch_error("overflow", dim3(1), dim3(32), 1024,
                            [&] {
                              float* s = reinterpret_cast<float*>(emu::dynamic_shared());
                              if (threadIdx.x == 0) s[256] = 1.0f;
                            }),
               "past the end of the dynamic shared memory", "a write past dynamic shared memory is a fault");
}

}  // namespace

int main(int argc, char** argv) {
  const case_runner::Cases cases = {
      {"shuffles", shuffles},
      {"votes", votes},
      {"partial_mask_ok", partial_mask_ok},
      {"block_reduction_and_indices", block_reduction_and_indices},
      {"atomics", atomics},
      {"dynamic_shared", dynamic_shared},
      {"poisoned_shared_memory", poisoned_shared_memory},
      {"missing_barrier_is_order_dependent", missing_barrier_is_order_dependent},
      {"barrier_after_return", barrier_after_return},
      {"divergent_barriers", divergent_barriers},
      {"shuffle_partial_participation", shuffle_partial_participation},
      {"shuffle_mask_without_caller", shuffle_mask_without_caller},
      {"shuffle_reads_outside_mask", shuffle_reads_outside_mask},
      {"shuffle_in_partial_warp", shuffle_in_partial_warp},
      {"shuffle_against_barrier", shuffle_against_barrier},
      {"too_much_shared", too_much_shared},
      {"shared_overflow", shared_overflow},
  };
  return case_runner::run_cases(argc, argv, cases, {"shared_overflow"});
}
