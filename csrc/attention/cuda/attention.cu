// seqops::attention on CUDA: host side. The SIMT kernels are in attention_kernels.cuh, the
// tensor-core ones (float16 / bfloat16 on sm_80+, head dims multiples of 16 up to 128, every
// score term but relative keys: they replace the forward, dK/dV and dQ kernels below) in
// attention_mma_kernels.cuh.
//
// Forward: attention_forward_kernel, grid (batch, q head, query tile), an online softmax over
// the key tiles. Backward, recompute-based and deterministic (no atomics; every sum has a fixed
// order): delta = rowsum(dO * O) with ATen, then
//   attention_dkdv_kernel      grid (batch, kv head, key tile): dK, dV over q heads and queries;
//   attention_dq_kernel        grid (batch, q head, query tile): dq over keys (and the dense-bias
//                              gradient dS, and dq's content/position parts for relative keys);
//   attention_relative_kernel  grid (batch, q head, relative-position tile), T5 / ALiBi /
//                              relative keys only: dS summed per relative position r (and
//                              dS * (q + v) for R), per batch entry;
// and the small final sums (over the batch, T5 buckets, ALiBi distances) with ATen or
// t5_table_grad_kernel. Tile sizes are chosen at run time from the head dims and the GPU's
// shared memory; a shape whose smallest tiles do not fit raises.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <cuda_runtime.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <type_traits>
#include <utility>

#include "attention/cuda/attention_kernels.cuh"
#include "attention/cuda/attention_mma_kernels.cuh"
#include "common/cuda/block_reduce.cuh"
#include "common/cuda/launch.cuh"
#include "common/library.h"
#include "common/cuda/cuda_context.h"
#include "attention/attention.h"
#include "attention/entry.h"
#include "attention/score_tables.h"
#include "common/dtype.h"
#include "common/tensor_data.h"

