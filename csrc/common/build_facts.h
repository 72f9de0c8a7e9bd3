// Facts about this build that `seqops info` reports.
#pragma once
#include <string>

namespace seqops {
// The CPU vector ISA whose kernels run in this process ("AVX512", "AVX2" or "DEFAULT").
std::string cpu_isa_name();
}  // namespace seqops
