// The max rule every seqops max-reduction shares with the CPU primitive max_update: take v when
// nothing is held yet (index < 0), when it is larger, or when it is NaN; a held NaN sticks.
// Scanning in order, ties keep the first index.
#pragma once
#include <cstdint>

namespace seqops::cuda {

template <typename acc_t>
__device__ inline void max_update(acc_t& best, int64_t& index, acc_t v, int64_t t) {
  const bool best_is_nan = best != best;
  if (!best_is_nan && (v > best || v != v || index < 0)) {
    best = v;
    index = t;
  }
}

}  // namespace seqops::cuda
