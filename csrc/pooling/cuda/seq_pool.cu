// seq_pool on CUDA.
//
// Forward (one read of x): a Flash-Decoding split. Grid = (batch, sequence chunk, head), head
// fastest so the blocks of all heads of one chunk run together and share x through L2. Each
// block streams its rows with an online softmax: every thread keeps its slice of the row
// (kSlots elements, strided by the block size, so loads are coalesced) and of the weighted-sum
// accumulator in registers; a step takes kRows rows, one block reduction yields their logits.
// The per-chunk (max, sum, accumulator) partials are merged by seq_pool_merge_kernel with the
// log-sum-exp rule. Backward: S = x [w; dy]^T (row_dots), the softmax gradient on the small
// (B, H, L) tensors with ATen, dx = dlogit w + p dy (combine_rows), dw = dlogit x (weighted_rows).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <limits>

#include "common/cuda/block_reduce.cuh"
#include "common/cuda/launch.cuh"
#include "common/cuda/cuda_context.h"
#include "common/cuda/row_kernels.cuh"
#include "common/checks.h"
#include "common/tensor_data.h"
#include "pooling/entry.h"

namespace seqops::cuda {
namespace {

constexpr int kPoolThreads = 256;
constexpr int kMaxSlots = 32;                         // row elements per thread at most
constexpr int64_t kMaxDim = kPoolThreads * kMaxSlots;  // 8192
constexpr int kMergeThreads = 256;

// Rows per online-softmax step: as many as fit in 32 registers of row values per thread.
template <int kSlots>
constexpr int rows_per_step() {
  return 32 / kSlots < 8 ? 32 / kSlots : 8;
}

template <typename T, int kSlots, typename acc_t = at::opmath_type<T>>
__global__ void __launch_bounds__(kPoolThreads)
    seq_pool_chunk_kernel(const T* __restrict__ x, const acc_t* __restrict__ w,
                          int64_t w_batch_stride, const acc_t* __restrict__ bias,
                          int64_t bias_batch_stride, const bool* __restrict__ mask,
                          acc_t* __restrict__ part_max, acc_t* __restrict__ part_sum,
                          acc_t* __restrict__ part_acc, int64_t L, int64_t D, int64_t H,
                          int64_t chunks) {
  constexpr int kRows = rows_per_step<kSlots>();
  __shared__ BlockSum<kPoolThreads, kRows, acc_t> reducer;

  const int64_t block = blockIdx.x;
  const int64_t h = block % H;
  const int64_t c = (block / H) % chunks;
  const int64_t b = block / (H * chunks);
  const int64_t t_begin = chunk_begin(c, chunks, L), t_end = chunk_begin(c + 1, chunks, L);
  const int tid = threadIdx.x;
  const T* xb = x + b * L * D;
  const bool* mb = mask ? mask + b * L : nullptr;

  acc_t wv[kSlots], acc[kSlots];
#pragma unroll
  for (int i = 0; i < kSlots; ++i) {
    const int64_t d = tid + static_cast<int64_t>(i) * kPoolThreads;
    wv[i] = d < D ? w[b * w_batch_stride + h * D + d] : acc_t(0);
    acc[i] = acc_t(0);
  }
  const acc_t bias_h = bias ? bias[b * bias_batch_stride + h] : acc_t(0);
  acc_t run_max = -std::numeric_limits<acc_t>::infinity(), run_sum = 0;
  int parity = 0;

  for (int64_t t = t_begin; t < t_end; t += kRows) {
    acc_t xv[kRows][kSlots], logit[kRows];
    bool kept[kRows];
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      const int64_t tr = t + r;
      kept[r] = tr < t_end && (mb == nullptr || mb[tr]);  // masked rows are never read
#pragma unroll
      for (int i = 0; i < kSlots; ++i) {
        const int64_t d = tid + static_cast<int64_t>(i) * kPoolThreads;
        xv[r][i] = (kept[r] && d < D) ? static_cast<acc_t>(xb[tr * D + d]) : acc_t(0);
      }
    }
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      acc_t s = 0;
#pragma unroll
      for (int i = 0; i < kSlots; ++i) s += xv[r][i] * wv[i];
      logit[r] = s;
    }
    reducer.reduce(logit, parity);  // every thread now holds the same logits
    acc_t new_max = run_max;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      logit[r] += bias_h;
      if (kept[r] && logit[r] > new_max) new_max = logit[r];
    }
    // Rescale what was accumulated to the new maximum (exactly 1 when it did not move); a NaN
    // logit keeps the maximum and turns the sums into NaN, as on CPU.
    const acc_t scale = OnlineSoftmax<acc_t>::rescale(run_max, new_max);
    acc_t p[kRows], p_total = 0;
#pragma unroll
    for (int r = 0; r < kRows; ++r) {
      p[r] = kept[r] ? OnlineSoftmax<acc_t>::rel_exp(logit[r], new_max) : acc_t(0);
      p_total += p[r];
    }
    run_sum = run_sum * scale + p_total;
#pragma unroll
    for (int i = 0; i < kSlots; ++i) {
      acc_t a = acc[i] * scale;
#pragma unroll
      for (int r = 0; r < kRows; ++r) a += p[r] * xv[r][i];
      acc[i] = a;
    }
    run_max = new_max;
  }

  const int64_t item = (b * chunks + c) * H + h;
  if (tid == 0) {
    part_max[item] = run_max;
    part_sum[item] = run_sum;
  }
