// The compress op's 'conv' mode, which both devices share: one GEMM on x's packed windows
// against nn.Conv1d's weight in place (device-agnostic ATen calls: mm dispatches to BLAS /
// cuBLAS; contract in compress/compress.h).
#include "common/dtype.h"
#include "compress/compress.h"

namespace seqops {

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
    if (has_bias) gb = G.sum(0, /*keepdim=*/false, accumulate_type(x)).to(x.scalar_type());
  }
  return {gx, gw, gb};
}

}  // namespace seqops
