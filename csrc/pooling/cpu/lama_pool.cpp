// lama_pool on CPU. Forward: pass 1 over x (masked context sum and u_ht = q_h . x_t), the
// (B, H, L) scores, pass 2 over x (weighted sum). Backward: the same two passes, with the
// scores recomputed in the accumulate type instead of read back from the saved weights.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <cmath>
#include <limits>
#include <type_traits>

#include "common/cpu/chunked_pipeline.h"
#include "common/activation.h"
#include "common/checks.h"
#include "pooling/entry.h"
#include "common/cpu/vector_primitives.h"

namespace seqops::cpu {
namespace {

// Per-batch-element views of the scratch buffers that live across stages, (H, L) or (D) in
// the accumulate type.
template <typename acc_t>
struct LamaBatch {
  const bool* mask;  // (L) or nullptr
  acc_t* u;          // q_h . x_t
  acc_t* weights;    // softmax_t(ahat) (normalize) or ahat, 0 where masked
  acc_t* context;    // (D) masked mean of x
  bool keep(int64_t t) const { return mask == nullptr || mask[t]; }
};

// The score intermediates of one batch element, used only inside the stage that computes them
// (so they are per call, not per batch: the forward never needs them again).
template <typename acc_t>
struct LamaScores {
  LamaScores(int64_t H, int64_t L) : g(H), act(H * L), norm(L), ahat(H * L) {}
  std::vector<acc_t> g;     // (H) p_h . context
  std::vector<acc_t> act;   // a_ht = act(g_h u_ht)
  std::vector<acc_t> norm;  // (L) |a_:t| over heads
  std::vector<acc_t> ahat;  // a_ht / max(norm_t, eps)
};

template <typename acc_t>
class LamaScratch {
 public:
  // weights: a (B, H, L) accumulate-type buffer to compute the weights in (the forward's output
  // when its dtype is the accumulate type), or undefined for a scratch one.
  LamaScratch(const PoolShape& s, const ChunkPlan& plan, const at::Tensor& like,
              const std::optional<at::Tensor>& mask, const at::Tensor& weights = {})
      : s_(s), plan_(plan), mask_(mask) {
    const auto opt = like.options();
    u_ = at::empty({s.batch, s.heads, s.length}, opt);
    weights_ = weights.defined() ? weights : at::empty({s.batch, s.heads, s.length}, opt);
    context_ = at::empty({s.batch, s.dim}, opt);
    context_partial_ = at::empty({plan.items(), s.dim}, opt);
  }
  LamaBatch<acc_t> batch(int64_t b) const {
    const int64_t hl = s_.heads * s_.length;
    return {mask_ ? mask_->data_ptr<bool>() + b * s_.length : nullptr,
            u_.data_ptr<acc_t>() + b * hl, weights_.data_ptr<acc_t>() + b * hl, context_.data_ptr<acc_t>() + b * s_.dim};
  }
  acc_t* context_partial(int64_t b, int64_t c) const {
    return context_partial_.data_ptr<acc_t>() + (b * plan_.chunks + c) * s_.dim;
  }
  int64_t kept(int64_t b) const {
    const auto bt = batch(b);
    if (!bt.mask) return s_.length;
    int64_t n = 0;
    for (int64_t t = 0; t < s_.length; ++t) n += bt.mask[t];
    return n;
  }