#pragma unroll
  for (int i = 0; i < kSlots; ++i) {
    const int64_t d = tid + static_cast<int64_t>(i) * kPoolThreads;
    if (d < D) part_acc[item * D + d] = acc[i];
  }
}

// Log-sum-exp merge of the chunk partials: grid (batch * head, d tile), one column per thread.
template <typename T, typename acc_t = at::opmath_type<T>>
__global__ void __launch_bounds__(kMergeThreads)
    seq_pool_merge_kernel(const acc_t* __restrict__ part_max, const acc_t* __restrict__ part_sum,
                          const acc_t* __restrict__ part_acc, T* __restrict__ out,
                          acc_t* __restrict__ lse, int64_t D, int64_t H, int64_t chunks,
                          int64_t d_tiles) {
  __shared__ acc_t chunk_weight[kMaxChunks];
  __shared__ acc_t scratch[kMergeThreads / kWarp];
  const int64_t block = blockIdx.x;
  const int64_t dt = block % d_tiles;
  const int64_t bh = block / d_tiles;  // b * H + h
  const int64_t b = bh / H, h = bh % H;
  const int tid = threadIdx.x;
  const int64_t d = dt * kMergeThreads + tid;
  constexpr acc_t kNegInf = -std::numeric_limits<acc_t>::infinity();

  acc_t top = kNegInf;
  for (int64_t c = tid; c < chunks; c += kMergeThreads) {
    const acc_t m = part_max[(b * chunks + c) * H + h];
    top = m > top ? m : top;
  }
  top = block_max<kMergeThreads>(top, scratch);
  if (top == kNegInf) {  // every row masked: zeros, and lse = -inf (uniform branch)
    if (d < D) out[bh * D + d] = T(0);
    if (dt == 0 && tid == 0) lse[bh] = kNegInf;
    return;
  }
  acc_t denom_part = 0;
  for (int64_t c = tid; c < chunks; c += kMergeThreads) {
    const int64_t item = (b * chunks + c) * H + h;
    const acc_t weight = ::exp(part_max[item] - top);  // 0 for chunks with no kept row
    chunk_weight[c] = weight;
    denom_part += part_sum[item] * weight;
  }
  const acc_t denom = block_sum<kMergeThreads>(denom_part, scratch);  // also publishes weights
  if (d < D) {
    acc_t total = 0;
    for (int64_t c = 0; c < chunks; ++c)
      total += chunk_weight[c] * part_acc[((b * chunks + c) * H + h) * D + d];
    out[bh * D + d] = static_cast<T>(total * (acc_t(1) / denom));
  }
  if (dt == 0 && tid == 0) lse[bh] = top + ::log(denom);
}

