// Picks the vector primitives of the best ISA that this build has and the CPU supports.
// ATEN_CPU_CAPABILITY is honoured through at::get_cpu_capability(), as in PyTorch itself.
#include <ATen/Version.h>

#include "common/build_facts.h"
#include "common/cpu/vector_primitives.h"

namespace seqops {
namespace {

enum class Isa { Default, Avx2, Avx512 };

Isa detect_isa() {
  const std::string aten = at::get_cpu_capability();  // what PyTorch itself runs
#ifdef CPU_ISA_AVX512
  if (aten == "AVX512" && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return Isa::Avx512;
#endif
#ifdef CPU_ISA_AVX2
  if ((aten == "AVX512" || aten == "AVX2") && __builtin_cpu_supports("avx2") &&
      __builtin_cpu_supports("fma"))
    return Isa::Avx2;
#endif
  return Isa::Default;
}

const Isa active_isa = detect_isa();

}  // namespace

std::string cpu_isa_name() {
  switch (active_isa) {
    case Isa::Avx512: return "AVX512";
    case Isa::Avx2: return "AVX2";
    default: return "DEFAULT";
  }
}

namespace cpu {

template <typename T>
const VectorPrimitives<T>& vector_primitives() {
  switch (active_isa) {
#ifdef CPU_ISA_AVX512
    case Isa::Avx512: return AVX512::primitives<T>();
#endif
#ifdef CPU_ISA_AVX2
    case Isa::Avx2: return AVX2::primitives<T>();
#endif
    default: return DEFAULT::primitives<T>();
  }
}

template const VectorPrimitives<float>& vector_primitives();
template const VectorPrimitives<double>& vector_primitives();
template const VectorPrimitives<c10::BFloat16>& vector_primitives();

}  // namespace cpu
}  // namespace seqops