namespace seqops::cuda {
namespace {

using attention::Params;
using attention::SmemPlan;

// ------------------------------------------------------------------------- score tensors

// T5's bucket per relative position (num_relative,) int64, computed on the device.
at::Tensor t5_buckets_on_device(const AttentionArgs& a, const at::Device& device) {
  const int64_t n = std::max<int64_t>(a.num_relative(), 0);  // 0 for an empty query or key
  auto buckets = at::empty({n}, at::TensorOptions().dtype(at::kLong).device(device));
  if (n > 0)
    launch_kernel("t5_buckets_kernel", attention::t5_buckets_kernel,
                  ceil_div(n, attention::kThreads), attention::kThreads, 0, t5_bucket_steps(a),
                  a.r_min(), n, buckets.data_ptr<int64_t>());
  return buckets;
}

// The op's optional tensors as the kernels read them: in the accumulate dtype, contiguous (the
// dense bias keeps its own strides, read through its expanded strides), kept alive here.
struct ScoreInputs {
  at::Tensor key_mask, bias, rel_table, buckets, slopes, rel_keys, rel_scores, content_bias,
      position_bias;
  std::array<int64_t, 4> bias_stride{};
  RotaryCosSin rotary_q, rotary_k;  // when a.rotary_dim > 0
};

ScoreInputs prepare_scores(const AttentionArgs& a, const AttentionOptions& s, at::ScalarType acc,
                           const at::Device& device) {
  ScoreInputs in;
  const auto to_acc = [&](const std::optional<at::Tensor>& t) {
    return t ? t->to(acc).contiguous() : at::Tensor();
  };
  if (s.key_padding_mask) in.key_mask = s.key_padding_mask->contiguous();
  if (a.rotary_dim > 0) {
    const auto opts = at::TensorOptions().dtype(acc).device(device);
    in.rotary_q = rotary_queries(a, opts);
    in.rotary_k = rotary_keys(a, opts);
  }
  switch (a.policy) {
    case ScorePolicy::None: break;
    case ScorePolicy::DenseBias: {
      in.bias = s.bias->to(acc);
      const auto expanded = in.bias.expand({a.batch, a.heads_q, a.len_q, a.len_k});
      for (int i = 0; i < 4; ++i) in.bias_stride[i] = expanded.stride(i);
      break;
    }
    case ScorePolicy::T5:
      // The kernels read the table value per (head, r).
      in.buckets = t5_buckets_on_device(a, device);
      in.rel_table = t5_relative_table(*s.t5_table, in.buckets, acc);
      break;
    case ScorePolicy::Alibi: in.slopes = to_acc(s.alibi_slopes); break;
    case ScorePolicy::RelativeKeys:
      in.rel_keys = to_acc(s.rel_keys);
      in.rel_scores = to_acc(s.rel_scores);
      in.content_bias = to_acc(s.content_bias);
      in.position_bias = to_acc(s.position_bias);
      break;
  }
  return in;
}

template <typename scalar_t>
Params<scalar_t> make_params(const AttentionArgs& a, const ScoreInputs& in) {
  using acc_t = at::opmath_type<scalar_t>;
  Params<scalar_t> p{};
  p.key_mask = data_or_null<const bool>(in.key_mask);
  p.batch = a.batch;
  p.heads_q = a.heads_q;
  p.heads_k = a.heads_k;
  p.group = a.heads_q / a.heads_k;
  p.len_q = a.len_q;
  p.len_k = a.len_k;
  p.dim = a.dim;
  p.dim_v = a.dim_v;
  p.band = a.band;
  p.query_offset = a.query_offset;
  p.scale = static_cast<acc_t>(a.scale);
  p.dropout = a.dropout_p > 0;
  p.keep_prob = static_cast<float>(1.0 - a.dropout_p);
  p.drop_scale = static_cast<acc_t>(1.0 / (1.0 - a.dropout_p));
  p.seed = a.dropout_seed;
  p.offset = a.dropout_offset;
  p.bias = data_or_null<const acc_t>(in.bias);
  for (int i = 0; i < 4; ++i) p.bias_stride[i] = in.bias_stride[i];
  p.rel_table = data_or_null<const acc_t>(in.rel_table);
  p.slopes = data_or_null<const acc_t>(in.slopes);
  p.rel_keys = data_or_null<const acc_t>(in.rel_keys);
  p.rel_scores = data_or_null<const acc_t>(in.rel_scores);
  p.content_bias = data_or_null<const acc_t>(in.content_bias);
  p.position_bias = data_or_null<const acc_t>(in.position_bias);
  p.rel_len = a.policy == ScorePolicy::RelativeKeys ? a.rel_len : 0;
  p.rel_zero = a.policy == ScorePolicy::RelativeKeys ? a.rel_zero : 0;
  p.r_lo = a.r_min();
  p.num_rel = a.num_relative();
  if (a.rotary_dim > 0) {
    p.rot_q = in.rotary_q.table<acc_t>(a);
    p.rot_k = in.rotary_k.table<acc_t>(a);
  }
  return p;
}

// Calls f(Policy{}) with the score policy struct a.policy selects.
template <typename F>
void dispatch_policy(ScorePolicy policy, F&& f) {
  switch (policy) {
    case ScorePolicy::None: f(attention::NoScore{}); break;
    case ScorePolicy::DenseBias: f(attention::DenseBiasScore{}); break;
    case ScorePolicy::T5: f(attention::T5Score{}); break;
    case ScorePolicy::Alibi: f(attention::AlibiScore{}); break;
    case ScorePolicy::RelativeKeys: f(attention::RelativeKeysScore{}); break;
  }
}

// ------------------------------------------------------------------------ tiles and launches

// Relative keys: (q + v) of the query tile, the R rows a (bq, bk) tile touches, and their scores.
void add_relative_tiles(SmemPlan& s, int bq, int bk, int64_t d) {
  s.add(attention::kQPos, bq, d);
  s.add(attention::kRel, bq + bk - 1, d);
  s.add(attention::kRelScores, bq, bq + bk - 1);
}

// Shared-memory plans of the four kernels for tiles (bq, bk) (relative pass: bk = bn).
SmemPlan forward_plan(int bq, int bk, int64_t d, int64_t dv, bool rel) {
  SmemPlan s;
  s.add(attention::kQ, bq, d);
  s.add(attention::kK, bk, std::max(d, dv));  // the key tile, then the value tile
  s.add(attention::kAcc, bq, dv);
  s.add(attention::kScores, bq, bk);
  s.add(attention::kRowLse, bq, 1);
  if (rel) add_relative_tiles(s, bq, bk, d);
  return s;
}

SmemPlan dkdv_plan(int bq, int bk, int64_t d, int64_t dv, bool rel) {
  SmemPlan s;
  s.add(attention::kK, bk, d);
  s.add(attention::kV, bk, dv);
  s.add(attention::kDK, bk, d);
  s.add(attention::kDV, bk, dv);
  s.add(attention::kQ, bq, d);
  s.add(attention::kDOut, bq, dv);
  s.add(attention::kScores, bq, bk);
  s.add(attention::kDProbs, bq, bk);
  s.add(attention::kRowLse, bq, 1);
  s.add(attention::kRowDelta, bq, 1);
  if (rel) add_relative_tiles(s, bq, bk, d);
  return s;
}

SmemPlan dq_plan(int bq, int bk, int64_t d, int64_t dv, bool rel) {
  SmemPlan s;
  s.add(attention::kQ, bq, d);
  s.add(attention::kDOut, bq, dv);
  s.add(attention::kAcc, bq, d);
  s.add(attention::kK, bk, d);
  s.add(attention::kV, bk, dv);
  s.add(attention::kScores, bq, bk);
  s.add(attention::kDProbs, bq, bk);
  s.add(attention::kRowLse, bq, 1);
  s.add(attention::kRowDelta, bq, 1);
  if (rel) {
    add_relative_tiles(s, bq, bk, d);
    s.add(attention::kAccPos, bq, d);
    s.add(attention::kRelGrad, bq, bq + bk - 1);
  }
  return s;
}

SmemPlan relative_plan(int bq, int bn, int64_t d, int64_t dv, bool rel) {
  const int span = bq + bn - 1;
  SmemPlan s;
  s.add(attention::kQ, bq, d);
  s.add(attention::kDOut, bq, dv);
  s.add(attention::kK, span, d);
  s.add(attention::kV, span, dv);
  s.add(attention::kScores, bq, span);
  s.add(attention::kDProbs, bq, span);
  s.add(attention::kBand, bq, bn);
  s.add(attention::kRowLse, bq, 1);
  s.add(attention::kRowDelta, bq, 1);
  if (rel) {
    s.add(attention::kQPos, bq, d);
    s.add(attention::kRel, bn, d);
    s.add(attention::kRelScores, bq, bn);
    s.add(attention::kDRel, bn, d);
  }
  return s;
}

using PlanFn = SmemPlan (*)(int, int, int64_t, int64_t, bool);

struct TileChoice {
  int bq, bk;
  SmemPlan plan;
};

// The first (bq, bk) of `candidates` (largest first) whose plan fits in `max_bytes`, skipping
// tiles much longer than the sequences; raises when even the smallest does not fit.
TileChoice choose_tiles(c10::ArrayRef<std::pair<int, int>> candidates, PlanFn plan_fn,
                        int64_t q_extent, int64_t k_extent, const AttentionArgs& a,
                        size_t elem_size, int64_t max_bytes, const char* pass) {
  const bool rel = a.policy == ScorePolicy::RelativeKeys;
  const int64_t q_cap = std::max<int64_t>(8, pow2_at_least(q_extent));
  const int64_t k_cap = std::max<int64_t>(8, pow2_at_least(k_extent));
  int64_t smallest = 0;
  for (const auto& [bq, bk] : candidates) {
    if (bq > q_cap || bk > k_cap) continue;
    const SmemPlan plan = plan_fn(bq, bk, a.dim, a.dim_v, rel);
    const int64_t bytes = plan.elements * static_cast<int64_t>(elem_size);
    if (bytes <= max_bytes) return TileChoice{bq, bk, plan};
    smallest = bytes;
  }
  TORCH_CHECK(false, "seqops attention on CUDA: the ", pass, " kernel needs ", smallest,
              " bytes of shared memory per block for head_dim ", a.dim, " and value head_dim ",
              a.dim_v, " (", elem_size == 8 ? "float64" : "float32", " accumulation, score term ",
              score_policy_name(a.policy), "), more than this GPU allows (", max_bytes,
              " bytes); use smaller head dims");
  return {};
}

int64_t max_shared_bytes(const at::Tensor& t) {
  return device_attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, t.get_device());
}

template <typename scalar_t>
void launch(void (*kernel)(Params<scalar_t>), const char* name, int64_t blocks,
            const Params<scalar_t>& p) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t bytes = p.plan.elements * static_cast<int64_t>(sizeof(acc_t));
  if (bytes > 48 * 1024) allow_dynamic_shared(name, kernel, static_cast<size_t>(bytes));
  launch_kernel(name, kernel, blocks, attention::kThreads, static_cast<size_t>(bytes), p);
}

