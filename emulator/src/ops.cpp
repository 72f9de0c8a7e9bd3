// The emulator library's own namespace, seqops_emu: the schemas of every seqops op are compiled
// into it again (csrc/<family>/schema.cpp with SEQOPS_EMULATOR), their CUDA entry points are
// registered for its CPU key (SEQOPS_CUDA_LIBRARY_IMPL), and these ops steer the emulator.
// Tests reach them as torch.ops.seqops_emu.* (tests/support/emulator.py).
#include <torch/library.h>

#include <map>
#include <stdexcept>
#include <string>

#include "emulator/control.h"

namespace seqops::emulator {
namespace {

const std::map<std::string, cudaDeviceAttr>& attribute_names() {
  static const std::map<std::string, cudaDeviceAttr> names = {
      {"max_threads_per_block", cudaDevAttrMaxThreadsPerBlock},
      {"max_shared_per_block", cudaDevAttrMaxSharedMemoryPerBlock},
      {"max_shared_per_block_optin", cudaDevAttrMaxSharedMemoryPerBlockOptin},
      {"multiprocessor_count", cudaDevAttrMultiProcessorCount},
      {"compute_capability_major", cudaDevAttrComputeCapabilityMajor},
  };
  return names;
}

void set_attribute(const std::string& name, int64_t value) {
  const auto it = attribute_names().find(name);
  if (it == attribute_names().end()) {
    std::string known;
    for (const auto& [n, _] : attribute_names()) known += (known.empty() ? "" : ", ") + n;
    throw std::invalid_argument("seqops emulator: unknown device attribute '" + name +
                                "' (known: " + known + ")");
  }
  set_device_attribute(it->second, static_cast<int>(value));
}

}  // namespace
}  // namespace seqops::emulator

TORCH_LIBRARY(seqops_emu, m) {
  namespace emu = seqops::emulator;
  m.def("set_order(str order, int seed=0) -> ()", [](const std::string& order, int64_t seed) {
    emu::set_order(emu::order_from_name(order), static_cast<uint64_t>(seed));
  });
  m.def("set_device_attribute(str name, int value) -> ()", &emu::set_attribute);
  m.def("reset_device() -> ()", &emu::reset_device);
  m.def("take_launches() -> str[]", &emu::take_launches);
}
