// The data pointer of an optional tensor (a std::optional, or an at::Tensor that may be
// undefined), or nullptr: what a kernel receives for an absent argument. T const reads through
// const_data_ptr; T mutable gives a writable pointer.
#pragma once
#include <ATen/ATen.h>

#include <optional>
#include <type_traits>

namespace seqops {

template <typename T>
T* data_or_null(const at::Tensor& t) {
  if (!t.defined()) return nullptr;
  if constexpr (std::is_const_v<T>) return t.const_data_ptr<std::remove_const_t<T>>();
  else return t.data_ptr<T>();
}

template <typename T>
T* data_or_null(const std::optional<at::Tensor>& t) {
  return t ? data_or_null<T>(*t) : nullptr;
}

}  // namespace seqops