// (bq, bk) candidates per kernel, preferred first (relative pass: (bq, bn)). The forward's bq
// must be a power of two <= kThreads (row groups); every size is a multiple of 4.
using TileSize = std::pair<int, int>;
constexpr TileSize kForwardTiles[] = {{64, 64}, {64, 32}, {32, 32}, {32, 16}, {16, 16},
                                      {16, 8},  {8, 8},   {8, 4},   {4, 4}};
constexpr TileSize kDkDvTiles[] = {{32, 64}, {32, 32}, {16, 32}, {16, 16},
                                   {8, 16},  {8, 8},   {4, 8},   {4, 4}};
constexpr TileSize kDqTiles[] = {{64, 32}, {32, 32}, {32, 16}, {16, 16},
                                 {16, 8},  {8, 8},   {8, 4},   {4, 4}};
constexpr TileSize kRelativeTiles[] = {{16, 64}, {16, 32}, {8, 32}, {8, 16},
                                       {8, 8},   {4, 8},   {4, 4}};

// The tile sizes and shared-memory plan of a SIMT launch (the tile count: set_home_tiles, or
// the relative pass's own).
template <typename scalar_t>
void set_tiles(Params<scalar_t>& p, const TileChoice& t) {
  p.bq = t.bq;
  p.bk = t.bk;
  p.plan = t.plan;
}

