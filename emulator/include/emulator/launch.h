// What csrc/common/cuda/launch.cuh calls under the host emulator: run a grid, the dynamic
// shared-memory opt-in, device attributes. Implemented in emulator/src/scheduler.cpp.
#pragma once
#include <cstddef>

#include "cuda_runtime.h"

namespace seqops::emulator {

// Runs body() once per CUDA thread of every block of the grid (each thread a fiber) and raises
// std::runtime_error naming the kernel on a launch error or a fault the emulator detects.
void run_grid(const char* name, const void* kernel, dim3 grid, dim3 block, size_t shared_bytes,
              void (*thunk)(void*), void* body);

template <typename Body>
void launch(const char* name, const void* kernel, dim3 grid, dim3 block, size_t shared_bytes,
            Body&& body) {
  run_grid(name, kernel, grid, block, shared_bytes,
           [](void* b) { (*static_cast<std::remove_reference_t<Body>*>(b))(); }, &body);
}

void allow_dynamic_shared(const void* kernel, size_t bytes);
int device_attribute(cudaDeviceAttr attribute);

}  // namespace seqops::emulator
