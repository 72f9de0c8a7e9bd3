// The compress op's host code that both devices share: argument validation, and the 'conv'
// mode, which is a GEMM on x's packed windows (device-agnostic ATen calls; seqops/compress.h).
#include "seqops/checks.h"
#include "seqops/compress.h"

namespace seqops {

CompressMode parse_compress_mode(const std::string& mode) {
  if (mode == "mean") return CompressMode::Mean;
  if (mode == "max") return CompressMode::Max;
  if (mode == "conv") return CompressMode::Conv;
  TORCH_CHECK(false, "mode must be one of 'mean', 'max', 'conv', got '", mode, "'");
}

Remainder parse_remainder(const std::string& remainder) {
  if (remainder == "error") return Remainder::Error;
  if (remainder == "keep") return Remainder::Keep;
  TORCH_CHECK(false, "remainder must be 'error' or 'keep', got '", remainder, "'");
}

static void check_parameters(const at::Tensor& x, int64_t rate, CompressMode mode,
                             const std::optional<at::Tensor>& weight,
                             const std::optional<at::Tensor>& bias) {
  if (mode != CompressMode::Conv) {
    TORCH_CHECK(!weight && !bias, "weight and bias are only used by mode='conv', got ",
                weight ? "a weight" : "a bias", " for mode='",
                mode == CompressMode::Mean ? "mean" : "max", "'");
    return;
  }
  TORCH_CHECK(weight.has_value(), "mode='conv' needs a weight of shape (out_dim, dim, rate) = (*, ",
              x.size(2), ", ", rate, "), got None");
  const auto& w = *weight;
  TORCH_CHECK(w.dim() == 3 && w.size(0) >= 1 && w.size(1) == x.size(2) && w.size(2) == rate,
              "weight must have shape (out_dim, dim, rate) = (*, ", x.size(2), ", ", rate,
              "), the layout of nn.Conv1d(dim, out_dim, kernel_size=rate, stride=rate).weight, got ",
              w.sizes());
  check_same_device(w, "weight", x);
  check_same_dtype(w, "weight", x);
  if (bias) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == w.size(0), "bias must have shape (out_dim,) = (",
                w.size(0), "), got ", bias->sizes());
    check_same_device(*bias, "bias", x);
    check_same_dtype(*bias, "bias", x);
  }
}

CompressShape check_compress(const at::Tensor& x, int64_t rate, CompressMode mode,
                             const std::optional<at::Tensor>& weight,
                             const std::optional<at::Tensor>& bias, Remainder remainder) {
  check_rank(x, "x", 3, "(batch, length, dim)");
  check_floating_dtype(x, "x");
  TORCH_CHECK(x.size(2) >= 1, "x must have dim >= 1, got shape ", x.sizes());
  TORCH_CHECK(rate >= 1, "rate must be >= 1, got ", rate);
  const int64_t L = x.size(1);
  if (remainder == Remainder::Error) {
    TORCH_CHECK(L >= rate, "x's length (", L, ") is shorter than rate (", rate,
                "): no window to compress; remainder='keep' returns 0 windows and keeps all ", L,
                " rows uncompressed");
    TORCH_CHECK(L % rate == 0, "x's length (", L, ") is not a multiple of rate (", rate,
                ") and remainder='error'; remainder='keep' compresses the oldest ", L / rate * rate,
                " rows and keeps the newest ", L % rate, " uncompressed");
  }
  check_parameters(x, rate, mode, weight, bias);
  const int64_t out_dim = mode == CompressMode::Conv ? weight->size(0) : x.size(2);
  return CompressShape{x.size(0), L, x.size(2), rate, L / rate, out_dim};
}

