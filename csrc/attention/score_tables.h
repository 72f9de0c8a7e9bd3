// The tables the T5 and ALiBi score policies read, and the final reductions of their
// gradients, built on the host for both devices (device-agnostic ATen calls; the CPU kernels
// and the CUDA host code both call these). Column n = 0 .. num_relative - 1 stands for the
// relative position r = r_min + n.
#pragma once
#include "attention/attention.h"
#include "attention/relative_position.h"

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
