// What the emulator's C++ test programs (shim_test.cpp, tensor_core_test.cpp) share: PASS / FAIL
// lines, launching a kernel that must fail, and running a table of cases. A program runs
// `program [case]`; with no argument every case but those listed as run-alone. Exit status 0 only
// if every check passed. tests/emu/test_shim.py reads each program's table and runs its cases.
#pragma once
#include <cuda_runtime.h>

#include <cstdio>
#include <map>
#include <set>
#include <stdexcept>
#include <string>

#include "emulator/control.h"
#include "emulator/launch.h"

namespace emu = seqops::emulator;

namespace case_runner {

inline int failures = 0;

inline void expect(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "PASS" : "FAIL", what.c_str());
  if (!ok) ++failures;
}

// The message the launch of `body` fails with ("" if it does not fail).
template <typename Body>
std::string launch_error(const char* name, dim3 grid, dim3 block, size_t smem, Body body) {
  try {
    emu::launch(name, nullptr, grid, block, smem, body);
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

inline void expect_fault(const std::string& error, const std::string& needle, const std::string& what) {
  const bool ok = error.find(needle) != std::string::npos;
  expect(ok, what + (ok ? "" : " (got: '" + error + "')"));
}

using Cases = std::map<std::string, void (*)()>;

inline int run_cases(int argc, char** argv, const Cases& cases, const std::set<std::string>& run_alone = {}) {
  if (argc > 1) {
    const auto it = cases.find(argv[1]);
    if (it == cases.end()) {
      std::printf("unknown case %s\n", argv[1]);
      return 2;
    }
    it->second();
  } else {
    for (const auto& [name, run] : cases) {
      if (run_alone.count(name)) continue;
      emu::set_order(emu::Order::Forward, 0);
      run();
    }
  }
  return failures == 0 ? 0 : 1;
}

}  // namespace case_runner
