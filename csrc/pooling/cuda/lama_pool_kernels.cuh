// The lama_pool score kernels (host side and the passes over x: lama_pool.cu): per (b, t)
// position the scores and the chain rule through the head normalization and activation, per
// (b, h) row the masked softmax and its backward. Compiled by nvcc and by the host emulator.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "common/activation.h"
#include "common/cuda/block_reduce.cuh"

namespace seqops::cuda {

constexpr int kLamaPointThreads = 256;  // one thread per (b, t) position
constexpr int kLamaRowThreads = 256;    // one block per (b, h) row of length L

__device__ inline bool keep_row(const bool* mask, int64_t bt) { return mask == nullptr || mask[bt]; }

// Per position (b, t): a_h = act(g_h u_ht), ahat_h = a_h / max(||a||_heads, eps) (every
// position, as on CPU), weights = ahat on kept positions and 0 on masked ones.
template <typename acc_t>
__global__ void __launch_bounds__(kLamaPointThreads)
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
__global__ void __launch_bounds__(kLamaRowThreads)
    masked_softmax_kernel(acc_t* __restrict__ weights, const bool* __restrict__ mask,
                          const int64_t* __restrict__ kept, int64_t H, int64_t L) {
  __shared__ acc_t scratch[2 * kLamaRowThreads / kWarp];
  const int64_t bh = blockIdx.x, b = bh / H;
  if (kept[b] == 0) return;
  acc_t* row = weights + bh * L;
  const bool* mb = mask ? mask + b * L : nullptr;
  OnlineSoftmax<acc_t> state;
  for (int64_t t = threadIdx.x; t < L; t += kLamaRowThreads)
    if (mb == nullptr || mb[t]) state.add(row[t]);
  const OnlineSoftmax<acc_t> total = block_online_softmax<kLamaRowThreads>(state, scratch);
  for (int64_t t = threadIdx.x; t < L; t += kLamaRowThreads)
    row[t] = (mb == nullptr || mb[t]) ? ::exp(row[t] - total.max) / total.sum : acc_t(0);
}

// In place, per (b, h) row: the softmax backward, grad = w * (grad - sum_t w_t grad_t).
template <typename acc_t>
__global__ void __launch_bounds__(kLamaRowThreads)
    softmax_backward_kernel(acc_t* __restrict__ grad, const acc_t* __restrict__ weights,
                            int64_t L) {
  __shared__ acc_t scratch[kLamaRowThreads / kWarp];
  const int64_t bh = blockIdx.x;
  acc_t* gr = grad + bh * L;
  const acc_t* w = weights + bh * L;
  acc_t part = 0;
  for (int64_t t = threadIdx.x; t < L; t += kLamaRowThreads) part += w[t] * gr[t];
  const acc_t r = block_sum<kLamaRowThreads>(part, scratch);
  for (int64_t t = threadIdx.x; t < L; t += kLamaRowThreads) gr[t] = w[t] * (gr[t] - r);
}

// Per position (b, t), through ahat = a / max(||a||, eps) and a = act(z), z = g u: turns the
// gradient w.r.t. ahat (in `grad`) into du_ht = dz g_h in place and writes dz u_ht into dg_terms
// (summed over t later: dg_h). Masked positions get 0 in both.
template <typename acc_t>
__global__ void __launch_bounds__(kLamaPointThreads)
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

}  // namespace seqops::cuda
