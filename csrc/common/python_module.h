// The Python module of a family's ops: torch requires a C++-defined op with a Python fake kernel
// to name, through Library::set_python_module, the module that calls register_fake for it.
// set_python_module applies to the ops def'd through that library object, so each family's
// TORCH_LIBRARY_FRAGMENT (csrc/<family>/schema.cpp) names its own seqops.ops.<family>. Only the
// Python extension build defines SEQOPS_PYTHON_MODULE: the CMake library has no Python side.
#pragma once
#include <torch/library.h>

#ifdef SEQOPS_PYTHON_MODULE
#define SEQOPS_SET_PYTHON_MODULE(m, family) (m).set_python_module("seqops.ops." family)
#else
#define SEQOPS_SET_PYTHON_MODULE(m, family) ((void)0)
#endif
