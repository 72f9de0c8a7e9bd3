// Warp-level tensor-core instructions, as the PTX ISA defines them (sm_80 and newer):
//   mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.{f16,bf16}.f32   D = A B + C
//   ldmatrix.sync.aligned.m8n8.{x1,x2,x4}{,.trans}.shared.b16         8x8 b16 tiles from shared
// Under nvcc each is one inline-PTX instruction; under the host emulator (SEQOPS_EMULATOR) a warp
// collective with the same fragment layouts (emulator/src/tensor_core.cpp), so kernels written
// on these run, and are checked, on the host. Every one must be called by all 32 lanes of a warp.
//
// Fragment layouts (PTX ISA, "Matrix Fragments for mma.m16n8k16"); lane = 4 g + t:
//   A, 16x16 row-major, a[i] = the pair (row g + 8 (i & 1), columns 2t + 8 (i >> 1) + {0, 1})
//   B, 16x8 (k x n),    b[i] = the pair (rows k = 2t + 8 i + {0, 1}, column n = g)
//   C, D, 16x8 fp32,    c[i] = (row g + 8 (i >> 1), column 2t + (i & 1))
// A pair packs two 16-bit values in one 32-bit register, the lower column (or k) in the low half.
// ldmatrix: lanes 8j .. 8j + 7 give the 16-byte-aligned shared-memory addresses of the 8 rows of
// tile j (8 consecutive b16 values each); lane 4g + t receives r[j] = (tile j's row g, columns
// 2t + {0, 1}), or with .trans (rows 2t + {0, 1}, column g). So ldmatrix x4 of the four 8x8
// quarters of a row-major 16x16 tile (top-left, bottom-left, top-right, bottom-right) is A's
// fragment, and x2.trans of the two 8-row halves of a row-major (k x n) 16x8 tile is B's.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#if defined(SEQOPS_EMULATOR)
#include "emulator/tensor_core.h"
#endif

namespace seqops::cuda {

enum class MmaInput { kF16, kBF16 };

// Two 16-bit values (bit patterns) in one fragment register, `lo` in the low half.
__device__ __forceinline__ uint32_t pack_b16(uint16_t lo, uint16_t hi) {
  return static_cast<uint32_t>(lo) | (static_cast<uint32_t>(hi) << 16);
}

// Where this lane's fragment elements sit in their tile (the layouts above): register i of A
// holds (a_row, a_col + {0, 1}), register i of B holds (rows b_k + {0, 1}, column b_n), element i
// of C / D is (c_row, c_col).
struct Fragment {
  __device__ static int a_row(int lane, int i) { return lane / 4 + 8 * (i & 1); }
  __device__ static int a_col(int lane, int i) { return 2 * (lane % 4) + 8 * (i >> 1); }
  __device__ static int b_k(int lane, int i) { return 2 * (lane % 4) + 8 * i; }
  __device__ static int b_n(int lane) { return lane / 4; }
  __device__ static int c_row(int lane, int i) { return lane / 4 + 8 * (i >> 1); }
  __device__ static int c_col(int lane, int i) { return 2 * (lane % 4) + (i & 1); }
};

// d = a b + d for one m16n8k16 tile, fp32 accumulation.
template <MmaInput kIn>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4],
                                             const uint32_t (&b)[2]) {
#if defined(SEQOPS_EMULATOR)
  ::seqops::emulator::mma_m16n8k16(kIn == MmaInput::kBF16, d, a, b, __FILE__, __LINE__);
#else
#define SEQOPS_MMA(type)                                                                         \
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32." type "." type                            \
               ".f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"          \
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])                                  \
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]))
  if constexpr (kIn == MmaInput::kBF16) SEQOPS_MMA("bf16");
  else SEQOPS_MMA("f16");
#undef SEQOPS_MMA
#endif
}

// kTiles (1, 2 or 4) 8x8 b16 tiles from shared memory; `row` is this lane's row address (read
// from lanes 0 .. 8 kTiles - 1 only).
template <int kTiles, bool kTrans>
__device__ __forceinline__ void ldmatrix(uint32_t (&r)[kTiles], const void* row) {
  static_assert(kTiles == 1 || kTiles == 2 || kTiles == 4, "ldmatrix loads 1, 2 or 4 tiles");
#if defined(SEQOPS_EMULATOR)
  ::seqops::emulator::ldmatrix(kTiles, kTrans, r, row, __FILE__, __LINE__);
#else
  const auto address = static_cast<uint32_t>(__cvta_generic_to_shared(row));
#define SEQOPS_LDMATRIX(shape, ...) \
  asm volatile("ldmatrix.sync.aligned.m8n8." shape ".shared.b16 " __VA_ARGS__)
  if constexpr (kTiles == 1 && kTrans)
    SEQOPS_LDMATRIX("x1.trans", "{%0}, [%1];\n" : "=r"(r[0]) : "r"(address));
  else if constexpr (kTiles == 1)
    SEQOPS_LDMATRIX("x1", "{%0}, [%1];\n" : "=r"(r[0]) : "r"(address));
  else if constexpr (kTiles == 2 && kTrans)
    SEQOPS_LDMATRIX("x2.trans", "{%0, %1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(address));
  else if constexpr (kTiles == 2)
    SEQOPS_LDMATRIX("x2", "{%0, %1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(address));
  else if constexpr (kTrans)
    SEQOPS_LDMATRIX("x4.trans", "{%0, %1, %2, %3}, [%4];\n"
                    : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
  else
    SEQOPS_LDMATRIX("x4", "{%0, %1, %2, %3}, [%4];\n"
                    : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(address));
#undef SEQOPS_LDMATRIX
#endif
}

}  // namespace seqops::cuda
