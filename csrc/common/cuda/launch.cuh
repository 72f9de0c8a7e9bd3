// Host-side launch planning shared by the CUDA kernels: grid sizes and the Flash-Decoding split
// of the sequence into chunks. (The launch check: check_launch in common/cuda/cuda_context.h.)
#pragma once
#include <c10/util/Exception.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <climits>
#include <cstdint>

#include "common/host_device.h"

namespace seqops::cuda {

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// A 1-D grid of `blocks` blocks (every kernel flattens its block coordinates into blockIdx.x,
// whose limit is 2^31 - 1, so no coordinate is capped at 65535).
inline dim3 grid_1d(int64_t blocks, const char* kernel) {
  TORCH_CHECK(blocks >= 1 && blocks <= INT_MAX, "seqops: ", kernel, " needs ", blocks,
              " thread blocks, more than a CUDA grid holds (", INT_MAX, ")");
  return dim3(static_cast<unsigned>(blocks));
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
