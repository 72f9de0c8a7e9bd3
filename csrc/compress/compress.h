// The compress op's contract, shared by the CPU and CUDA entry points.
//
// compress(x (B, L, D), rate, mode, weight, bias, remainder) -> out (B, W, Dout), index:
// window w covers rows [w * rate, (w + 1) * rate) of x, oldest first, and
//   mean  out[b, w, :] = mean of the window's rows                       (Dout = D)
//   max   out[b, w, :] = elementwise max (first row on ties, NaN sticks)  (Dout = D)
//   conv  out[b, w, o] = bias[o] + sum_{c, k} weight[o, c, k] x[b, w * rate + k, c]
//         (nn.Conv1d(D, Dout, kernel_size=rate, stride=rate) over the sequence)
// index (B, W, D) int64 holds the max's offset inside its window for 'max' (for the backward)
// and is empty otherwise.
//
// Remainder policy (L mod rate rows that fill no window), never silent:
//   'error' L must be a multiple of rate (and >= rate): anything else raises;
//   'keep'  W = L / rate windows are compressed from the oldest row on; the newest L mod rate
//           rows are not read and stay the caller's, uncompressed (seqops.ops.compress returns
//           them as `tail`; CompressiveMemory keeps them in the FIFO for the next call). L < rate
//           gives W = 0.
// The backward returns grad_x (B, L, D) with zeros in the tail rows.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <tuple>

#include "common/dtype.h"

namespace seqops {

enum class CompressMode : int { Mean = 0, Max = 1, Conv = 2 };
enum class Remainder : int { Error = 0, Keep = 1 };

CompressMode parse_compress_mode(const std::string& mode);  // raises on unknown modes
Remainder parse_remainder(const std::string& remainder);    // raises on unknown policies

struct CompressShape {
  int64_t batch, length, dim, rate, windows, out_dim;
  int64_t tail() const { return length - windows * rate; }
};

CompressShape check_compress(const at::Tensor& x, int64_t rate, CompressMode mode,
                             const std::optional<at::Tensor>& weight,
                             const std::optional<at::Tensor>& bias, Remainder remainder);

// The forward's checks on x / weight, plus grad_out (B, W, Dout) and index.
CompressShape check_compress_backward(const at::Tensor& grad_out, const at::Tensor& x, int64_t rate,
                                      CompressMode mode, const std::optional<at::Tensor>& weight,
                                      const at::Tensor& index);

// x with a unit stride along D (a copy only when x lacks one); the kernels take any batch and
// row strides, so slices of a longer memory are read in place.
inline at::Tensor unit_dim_stride(const at::Tensor& x) {
  return x.stride(2) == 1 || x.size(2) == 1 ? x : x.contiguous();
}

// 'conv' is one GEMM with K = rate * D against the weight in place, on x's windows packed as
// rows (each window's (rate, D) block transposed); device-agnostic ATen calls (mm dispatches to
// BLAS / cuBLAS; compress/conv_gemm.cpp): both devices' entry points call these.
at::Tensor compress_conv_forward(const at::Tensor& x, const CompressShape& s,
                                 const at::Tensor& weight, const std::optional<at::Tensor>& bias);
// Returns (grad_x or undefined, grad_weight or undefined, grad_bias or undefined).
std::tuple<at::Tensor, at::Tensor, at::Tensor> compress_conv_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const CompressShape& s,
    const at::Tensor& weight, bool x_grad, bool param_grad, bool has_bias);

// The dispatcher signatures, written once: each device file registers
// compress_forward_entry<Kernels> / compress_backward_entry<Kernels>, where Kernels provides the
// 'mean' / 'max' window reductions ('conv' is the shared GEMM path above):
//   static void forward(const CompressShape&, CompressMode, const at::Tensor& x (unit D stride),
//                       at::Tensor& out (B, W, D), at::Tensor& index (B, W, D) or empty);
//   static void backward(const CompressShape&, CompressMode, const at::Tensor& grad (B, W, D),
//                        const at::Tensor& index, at::Tensor& grad_x (B, L, D) contiguous);
// They are called only with B * W > 0; the backward writes the window rows, the entry zeroes
// the tail.
template <typename Kernels>
std::tuple<at::Tensor, at::Tensor> compress_forward_entry(const at::Tensor& x, int64_t rate,
                                                          const std::string& mode_name,
                                                          const std::optional<at::Tensor>& weight,
                                                          const std::optional<at::Tensor>& bias,
                                                          const std::string& remainder) {
  const CompressMode mode = parse_compress_mode(mode_name);
  const CompressShape s = check_compress(x, rate, mode, weight, bias, parse_remainder(remainder));
  const auto xs = unit_dim_stride(x);
  const auto index_options = x.options().dtype(at::kLong);
  if (mode == CompressMode::Conv)
    return {compress_conv_forward(xs, s, *weight, bias), at::empty({0}, index_options)};
  auto out = at::empty({s.batch, s.windows, s.dim}, x.options());
  auto index = mode == CompressMode::Max ? at::empty({s.batch, s.windows, s.dim}, index_options)
                                         : at::empty({0}, index_options);
  if (out.numel() > 0) Kernels::forward(s, mode, xs, out, index);
  return {out, index};
}

// Returns (grad_x, grad_weight, grad_bias); a gradient not asked for comes back empty.
template <typename Kernels>
std::tuple<at::Tensor, at::Tensor, at::Tensor> compress_backward_entry(
    const at::Tensor& grad_out, const at::Tensor& x, int64_t rate, const std::string& mode_name,
    const std::optional<at::Tensor>& weight, const at::Tensor& index, bool x_grad,
    bool weight_grad, bool bias_grad) {
  const CompressMode mode = parse_compress_mode(mode_name);
  const CompressShape s = check_compress_backward(grad_out, x, rate, mode, weight, index);
  TORCH_CHECK(mode == CompressMode::Conv || (!weight_grad && !bias_grad),
              "weight_grad / bias_grad need mode='conv' (the only mode with parameters)");
  const auto empty = [&] { return at::empty({0}, x.options()); };  // distinct: outputs never alias
  if (mode == CompressMode::Conv) {
    auto [gx, gw, gb] = compress_conv_backward(grad_out, unit_dim_stride(x), s, *weight, x_grad,
                                               weight_grad || bias_grad, bias_grad);
    return {x_grad ? gx : empty(), weight_grad ? gw : empty(), bias_grad ? gb : empty()};
  }
  if (!x_grad) return {empty(), empty(), empty()};
  auto gx = at::empty({s.batch, s.length, s.dim}, x.options());
  if (s.tail() > 0) gx.narrow(1, s.windows * s.rate, s.tail()).zero_();
  if (s.batch * s.windows > 0) {
    Kernels::backward(s, mode, grad_out.to(accumulate_type(x)).contiguous(), index.contiguous(), gx);
  }
  return {gx, empty(), empty()};
}

}  // namespace seqops
