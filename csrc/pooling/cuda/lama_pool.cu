// lama_pool on CUDA. The math is csrc/pooling/cpu/lama_pool.cpp's; the passes over x are the shared
// row kernels (common/cuda/row_ops.h), the (B, H, L) score math has its own small kernels
// (lama_pool_kernels.cuh).
//
// Forward, three reads of x: the masked mean c (weighted_rows) and g_h = p_h . c; pass 1,
// row_dots gives u_ht = q_h . x_t for the kept rows; the scores (lama_scores_kernel, then
// masked_softmax_kernel when normalizing); pass 2, pooled = weights x (weighted_rows).
// Backward, three reads of x and one write of dx: c and g again; pass 1, row_dots with
// [q; dy] recomputes u and dy_h . x_t; the chain rule through the softmax
// (softmax_backward_kernel) and the head normalization and activation (lama_chain_kernel); then
// dx (combine_rows) and, in pass 2, dq = du x; dp = dg c from the context.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "common/cuda/launch.cuh"
#include "common/library.h"
#include "common/cuda/cuda_context.h"
#include "common/cuda/row_ops.h"
#include "common/checks.h"
#include "common/tensor_data.h"
#include "pooling/cuda/lama_pool_kernels.cuh"
#include "pooling/entry.h"

namespace seqops::cuda {
namespace {

int64_t point_blocks(int64_t n) { return std::min<int64_t>(ceil_div(n, kLamaPointThreads), 65536); }

// Kept rows per batch element (int64 (B)) and 1 / max(kept, 1) in the accumulate type.
std::pair<at::Tensor, at::Tensor> kept_counts(const PoolShape& s, const at::Tensor& x,
                                              const std::optional<at::Tensor>& mask,
                                              at::ScalarType acc) {
  auto kept = mask ? mask->sum(1, /*keepdim=*/false, at::kLong)
                   : at::full({s.batch}, s.length, x.options().dtype(at::kLong));
  auto inv_count = kept.clamp_min(1).to(acc).reciprocal();
  return {kept, inv_count};
}

// The masked mean c of x (B, D) and g_h = p_h . c (B, H), as the CPU kernel and the reference
// compute them. (Summing p_h . x_t over the rows instead would save this read of x and is the same
// number for finite p, but NaN where p holds an infinity and the p_h . x_t differ in sign.)
std::pair<at::Tensor, at::Tensor> context_dots(const at::Tensor& x, const at::Tensor& p,
                                               const std::optional<at::Tensor>& mask,
                                               const at::Tensor& inv_count) {
  const int64_t B = x.size(0), L = x.size(1);
  const auto coef = inv_count.view({B, 1, 1}).expand({B, 1, L}).contiguous();
  auto context = weighted_rows(coef, x, mask).squeeze(1);  // (B, D)
  auto g = at::matmul(context, p.t()).contiguous();
  return {context, g};
}

// Scores of every (b, h, t) from u (B, H, L) and g (B, H): returns (ahat, weights).
std::pair<at::Tensor, at::Tensor> lama_scores(const PoolShape& s, const LamaOptions& o,
                                              const at::Tensor& u, const at::Tensor& g,
                                              const std::optional<at::Tensor>& mask,
                                              const at::Tensor& kept) {
  const int64_t B = s.batch, H = s.heads, L = s.length;
  auto ahat = at::empty({B, H, L}, u.options());
  auto weights = at::empty({B, H, L}, u.options());
  const bool* m = data_or_null<bool>(mask);
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "lama_scores", [&] {
    launch_kernel("lama_scores_kernel", lama_scores_kernel<scalar_t>,
                  point_blocks(B * L), kLamaPointThreads, 0,
                  u.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), m, ahat.data_ptr<scalar_t>(),
                  weights.data_ptr<scalar_t>(), B, H, L, o.act, static_cast<scalar_t>(o.eps));
    if (o.normalize)
      launch_kernel("masked_softmax_kernel", masked_softmax_kernel<scalar_t>,
                    B * H, kLamaRowThreads, 0,
                    weights.data_ptr<scalar_t>(), m, kept.data_ptr<int64_t>(), H, L);
  });
  return {ahat, weights};
}

