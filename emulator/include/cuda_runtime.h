// The host emulator's stand-in for <cuda_runtime.h>: what seqops' CUDA sources use of CUDA,
// compiled by g++ so that the same kernel headers run on the host (emulator/README section of
// the top-level README). It must come first on the include path, before any real CUDA headers,
// and only in builds that define SEQOPS_EMULATOR.
//
// Each CUDA thread is a fiber run by emulator/src/scheduler.cpp; threadIdx and friends read the
// running fiber's coordinates; __syncthreads and the warp collectives suspend the fiber until
// the scheduler resolves them, checking that every thread (lane) they need takes part.
#pragma once
#if defined(__CUDACC__) || !defined(SEQOPS_EMULATOR)
#error "emulator/include/cuda_runtime.h is for the host emulator build (SEQOPS_EMULATOR, g++) only"
#endif

#include <math.h>  // ::exp(float) and friends resolve to the float overloads, as in device code

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

// ------------------------------------------------------------------------------ keywords
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
// Static shared memory: one object per declaration, in a section of its own that the scheduler
// poisons (all bytes 0xFF: NaN for every float type) before each block, so a read before the
// block's own write shows. Blocks run one at a time, so one object serves every block.
// `extern __shared__` (dynamic shared memory) is not expressible this way: kernels take it from
// seqops::cuda::dynamic_shared_bytes() (csrc/common/cuda/shared_memory.cuh).
#define __shared__ __attribute__((section("seqops_emu_shared"), aligned(16))) static

// ------------------------------------------------------------------------------ types
struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x, y, z;
  constexpr dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
  constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};
using cudaStream_t = struct CUstream_st*;

enum cudaError_t { cudaSuccess = 0, cudaErrorInvalidValue = 1 };
// The values are CUDA's own, so a number printed in an error message means the same thing.
enum cudaDeviceAttr {
  cudaDevAttrMaxThreadsPerBlock = 1,
  cudaDevAttrMaxSharedMemoryPerBlock = 8,
  cudaDevAttrWarpSize = 10,
  cudaDevAttrMultiProcessorCount = 16,
  cudaDevAttrComputeCapabilityMajor = 75,
  cudaDevAttrComputeCapabilityMinor = 76,
  cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };

// Launch errors raise from the launch itself (emulator/launch.h), so nothing is ever pending.
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorName(cudaError_t e) {
  return e == cudaSuccess ? "cudaSuccess" : "cudaErrorInvalidValue";
}
inline const char* cudaGetErrorString(cudaError_t e) {
  return e == cudaSuccess ? "no error" : "invalid argument";
}

namespace seqops::emulator {

// ------------------------------------------------------------------------------ built-ins
struct Builtins {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
};
extern Builtins g_builtins;  // the running fiber's coordinates (set by the scheduler)

// ------------------------------------------------------------------------------ collectives
// A warp collective as one lane posts it: the lanes named in `mask` must all post the same
// collective (same resolver, same mask); the scheduler then calls `resolve` once with the 32
// lanes' posts (nullptr for lanes outside the mask). New collectives (e.g. matrix fragments)
// plug in as new resolvers: the scheduler knows none of them.
struct WarpPost;
using WarpResolver = void (*)(WarpPost* const (&lanes)[32], unsigned mask);
struct WarpPost {
  WarpResolver resolve;
  const char* what;  // for messages, e.g. "__shfl_xor_sync"
  unsigned mask;
  const void* in;    // the lane's operand
  void* out;         // where the lane's result goes
  size_t bytes;      // operand / result size
  int param;         // lane mask, delta or source lane
  int width;
  const char* file;
  int line;
};

void sync_block(const char* file, int line);
void warp_collective(WarpPost& post);  // suspends the lane until the collective resolves
// A fault found by the running thread: fails the launch with this message (never returns).
[[noreturn]] void fault(const char* file, int line, const char* what);
// A fault found while resolving a collective (on the scheduler's side): fails the launch.
void collective_fault(const WarpPost& post, const char* what);
unsigned char* dynamic_shared();
// Whether [address, address + bytes) lies in the running block's shared memory (static or dynamic).
bool in_shared_memory(const void* address, size_t bytes);

void resolve_shfl_xor(WarpPost* const (&lanes)[32], unsigned mask);
void resolve_shfl_down(WarpPost* const (&lanes)[32], unsigned mask);
void resolve_shfl_up(WarpPost* const (&lanes)[32], unsigned mask);
void resolve_shfl_idx(WarpPost* const (&lanes)[32], unsigned mask);
void resolve_ballot(WarpPost* const (&lanes)[32], unsigned mask);
void resolve_syncwarp(WarpPost* const (&lanes)[32], unsigned mask);

// The shuffles' common body; the macros below put file and line first so that width can keep
// its CUDA default at the end.
template <typename T>
T shuffle(WarpResolver how, const char* what, const char* file, int line, unsigned mask, T value,
          int param, int width = 32) {
  static_assert(std::is_trivially_copyable_v<T>, "warp shuffles move trivially copyable values");
  T result;
  WarpPost post{how, what, mask, &value, &result, sizeof(T), param, width, file, line};
  warp_collective(post);
  return result;
}

inline unsigned vote(unsigned mask, int predicate, const char* what, const char* file, int line) {
  unsigned result = 0;
  const unsigned bit = predicate != 0;
  WarpPost post{resolve_ballot, what, mask, &bit, &result, sizeof(unsigned), 0, 32, file, line};
  warp_collective(post);
  return result;
}

}  // namespace seqops::emulator

