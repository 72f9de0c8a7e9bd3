// seq_pool on CPU: one read of x in the forward (online softmax, all heads per row while the
// row is in L1), one read of x plus one write of dx in the backward.
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <cmath>
#include <limits>

#include "common/cpu/chunked_pipeline.h"
#include "common/checks.h"
#include "pooling/entry.h"
#include "common/cpu/vector_primitives.h"

namespace seqops::cpu {
namespace {

// Pointers of one batch element's inputs.
template <typename T>
struct SeqPoolBatch {
  using acc_t = at::opmath_type<T>;
  const T* x;          // (L, D)
  const acc_t* w;      // (H, D)
  const acc_t* bias;   // (H) or nullptr
  const bool* mask;    // (L) or nullptr

  SeqPoolBatch(int64_t b, const PoolShape& s, const at::Tensor& x_, const at::Tensor& w_,
               const std::optional<at::Tensor>& bias_, const std::optional<at::Tensor>& mask_) {
    const bool per_batch = w_.dim() == 3;
    x = x_.data_ptr<T>() + b * s.length * s.dim;
    w = w_.data_ptr<acc_t>() + (per_batch ? b * s.heads * s.dim : 0);
    bias = bias_ ? bias_->data_ptr<acc_t>() + (per_batch ? b * s.heads : 0) : nullptr;
    mask = mask_ ? mask_->data_ptr<bool>() + b * s.length : nullptr;
  }
  bool keep(int64_t t) const { return mask == nullptr || mask[t]; }
  acc_t logit(const VectorPrimitives<T>& vp, const T* row, int64_t h, int64_t dim) const {
    return vp.dot(row, w + h * dim, dim) + (bias ? bias[h] : acc_t(0));
  }
};

template <typename T>
void forward_kernel(const PoolShape& s, const at::Tensor& x, const at::Tensor& w,
                    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& mask,
                    at::Tensor& out, at::Tensor& lse) {
  using acc_t = at::opmath_type<T>;
  const auto& vp = vector_primitives<T>();
  const int64_t H = s.heads, D = s.dim;
  const ChunkPlan plan = plan_chunks(s.batch, s.length);
  // Online-softmax state per (batch, chunk, head): running max, running sum, weighted rows.
  auto run_max = at::empty({plan.items(), H}, lse.options());
  auto run_sum = at::empty({plan.items(), H}, lse.options());
  auto run_acc = at::empty({plan.items(), H, D}, lse.options());
  acc_t* m_all = run_max.data_ptr<acc_t>();
  acc_t* l_all = run_sum.data_ptr<acc_t>();
  acc_t* a_all = run_acc.data_ptr<acc_t>();
  constexpr acc_t kNegInf = -std::numeric_limits<acc_t>::infinity();

  auto scan_rows = [&](int64_t b, int64_t c, int64_t t0, int64_t t1) {
    const SeqPoolBatch<T> in(b, s, x, w, bias, mask);
    const int64_t item = b * plan.chunks + c;
    acc_t* m = m_all + item * H;
    acc_t* l = l_all + item * H;
    acc_t* acc = a_all + item * H * D;
    std::fill(m, m + H, kNegInf);
    std::fill(l, l + H, acc_t(0));
    std::fill(acc, acc + H * D, acc_t(0));
    for (int64_t t = t0; t < t1; ++t) {
      if (!in.keep(t)) continue;
      const T* row = in.x + t * D;
      for (int64_t h = 0; h < H; ++h) {
        const acc_t logit = in.logit(vp, row, h, D);
        if (logit > m[h]) {  // new maximum: rescale what was accumulated so far
          const acc_t scale = std::exp(m[h] - logit);
          vp.scale_axpy(acc + h * D, scale, acc_t(1), row, D);
          l[h] = l[h] * scale + acc_t(1);
          m[h] = logit;
        } else {
          const acc_t p = std::exp(logit - m[h]);
          vp.axpy(acc + h * D, p, row, D);
          l[h] += p;
        }
      }
    }
  };

  // Log-sum-exp merge of the chunks of one batch element.
  auto merge = [&](int64_t b, int64_t, int64_t, int64_t) {
    std::vector<acc_t> total(D);
    for (int64_t h = 0; h < H; ++h) {
      acc_t top = kNegInf;
      for (int64_t c = 0; c < plan.chunks; ++c) top = std::max(top, m_all[(b * plan.chunks + c) * H + h]);
      T* o = out.data_ptr<T>() + (b * H + h) * D;
      acc_t* lse_bh = lse.data_ptr<acc_t>() + b * H + h;
      if (top == kNegInf) {  // every row masked: zeros, and lse = -inf
        std::fill(o, o + D, T(0));
        *lse_bh = kNegInf;
        continue;
      }
      std::fill(total.begin(), total.end(), acc_t(0));
      acc_t denom = 0;
      for (int64_t c = 0; c < plan.chunks; ++c) {
        const int64_t item = b * plan.chunks + c;
        const acc_t weight = std::exp(m_all[item * H + h] - top);  // 0 for empty chunks
        denom += l_all[item * H + h] * weight;
        vp.axpy_acc(total.data(), weight, a_all + (item * H + h) * D, D);
      }
      vp.store_scaled(o, acc_t(1) / denom, total.data(), D);
      *lse_bh = top + std::log(denom);
    }
  };
  run_pipeline(plan, {{true, scan_rows}, {false, merge}});
}

template <typename T>
void backward_kernel(const PoolShape& s, const at::Tensor& grad, const at::Tensor& grad_dot_out,
                     const at::Tensor& x, const at::Tensor& w,
                     const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& mask,
                     const at::Tensor& lse, at::Tensor& dx, at::Tensor& dw_partial,
                     const ChunkPlan& plan) {
  using acc_t = at::opmath_type<T>;
  const auto& vp = vector_primitives<T>();
  const int64_t H = s.heads, D = s.dim;
  auto rows = [&](int64_t b, int64_t c, int64_t t0, int64_t t1) {
    const SeqPoolBatch<T> in(b, s, x, w, bias, mask);
    const acc_t* dy = grad.data_ptr<acc_t>() + b * H * D;
    const acc_t* dy_dot_y = grad_dot_out.data_ptr<acc_t>() + b * H;
    const acc_t* lse_b = lse.data_ptr<acc_t>() + b * H;
    acc_t* dw = dw_partial.data_ptr<acc_t>() + (b * plan.chunks + c) * H * D;
    std::fill(dw, dw + H * D, acc_t(0));
    std::vector<acc_t> row_grad(D);
    for (int64_t t = t0; t < t1; ++t) {
      T* dx_row = dx.data_ptr<T>() + (b * s.length + t) * D;
      if (!in.keep(t)) {
        std::fill(dx_row, dx_row + D, T(0));
        continue;
      }
      const T* row = in.x + t * D;
      std::fill(row_grad.begin(), row_grad.end(), acc_t(0));
      for (int64_t h = 0; h < H; ++h) {
        const acc_t p = std::exp(in.logit(vp, row, h, D) - lse_b[h]);
        // d logit = p * (dy.x_t - dy.y), since sum_t p_t x_t = y.
        const acc_t dlogit = p * (vp.dot(row, dy + h * D, D) - dy_dot_y[h]);
        vp.axpy_acc(row_grad.data(), p, dy + h * D, D);
        vp.axpy_acc(row_grad.data(), dlogit, in.w + h * D, D);
        vp.axpy(dw + h * D, dlogit, row, D);
      }
      vp.store(dx_row, row_grad.data(), D);
    }
  };
  run_pipeline(plan, {{true, rows}});
}

struct CpuSeqPool {
  static std::tuple<at::Tensor, at::Tensor> seq_pool(const SeqPoolOperands& in) {
    const PoolShape& s = in.s;
    auto out = at::empty({s.batch, s.heads, s.dim}, in.x.options());
    auto lse = at::empty({s.batch, s.heads}, in.x.options().dtype(in.acc));
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, in.x.scalar_type(), "seq_pool_cpu", [&] {
      forward_kernel<scalar_t>(s, in.x, in.weight, in.bias, in.mask, out, lse);
    });
    return {out, lse};
  }