template <typename T, int kSlots>
void launch_forward(const PoolShape& s, const at::Tensor& x, const at::Tensor& w,
                    const std::optional<at::Tensor>& bias, const std::optional<at::Tensor>& mask,
                    at::Tensor& out, at::Tensor& lse) {
  using acc_t = at::opmath_type<T>;
  const int64_t B = s.batch, L = s.length, D = s.dim, H = s.heads;
  const bool per_batch = w.dim() == 3;
  const int64_t chunks = plan_chunks(B * H, L);
  const auto opt = lse.options();
  auto part_max = at::empty({B, chunks, H}, opt);
  auto part_sum = at::empty({B, chunks, H}, opt);
  auto part_acc = at::empty({B, chunks, H, D}, opt);
  const cudaStream_t stream = current_stream();
  seq_pool_chunk_kernel<T, kSlots>
      <<<grid_1d(B * chunks * H, "seq_pool_chunk_kernel"), kPoolThreads, 0, stream>>>(
          x.data_ptr<T>(), w.data_ptr<acc_t>(), per_batch ? H * D : 0,
          data_or_null<acc_t>(bias), per_batch ? H : 0,
          data_or_null<bool>(mask), part_max.data_ptr<acc_t>(),
          part_sum.data_ptr<acc_t>(), part_acc.data_ptr<acc_t>(), L, D, H, chunks);
  check_launch("seq_pool_chunk_kernel");
  const int64_t d_tiles = ceil_div(D, kMergeThreads);
  seq_pool_merge_kernel<T><<<grid_1d(B * H * d_tiles, "seq_pool_merge_kernel"), kMergeThreads,
                             0, stream>>>(part_max.data_ptr<acc_t>(), part_sum.data_ptr<acc_t>(),
                                          part_acc.data_ptr<acc_t>(), out.data_ptr<T>(),
                                          lse.data_ptr<acc_t>(), D, H, chunks, d_tiles);
  check_launch("seq_pool_merge_kernel");
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
  const int64_t slots = ceil_div(s.dim, kPoolThreads);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "seq_pool_cuda", [&] {
    if (slots <= 1) launch_forward<scalar_t, 1>(s, xc, w, b, m, out, lse);
    else if (slots <= 2) launch_forward<scalar_t, 2>(s, xc, w, b, m, out, lse);
    else if (slots <= 4) launch_forward<scalar_t, 4>(s, xc, w, b, m, out, lse);
    else if (slots <= 8) launch_forward<scalar_t, 8>(s, xc, w, b, m, out, lse);
    else if (slots <= 16) launch_forward<scalar_t, 16>(s, xc, w, b, m, out, lse);
    else launch_forward<scalar_t, 32>(s, xc, w, b, m, out, lse);
  });
  return {out, lse};
}

static std::tuple<at::Tensor, at::Tensor> seq_pool_backward(const SeqPoolOperands& in,
                                                            const at::Tensor& dy,
                                                            const at::Tensor& dy_dot_y,
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
  // d logit = p * (dy.x_t - dy.y), since sum_t p_t x_t = y.
  const auto dlogit = (prob * (scores.narrow(1, H, H) - dy_dot_y.unsqueeze(-1))).contiguous();

  // dx_t = sum_h dlogit_ht w_h + p_ht dy_h (zero on masked rows); dw_h = sum_t dlogit_ht x_t.
  auto dx = combine_rows(at::cat({dlogit, prob}, 1), v, std::nullopt, m, xc.scalar_type());
  return {dx, weighted_rows(dlogit, xc, m)};  // dw (B, H, D)
}
};

}  // namespace

TORCH_LIBRARY_IMPL(seqops, CUDA, m) {
  m.impl("seq_pool", &seq_pool_entry<CudaSeqPool>);
  m.impl("seq_pool_backward", &seq_pool_backward_entry<CudaSeqPool>);
}

}  // namespace seqops::cuda
