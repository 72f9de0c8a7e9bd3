// Current stream and device guard for the .cu files, through c10/cuda (which a .cu file must not
// include, see cuda_context.h). Compiled only in CUDA builds (setup.py).
#include "common/cuda/cuda_context.h"

#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

namespace seqops::cuda {

cudaStream_t current_stream() { return c10::cuda::getCurrentCUDAStream().stream(); }

DeviceGuard::DeviceGuard(const c10::Device& device) {
  TORCH_CHECK(device.is_cuda(), "seqops: DeviceGuard needs a CUDA device, got ", device);
  if (!device.has_index()) return;  // "cuda" without an index: the current device already
  previous_ = static_cast<int>(c10::cuda::ExchangeDevice(device.index()));
}

DeviceGuard::~DeviceGuard() {
  if (previous_ >= 0)
    C10_CUDA_CHECK_WARN(c10::cuda::MaybeSetDevice(static_cast<c10::DeviceIndex>(previous_)));
}

}  // namespace seqops::cuda