 private:
  PoolShape s_;
  ChunkPlan plan_;
  std::optional<at::Tensor> mask_;
  at::Tensor u_, weights_, context_, context_partial_;
};

// The kept rows of [t0, t1).
template <typename acc_t>
std::vector<int64_t> kept_rows(const LamaBatch<acc_t>& bt, int64_t t0, int64_t t1) {
  std::vector<int64_t> kept;
  kept.reserve(t1 - t0);
  for (int64_t t = t0; t < t1; ++t)
    if (bt.keep(t)) kept.push_back(t);
  return kept;
}

// Pass 1 rows: masked sum of x into the chunk's context partial and u_ht = q_h . x_t for the
// kept rows (0 for the others), in blocks of kept rows; `also(rows, count)` runs on each block
// while its rows are still in cache (the backward's second projection).
template <typename T, typename Also>
void scan_context_and_u(const VectorPrimitives<T>& vp, const LamaScratch<at::opmath_type<T>>& sc,
                        const PoolShape& s, const T* x, const at::opmath_type<T>* q, int64_t b,
                        int64_t c, int64_t t0, int64_t t1, Also also) {
  using acc_t = at::opmath_type<T>;
  const auto bt = sc.batch(b);
  acc_t* csum = sc.context_partial(b, c);
  std::fill(csum, csum + s.dim, acc_t(0));
  for (int64_t h = 0; h < s.heads; ++h) std::fill(bt.u + h * s.length + t0, bt.u + h * s.length + t1, acc_t(0));
  const auto kept = kept_rows(bt, t0, t1);
  const int64_t n = static_cast<int64_t>(kept.size());
  constexpr int64_t kRowBlock = 64;  // 64 rows of D = 768 floats: 192 KiB, well inside L2
  for (int64_t r = 0; r < n; r += kRowBlock) {
    const int64_t count = std::min(kRowBlock, n - r);
    vp.project_rows(x + b * s.length * s.dim, s.dim, kept.data() + r, count, q, s.heads, s.dim, bt.u,
                    s.length, csum);
    also(kept.data() + r, count);
  }
}

// After pass 1: the context c, the score intermediates (g_h = p_h . c, a, |a|, ahat) and the
// weights of one batch element.
template <typename T>
void compute_scores(const VectorPrimitives<T>& vp, const LamaScratch<at::opmath_type<T>>& sc,
                    const PoolShape& s, const at::opmath_type<T>* p, const LamaOptions& o,
                    const ChunkPlan& plan, int64_t b, LamaScores<at::opmath_type<T>>& scores) {
  using acc_t = at::opmath_type<T>;
  const auto bt = sc.batch(b);
  const int64_t H = s.heads, L = s.length;
  std::fill(bt.context, bt.context + s.dim, acc_t(0));
  for (int64_t c = 0; c < plan.chunks; ++c) vp.axpy_acc(bt.context, acc_t(1), sc.context_partial(b, c), s.dim);
  const int64_t kept = sc.kept(b);
  const acc_t inv_count = acc_t(1) / acc_t(kept > 0 ? kept : 1);
  for (int64_t d = 0; d < s.dim; ++d) bt.context[d] *= inv_count;
  auto& g = scores.g;
  for (int64_t h = 0; h < H; ++h) g[h] = vp.dot_acc(p + h * s.dim, bt.context, s.dim);
  // Head-major passes over (H, L) so activations and exponentials run vectorized.
  std::fill(scores.norm.begin(), scores.norm.end(), acc_t(0));
  for (int64_t h = 0; h < H; ++h) {
    acc_t* a = scores.act.data() + h * L;
    for (int64_t t = 0; t < L; ++t) a[t] = g[h] * bt.u[h * L + t];
    vp.activate(a, L, o.act);
    for (int64_t t = 0; t < L; ++t) scores.norm[t] += a[t] * a[t];
  }
  for (int64_t t = 0; t < L; ++t) scores.norm[t] = std::sqrt(scores.norm[t]);
  for (int64_t h = 0; h < H; ++h) {
    for (int64_t t = 0; t < L; ++t) {
      const acc_t ahat = scores.act[h * L + t] / std::max(scores.norm[t], acc_t(o.eps));
      scores.ahat[h * L + t] = ahat;
      bt.weights[h * L + t] = bt.keep(t) ? ahat : acc_t(0);
    }
  }
  if (!o.normalize || kept == 0) return;  // all-masked rows keep zero weights
  constexpr acc_t kNegInf = -std::numeric_limits<acc_t>::infinity();
  for (int64_t h = 0; h < H; ++h) {
    acc_t* w = bt.weights + h * L;
    acc_t top = kNegInf;
    for (int64_t t = 0; t < L; ++t)
      if (bt.keep(t)) top = std::max(top, w[t]);
    for (int64_t t = 0; t < L; ++t) w[t] = bt.keep(t) ? w[t] - top : kNegInf;
    const acc_t inv_denom = acc_t(1) / vp.exp_sum(w, L, acc_t(0));
    for (int64_t t = 0; t < L; ++t) w[t] *= inv_denom;
  }
}

// acc_h = sum over the chunk's kept rows t of coef_ht * x_t; acc is (H, D), coef (H, L). With
// `next` (the next batch element's x, when one thread runs every stage of the elements in turn),
// the sweep also prefetches the same rows of `next`: the DRAM reads of the next pass 1 then
// overlap this compute-bound pass, and pass 1 finds its rows in L2 / L3.
template <typename T>
void weighted_rows(const VectorPrimitives<T>& vp, const LamaBatch<at::opmath_type<T>>& bt,
                   const PoolShape& s, const T* x, int64_t b, int64_t t0, int64_t t1,
                   const at::opmath_type<T>* coef, at::opmath_type<T>* acc, const T* next = nullptr) {
  using acc_t = at::opmath_type<T>;
  std::fill(acc, acc + s.heads * s.dim, acc_t(0));
  const auto kept = kept_rows(bt, t0, t1);
  // Row blocks small enough to stay in L2 while every register tile of acc sweeps them.
  constexpr int64_t kRowBlock = 32;
  const int64_t n = static_cast<int64_t>(kept.size());
  for (int64_t r = 0; r < n; r += kRowBlock)
    vp.weighted_row_sum(acc, s.heads, coef, s.length, x + b * s.length * s.dim, s.dim,
                        kept.data() + r, std::min(kRowBlock, n - r), s.dim, next);
}

template <typename T>
void forward_kernel(const PoolShape& s, const LamaOptions& o, const at::Tensor& x,
                    const at::Tensor& p, const at::Tensor& q,
                    const std::optional<at::Tensor>& mask, at::Tensor& pooled,
                    at::Tensor& weights_out) {
  using acc_t = at::opmath_type<T>;
  const auto& vp = vector_primitives<T>();
  const ChunkPlan plan = plan_chunks(s.batch, s.length);
  // In the accumulate type, the weights and (with one chunk) the pooled rows are computed in
  // the outputs themselves: no scratch copies.
  constexpr bool kAccOut = std::is_same_v<T, acc_t>;
  const bool direct = kAccOut && plan.chunks == 1;
  const LamaScratch<acc_t> sc(s, plan, p, mask, kAccOut ? weights_out : at::Tensor());
  auto pooled_partial = direct ? pooled : at::empty({plan.items(), s.heads, s.dim}, p.options());
  const T* xp = x.data_ptr<T>();
  acc_t* partial = pooled_partial.data_ptr<acc_t>();
  const int64_t HD = s.heads * s.dim;

  auto pass1 = [&](int64_t b, int64_t c, int64_t t0, int64_t t1) {
    scan_context_and_u(vp, sc, s, xp, q.data_ptr<acc_t>(), b, c, t0, t1, [](const int64_t*, int64_t) {});
  };
  auto weigh = [&](int64_t b, int64_t, int64_t, int64_t) {
    LamaScores<acc_t> scores(s.heads, s.length);
    compute_scores(vp, sc, s, p.data_ptr<acc_t>(), o, plan, b, scores);
    if constexpr (!kAccOut)
      vp.store(weights_out.data_ptr<T>() + b * s.heads * s.length, sc.batch(b).weights, s.heads * s.length);
  };
  auto pass2 = [&](int64_t b, int64_t c, int64_t t0, int64_t t1) {
    const T* next = plan.chunks == 1 && b + 1 < s.batch ? xp + (b + 1) * s.length * s.dim : nullptr;
    weighted_rows(vp, sc.batch(b), s, xp, b, t0, t1, sc.batch(b).weights,
                  partial + (b * plan.chunks + c) * HD, next);
  };
  auto finish = [&](int64_t b, int64_t, int64_t, int64_t) {
    std::vector<acc_t> total(HD, acc_t(0));
    for (int64_t c = 0; c < plan.chunks; ++c)
      vp.axpy_acc(total.data(), acc_t(1), partial + (b * plan.chunks + c) * HD, HD);
    vp.store(pooled.data_ptr<T>() + b * HD, total.data(), HD);
  };
  if (direct) run_pipeline(plan, {{true, pass1}, {false, weigh}, {true, pass2}});
  else run_pipeline(plan, {{true, pass1}, {false, weigh}, {true, pass2}, {false, finish}});
}

template <typename T>
void backward_kernel(const PoolShape& s, const LamaOptions& o, const at::Tensor& dpooled,
                     const at::Tensor& dweights, const at::Tensor& x, const at::Tensor& p,
                     const at::Tensor& q, const std::optional<at::Tensor>& mask, at::Tensor& dx,
                     const ChunkPlan& plan, at::Tensor& dp_batch, at::Tensor& dq_partial) {
  using acc_t = at::opmath_type<T>;
  const auto& vp = vector_primitives<T>();
  const LamaScratch<acc_t> sc(s, plan, p, mask);
  const int64_t H = s.heads, L = s.length, D = s.dim;
  // dW_ht = dpooled_h . x_t + dweights_ht, then reused in place for du_ht.
  auto grad_scores = at::empty({s.batch, H, L}, p.options());
  auto dcontext = at::empty({s.batch, D}, p.options());
  const T* xp = x.data_ptr<T>();
  const acc_t* dy = dpooled.data_ptr<acc_t>();
  const acc_t* qp = q.data_ptr<acc_t>();
  const acc_t* pp = p.data_ptr<acc_t>();

  auto pass1 = [&](int64_t b, int64_t c, int64_t t0, int64_t t1) {
    acc_t* dw = grad_scores.data_ptr<acc_t>() + b * H * L;
    const acc_t* dwt = dweights.data_ptr<acc_t>() + b * H * L;
    for (int64_t h = 0; h < H; ++h) std::fill(dw + h * L + t0, dw + h * L + t1, acc_t(0));
    scan_context_and_u(vp, sc, s, xp, qp, b, c, t0, t1, [&](const int64_t* rows, int64_t n) {
      vp.project_rows(xp + b * L * D, D, rows, n, dy + b * H * D, H, D, dw, L, nullptr);
      for (int64_t h = 0; h < H; ++h)
        for (int64_t r = 0; r < n; ++r) dw[h * L + rows[r]] += dwt[h * L + rows[r]];
    });
  };
  auto chain = [&](int64_t b, int64_t, int64_t, int64_t) {
    LamaScores<acc_t> scores(H, L);
    compute_scores(vp, sc, s, pp, o, plan, b, scores);
    const auto& g = scores.g;
    std::vector<acc_t> dg(H, acc_t(0));
    const auto bt = sc.batch(b);
    acc_t* grad = grad_scores.data_ptr<acc_t>() + b * H * L;  // dW -> dS -> du, in place
    if (o.normalize) {  // softmax backward per head over the kept rows
      for (int64_t h = 0; h < H; ++h) {
        acc_t r = 0;
        for (int64_t t = 0; t < L; ++t) r += bt.weights[h * L + t] * grad[h * L + t];
        for (int64_t t = 0; t < L; ++t) grad[h * L + t] = bt.weights[h * L + t] * (grad[h * L + t] - r);
      }
    }
    for (int64_t t = 0; t < L; ++t) {
      if (!bt.keep(t)) {
        for (int64_t h = 0; h < H; ++h) grad[h * L + t] = 0;
        continue;
      }
      // ahat = a / max(|a|, eps) over heads.
      acc_t ahat_dot_grad = 0;
      for (int64_t h = 0; h < H; ++h) ahat_dot_grad += scores.ahat[h * L + t] * grad[h * L + t];
      const acc_t norm = scores.norm[t];
      const bool clamped = norm <= acc_t(o.eps);
      const acc_t inv = acc_t(1) / (clamped ? acc_t(o.eps) : norm);
      for (int64_t h = 0; h < H; ++h) {
        const acc_t z = g[h] * bt.u[h * L + t];
        const acc_t a = scores.act[h * L + t];
        const acc_t da = clamped ? grad[h * L + t] * inv
                                 : (grad[h * L + t] - scores.ahat[h * L + t] * ahat_dot_grad) * inv;
        const acc_t dz = da * activation_grad(o.act, z, a);
        dg[h] += dz * bt.u[h * L + t];
        grad[h * L + t] = dz * g[h];  // du_ht
      }
    }
    // g_h = p_h . c  ->  dp_h = dg_h c,  dc = sum_h dg_h p_h, spread over the kept rows.
    acc_t* dpb = dp_batch.data_ptr<acc_t>() + b * H * D;
    acc_t* dc = dcontext.data_ptr<acc_t>() + b * D;
    std::fill(dpb, dpb + H * D, acc_t(0));
    std::fill(dc, dc + D, acc_t(0));
    const int64_t kept = sc.kept(b);
    const acc_t inv_count = acc_t(1) / acc_t(kept > 0 ? kept : 1);
    for (int64_t h = 0; h < H; ++h) {
      vp.axpy_acc(dpb + h * D, dg[h], bt.context, D);
      vp.axpy_acc(dc, dg[h] * inv_count, pp + h * D, D);
    }
  };
  auto pass2 = [&](int64_t b, int64_t c, int64_t t0, int64_t t1) {
    const auto bt = sc.batch(b);
    const acc_t* du = grad_scores.data_ptr<acc_t>() + b * H * L;
    weighted_rows(vp, bt, s, xp, b, t0, t1, du, dq_partial.data_ptr<acc_t>() + (b * plan.chunks + c) * H * D);
    std::vector<acc_t> row_grad(D);
    for (int64_t t = t0; t < t1; ++t) {
      T* dx_row = dx.data_ptr<T>() + (b * L + t) * D;
      if (!bt.keep(t)) {
        std::fill(dx_row, dx_row + D, T(0));
        continue;
      }
      std::copy(dcontext.data_ptr<acc_t>() + b * D, dcontext.data_ptr<acc_t>() + (b + 1) * D, row_grad.begin());
      for (int64_t h = 0; h < H; ++h) {
        vp.axpy_acc(row_grad.data(), bt.weights[h * L + t], dy + (b * H + h) * D, D);
        vp.axpy_acc(row_grad.data(), du[h * L + t], qp + h * D, D);
      }
      vp.store(dx_row, row_grad.data(), D);
    }
  };
  run_pipeline(plan, {{true, pass1}, {false, chain}, {true, pass2}});
}

struct CpuLamaPool {
  static std::tuple<at::Tensor, at::Tensor> lama_pool(const LamaOperands& in) {
    const PoolShape& s = in.s;
    auto pooled = at::empty({s.batch, s.heads, s.dim}, in.x.options());
    auto weights = at::empty({s.batch, s.heads, s.length}, in.x.options());
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, in.x.scalar_type(), "lama_pool_cpu", [&] {
      forward_kernel<scalar_t>(s, in.o, in.x, in.p, in.q, in.mask, pooled, weights);
    });
    return {pooled, weights};
  }

  static std::tuple<at::Tensor, at::Tensor, at::Tensor> lama_pool_backward(
      const LamaOperands& in, const at::Tensor& dy, const at::Tensor& dwt) {
    const PoolShape& s = in.s;
    const ChunkPlan plan = plan_chunks(s.batch, s.length);
    auto dx = at::empty_like(in.x);
    auto dp_batch = at::empty({s.batch, s.heads, s.dim}, in.p.options());
    auto dq_partial = at::empty({plan.items(), s.heads, s.dim}, in.p.options());
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, in.x.scalar_type(), "lama_pool_backward_cpu", [&] {
      backward_kernel<scalar_t>(s, in.o, dy, dwt, in.x, in.p, in.q, in.mask, dx, plan, dp_batch,
                                dq_partial);
    });
    return {dx, dp_batch.sum(0), dq_partial.sum(0)};
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(seqops, CPU, m) {
  m.impl("lama_pool", &seqops::lama_pool_entry<CpuLamaPool>);
  m.impl("lama_pool_backward", &seqops::lama_pool_backward_entry<CpuLamaPool>);
}

}  // namespace seqops::cpu
