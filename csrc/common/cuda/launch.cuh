// The one way seqops launches a CUDA kernel, and the host-side launch planning every kernel
// shares (grid sizes, the Flash-Decoding split of the sequence, device attributes).
//
// Built twice: by nvcc for the GPU, and by g++ for the host emulator (emulator/, SEQOPS_EMULATOR
// defined, its fake cuda_runtime.h first on the include path). Under nvcc launch_kernel is
// `kernel<<<grid, block, shared, current stream>>>(args...)` plus the launch-error check; under
// the emulator it runs the grid on the host, each CUDA thread a fiber. Device attributes and the
// dynamic shared-memory opt-in go through here too, so the emulator can vary them.
#pragma once
#include <c10/util/Exception.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <utility>

#include "common/cuda/cuda_context.h"
#include "common/host_device.h"

#if defined(SEQOPS_EMULATOR)
#include "emulator/launch.h"
#endif

namespace seqops::cuda {

SEQOPS_HOST_DEVICE int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline int64_t pow2_at_least(int64_t n) {
  int64_t p = 1;
  while (p < n) p *= 2;
  return p;
}

// A 1-D grid of `blocks` blocks (every kernel flattens its block coordinates into blockIdx.x,
// whose limit is 2^31 - 1, so no coordinate is capped at 65535).
inline dim3 grid_1d(int64_t blocks, const char* kernel) {
  TORCH_CHECK(blocks >= 1 && blocks <= INT_MAX, "seqops: ", kernel, " needs ", blocks,
              " thread blocks, more than a CUDA grid holds (", INT_MAX, ")");
  return dim3(static_cast<unsigned>(blocks));
}

// Launches `kernel` over a 1-D grid of `blocks` blocks (grid_1d) on PyTorch's current stream and
// raises if the launch failed. The arguments convert to the kernel's parameter types exactly as
// at a <<< >>> call site.
template <typename... Params, typename... Args>
void launch_kernel(const char* name, void (*kernel)(Params...), int64_t blocks, dim3 block,
                   size_t shared_bytes, Args&&... args) {
  static_assert(sizeof...(Params) == sizeof...(Args), "launch_kernel: wrong number of arguments");
  const dim3 grid = grid_1d(blocks, name);
#if defined(SEQOPS_EMULATOR)
  emulator::launch(name, reinterpret_cast<const void*>(kernel), grid, block, shared_bytes,
                   [&] { kernel(static_cast<Params>(args)...); });
#else
  kernel<<<grid, block, shared_bytes, current_stream()>>>(static_cast<Params>(args)...);
  check_launch(name);
#endif
}

// Allows `kernel` up to `bytes` of dynamic shared memory (needed above the 48 KiB default).
template <typename... Params>
void allow_dynamic_shared(const char* name, void (*kernel)(Params...), size_t bytes) {
#if defined(SEQOPS_EMULATOR)
  emulator::allow_dynamic_shared(reinterpret_cast<const void*>(kernel), bytes);
#else
  const cudaError_t err = cudaFuncSetAttribute(
      kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes));
  TORCH_CHECK(err == cudaSuccess, "seqops: ", name, " cannot get ", bytes,
              " bytes of shared memory: ", cudaGetErrorString(err));
#endif
}

// An attribute of CUDA device `device` (e.g. cudaDevAttrMaxSharedMemoryPerBlockOptin); the
// emulator answers from its own table, which tests vary to exercise every tile candidate.
inline int device_attribute(cudaDeviceAttr attribute, int device) {
#if defined(SEQOPS_EMULATOR)
  return emulator::device_attribute(attribute);
#else
  int value = 0;
  const cudaError_t err = cudaDeviceGetAttribute(&value, attribute, device);
  TORCH_CHECK(err == cudaSuccess, "seqops: cudaDeviceGetAttribute(", static_cast<int>(attribute),
              ") failed: ", cudaGetErrorString(err));
  return value;
#endif
}

// Flash-Decoding split of the sequence: enough chunks that `blocks_per_chunk` blocks per chunk
// make ~kTargetBlocks blocks in all (several waves on any current GPU, so small batches still
// fill the device), but never chunks of fewer than kMinChunkRows rows, and at most kMaxChunks.
constexpr int64_t kTargetBlocks = 1024;
constexpr int64_t kMinChunkRows = 64;
constexpr int64_t kMaxChunks = 1024;

inline int64_t plan_chunks(int64_t blocks_per_chunk, int64_t length) {
  const int64_t want = ceil_div(kTargetBlocks, std::max<int64_t>(1, blocks_per_chunk));
  const int64_t most = std::max<int64_t>(1, std::min(kMaxChunks, length / kMinChunkRows));
  return std::clamp<int64_t>(want, 1, most);
}

// Rows [begin, end) of chunk c out of `chunks` over `length` rows (balanced, in order).
SEQOPS_HOST_DEVICE int64_t chunk_begin(int64_t c, int64_t chunks, int64_t length) {
  return c * length / chunks;
}

}  // namespace seqops::cuda
