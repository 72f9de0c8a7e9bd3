// 16-byte memory accesses (ld / st .v4.b32: 8 16-bit values, 4 floats or 2 doubles in one
// instruction), and the load of a thread's run of values through them. The address must
// be 16-byte aligned: a GPU faults ("misaligned address") otherwise, and so does the host
// emulator, which moves the same bytes with memcpy and reports the caller's file and line.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>

namespace seqops::cuda {

struct alignas(16) Vec16 {
  uint32_t w[4];
};

__device__ __forceinline__ bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Values of T one 16-byte access moves.
template <typename T>
constexpr int kValuesPer16Bytes = static_cast<int>(sizeof(Vec16) / sizeof(T));

// Whether rows of row_len values of T starting at `data` (contiguous) all start 16-byte aligned,
// so a kernel may read them kValuesPer16Bytes<T> at a time.
template <typename T>
inline bool rows_take_vector_loads(const T* data, int64_t row_len) {
  return row_len % kValuesPer16Bytes<T> == 0 && reinterpret_cast<uintptr_t>(data) % sizeof(Vec16) == 0;
}

#if defined(SEQOPS_EMULATOR)
inline void check_vec16(const void* p, const char* file, int line) {
  if (!aligned16(p)) ::seqops::emulator::fault(file, line, "a 16-byte access at an address that is not 16-byte aligned");
}
inline Vec16 load_vec16(const void* p, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  check_vec16(p, file, line);
  Vec16 v;
  std::memcpy(&v, p, sizeof v);
  return v;
}
inline void store_vec16(void* p, const Vec16& v, const char* file = __builtin_FILE(), int line = __builtin_LINE()) {
  check_vec16(p, file, line);
  std::memcpy(p, &v, sizeof v);
}
#else
__device__ __forceinline__ Vec16 load_vec16(const void* p) { return *static_cast<const Vec16*>(p); }
__device__ __forceinline__ void store_vec16(void* p, const Vec16& v) { *static_cast<Vec16*>(p) = v; }
#endif

// kVec consecutive values of T from p: one 16-byte access when they fill one (p 16-byte aligned),
// else one access each.
template <typename T, int kVec>
__device__ __forceinline__ void load_values(T (&out)[kVec], const T* p) {
  if constexpr (kVec * sizeof(T) == sizeof(Vec16)) {
    const Vec16 v = load_vec16(p);
    std::memcpy(out, &v, sizeof v);
  } else {
#pragma unroll
    for (int e = 0; e < kVec; ++e) out[e] = p[e];
  }
}

}  // namespace seqops::cuda
