// lama_pool on CUDA. The math is csrc/pooling/cpu/lama_pool.cpp's; the passes over x are the shared
// row kernels (row_kernels.cuh), the (B, H, L) score math has its own small kernels.
//
// Forward, two reads of x: pass 1, row_dots gives u_ht = q_h . x_t and v_ht = p_h . x_t for the
// kept rows, so g_h = p_h . c = sum_t v_ht / count without a separate context pass; the scores
// (lama_scores_kernel, then masked_softmax_kernel when normalizing); pass 2, pooled = weights x
// (weighted_rows). Backward, two reads of x and one write of dx: pass 1, row_dots with
// [q; p; dy] recomputes u, g and dy_h . x_t; the chain rule through the softmax
// (softmax_backward_kernel) and the head normalization and activation (lama_chain_kernel); then
// dx (combine_rows) and, in pass 2, dq = du x and dp = dg c = (dg / count) sum_t x_t (one
// weighted_rows call).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "common/cuda/block_reduce.cuh"
#include "common/cuda/launch.cuh"
#include "common/cuda/cuda_context.h"
#include "common/cuda/row_kernels.cuh"
#include "common/activation.h"
#include "common/checks.h"
#include "common/tensor_data.h"
#include "pooling/entry.h"

namespace seqops::cuda {
namespace {

constexpr int kPointThreads = 256;  // one thread per (b, t) position
constexpr int kRowThreads = 256;    // one block per (b, h) row of length L

__device__ inline bool keep_row(const bool* mask, int64_t bt) { return mask == nullptr || mask[bt]; }

// Per position (b, t): a_h = act(g_h u_ht), ahat_h = a_h / max(||a||_heads, eps) (every
// position, as on CPU), weights = ahat on kept positions and 0 on masked ones.
template <typename acc_t>
__global__ void __launch_bounds__(kPointThreads)
    lama_scores_kernel(const acc_t* __restrict__ u, const acc_t* __restrict__ g,
                       const bool* __restrict__ mask, acc_t* __restrict__ ahat,
                       acc_t* __restrict__ weights, int64_t B, int64_t H, int64_t L,
                       Activation act, acc_t eps) {
  const int64_t n = B * L;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / L, t = i % L;
    const int64_t base = b * H * L + t;
    acc_t sumsq = 0;
    for (int64_t h = 0; h < H; ++h) {
      const acc_t a = activate(act, g[b * H + h] * u[base + h * L]);
      ahat[base + h * L] = a;
      sumsq += a * a;
    }
    const acc_t norm = ::sqrt(sumsq);
    const acc_t inv_norm = acc_t(1) / (norm < eps ? eps : norm);  // std::max(norm, eps)
    const bool keep = keep_row(mask, i);
    for (int64_t h = 0; h < H; ++h) {
      const acc_t a = ahat[base + h * L] * inv_norm;
      ahat[base + h * L] = a;
      weights[base + h * L] = keep ? a : acc_t(0);
    }
  }
}

// In place, per (b, h) row: softmax over the kept positions, 0 on masked ones. Rows of batch
// elements with nothing kept are left as they are (all zeros).
template <typename acc_t>
__global__ void __launch_bounds__(kRowThreads)
    masked_softmax_kernel(acc_t* __restrict__ weights, const bool* __restrict__ mask,
                          const int64_t* __restrict__ kept, int64_t H, int64_t L) {
  __shared__ acc_t scratch[2 * kRowThreads / kWarp];
  const int64_t bh = blockIdx.x, b = bh / H;
  if (kept[b] == 0) return;
  acc_t* row = weights + bh * L;
  const bool* mb = mask ? mask + b * L : nullptr;
  OnlineSoftmax<acc_t> state;
  for (int64_t t = threadIdx.x; t < L; t += kRowThreads)
    if (mb == nullptr || mb[t]) state.add(row[t]);
  const OnlineSoftmax<acc_t> total = block_online_softmax<kRowThreads>(state, scratch);
  for (int64_t t = threadIdx.x; t < L; t += kRowThreads)
    row[t] = (mb == nullptr || mb[t]) ? ::exp(row[t] - total.max) / total.sum : acc_t(0);
}

// In place, per (b, h) row: the softmax backward, grad = w * (grad - sum_t w_t grad_t).
template <typename acc_t>
__global__ void __launch_bounds__(kRowThreads)
    softmax_backward_kernel(acc_t* __restrict__ grad, const acc_t* __restrict__ weights,
                            int64_t L) {
  __shared__ acc_t scratch[kRowThreads / kWarp];
  const int64_t bh = blockIdx.x;
  acc_t* gr = grad + bh * L;
  const acc_t* w = weights + bh * L;
  acc_t part = 0;
  for (int64_t t = threadIdx.x; t < L; t += kRowThreads) part += w[t] * gr[t];
  const acc_t r = block_sum<kRowThreads>(part, scratch);
  for (int64_t t = threadIdx.x; t < L; t += kRowThreads) gr[t] = w[t] * (gr[t] - r);
}

// Per position (b, t), through ahat = a / max(||a||, eps) and a = act(z), z = g u: turns the
// gradient w.r.t. ahat (in `grad`) into du_ht = dz g_h in place and writes dz u_ht into dg_terms
// (summed over t later: dg_h). Masked positions get 0 in both.
template <typename acc_t>
__global__ void __launch_bounds__(kPointThreads)
    lama_chain_kernel(acc_t* __restrict__ grad, acc_t* __restrict__ dg_terms,
                      const acc_t* __restrict__ u, const acc_t* __restrict__ ahat,
                      const acc_t* __restrict__ g, const bool* __restrict__ mask, int64_t B,
                      int64_t H, int64_t L, Activation act, acc_t eps) {
  const int64_t n = B * L;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = i / L, t = i % L;
    const int64_t base = b * H * L + t;
    const acc_t* gb = g + b * H;
    if (!keep_row(mask, i)) {
      for (int64_t h = 0; h < H; ++h) grad[base + h * L] = dg_terms[base + h * L] = acc_t(0);
      continue;
    }
    // Recover |a| from the unnormalized activations.
    acc_t sumsq = 0, ahat_dot_grad = 0;
    for (int64_t h = 0; h < H; ++h) {
      const acc_t a = activate(act, gb[h] * u[base + h * L]);
      sumsq += a * a;
      ahat_dot_grad += ahat[base + h * L] * grad[base + h * L];
    }
    const acc_t norm = ::sqrt(sumsq);
    const bool clamped = norm <= eps;
    const acc_t inv = acc_t(1) / (clamped ? eps : norm);
    for (int64_t h = 0; h < H; ++h) {
      const int64_t idx = base + h * L;
      const acc_t z = gb[h] * u[idx];
      const acc_t a = activate(act, z);
      const acc_t da = clamped ? grad[idx] * inv : (grad[idx] - ahat[idx] * ahat_dot_grad) * inv;
      const acc_t dz = da * activation_grad(act, z, a);
      dg_terms[idx] = dz * u[idx];
      grad[idx] = dz * gb[h];  // du_ht
    }
  }
}

