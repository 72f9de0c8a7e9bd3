// Relative-position helpers shared by host and device code: the T5 bucket function and the
// counter-based RNG of attention dropout.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define SEQOPS_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define SEQOPS_HOST_DEVICE inline
#endif

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

// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3"): four 32-bit
// random words from a 128-bit counter and a 64-bit key, the same on CPU and GPU.
struct Philox4 {
  uint32_t v[4];
};

SEQOPS_HOST_DEVICE void philox_mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

SEQOPS_HOST_DEVICE Philox4 philox4x32_10(Philox4 c, uint32_t k0, uint32_t k1) {
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    philox_mulhilo(0xD2511F53u, c.v[0], hi0, lo0);
    philox_mulhilo(0xCD9E8D57u, c.v[2], hi1, lo1);
    c = Philox4{{hi1 ^ c.v[1] ^ k0, lo1, hi0 ^ c.v[3] ^ k1, lo0}};
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return c;
}

// Attention dropout: element (bh = b * Hq + h, i, j) is kept iff its uniform draw is below
// 1 - p. One Philox call serves four consecutive keys: counter (j / 4, i, bh, offset),
// key = seed; word j % 4 is the element's draw.
SEQOPS_HOST_DEVICE Philox4 dropout_words(uint64_t seed, uint64_t offset, int64_t bh, int64_t i,
                                         int64_t j4) {
  Philox4 c{{static_cast<uint32_t>(j4), static_cast<uint32_t>(i), static_cast<uint32_t>(bh),
             static_cast<uint32_t>(offset)}};
  return philox4x32_10(c, static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
}

// Keep test of one 32-bit word: its top 24 bits as a uniform in [0, 1), kept when < keep_prob.
SEQOPS_HOST_DEVICE bool dropout_keep(uint32_t word, float keep_prob) {
  return static_cast<float>(word >> 8) * (1.0f / 16777216.0f) < keep_prob;
}

}  // namespace seqops
