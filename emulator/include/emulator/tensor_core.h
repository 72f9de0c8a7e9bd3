// The host semantics of the tensor-core instructions csrc/common/cuda/tensor_core.cuh wraps
// (mma.sync m16n8k16 with f16 / bf16 inputs and fp32 accumulators; ldmatrix m8n8 b16), as warp
// collectives on the PTX ISA's fragment layouts: emulator/src/tensor_core.cpp.
#pragma once
#include <cstdint>

namespace seqops::emulator {

// d = a b + d over the warp's fragments (bf16 inputs if `bf16`, else f16).
void mma_m16n8k16(bool bf16, float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                  const char* file, int line);
// `tiles` 8x8 b16 tiles from shared memory into r[0 .. tiles - 1]; `row` is this lane's row address.
void ldmatrix(int tiles, bool trans, uint32_t* r, const void* row, const char* file, int line);

}  // namespace seqops::emulator