// The home tiles (home_rows) of a launch over the query rows, or the key rows for dK/dV, of
// `rows` each: with packed sequences, row_blocks' first rows, copied into `table` (which holds
// them until the launch is queued: the stream orders any reuse of its memory after the kernel).
template <typename scalar_t>
void set_home_tiles(Params<scalar_t>& p, const AttentionArgs& a, int64_t extent, int64_t rows,
                    at::Tensor& table, const at::Device& device) {
  if (a.seq_offsets == nullptr) {
    p.block_first = nullptr;
    p.tiles = ceil_div(extent, rows);
    return;
  }
  std::vector<int64_t> first;
  for (const RowBlock& block : row_blocks(a, rows)) first.push_back(block.first);
  table = at::tensor(first, at::TensorOptions().dtype(at::kLong)).to(device);
  p.block_first = table.const_data_ptr<int64_t>();
  p.tiles = static_cast<int64_t>(first.size());
}

// Whether the GPU and head dims allow the tensor-core kernels, whose blocks need `bytes` of
// shared memory: sm_80 or newer, head dims multiples of 16 up to kMmaMaxDim.
bool tensor_cores_fit(const AttentionArgs& a, const at::Tensor& q, int64_t bytes) {
  const auto fits = [](int64_t dim) { return dim % 16 == 0 && dim <= attention::kMmaMaxDim; };
  return fits(a.dim) && fits(a.dim_v) &&
         device_attribute(cudaDevAttrComputeCapabilityMajor, q.get_device()) >= 8 &&
         bytes <= max_shared_bytes(q);
}

