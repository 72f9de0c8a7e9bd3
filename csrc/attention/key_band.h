// Which keys each query may see: the causal limit and the sliding window, resolved once into a
// band of key offsets (check_attention), and the tile ranges it leaves, shared by the CPU and
// CUDA kernels so that tiles entirely outside the band are never visited (cost ~ Lq * width,
// not Lq * Lk).
//
// Query i sees key j iff  i + lo <= j <= i + hi  and 0 <= j < Lk (and the key padding mask).
// With s = Lk - Lq (the queries end the keys' span, as for causal attention):
//   lo = s - window_left, hi = s + window_right, a window of -1 (no limit) or wider than Lq + Lk
//   counting as Lq + Lk (every key in reach); causal caps hi at s.
// Packed sequences (cu_seqlens, attention/packed_sequences.h) add: j lies in i's own sequence,
// the tokens [seq_begin[i], seq_end[i]) (queries and keys share the packing, so s = 0). The
// tile ranges shrink to the sequences of the tile's first and last rows; a tile spanning a
// boundary still masks the pairs across it element by element (contains).
#pragma once
#include <cstdint>

#include "common/host_device.h"

namespace seqops {

struct KeyBand {
  int64_t lo, hi;
  int64_t len_q, len_k;
  // Packed sequences: per token (len_q == len_k of them) its sequence's first token and one past
  // its last, on the kernel's device; null when every row is one sequence. 32-bit (rows < 2^31,
  // checked): two values every visibility test keeps live, in one register each.
  const int32_t* seq_begin = nullptr;
  const int32_t* seq_end = nullptr;

  // i and j must be valid rows.
  SEQOPS_HOST_DEVICE bool contains(int64_t i, int64_t j) const {
    return j >= i + lo && j <= i + hi && (seq_begin == nullptr || (j >= seq_begin[i] && j < seq_end[i]));
  }
  // The keys [key_begin, key_end) that some query of rows i0 .. i0 + rows - 1 sees (i0 < len_q).
  SEQOPS_HOST_DEVICE int64_t key_begin(int64_t i0) const {
    const int64_t x = clamp(i0 + lo, len_k);
    return seq_begin != nullptr && seq_begin[i0] > x ? seq_begin[i0] : x;
  }
  SEQOPS_HOST_DEVICE int64_t key_end(int64_t i0, int64_t rows) const {
    const int64_t x = clamp(i0 + rows + hi, len_k);
    if (seq_end == nullptr) return x;
    const int64_t last = (i0 + rows < len_q ? i0 + rows : len_q) - 1;
    return seq_end[last] < x ? seq_end[last] : x;
  }
  // The queries [query_begin, query_end) that see some key of rows j0 .. j0 + cols - 1 (j0 < len_k).
  SEQOPS_HOST_DEVICE int64_t query_begin(int64_t j0) const {
    const int64_t x = clamp(j0 - hi, len_q);
    return seq_begin != nullptr && seq_begin[j0] > x ? seq_begin[j0] : x;
  }
  SEQOPS_HOST_DEVICE int64_t query_end(int64_t j0, int64_t cols) const {
    const int64_t x = clamp(j0 + cols - lo, len_q);
    if (seq_end == nullptr) return x;
    const int64_t last = (j0 + cols < len_k ? j0 + cols : len_k) - 1;
    return seq_end[last] < x ? seq_end[last] : x;
  }

 private:
  SEQOPS_HOST_DEVICE static int64_t clamp(int64_t x, int64_t n) { return x < 0 ? 0 : (x > n ? n : x); }
};

}  // namespace seqops
