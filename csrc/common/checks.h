// Argument checks shared by every op entry point (CPU and CUDA). Each message names the
// argument and prints the expected and the given value.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <string>

namespace seqops {

inline void check_rank(const at::Tensor& t, const char* name, int64_t rank, const char* layout) {
  TORCH_CHECK(t.dim() == rank, name, " must have ", rank, " dimensions ", layout, ", got ",
              t.dim(), " dimensions with shape ", t.sizes());
}

inline void check_size(const at::Tensor& t, const char* name, int64_t dim, int64_t expected,
                       const char* what) {
  TORCH_CHECK(t.size(dim) == expected, name, ".size(", dim, ") must equal ", what, " = ",
              expected, ", got ", t.size(dim), " (", name, " shape ", t.sizes(), ")");
}

inline void check_same_device(const at::Tensor& t, const char* name, const at::Tensor& ref,
                              const char* ref_name = "x") {
  TORCH_CHECK(t.device() == ref.device(), name, " must be on the same device as ", ref_name, " (",
              ref.device(), "), got ", t.device());
}

inline void check_same_dtype(const at::Tensor& t, const char* name, const at::Tensor& ref,
                             const char* ref_name = "x") {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), name, " must have the same dtype as ", ref_name,
              " (", ref.scalar_type(), "), got ", t.scalar_type());
}

// Whether an op on x runs the CUDA kernels: x is a CUDA tensor, or this is the host emulator's
// library (emulator/), where the CUDA entry points run on CPU tensors.
inline bool runs_cuda_kernels(const at::Tensor& x) {
#if defined(SEQOPS_EMULATOR)
  (void)x;
  return true;
#else
  return x.is_cuda();
#endif
}

// Floating dtypes each device's kernels are compiled for.
inline void check_floating_dtype(const at::Tensor& x, const char* name) {
  const auto st = x.scalar_type();
  if (runs_cuda_kernels(x)) {
    TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
                name, " on CUDA must be float16, bfloat16, float32 or float64, got ", st);
  } else {
    TORCH_CHECK(x.is_cpu(), name, " must be a CPU or CUDA tensor, got device ", x.device());
    TORCH_CHECK(st == at::kFloat || st == at::kDouble || st == at::kBFloat16, name,
                " on CPU must be bfloat16, float32 or float64, got ", st);
  }
}

// A dropout probability argument (p = 1 is left to the Python wrappers: all zeros).
inline void check_dropout_p(double p, const char* name) {
  TORCH_CHECK(p >= 0.0 && p < 1.0, name, " must be in [0, 1), got ", p);
}

// A dropout_rng argument: the (seed, offset) pair of the Philox stream (common/philox.h), a CPU
// int64 tensor of shape (2,) whatever the device of the data.
struct DropoutStream {
  uint64_t seed, offset;
};
inline DropoutStream read_dropout_rng(const at::Tensor& rng, const char* name) {
  TORCH_CHECK(rng.is_cpu() && rng.scalar_type() == at::kLong && rng.dim() == 1 && rng.numel() == 2,
              name, " must be a CPU int64 tensor of shape (2,) (seed, offset), got ", rng.scalar_type(),
              " ", rng.sizes(), " on ", rng.device());
  const auto r = rng.contiguous();
  return {static_cast<uint64_t>(r.data_ptr<int64_t>()[0]), static_cast<uint64_t>(r.data_ptr<int64_t>()[1])};
}

// Boolean (batch, length) mask, True = keep.
inline void check_mask(const std::optional<at::Tensor>& mask, const at::Tensor& x, int64_t batch,
                       int64_t length) {
  if (!mask) return;
  const auto& m = *mask;
  TORCH_CHECK(m.scalar_type() == at::kBool, "mask must be a bool tensor (True = keep), got dtype ",
              m.scalar_type(), "; convert a 0/1 mask with mask.bool()");
  TORCH_CHECK(m.dim() == 2 && m.size(0) == batch && m.size(1) == length,
              "mask must have shape (batch, length) = (", batch, ", ", length, "), got ",
              m.sizes());
  check_same_device(m, "mask", x);
}

// Contiguous copy of an optional tensor (or nullopt).
inline std::optional<at::Tensor> contiguous_or_none(const std::optional<at::Tensor>& t) {
  if (!t) return std::nullopt;
  return t->contiguous();
}

}  // namespace seqops