// Launches a tensor-core kernel over grid_heads x (home tiles of kMmaRows over extent rows) blocks.
template <typename scalar_t>
void launch_mma(void (*kernel)(Params<scalar_t>), const char* name, Params<scalar_t>& p, const AttentionArgs& a,
                int64_t grid_heads, int64_t extent, int64_t bytes, const at::Device& device) {
  at::Tensor table;
  set_home_tiles(p, a, extent, attention::kMmaRows, table, device);
  if (bytes > 48 * 1024) allow_dynamic_shared(name, kernel, static_cast<size_t>(bytes));
  launch_kernel(name, kernel, grid_heads * p.tiles, attention::kThreads, static_cast<size_t>(bytes), p);
}

// dK, dV and dQ on tensor cores when they fit (tensor_cores_fit); false: the SIMT kernels' turn.
// Every score term; relative keys add their (q + v) R^T band products (attention_mma_kernels.cuh).
template <typename scalar_t, typename Policy>
bool backward_on_tensor_cores(Params<scalar_t>& p, const AttentionArgs& a, const at::Tensor& q) {
  if constexpr (attention::kTensorCoreType<scalar_t>) {
    const int64_t dkdv_bytes = attention::mma_dkdv_shared_bytes(a.dim, a.dim_v, Policy::kRelativeKeys);
    const int64_t dq_bytes = attention::mma_dq_shared_bytes(a.dim, a.dim_v, Policy::kRelativeKeys);
    if (!tensor_cores_fit(a, q, std::max(dkdv_bytes, dq_bytes))) return false;
    launch_mma(attention::attention_dkdv_mma_kernel<scalar_t, Policy>, "attention_dkdv_mma_kernel", p, a,
               a.batch * a.heads_k, a.len_k, dkdv_bytes, q.device());
    launch_mma(attention::attention_dq_mma_kernel<scalar_t, Policy>, "attention_dq_mma_kernel", p, a,
               a.batch * a.heads_q, a.len_q, dq_bytes, q.device());
    return true;
  }
  return false;
}

// T5's per-bucket sums of per_r (Hq, num_relative) in a fixed order (score_tables.h's
// BucketSum for CUDA).
at::Tensor bucket_sum_kernel(const at::Tensor& per_r, const at::Tensor& buckets,
                             int64_t num_buckets) {
  const int64_t heads = per_r.size(0), num_rel = per_r.size(1);
  auto grad = at::empty({heads, num_buckets}, per_r.options());
  const int64_t n = heads * num_buckets;
  AT_DISPATCH_FLOATING_TYPES(per_r.scalar_type(), "t5_table_grad", [&] {
    launch_kernel("t5_table_grad_kernel", attention::t5_table_grad_kernel<scalar_t>,
                  ceil_div(n, attention::kThreads), attention::kThreads, 0,
                  per_r.const_data_ptr<scalar_t>(),
                  buckets.const_data_ptr<int64_t>(), grad.data_ptr<scalar_t>(), heads, num_rel,
                  num_buckets);
  });
  return grad;
}

// -------------------------------------------------------------------------------- the op

