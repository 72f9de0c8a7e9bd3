// A kernel's dynamic shared memory (the bytes given at launch). Under nvcc the one
// `extern __shared__` array; the host emulator cannot express `extern __shared__` as a variable,
// so there it is the running block's buffer.
#pragma once
#include <cuda_runtime.h>

#if defined(SEQOPS_EMULATOR)
namespace seqops::emulator {
unsigned char* dynamic_shared();
}
#endif

namespace seqops::cuda {

__device__ inline unsigned char* dynamic_shared_bytes() {
#if defined(SEQOPS_EMULATOR)
  return ::seqops::emulator::dynamic_shared();
#else
  extern __shared__ __align__(16) unsigned char seqops_dynamic_smem[];
  return seqops_dynamic_smem;
#endif
}

}  // namespace seqops::cuda
