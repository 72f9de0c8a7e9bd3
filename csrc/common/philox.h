// The counter-based RNG of dropout, shared by host and device code: Philox-4x32-10 (Salmon et
// al., "Parallel random numbers: as easy as 1, 2, 3"), four 32-bit random words from a 128-bit
// counter and a 64-bit key, the same on CPU and GPU.
#pragma once
#include <cmath>
#include <cstdint>

#include "common/host_device.h"

namespace seqops {

struct Philox4 {
  uint32_t v[4];
};

// The ten rounds over N counters at once, w[word][lane]. Word is uint32_t for the plain
// generator (N = 1); a CPU kernel passes uint64_t lanes holding 32-bit values and a vector's
// worth of them, so that the loop over lanes vectorizes (x86 has no 32-bit vector multiply-high,
// but it has 64-bit lane multiplies).
template <typename Word, int N>
SEQOPS_HOST_DEVICE void philox4x32_10_lanes(Word (&w)[4][N], uint32_t k0, uint32_t k1) {
  constexpr uint64_t kLow = 0xFFFFFFFFu;
  for (int round = 0; round < 10; ++round) {
    for (int l = 0; l < N; ++l) {
      const uint64_t p0 = 0xD2511F53ull * (static_cast<uint64_t>(w[0][l]) & kLow);
      const uint64_t p1 = 0xCD9E8D57ull * (static_cast<uint64_t>(w[2][l]) & kLow);
      const Word w0 = static_cast<Word>(((p1 >> 32) ^ w[1][l] ^ k0) & kLow);
      const Word w2 = static_cast<Word>(((p0 >> 32) ^ w[3][l] ^ k1) & kLow);
      w[1][l] = static_cast<Word>(p1 & kLow);
      w[3][l] = static_cast<Word>(p0 & kLow);
      w[0][l] = w0;
      w[2][l] = w2;
    }
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
}

SEQOPS_HOST_DEVICE Philox4 philox4x32_10(Philox4 c, uint32_t k0, uint32_t k1) {
  uint32_t w[4][1] = {{c.v[0]}, {c.v[1]}, {c.v[2]}, {c.v[3]}};
  philox4x32_10_lanes(w, k0, k1);
  return Philox4{{w[0][0], w[1][0], w[2][0], w[3][0]}};
}

// Attention dropout: element (bh = b * Hq + h, i, j) is kept iff its uniform draw is below
// 1 - p. One Philox call serves four consecutive keys: counter (j / 4, i, bh, offset),
// key = seed; word j % 4 is the element's draw. Each word is 32 bits, so the positions must
// fit: B * Hq <= 2^32, Lq <= 2^32, Lk <= 2^34 (check_attention refuses larger calls). The offset
// is random per call (with the 64-bit seed, 96 random bits), not a step count that could wrap.
SEQOPS_HOST_DEVICE Philox4 attention_dropout_counter(uint64_t offset, int64_t bh, int64_t i,
                                                     int64_t j4) {
  return Philox4{{static_cast<uint32_t>(j4), static_cast<uint32_t>(i), static_cast<uint32_t>(bh),
                  static_cast<uint32_t>(offset)}};
}

SEQOPS_HOST_DEVICE Philox4 attention_dropout_words(uint64_t seed, uint64_t offset, int64_t bh,
                                                   int64_t i, int64_t j4) {
  return philox4x32_10(attention_dropout_counter(offset, bh, i, j4), static_cast<uint32_t>(seed),
                       static_cast<uint32_t>(seed >> 32));
}

// Elementwise dropout (seqops::dropout): element e of the contiguous tensor is word e % 4 of the
// call with counter ((e / 4) mod 2^32, (e / 4) / 2^32, 0, offset), key = seed; kept when its
// draw is below 1 - p.
SEQOPS_HOST_DEVICE Philox4 element_dropout_counter(uint64_t offset, int64_t e4) {
  const uint64_t c = static_cast<uint64_t>(e4);
  return Philox4{{static_cast<uint32_t>(c), static_cast<uint32_t>(c >> 32), 0u,
                  static_cast<uint32_t>(offset)}};
}

// Keep test of one 32-bit word: its top 24 bits u as a uniform u / 2^24 in [0, 1), kept when
// < keep_prob. Both sides are exact in float (24-bit u, a power-of-two scale), so the test is
// u < ceil(keep_prob * 2^24) in integers: keep_threshold once per call, then integer compares
// (which CPU loops vectorize; a float compare per word kept them scalar).
SEQOPS_HOST_DEVICE uint32_t keep_threshold(float keep_prob) {
  return static_cast<uint32_t>(std::ceil(keep_prob * 16777216.0f));
}

SEQOPS_HOST_DEVICE bool dropout_kept(uint32_t word, uint32_t threshold) { return (word >> 8) < threshold; }

SEQOPS_HOST_DEVICE bool dropout_keep(uint32_t word, float keep_prob) {
  return dropout_kept(word, keep_threshold(keep_prob));
}

}  // namespace seqops