int64_t point_blocks(int64_t n) { return std::min<int64_t>(ceil_div(n, kPointThreads), 65536); }

// Kept rows per batch element (int64 (B)) and 1 / max(kept, 1) in the accumulate type.
std::pair<at::Tensor, at::Tensor> kept_counts(const PoolShape& s, const at::Tensor& x,
                                              const std::optional<at::Tensor>& mask,
                                              at::ScalarType acc) {
  auto kept = mask ? mask->sum(1, /*keepdim=*/false, at::kLong)
                   : at::full({s.batch}, s.length, x.options().dtype(at::kLong));
  auto inv_count = kept.clamp_min(1).to(acc).reciprocal();
  return {kept, inv_count};
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
  const cudaStream_t stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES(u.scalar_type(), "lama_scores", [&] {
    lama_scores_kernel<scalar_t>
        <<<grid_1d(point_blocks(B * L), "lama_scores_kernel"), kPointThreads, 0, stream>>>(
            u.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), m, ahat.data_ptr<scalar_t>(),
            weights.data_ptr<scalar_t>(), B, H, L, o.act, static_cast<scalar_t>(o.eps));
    check_launch("lama_scores_kernel");
    if (o.normalize) {
      masked_softmax_kernel<scalar_t>
          <<<grid_1d(B * H, "masked_softmax_kernel"), kRowThreads, 0, stream>>>(
              weights.data_ptr<scalar_t>(), m, kept.data_ptr<int64_t>(), H, L);
      check_launch("masked_softmax_kernel");
    }
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
  const auto dots = row_dots(x, at::cat({in.q, in.p}, 0), in.mask);  // (B, 2H, L): [u; p_h . x_t]
  const auto u = dots.narrow(1, 0, H).contiguous();
  const auto g = (dots.narrow(1, H, H).sum(-1) * inv_count.unsqueeze(1)).contiguous();  // p_h . c
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

  // Pass 1: [u; p_h . x_t; dy_h . x_t] for the kept rows, then the forward scores again.
  const auto [kept, inv_count] = kept_counts(s, x, m, acc);
  const auto q_b = qc.unsqueeze(0).expand({B, H, D});
  const auto dots = row_dots(xc, at::cat({q_b, pc.unsqueeze(0).expand({B, H, D}), dy}, 1), m);
  const auto u = dots.narrow(1, 0, H).contiguous();
  const auto g = (dots.narrow(1, H, H).sum(-1) * inv_count.unsqueeze(1)).contiguous();
  const auto [ahat, weights] = lama_scores(s, o, u, g, m, kept);

  // dW_ht = dpooled_h . x_t + dweights_ht on kept rows (0 on masked ones), then dS, then du.
  auto grad = dots.narrow(1, 2 * H, H) + dwt;
  if (m) grad = grad.masked_fill(m->logical_not().unsqueeze(1), 0);
  grad = grad.contiguous();
  auto dg_terms = at::empty({B, H, L}, grad.options());
  const bool* mp = data_or_null<bool>(m);
  const cudaStream_t stream = current_stream();
  AT_DISPATCH_FLOATING_TYPES(grad.scalar_type(), "lama_pool_backward_cuda", [&] {
    if (o.normalize) {
      softmax_backward_kernel<scalar_t>
          <<<grid_1d(B * H, "softmax_backward_kernel"), kRowThreads, 0, stream>>>(
              grad.data_ptr<scalar_t>(), weights.data_ptr<scalar_t>(), L);
      check_launch("softmax_backward_kernel");
    }
    lama_chain_kernel<scalar_t>
        <<<grid_1d(point_blocks(B * L), "lama_chain_kernel"), kPointThreads, 0, stream>>>(
            grad.data_ptr<scalar_t>(), dg_terms.data_ptr<scalar_t>(), u.data_ptr<scalar_t>(),
            ahat.data_ptr<scalar_t>(), g.data_ptr<scalar_t>(), mp, B, H, L, o.act,
            static_cast<scalar_t>(o.eps));
    check_launch("lama_chain_kernel");
  });
  const auto& du = grad;

  // g_h = p_h . c with c = (sum of kept x_t) / count: dp_h = dg_h c, dc = sum_h dg_h p_h, and
  // dc reaches every kept row as dc / count.
  const auto dg_scaled = dg_terms.sum(-1) * inv_count.unsqueeze(1);  // (B, H): dg_h / count
  const auto dcontext = (dg_scaled.unsqueeze(-1) * pc.unsqueeze(0)).sum(1);  // (B, D)
  // dx_t = dc / count + sum_h weights_ht dy_h + du_ht q_h on kept rows.
  auto dx = combine_rows(at::cat({weights, du}, 1), at::cat({dy, q_b}, 1), dcontext, m,
                         x.scalar_type());
  // Pass 2: [dq; dp] = sum_t [du_ht; dg_h / count] x_t over the kept rows, summed over batch.
  const auto dqp =
      weighted_rows(at::cat({du, dg_scaled.unsqueeze(-1).expand({B, H, L})}, 1), xc, m);
  const auto dq = dqp.narrow(1, 0, H).sum(0), dp = dqp.narrow(1, H, H).sum(0);  // (H, D) each
  return {dx, dp, dq};
}
};

}  // namespace

TORCH_LIBRARY_IMPL(seqops, CUDA, m) {
  m.impl("lama_pool", &lama_pool_entry<CudaLamaPool>);
  m.impl("lama_pool_backward", &lama_pool_backward_entry<CudaLamaPool>);
}

}  // namespace seqops::cuda
