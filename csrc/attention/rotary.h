// Rotary position embedding (RoFormer) inside the attention kernels: q and k are rotated as their
// tiles are loaded (no rotated copy of either exists), so the logit of (i, j) is
//   scale * rot(q_i, i + query_offset) . rot(k_j, j)
// which depends on the positions only through j - (i + query_offset). rot(x, m) turns each pair
// (x_a, x_b) of the first rotary_dim features by the angle m * base^(-2p / rotary_dim), p the
// pair's index: pairs (2p, 2p + 1) when interleaved (RoFormer, GPT-J), (p, p + rotary_dim / 2)
// otherwise (GPT-NeoX, LLaMA); the features past rotary_dim are left as they are.
//   x_a' = x_a cos - x_b sin,   x_b' = x_a sin + x_b cos.
// The angles' cosines and sines come in tables of (rows, rotary_dim / 2), one row per position,
// built in float64 and stored in the compute type (rotary_cos_sin, score_tables.h). The CUDA
// loaders rotate element by element (rotated below); the CPU kernel rotates whole rows with the
// vector primitive rotate_pairs. The backward recomputes the
// rotated tiles the same way; the gradients it accumulates are those of the rotated q and k, and
// unrotate_ turns them back (the rotation is orthogonal: its inverse is the angle's negative).
#pragma once
#include <cstdint>

#include "common/host_device.h"

namespace seqops {

// One side's table (queries or keys) as the kernels read it; half == 0 means no rotation.
template <typename acc_t>
struct RotaryTable {
  const acc_t* cos = nullptr;  // (rows, half)
  const acc_t* sin = nullptr;
  int half = 0;                // rotary_dim / 2
  bool interleaved = false;

  SEQOPS_HOST_DEVICE bool on() const { return half > 0; }

  // Feature c of the row at table row `row`, rotated; x(c') reads the unrotated row's feature c'
  // (as acc_t). Each feature is computed on its own (its pair partner read again), so a loader
  // can rotate element by element as it stores a tile.
  template <typename Read>
  SEQOPS_HOST_DEVICE acc_t rotated(Read&& x, int64_t row, int c) const {
    if (c >= 2 * half) return x(c);
    const bool lead = interleaved ? c % 2 == 0 : c < half;  // x_a of its pair, or x_b
    const int p = interleaved ? c / 2 : (lead ? c : c - half);
    const acc_t cs = cos[row * half + p], sn = sin[row * half + p];
    const acc_t a = x(interleaved ? 2 * p : p), b = x(interleaved ? 2 * p + 1 : p + half);
    return lead ? a * cs - b * sn : a * sn + b * cs;
  }
};

}  // namespace seqops
