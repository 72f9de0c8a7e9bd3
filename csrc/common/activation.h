// LAMA score activations as compile-time policies usable on host and device.
#pragma once

#include <cmath>
#include <string>

#include "common/host_device.h"

namespace seqops {

enum class Activation : int { Identity = 0, Tanh = 1, Relu = 2, Sigmoid = 3 };

Activation parse_activation(const std::string& name);  // raises on unknown names

// f(z) and f'(z) expressed through a = f(z) where that is cheaper.
template <typename acc_t>
SEQOPS_HOST_DEVICE acc_t activate(Activation act, acc_t z) {
  switch (act) {
    case Activation::Tanh: return ::tanh(z);
    case Activation::Relu: return z > acc_t(0) ? z : acc_t(0);
    case Activation::Sigmoid: return acc_t(1) / (acc_t(1) + ::exp(-z));
    default: return z;
  }
}

template <typename acc_t>
SEQOPS_HOST_DEVICE acc_t activation_grad(Activation act, acc_t z, acc_t a) {
  switch (act) {
    case Activation::Tanh: return acc_t(1) - a * a;
    case Activation::Relu: return z > acc_t(0) ? acc_t(1) : acc_t(0);
    case Activation::Sigmoid: return a * (acc_t(1) - a);
    default: return acc_t(1);
  }
}

}  // namespace seqops
