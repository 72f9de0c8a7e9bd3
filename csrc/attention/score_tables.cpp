// Host-side tables and gradient reductions of the T5 and ALiBi score policies (score_tables.h).
#include "attention/score_tables.h"

#include "attention/relative_position.h"

namespace seqops {

at::Tensor t5_buckets(const AttentionArgs& a, const at::Device& device) {
  auto buckets = at::empty({a.num_relative()}, at::kLong);
  int64_t* bp = buckets.data_ptr<int64_t>();
  for (int64_t n = 0; n < a.num_relative(); ++n)
    bp[n] = t5_bucket(a.r_min() + n, a.t5_bidirectional, a.t5_num_buckets, a.t5_max_distance);
  return buckets.to(device);
}

T5BucketSteps t5_bucket_steps(const AttentionArgs& a) {
  T5BucketSteps f{};
  f.bidirectional = a.t5_bidirectional;
  f.per_direction = a.t5_bidirectional ? a.t5_num_buckets / 2 : a.t5_num_buckets;
  f.max_exact = f.per_direction / 2;
  const int64_t steps = f.per_direction - f.max_exact - 1;
  TORCH_CHECK(steps <= T5BucketSteps::kMaxSteps, "attention on CUDA takes T5 tables of at most ",
              T5BucketSteps::kMaxSteps + 1, " logarithmic buckets per direction, got t5_table with ",
              a.t5_num_buckets, " buckets (", steps + 1, " logarithmic per direction)");
  f.steps = static_cast<int>(steps);
  // The bucket of distance n = -r: t5_bucket is non-decreasing in n and reaches the last bucket
  // by n = max_distance, so each step is the first n at which it reaches its bucket.
  const auto bucket_of = [&](int64_t n) {
    return t5_bucket(-n, false, f.per_direction, a.t5_max_distance);
  };
  for (int j = 0; j < f.steps; ++j) {
    int64_t lo = f.max_exact, hi = a.t5_max_distance;  // bucket_of(hi) is the last bucket
    while (lo < hi) {
      const int64_t mid = lo + (hi - lo) / 2;
      if (bucket_of(mid) >= f.max_exact + 1 + j) hi = mid;
      else lo = mid + 1;
    }
    f.step_at[j] = lo;
  }
  return f;
}

at::Tensor t5_relative_table(const at::Tensor& t5_table, const at::Tensor& buckets,
                             at::ScalarType dtype) {
  return t5_table.to(dtype).index_select(1, buckets).contiguous();
}

at::Tensor alibi_distance(const AttentionArgs& a, const at::TensorOptions& options) {
  return at::arange(a.r_min(), a.r_min() + a.num_relative(), options.dtype(at::kLong))
      .abs()
      .neg()
      .to(options);
}

RotaryCosSin rotary_cos_sin(const AttentionArgs& a, const at::Tensor& positions, const at::TensorOptions& options) {
  const auto f64 = options.dtype(at::kDouble);
  const int64_t half = a.rotary_dim / 2;
  // theta_p = base^(-2p / rotary_dim); angle = position * theta_p.
  const at::Tensor theta = at::pow(a.rotary_base, at::arange(half, f64) * (-2.0 / a.rotary_dim));
  const at::Tensor angle = positions.unsqueeze(1) * theta.unsqueeze(0);
  return {angle.cos().to(options).contiguous(), angle.sin().to(options).contiguous()};
}

void unrotate_(at::Tensor& g, const RotaryCosSin& t, const AttentionArgs& a) {
  const int64_t half = a.rotary_dim / 2;
  at::Tensor x = g.narrow(3, 0, a.rotary_dim);
  at::Tensor ga, gb;
  if (a.rotary_interleaved) {
    const at::Tensor pairs = x.unflatten(3, {half, 2});
    ga = pairs.select(4, 0);
    gb = pairs.select(4, 1);
  } else {
    ga = x.narrow(3, 0, half);
    gb = x.narrow(3, half, half);
  }
  // In the tables' type (float32 or float64), whatever g's.
  const at::Tensor c = t.cos.to(g.device()), s = t.sin.to(g.device());
  const at::Tensor a32 = ga.to(c.scalar_type()), b32 = gb.to(c.scalar_type());
  const at::Tensor new_a = a32 * c + b32 * s, new_b = b32 * c - a32 * s;
  ga.copy_(new_a);
  gb.copy_(new_b);
}

at::Tensor index_add_bucket_sum(const at::Tensor& per_r, const at::Tensor& buckets,
                                int64_t num_buckets) {
  return at::zeros({per_r.size(0), num_buckets}, per_r.options()).index_add_(1, buckets, per_r);
}

at::Tensor t5_table_grad(const at::Tensor& per_r, const at::Tensor& buckets,
                         const at::Tensor& t5_table, BucketSum bucket_sum) {
  return bucket_sum(per_r, buckets, t5_table.size(1)).to(t5_table.scalar_type());
}

at::Tensor alibi_slopes_grad(const at::Tensor& per_r, const at::Tensor& distance,
                             const at::Tensor& alibi_slopes) {
  return (per_r * distance).sum(1).to(alibi_slopes.scalar_type());
}

}  // namespace seqops
