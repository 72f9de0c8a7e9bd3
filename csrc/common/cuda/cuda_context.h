// The CUDA context our kernels need (current stream, device guard, launch check), behind an
// interface that needs no c10/cuda header: the .cu files include only this, ATen and
// cuda_runtime.h, so CI can compile them with nvcc against the CPU wheel (design.md §6). The
// definitions live in cuda_context.cpp, which is compiled only in CUDA builds, and in
// emulator/src/context.cpp for the host emulator (which builds the same .cu files with g++).
#pragma once
#include <c10/core/Device.h>
#include <c10/util/Exception.h>
#include <cuda_runtime.h>

namespace seqops::cuda {

// PyTorch's current stream on the current device (set it first with DeviceGuard).
cudaStream_t current_stream();

// Makes `device` the current CUDA device for the guard's lifetime and restores the previous
// one afterwards (the same calls c10::cuda::CUDAGuard makes).
class DeviceGuard {
 public:
  explicit DeviceGuard(const c10::Device& device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;  // -1: nothing to restore
};

// Raises if the last kernel launch failed (bad configuration, no kernel image for this GPU...).
inline void check_launch(const char* kernel) {
  const cudaError_t err = cudaGetLastError();
  TORCH_CHECK(err == cudaSuccess, "seqops: CUDA kernel ", kernel, " failed: ",
              cudaGetErrorName(err), ": ", cudaGetErrorString(err));
}

}  // namespace seqops::cuda
