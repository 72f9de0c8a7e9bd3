// The emulated device inside the emulator: attribute values and per-kernel shared-memory limits
// (emulator/src/device.cpp). Tests change them through emulator/control.h.
#pragma once
#include <cstddef>

#include "cuda_runtime.h"

namespace seqops::emulator {

int device_attribute(cudaDeviceAttr attribute);
// Dynamic shared memory `kernel` may launch with: the 48 KiB default, or what
// allow_dynamic_shared granted (which may not exceed the device's opt-in maximum).
size_t dynamic_shared_limit(const void* kernel);

}  // namespace seqops::emulator
