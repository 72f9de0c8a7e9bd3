// Relative-position helpers shared by host and device code: the T5 bucket function, and its
// step form for the device.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/host_device.h"

namespace seqops {

// T5's bucket of relative position r = key - query (Raffel et al.; Mesh-TF / HF bucketing):
// bidirectional tables spend half the buckets on keys after the query; |r| below max_exact gets
// its own bucket, larger distances share log-spaced buckets up to max_distance.
SEQOPS_HOST_DEVICE int64_t t5_bucket(int64_t r, bool bidirectional, int64_t num_buckets,
                                     int64_t max_distance) {
  int64_t n = -r;  // query - key
  int64_t bucket = 0;
  if (bidirectional) {
    num_buckets /= 2;
    if (n < 0) bucket += num_buckets;
    n = n < 0 ? -n : n;
  } else {
    n = n < 0 ? 0 : n;
  }
  const int64_t max_exact = num_buckets / 2;
  if (n < max_exact) return bucket + n;
  const double ratio = std::log(static_cast<double>(n) / max_exact) /
                       std::log(static_cast<double>(max_distance) / max_exact);
  int64_t large = max_exact + static_cast<int64_t>(ratio * (num_buckets - max_exact));
  if (large > num_buckets - 1) large = num_buckets - 1;
  return bucket + large;
}

// t5_bucket with its logarithmic part replaced by the distances where it steps (found on the host
// with t5_bucket itself, t5_bucket_steps in score_tables.h), so the CUDA kernels compute the very
// buckets of the host with integer compares only: no device logarithm whose last-ulp rounding
// could move a step, and small enough to pass by value in a kernel's parameters (no host-to-device
// copy, no sync, nothing a CUDA graph would have to capture).
struct T5BucketSteps {
  static constexpr int kMaxSteps = 255;
  bool bidirectional;
  int64_t per_direction;  // buckets per direction: num_buckets, or half of it if bidirectional
  int64_t max_exact;
  int steps;                   // per_direction - max_exact - 1
  int64_t step_at[kMaxSteps];  // step_at[j]: the first distance of bucket >= max_exact + 1 + j

  SEQOPS_HOST_DEVICE int64_t operator()(int64_t r) const {
    int64_t n = -r, bucket = 0;
    if (bidirectional) {
      if (n < 0) bucket = per_direction;
      n = n < 0 ? -n : n;
    } else {
      n = n < 0 ? 0 : n;
    }
    if (n < max_exact) return bucket + n;
    int64_t large = max_exact;
    for (int j = 0; j < steps; ++j) large += n >= step_at[j];
    return bucket + large;
  }
};

}  // namespace seqops