struct CudaAttention {
  static std::tuple<at::Tensor, at::Tensor> forward(const AttentionArgs& a, const at::Tensor& q,
                                                    const at::Tensor& k, const at::Tensor& v,
                                                    const AttentionOptions& s) {
    const DeviceGuard guard(q.device());
    const auto acc = accumulate_type(q);
    const auto qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
    const ScoreInputs in = prepare_scores(a, s, acc, q.device());
    auto out = at::empty({a.batch, a.heads_q, a.len_q, a.dim_v}, q.options());
    auto lse = at::empty({a.batch, a.heads_q, a.len_q}, q.options().dtype(acc));
    const int64_t max_bytes = max_shared_bytes(q);
    const auto dtype = q.scalar_type();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "attention_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      auto p = make_params<scalar_t>(a, in);
      p.q = qc.const_data_ptr<scalar_t>();
      p.k = kc.const_data_ptr<scalar_t>();
      p.v = vc.const_data_ptr<scalar_t>();
      p.out = out.data_ptr<scalar_t>();
      p.lse_out = lse.data_ptr<acc_t>();
      dispatch_policy(a.policy, [&](auto policy) {
        using Policy = decltype(policy);
        if constexpr (attention::kTensorCoreType<scalar_t>) {
          const int64_t bytes = attention::mma_forward_shared_bytes(a.dim, a.dim_v, Policy::kRelativeKeys);
          if (tensor_cores_fit(a, q, bytes)) {
            launch_mma(attention::attention_forward_mma_kernel<scalar_t, Policy>,
                       "attention_forward_mma_kernel", p, a, a.batch * a.heads_q, a.len_q, bytes, q.device());
            return;
          }
        }
        const TileChoice t = choose_tiles(kForwardTiles, forward_plan, a.len_q, a.len_k, a,
                                          sizeof(acc_t), max_bytes, "attention forward");
        set_tiles(p, t);
        at::Tensor table;
        set_home_tiles(p, a, a.len_q, t.bq, table, q.device());
        launch(attention::attention_forward_kernel<scalar_t, Policy>, "attention_forward_kernel",
               a.batch * a.heads_q * p.tiles, p);
      });
    });
    return {out, lse};
  }

  static AttentionGrads backward(const AttentionArgs& a, const at::Tensor& grad_out,
                                 const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                                 const at::Tensor& out, const at::Tensor& lse,
                                 const AttentionOptions& s, bool bias_grad) {
    const DeviceGuard guard(q.device());
    const auto acc = accumulate_type(q);
    const bool rel_keys = a.policy == ScorePolicy::RelativeKeys;
    const bool rel_grad = rel_keys || a.policy == ScorePolicy::T5 || a.policy == ScorePolicy::Alibi;
    const auto qc = q.contiguous(), kc = k.contiguous(), vc = v.contiguous();
    const auto dout = grad_out.contiguous();
    const auto lse_c = lse.contiguous();
    const auto delta = (dout.to(acc) * out.to(acc)).sum(-1).contiguous();  // (B, Hq, Lq)
    const ScoreInputs in = prepare_scores(a, s, acc, q.device());
    const auto acc_opts = q.options().dtype(acc);

    AttentionGrads g;
    g.q = at::empty_like(qc);
    g.k = at::empty_like(kc);
    g.v = at::empty_like(vc);
    at::Tensor dbias, dq_content, dq_position, diag, drel;
    if (bias_grad) dbias = at::zeros({a.batch, a.heads_q, a.len_q, a.len_k}, acc_opts);
    if (rel_keys && s.content_bias) dq_content = at::empty_like(qc, acc_opts);
    if (rel_keys && s.position_bias) dq_position = at::empty_like(qc, acc_opts);
    if (rel_grad) diag = at::empty({a.batch, a.heads_q, a.num_relative()}, acc_opts);
    if (rel_keys) drel = at::empty({a.batch, a.heads_q, a.num_relative(), a.dim}, acc_opts);
    const int64_t max_bytes = max_shared_bytes(q);

    const auto dtype = q.scalar_type();
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, "attention_bwd_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      auto p = make_params<scalar_t>(a, in);
      p.q = qc.const_data_ptr<scalar_t>();
      p.k = kc.const_data_ptr<scalar_t>();
      p.v = vc.const_data_ptr<scalar_t>();
      p.grad_out = dout.const_data_ptr<scalar_t>();
      p.lse = lse_c.const_data_ptr<acc_t>();
      p.delta = delta.const_data_ptr<acc_t>();
      p.dq = g.q.data_ptr<scalar_t>();
      p.dk = g.k.data_ptr<scalar_t>();
      p.dv = g.v.data_ptr<scalar_t>();
      p.dbias = data_or_null<acc_t>(dbias);
      p.dq_content = data_or_null<acc_t>(dq_content);
      p.dq_position = data_or_null<acc_t>(dq_position);
      p.diag = data_or_null<acc_t>(diag);
      p.drel = data_or_null<acc_t>(drel);
      dispatch_policy(a.policy, [&](auto policy) {
        using Policy = decltype(policy);
        if (!backward_on_tensor_cores<scalar_t, Policy>(p, a, q)) {
          TileChoice t = choose_tiles(kDkDvTiles, dkdv_plan, a.len_q, a.len_k, a, sizeof(acc_t),
                                      max_bytes, "attention dK/dV");
          set_tiles(p, t);
          at::Tensor table;
          set_home_tiles(p, a, a.len_k, t.bk, table, q.device());
          launch(attention::attention_dkdv_kernel<scalar_t, Policy>, "attention_dkdv_kernel",
                 a.batch * a.heads_k * p.tiles, p);
          t = choose_tiles(kDqTiles, dq_plan, a.len_q, a.len_k, a, sizeof(acc_t), max_bytes,
                           "attention dQ");
          set_tiles(p, t);
          set_home_tiles(p, a, a.len_q, t.bq, table, q.device());
          launch(attention::attention_dq_kernel<scalar_t, Policy>, "attention_dq_kernel",
                 a.batch * a.heads_q * p.tiles, p);
        }
        if constexpr (Policy::kRelativeGrad) {
          const TileChoice t = choose_tiles(kRelativeTiles, relative_plan, a.len_q,
                                            a.num_relative(), a, sizeof(acc_t), max_bytes,
                                            "attention relative-position gradient");
          set_tiles(p, t);
          p.tiles = ceil_div(a.num_relative(), t.bk);
          launch(attention::attention_relative_kernel<scalar_t, Policy>,
                 "attention_relative_kernel", a.batch * a.heads_q * p.tiles, p);
        }
      });
    });

    if (a.rotary_dim > 0) {  // the kernels' dq, dk are those of the rotated q, k
      unrotate_(g.q, in.rotary_q, a);
      unrotate_(g.k, in.rotary_k, a);
    }
    // Score-term gradients: fixed-order sums over the batch and per bucket / distance.
    if (bias_grad) g.bias = dbias.sum_to_size(s.bias->sizes()).to(s.bias->scalar_type());
    if (!rel_grad) return g;
    const auto per_r = diag.sum(0);  // (Hq, num_rel): dS summed over the pairs of each r
    if (a.policy == ScorePolicy::T5) {
      g.t5_table = t5_table_grad(per_r, in.buckets, *s.t5_table, bucket_sum_kernel);
    } else if (a.policy == ScorePolicy::Alibi) {
      g.alibi_slopes = alibi_slopes_grad(per_r, alibi_distance(a, acc_opts), *s.alibi_slopes);
    } else {
      // Row n = r + rel_zero of R and S; rows past R's end are never visible (causal, window).
      const int64_t n_lo = a.r_min() + a.rel_zero;
      const int64_t count = std::min(a.num_relative(), a.rel_len - n_lo);
      auto dr = at::zeros({a.rel_len, a.heads_q, a.dim}, acc_opts);
      auto ds = at::zeros({a.rel_len, a.heads_q}, acc_opts);
      if (count > 0) {
        dr.narrow(0, n_lo, count).copy_(drel.sum(0).narrow(1, 0, count).transpose(0, 1) * a.scale);
        ds.narrow(0, n_lo, count).copy_(per_r.narrow(1, 0, count).t() * a.scale);
      }
      g.rel_keys = dr.to(s.rel_keys->scalar_type());
      if (s.rel_scores) g.rel_scores = ds.to(s.rel_scores->scalar_type());
      if (s.content_bias) g.content_bias = dq_content.sum({0, 2}).to(s.content_bias->scalar_type());
      if (s.position_bias)
        g.position_bias = dq_position.sum({0, 2}).to(s.position_bias->scalar_type());
    }
    return g;
  }
};

}  // namespace

SEQOPS_CUDA_LIBRARY_IMPL(m) {
  m.impl("attention", &attention_forward_entry<CudaAttention>);
  m.impl("attention_backward", &attention_backward_entry<CudaAttention>);
}

}  // namespace seqops::cuda