CompressShape check_compress_backward(const at::Tensor& grad_out, const at::Tensor& x, int64_t rate,
                                      CompressMode mode, const std::optional<at::Tensor>& weight,
                                      const at::Tensor& index) {
  const CompressShape s = check_compress(x, rate, mode, weight, std::nullopt, Remainder::Keep);
  TORCH_CHECK(grad_out.sizes() == at::IntArrayRef({s.batch, s.windows, s.out_dim}),
              "grad_out must have shape (batch, windows, out_dim) = (", s.batch, ", ", s.windows,
              ", ", s.out_dim, "), got ", grad_out.sizes());
  check_same_device(grad_out, "grad_out", x);
  check_floating_dtype(grad_out, "grad_out");
  if (mode == CompressMode::Max) {
    TORCH_CHECK(index.scalar_type() == at::kLong &&
                    index.sizes() == at::IntArrayRef({s.batch, s.windows, s.dim}),
                "index must be an int64 tensor of shape (", s.batch, ", ", s.windows, ", ", s.dim,
                "), got ", index.scalar_type(), " ", index.sizes());
    check_same_device(index, "index", x);
  }
  return s;
}

at::Tensor unit_dim_stride(const at::Tensor& x) {
  return x.stride(2) == 1 || x.size(2) == 1 ? x : x.contiguous();
}

// The windows of x as a (B * W, D * rate) matrix whose column c * rate + k holds row k, feature c
// of the window: the column order of nn.Conv1d's weight viewed as (Dout, D * rate), so the GEMMs
// use the weight in place. Transposing each window's (rate, D) block is a cache-local copy
// (a transposed copy of the weight is not: 3-10x slower at D >= 256), and it also packs x's
// windows when x is a strided slice.
static at::Tensor windows_matrix(const at::Tensor& x, const CompressShape& s) {
  return x.narrow(1, 0, s.windows * s.rate)
      .unflatten(1, {s.windows, s.rate})
      .transpose(2, 3)
      .reshape({s.batch * s.windows, s.dim * s.rate});
}

static at::Tensor weight_matrix(const at::Tensor& weight, const CompressShape& s) {
  return weight.reshape({s.out_dim, s.dim * s.rate});  // a view of a contiguous weight
}

at::Tensor compress_conv_forward(const at::Tensor& x, const CompressShape& s,
                                 const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  auto out = at::empty({s.batch, s.windows, s.out_dim}, x.options());
  if (out.numel() == 0) return out;
  const auto X = windows_matrix(x, s);
  const auto Wt = weight_matrix(weight, s).t();  // (D * rate, Dout), a transposed view
  auto out2 = out.view({s.batch * s.windows, s.out_dim});
  if (bias) at::addmm_out(out2, *bias, X, Wt);
  else at::mm_out(out2, X, Wt);
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> compress_conv_backward(
    const at::Tensor& grad_out, const at::Tensor& x, const CompressShape& s,
    const at::Tensor& weight, bool x_grad, bool param_grad, bool has_bias) {
  const int64_t rows = s.batch * s.windows;
  const auto G = grad_out.contiguous().view({rows, s.out_dim});
  at::Tensor gx, gw, gb;
  if (x_grad) {
    gx = at::empty({s.batch, s.length, s.dim}, x.options());
    if (s.tail() > 0) gx.narrow(1, s.windows * s.rate, s.tail()).zero_();
    if (rows > 0) {
      const auto gxw = at::mm(G, weight_matrix(weight, s));  // (B * W, D * rate)
      gx.narrow(1, 0, s.windows * s.rate)
          .unflatten(1, {s.windows, s.rate})
          .copy_(gxw.view({s.batch, s.windows, s.dim, s.rate}).transpose(2, 3));
    }
  }
  if (param_grad) {
    // (Dout, D * rate) = G^T X over all B * W windows: nn.Conv1d's layout as computed.
    gw = rows > 0 ? at::mm(G.t(), windows_matrix(x, s)).view({s.out_dim, s.dim, s.rate})
                  : at::zeros({s.out_dim, s.dim, s.rate}, x.options());
    const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    if (has_bias) gb = G.sum(0, /*keepdim=*/false, acc).to(x.scalar_type());
  }
  return {gx, gw, gb};
}

}  // namespace seqops
