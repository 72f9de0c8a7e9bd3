// seq_pool on CUDA: host side. Forward: the Flash-Decoding split of seq_pool_kernels.cuh (chunk
// partials, then their log-sum-exp merge). Backward: S = x [w; dy]^T (row_dots), the softmax
// gradient on the small (B, H, L) tensors with ATen, dx = dlogit w + p dy (combine_rows),
// dw = dlogit x (weighted_rows).
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
#include "common/cuda/vector_access.cuh"
#include "common/checks.h"
#include "common/tensor_data.h"
#include "pooling/cuda/seq_pool_kernels.cuh"
#include "pooling/entry.h"

namespace seqops::cuda {
namespace {

template <typename T, int kVec, int kSlots>
void launch_forward(const PoolShape& s, const at::Tensor& x, const at::Tensor& w,
                    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& mask,
                    at::Tensor& out, at::Tensor& lse, int width) {
  using acc_t = at::opmath_type<T>;
  const int64_t B = s.batch, L = s.length, D = s.dim, H = s.heads;
  const bool per_batch = w.dim() == 3;
  // Chunk groups as plan_chunks sizes chunks, each group's chunk of >= kMinChunkRows rows where
  // L allows; the merge takes at most kMaxChunks.
  const int64_t groups = kPoolThreads / width;
  const int64_t chunk_groups = std::min(plan_chunks(B * H, ceil_div(L, groups)), kMaxChunks / groups);
  const int64_t chunks = chunk_groups * groups;
  const auto opt = lse.options();
  auto part_max = at::empty({B, chunks, H}, opt);
  auto part_sum = at::empty({B, chunks, H}, opt);
  auto part_acc = at::empty({B, chunks, H, D}, opt);
  launch_kernel("seq_pool_chunk_kernel", seq_pool_chunk_kernel<T, kVec, kSlots>,
                B * chunk_groups * H, kPoolThreads, 0,
                x.data_ptr<T>(), w.data_ptr<acc_t>(), per_batch ? H * D : 0,
                data_or_null<acc_t>(bias), per_batch ? H : 0, data_or_null<bool>(mask),
                part_max.data_ptr<acc_t>(), part_sum.data_ptr<acc_t>(),
                part_acc.data_ptr<acc_t>(), L, D, H, chunks, width);
  const int64_t d_tiles = ceil_div(D, kMergeThreads);
  launch_kernel("seq_pool_merge_kernel", seq_pool_merge_kernel<T>,
                B * H * d_tiles, kMergeThreads, 0,
                part_max.data_ptr<acc_t>(), part_sum.data_ptr<acc_t>(),
                part_acc.data_ptr<acc_t>(), out.data_ptr<T>(), lse.data_ptr<acc_t>(), D, H,
                chunks, d_tiles);
}

// The forward for a row of `vectors` runs of kVec values: groups of width threads (a power of
// two), each thread kSlots runs (the fewest power of two that cover the row).
template <typename T, int kVec, int kSlots = 1>
void launch_for_row(int64_t vectors, const PoolShape& s, const at::Tensor& x, const at::Tensor& w,
                    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& mask,
                    at::Tensor& out, at::Tensor& lse) {
  if constexpr (kSlots * kVec < kMaxValues) {
    if (vectors > int64_t{kPoolThreads} * kSlots) {
      launch_for_row<T, kVec, kSlots * 2>(vectors, s, x, w, bias, mask, out, lse);
      return;
    }
  }
  const int width = static_cast<int>(std::min<int64_t>(kPoolThreads, pow2_at_least(vectors)));
  launch_forward<T, kVec, kSlots>(s, x, w, bias, mask, out, lse, width);
}

struct CudaSeqPool {
static std::tuple<at::Tensor, at::Tensor> seq_pool(const SeqPoolOperands& in) {
  const PoolShape& s = in.s;
  const at::Tensor& x = in.x;
  TORCH_CHECK(s.dim <= kMaxDim, "seq_pool on CUDA supports dim <= ", kMaxDim,
              " (each thread keeps its share of a row in registers), got x of shape ", x.sizes());
  const DeviceGuard guard(x.device());
  const auto acc = in.acc;
  const auto& xc = x;
  const auto& w = in.weight;
  const auto& b = in.bias;
  const auto& m = in.mask;
  auto out = at::empty({s.batch, s.heads, s.dim}, x.options());
  auto lse = at::empty({s.batch, s.heads}, x.options().dtype(acc));
  if (s.batch == 0) return {out, lse};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "seq_pool_cuda", [&] {
    constexpr int kVec = kValuesPer16Bytes<scalar_t>;
    if (rows_take_vector_loads(xc.const_data_ptr<scalar_t>(), s.dim))
      launch_for_row<scalar_t, kVec>(s.dim / kVec, s, xc, w, b, m, out, lse);
    else
      launch_for_row<scalar_t, 1>(s.dim, s, xc, w, b, m, out, lse);
  });
  return {out, lse};
}

static std::tuple<at::Tensor, at::Tensor> seq_pool_backward(const SeqPoolOperands& in,
                                                            const at::Tensor& dy,
                                                            const at::Tensor& /*out*/,
                                                            const at::Tensor& lse_c) {
  const PoolShape& s = in.s;
  const at::Tensor& xc = in.x;
  const DeviceGuard guard(xc.device());
  const int64_t B = s.batch, H = s.heads, D = s.dim;
  const auto& w = in.weight;
  const auto& m = in.mask;

  // S = [logit - bias; dy_h . x_t] for kept rows, one read of x.
  const auto v = at::cat({w.dim() == 2 ? w.unsqueeze(0).expand({B, H, D}) : w, dy}, 1);
  const auto scores = row_dots(xc, v, m);  // (B, 2H, L)
  auto logits = scores.narrow(1, 0, H);
  if (in.bias) logits = logits + in.bias->unsqueeze(-1);
  auto prob = at::exp(logits - lse_c.unsqueeze(-1));
  if (m) prob = prob.masked_fill(m->logical_not().unsqueeze(1), 0);
  // These logits round differently from the forward's (another summation order), so the prob
  // sum to 1 only to within rounding; renormalized, they sum to 1 as the softmax of these logits
  // (one kept row: p = 1 exactly). A fully masked row stays 0.
  prob = prob / prob.sum(-1, true).clamp_min(std::numeric_limits<float>::min());
  // d logit = p * (dy.x_t - dy.y), with dy.y taken as sum_t p_t dy.x_t (= dy.y, since
  // sum_t p_t x_t = y) from the same dots rather than from the output: the difference then
  // cancels exactly where it should (one kept row: p = 1, d logit = 0), and y is not rounded to
  // x's dtype first.
  const auto dots_dy = scores.narrow(1, H, H);
  const auto dlogit = (prob * (dots_dy - (prob * dots_dy).sum(-1, true))).contiguous();

  // dx_t = sum_h dlogit_ht w_h + p_ht dy_h (zero on masked rows); dw_h = sum_t dlogit_ht x_t.
  auto dx = combine_rows(at::cat({dlogit, prob}, 1), v, std::nullopt, m, xc.scalar_type());
  return {dx, weighted_rows(dlogit, xc, m)};  // dw (B, H, D)
}
};

}  // namespace

SEQOPS_CUDA_LIBRARY_IMPL(m) {
  m.impl("seq_pool", &seq_pool_entry<CudaSeqPool>);
  m.impl("seq_pool_backward", &seq_pool_backward_entry<CudaSeqPool>);
}

}  // namespace seqops::cuda