  static std::tuple<at::Tensor, at::Tensor> seq_pool_backward(const SeqPoolOperands& in,
                                                              const at::Tensor& dy,
                                                              const at::Tensor& out,
                                                              const at::Tensor& lse) {
    const PoolShape& s = in.s;
    const auto dy_dot_y = (dy * out.to(in.acc)).sum(-1).contiguous();  // (B, H)
    const ChunkPlan plan = plan_chunks(s.batch, s.length);
    auto dx = at::empty_like(in.x);
    auto dw_partial = at::empty({plan.items(), s.heads, s.dim}, dy.options());
    AT_DISPATCH_FLOATING_TYPES_AND(at::kBFloat16, in.x.scalar_type(), "seq_pool_backward_cpu", [&] {
      backward_kernel<scalar_t>(s, dy, dy_dot_y, in.x, in.weight, in.bias, in.mask, lse, dx,
                                dw_partial, plan);
    });
    // Fixed-order reductions of the per-chunk partials keep the weight gradient deterministic.
    return {dx, dw_partial.view({s.batch, plan.chunks, s.heads, s.dim}).sum(1)};
  }
};

}  // namespace

TORCH_LIBRARY_IMPL(seqops, CPU, m) {
  m.impl("seq_pool", &seqops::seq_pool_entry<CpuSeqPool>);
  m.impl("seq_pool_backward", &seqops::seq_pool_backward_entry<CpuSeqPool>);
}

}  // namespace seqops::cpu
