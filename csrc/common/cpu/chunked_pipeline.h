// Work plan for ops that reduce over the sequence: the rows of each batch element are split
// into chunks only when there are too few batch elements to keep every thread busy (the
// Flash-Decoding split). A pipeline is a list of stages, each run per (batch, chunk) or per
// batch; with one chunk per batch element all stages of one element run back to back on one
// thread, so its rows are still in cache when a later stage reads them again.
#pragma once
#include <ATen/Parallel.h>

#include <algorithm>
#include <functional>
#include <vector>

namespace seqops::cpu {

struct ChunkPlan {
  int64_t batch, length, chunks;
  int64_t begin(int64_t c) const { return c * length / chunks; }
  int64_t end(int64_t c) const { return (c + 1) * length / chunks; }
  int64_t items() const { return batch * chunks; }
};

inline ChunkPlan plan_chunks(int64_t batch, int64_t length, int64_t min_rows = 64) {
  const int64_t threads = at::get_num_threads();
  int64_t chunks = 1;
  if (batch > 0 && batch < 2 * threads) {
    const int64_t want = (4 * threads + batch - 1) / batch;
    chunks = std::max<int64_t>(1, std::min(want, length / min_rows));
  }
  return ChunkPlan{batch, length, chunks};
}

struct Stage {
  bool per_chunk;  // true: fn(b, c, t_begin, t_end); false: fn(b, 0, 0, length)
  std::function<void(int64_t b, int64_t c, int64_t t0, int64_t t1)> fn;
};

inline void run_pipeline(const ChunkPlan& plan, const std::vector<Stage>& stages) {
  if (plan.chunks == 1) {
    at::parallel_for(0, plan.batch, 1, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b)
        for (const auto& s : stages) s.fn(b, 0, 0, plan.length);
    });
    return;
  }
  for (const auto& s : stages) {
    if (s.per_chunk) {
      at::parallel_for(0, plan.items(), 1, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t b = i / plan.chunks, c = i % plan.chunks;
          s.fn(b, c, plan.begin(c), plan.end(c));
        }
      });
    } else {
      at::parallel_for(0, plan.batch, 1, [&](int64_t b0, int64_t b1) {
        for (int64_t b = b0; b < b1; ++b) s.fn(b, 0, 0, plan.length);
      });
    }
  }
}

}  // namespace seqops::cpu