struct CudaLamaPool {
static std::tuple<at::Tensor, at::Tensor> lama_pool(const LamaOperands& in) {
  const PoolShape& s = in.s;
  const at::Tensor& x = in.x;
  const DeviceGuard guard(x.device());
  const int64_t B = s.batch, H = s.heads;
  if (B == 0)
    return {at::empty({0, H, s.dim}, x.options()), at::empty({0, H, s.length}, x.options())};

  const auto [kept, inv_count] = kept_counts(s, x, in.mask, in.acc);
  const auto g = context_dots(x, in.p, in.mask, inv_count).second;
  const auto u = row_dots(x, in.q, in.mask);  // (B, H, L)
  const auto [ahat, weights] = lama_scores(s, in.o, u, g, in.mask, kept);
  const auto pooled = weighted_rows(weights, x, in.mask);  // (B, H, D)
  return {pooled.to(x.scalar_type()), weights.to(x.scalar_type())};
}

static std::tuple<at::Tensor, at::Tensor, at::Tensor> lama_pool_backward(
    const LamaOperands& in, const at::Tensor& dy, const at::Tensor& dwt) {
  const PoolShape& s = in.s;
  const LamaOptions& o = in.o;
  const at::Tensor &x = in.x, &xc = in.x, &pc = in.p, &qc = in.q;
  const auto& m = in.mask;
  const auto acc = in.acc;
  const DeviceGuard guard(x.device());
  const int64_t B = s.batch, H = s.heads, L = s.length, D = s.dim;
  if (B == 0)
    return {at::empty({0, L, D}, x.options()), at::zeros({H, D}, pc.options()),
            at::zeros({H, D}, qc.options())};

  // The context, then pass 1: [u; dy_h . x_t] for the kept rows, then the forward scores again.
  const auto [kept, inv_count] = kept_counts(s, x, m, acc);
  const auto [context, g] = context_dots(xc, pc, m, inv_count);
  const auto q_b = qc.unsqueeze(0).expand({B, H, D});
  const auto dots = row_dots(xc, at::cat({q_b, dy}, 1), m);
  const auto u = dots.narrow(1, 0, H).contiguous();
  const auto [ahat, weights] = lama_scores(s, o, u, g, m, kept);

  // dW_ht = dpooled_h . x_t + dweights_ht on kept rows (0 on masked ones), then dS, then du.
  auto grad = dots.narrow(1, H, H) + dwt;
  if (m) grad = grad.masked_fill(m->logical_not().unsqueeze(1), 0);
  grad = grad.contiguous();
  auto dg_terms = at::empty({B, H, L}, grad.options());
  const bool* mp = data_or_null<bool>(m);
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "lama_pool_backward_cuda", [&] {
    if (o.normalize)
      launch_kernel("softmax_backward_kernel", softmax_backward_kernel<scalar_t>,
                    B * H, kLamaRowThreads, 0,
                    grad.data_ptr<scalar_t>(), weights.data_ptr<scalar_t>(), L);
    launch_kernel("lama_chain_kernel", lama_chain_kernel<scalar_t>,
                  point_blocks(B * L), kLamaPointThreads, 0,
                  grad.data_ptr<scalar_t>(), dg_terms.data_ptr<scalar_t>(),
                  u.data_ptr<scalar_t>(), ahat.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), mp,
                  B, H, L, o.act, static_cast<scalar_t>(o.eps));
  });
  const auto& du = grad;

  // g_h = p_h . c with c = (sum of kept x_t) / count: dp_h = dg_h c (from c itself, as the
  // reference does: a sum of dg_h x_t / count would round each term, and the terms can cancel),
  // dc = sum_h dg_h p_h, and dc reaches every kept row as dc / count.
  const auto dg = dg_terms.sum(-1);                                  // (B, H)
  const auto dp = at::matmul(dg.t(), context);                       // (H, D), summed over batch
  const auto dg_scaled = dg * inv_count.unsqueeze(1);                // (B, H): dg_h / count
  const auto dcontext = (dg_scaled.unsqueeze(-1) * pc.unsqueeze(0)).sum(1);  // (B, D)
  // dx_t = dc / count + sum_h weights_ht dy_h + du_ht q_h on kept rows.
  auto dx = combine_rows(at::cat({weights, du}, 1), at::cat({dy, q_b}, 1), dcontext, m,
                         x.scalar_type());
  // Pass 2: dq = sum_t du_ht x_t over the kept rows, summed over batch.
  const auto dq = weighted_rows(du, xc, m).sum(0);  // (H, D)
  return {dx, dp, dq};
}
};

}  // namespace

SEQOPS_CUDA_LIBRARY_IMPL(m) {
  m.impl("lama_pool", &lama_pool_entry<CudaLamaPool>);
  m.impl("lama_pool_backward", &lama_pool_backward_entry<CudaLamaPool>);
}

}  // namespace seqops::cuda
