// The emulated device: an H100-class sm_90 part by default (227 KiB of opt-in shared memory per
// block, 132 SMs). Tests lower the shared-memory limits to make the kernels pick every tile
// candidate, or to provoke the "too much shared memory" errors.
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

#include "emulator/control.h"
#include "emulator/device.h"
#include "emulator/launch.h"

namespace seqops::emulator {
namespace {

constexpr size_t kDefaultDynamicShared = 48 * 1024;

std::map<int, int> defaults() {
  return {{cudaDevAttrMaxThreadsPerBlock, 1024},
          {cudaDevAttrMaxSharedMemoryPerBlock, 48 * 1024},
          {cudaDevAttrWarpSize, 32},
          {cudaDevAttrMultiProcessorCount, 132},
          {cudaDevAttrComputeCapabilityMajor, 9},
          {cudaDevAttrComputeCapabilityMinor, 0},
          {cudaDevAttrMaxSharedMemoryPerBlockOptin, 227 * 1024}};
}

std::mutex g_mutex;
std::map<int, int> g_attributes = defaults();
std::map<const void*, size_t> g_granted;

}  // namespace

int device_attribute(cudaDeviceAttr attribute) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  const auto it = g_attributes.find(attribute);
  if (it == g_attributes.end())
    throw std::invalid_argument("seqops emulator: device attribute " +
                                std::to_string(static_cast<int>(attribute)) + " is not emulated");
  return it->second;
}

void set_device_attribute(cudaDeviceAttr attribute, int value) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  if (g_attributes.find(attribute) == g_attributes.end())
    throw std::invalid_argument("seqops emulator: device attribute " +
                                std::to_string(static_cast<int>(attribute)) + " is not emulated");
  g_attributes[attribute] = value;
}

void reset_device() {
  const std::lock_guard<std::mutex> lock(g_mutex);
  g_attributes = defaults();
  g_granted.clear();
}

void allow_dynamic_shared(const void* kernel, size_t bytes) {
  const int most = device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin);
  if (bytes > static_cast<size_t>(most))
    throw std::runtime_error("seqops emulator: cudaFuncSetAttribute(MaxDynamicSharedMemorySize, " +
                             std::to_string(bytes) + ") exceeds the device's opt-in maximum of " +
                             std::to_string(most) + " bytes: invalid argument");
  const std::lock_guard<std::mutex> lock(g_mutex);
  g_granted[kernel] = bytes;
}

size_t dynamic_shared_limit(const void* kernel) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  const auto it = g_granted.find(kernel);
  return it == g_granted.end() ? kDefaultDynamicShared : it->second;
}

}  // namespace seqops::emulator
