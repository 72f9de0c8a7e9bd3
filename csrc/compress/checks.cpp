// Validation of the compress op's arguments (both devices run the same checks).
#include "common/checks.h"
#include "compress/compress.h"

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

}  // namespace seqops