#define threadIdx (static_cast<const uint3&>(::seqops::emulator::g_builtins.thread_idx))
#define blockIdx (static_cast<const uint3&>(::seqops::emulator::g_builtins.block_idx))
#define blockDim (static_cast<const dim3&>(::seqops::emulator::g_builtins.block_dim))
#define gridDim (static_cast<const dim3&>(::seqops::emulator::g_builtins.grid_dim))
#define warpSize 32

#define __syncthreads() ::seqops::emulator::sync_block(__FILE__, __LINE__)
#define __syncwarp(...) ::seqops::emulator::syncwarp_at(__FILE__, __LINE__ __VA_OPT__(, ) __VA_ARGS__)
#define __shfl_xor_sync(mask, v, ...) \
  ::seqops::emulator::shuffle(::seqops::emulator::resolve_shfl_xor, "__shfl_xor_sync", __FILE__, __LINE__, mask, v, __VA_ARGS__)
#define __shfl_down_sync(mask, v, ...) \
  ::seqops::emulator::shuffle(::seqops::emulator::resolve_shfl_down, "__shfl_down_sync", __FILE__, __LINE__, mask, v, __VA_ARGS__)
#define __shfl_up_sync(mask, v, ...) \
  ::seqops::emulator::shuffle(::seqops::emulator::resolve_shfl_up, "__shfl_up_sync", __FILE__, __LINE__, mask, v, __VA_ARGS__)
#define __shfl_sync(mask, v, ...) \
  ::seqops::emulator::shuffle(::seqops::emulator::resolve_shfl_idx, "__shfl_sync", __FILE__, __LINE__, mask, v, __VA_ARGS__)
#define __ballot_sync(mask, p) ::seqops::emulator::vote(mask, p, "__ballot_sync", __FILE__, __LINE__)
#define __any_sync(mask, p) (::seqops::emulator::vote(mask, p, "__any_sync", __FILE__, __LINE__) != 0u)
#define __all_sync(mask, p) \
  (::seqops::emulator::vote(mask, p, "__all_sync", __FILE__, __LINE__) == (mask))

namespace seqops::emulator {

inline void syncwarp_at(const char* file, int line, unsigned mask = 0xffffffffu) {
  WarpPost post{resolve_syncwarp, "__syncwarp", mask, nullptr, nullptr, 0, 0, 32, file, line};
  warp_collective(post);
}

}  // namespace seqops::emulator

// ------------------------------------------------------------------------------ atomics
// Fibers switch only at barriers and collectives, so a plain read-modify-write is atomic here.
namespace seqops::emulator {
template <typename T, typename Update>
inline T read_modify_write(T* address, Update update) {
  const T old = *address;
  *address = update(old);
  return old;
}
}  // namespace seqops::emulator

template <typename T>
inline T atomicAdd(T* address, T value) {
  return ::seqops::emulator::read_modify_write(address, [=](T old) { return old + value; });
}
template <typename T>
inline T atomicSub(T* address, T value) {
  return ::seqops::emulator::read_modify_write(address, [=](T old) { return old - value; });
}
template <typename T>
inline T atomicMax(T* address, T value) {
  return ::seqops::emulator::read_modify_write(address, [=](T old) { return old < value ? value : old; });
}
template <typename T>
inline T atomicMin(T* address, T value) {
  return ::seqops::emulator::read_modify_write(address, [=](T old) { return value < old ? value : old; });
}
template <typename T>
inline T atomicExch(T* address, T value) {
  return ::seqops::emulator::read_modify_write(address, [=](T) { return value; });
}
template <typename T>
inline T atomicCAS(T* address, T compare, T value) {
  return ::seqops::emulator::read_modify_write(address, [=](T old) { return old == compare ? value : old; });
}

// The memory model is not emulated (every access is sequentially consistent here).
inline void __threadfence() {}
inline void __threadfence_block() {}

// ------------------------------------------------------------------------------ math
// Host libm results: CUDA's fast intrinsics and its own expf/logf round differently (a few ulp).
inline float __expf(float x) { return ::expf(x); }
inline float __logf(float x) { return ::logf(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float rsqrtf(float x) { return 1.0f / ::sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / ::sqrt(x); }
template <typename T>
inline T __ldg(const T* p) {
  return *p;
}
