// The CUDA context of csrc/common/cuda/cuda_context.h for the emulator: tensors live on the CPU,
// there is one emulated device and no stream.
#include "common/cuda/cuda_context.h"

namespace seqops::cuda {

cudaStream_t current_stream() { return nullptr; }

DeviceGuard::DeviceGuard(const c10::Device&) {}

DeviceGuard::~DeviceGuard() = default;

}  // namespace seqops::cuda
