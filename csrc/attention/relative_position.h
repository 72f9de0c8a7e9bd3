// Relative-position helpers shared by host and device code: the T5 bucket function.
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

}  // namespace seqops
