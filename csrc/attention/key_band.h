// Which keys each query may see: the causal limit and the sliding window, resolved once into a
// band of key offsets (check_attention), and the tile ranges it leaves, shared by the CPU and
// CUDA kernels so that tiles entirely outside the band are never visited (cost ~ Lq * width,
// not Lq * Lk).
//
// Query i sees key j iff  i + lo <= j <= i + hi  and 0 <= j < Lk (and the key padding mask).
// With s = Lk - Lq (the queries end the keys' span, as for causal attention):
//   lo = s - window_left, hi = s + window_right, a window of -1 (no limit) or wider than Lq + Lk
//   counting as Lq + Lk (every key in reach); causal caps hi at s.
#pragma once
#include <cstdint>

#include "common/host_device.h"

namespace seqops {

struct KeyBand {
  int64_t lo, hi;
  int64_t len_q, len_k;

  SEQOPS_HOST_DEVICE bool contains(int64_t i, int64_t j) const { return j >= i + lo && j <= i + hi; }
  // The keys [key_begin, key_end) that some query of rows i0 .. i0 + rows - 1 sees.
  SEQOPS_HOST_DEVICE int64_t key_begin(int64_t i0) const { return clamp(i0 + lo, len_k); }
  SEQOPS_HOST_DEVICE int64_t key_end(int64_t i0, int64_t rows) const {
    return clamp(i0 + rows + hi, len_k);
  }
  // The queries [query_begin, query_end) that see some key of rows j0 .. j0 + cols - 1.
  SEQOPS_HOST_DEVICE int64_t query_begin(int64_t j0) const { return clamp(j0 - hi, len_q); }
  SEQOPS_HOST_DEVICE int64_t query_end(int64_t j0, int64_t cols) const {
    return clamp(j0 + cols - lo, len_q);
  }

 private:
  SEQOPS_HOST_DEVICE static int64_t clamp(int64_t x, int64_t n) { return x < 0 ? 0 : (x > n ? n : x); }
};

}  // namespace seqops
