// Where seqops registers: the schema fragments, the CUDA entry points, and the Python module of
// each family's fakes.
//
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

// A family's schema fragment. The host emulator's library (emulator/) compiles the same schemas
// into its own namespace seqops_emu, where its CPU-key registrations of the CUDA entry points live.
#if defined(SEQOPS_EMULATOR)
#define SEQOPS_LIBRARY_FRAGMENT(m) TORCH_LIBRARY_FRAGMENT(seqops_emu, m)
#else
#define SEQOPS_LIBRARY_FRAGMENT(m) TORCH_LIBRARY_FRAGMENT(seqops, m)
#endif

// Where a .cu file registers its entry points: the CUDA key of seqops, or, in the host
// emulator's library, the CPU key of its own namespace seqops_emu (tensors live on the CPU there).
#if defined(SEQOPS_EMULATOR)
#define SEQOPS_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(seqops_emu, CPU, m)
#else
#define SEQOPS_CUDA_LIBRARY_IMPL(m) TORCH_LIBRARY_IMPL(seqops, CUDA, m)
#endif
