// The tables the T5 and ALiBi score policies read, and the final reductions of their
// gradients, built on the host for both devices (device-agnostic ATen calls; the CPU kernels
// and the CUDA host code both call these). Column n = 0 .. num_relative - 1 stands for the
// relative position r = r_min + n.
#pragma once
#include "attention/attention.h"
#include "attention/packed_sequences.h"
#include "attention/relative_position.h"
#include "attention/rotary.h"

namespace seqops {

// T5: the bucket of every r (t5_bucket, attention/relative_position.h), int64 (num_relative,)
// on `device`.
at::Tensor t5_buckets(const AttentionArgs& a, const at::Device& device);

// T5: the step form of the bucket function (relative_position.h), exactly t5_bucket's buckets;
// raises if the table has more than 2 (T5BucketSteps::kMaxSteps + 1) buckets past the exact
// range per direction.
T5BucketSteps t5_bucket_steps(const AttentionArgs& a);

// T5: t5_table[h, bucket(r)] per (head, n), (Hq, num_relative) in `dtype`, contiguous.
at::Tensor t5_relative_table(const at::Tensor& t5_table, const at::Tensor& buckets,
                             at::ScalarType dtype);

// ALiBi: the term is slope_h * distance[n] with distance = -|r|, (num_relative,) in `options`.
at::Tensor alibi_distance(const AttentionArgs& a, const at::TensorOptions& options);

// Rotary (attention/rotary.h): cos and sin of the angles of `positions` (float64, one per row),
// (rows, rotary_dim / 2) each in `options` (computed in float64), and the tables the kernels
// read of them.
struct RotaryCosSin {
  at::Tensor cos, sin;
  template <typename acc_t>
  RotaryTable<acc_t> table(const AttentionArgs& a) const {
    return {cos.data_ptr<acc_t>(), sin.data_ptr<acc_t>(), static_cast<int>(a.rotary_dim / 2),
            a.rotary_interleaved};
  }
};
RotaryCosSin rotary_cos_sin(const AttentionArgs& a, const at::Tensor& positions, const at::TensorOptions& options);
// Queries sit at i + query_offset, keys at j; packed sequences count from each sequence's start.
inline RotaryCosSin rotary_queries(const AttentionArgs& a, const at::TensorOptions& options) {
  return rotary_cos_sin(a, token_positions(a, a.query_offset, a.len_q, options.device()), options);
}
inline RotaryCosSin rotary_keys(const AttentionArgs& a, const at::TensorOptions& options) {
  return rotary_cos_sin(a, token_positions(a, 0, a.len_k, options.device()), options);
}
// The kernels' gradient with respect to the rotated q or k, g (B, H, L, d), turned in place into
// the gradient of the input (the inverse rotation: every pair turned by minus its angle).
void unrotate_(at::Tensor& g, const RotaryCosSin& t, const AttentionArgs& a);

// The gradients, from per_r (Hq, num_relative): dS summed over the batch and the (query, key)
// pairs of each r.
//   t5_table:     per_r summed per bucket, (Hq, num_buckets), in a fixed order: bucket_sum is
//                 the device's (CPU: index_add_; CUDA: a kernel, as CUDA's index_add_ adds with
//                 atomics in any order).
//   alibi_slopes: (per_r * distance).sum over r, (Hq,).
// Both come back in the parameter's dtype.
using BucketSum = at::Tensor (*)(const at::Tensor& per_r, const at::Tensor& buckets,
                                 int64_t num_buckets);
at::Tensor index_add_bucket_sum(const at::Tensor& per_r, const at::Tensor& buckets,
                                int64_t num_buckets);
at::Tensor t5_table_grad(const at::Tensor& per_r, const at::Tensor& buckets,
                         const at::Tensor& t5_table, BucketSum bucket_sum);
at::Tensor alibi_slopes_grad(const at::Tensor& per_r, const at::Tensor& distance,
                             const at::Tensor& alibi_slopes);

}  // namespace seqops
