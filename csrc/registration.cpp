// The one TORCH_LIBRARY of seqops: it opens the namespace and holds the build-facts op. Each op
// family defines its schemas in its own TORCH_LIBRARY_FRAGMENT (csrc/<family>/schema.cpp) and
// registers its kernels per device (csrc/<family>/cpu/*.cpp, csrc/<family>/cuda/*.cu); fake
// kernels, autograd and autocast come from seqops/ops/<family>.py.
#include <torch/library.h>

#include "common/build_facts.h"

#ifdef SEQOPS_PYTHON_MODULE
#include <Python.h>
// A plain extension module with no methods: importing seqops._C loads this library, which
// runs the static registrations of every family.
extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
#endif

TORCH_LIBRARY(seqops, m) {
  // Build facts for `seqops info` (not an op on tensors: seqops.ops.OP_NAMES leaves it out).
  m.def("cpu_isa() -> str", [] { return seqops::cpu_isa_name(); });
}
