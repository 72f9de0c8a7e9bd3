// How a test steers the emulator: the thread order within each block, the emulated device's
// attributes, and what ran. Implemented in emulator/src/scheduler.cpp and device.cpp; the
// library exposes them as torch.ops.seqops_emu.* (emulator/src/ops.cpp).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "cuda_runtime.h"

namespace seqops::emulator {

// The order in which the scheduler runs a block's ready threads in each round between two
// synchronization points: 0, 1, ..., n-1; the reverse; or a fresh seeded shuffle every round. A
// kernel whose result depends on the order has a race (a missing barrier or __syncwarp).
enum class Order { Forward, Reverse, Random };
void set_order(Order order, uint64_t seed);
Order order_from_name(const std::string& name);  // "forward", "reverse", "random"

// The emulated device (defaults: an H100-class sm_90 part, see device.cpp).
void set_device_attribute(cudaDeviceAttr attribute, int value);
void reset_device();

// Kernel names launched since the last take_launches(), in launch order (cleared by the call).
std::vector<std::string> take_launches();

}  // namespace seqops::emulator
