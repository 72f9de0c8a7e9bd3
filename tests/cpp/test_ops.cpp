// Calls every forward op through the dispatcher from C++ (no Python) and compares it
// with a float64 ATen computation. Exit status 0 only if every check passes.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <iostream>
#include <optional>
#include <string>
#include <tuple>

namespace {

int failures = 0, passes = 0;

void expect_close(const char* what, const at::Tensor& got, const at::Tensor& want) {
  const bool ok = at::allclose(got, want, 1e-10, 1e-10);
  (ok ? passes : failures)++;
  std::cout << (ok ? "PASS " : "FAIL ") << what << "\n";
}

using Pair = std::tuple<at::Tensor, at::Tensor>;
using OptT = std::optional<at::Tensor>;

}  // namespace

int main() {
  auto& dispatcher = c10::Dispatcher::singleton();
  const auto opts = at::TensorOptions().dtype(at::kDouble);
  const at::Tensor x = at::randn({3, 29, 12}, opts);
  const at::Tensor w = at::randn({2, 12}, opts);
  const at::Tensor mask = at::rand({3, 29}, opts) > 0.3;
  const at::Tensor keep = mask.unsqueeze(1);  // (B, 1, L)

  auto seq_pool = dispatcher.findSchemaOrThrow("seqops::seq_pool", "")
                      .typed<Pair(const at::Tensor&, const at::Tensor&, const OptT&, const OptT&)>();
  const auto [out, lse] = seq_pool.call(x, w, std::nullopt, mask);
  const at::Tensor logits = at::einsum("bld,hd->bhl", {x, w}).masked_fill(keep.logical_not(), -INFINITY);
  expect_close("seq_pool", out, at::matmul(at::softmax(logits, -1), x));
  expect_close("seq_pool lse", lse, at::logsumexp(logits, -1));

  auto masked_pool = dispatcher.findSchemaOrThrow("seqops::masked_pool", "")
                         .typed<Pair(const at::Tensor&, const OptT&, const std::string&)>();
  const at::Tensor m = mask.unsqueeze(-1).to(at::kDouble);
  const at::Tensor sum = std::get<0>(masked_pool.call(x, mask, "sum"));
  expect_close("masked_pool sum", sum, (x * m).sum(1));

  auto lama_pool = dispatcher.findSchemaOrThrow("seqops::lama_pool", "")
                       .typed<Pair(const at::Tensor&, const at::Tensor&, const at::Tensor&, const OptT&,
                                   const std::string&, bool, double)>();
  const at::Tensor q = at::randn({2, 12}, opts);
  const auto [pooled, weights] = lama_pool.call(x, w, q, std::nullopt, "tanh", true, 1e-12);
  const at::Tensor g = at::matmul(x.mean(1), w.t()).unsqueeze(-1);         // (B, H, 1)
  const at::Tensor a = at::tanh(g * at::einsum("bld,hd->bhl", {x, q}));
  const at::Tensor want_w = at::softmax(a / a.norm(2, {1}, true), -1);
  expect_close("lama_pool weights", weights, want_w);
  expect_close("lama_pool pooled", pooled, at::matmul(want_w, x));

  // attention (boxed call: the schema has many optional arguments), causal, key padding, ALiBi.
  const int64_t Lq = 7, Lk = 11;
  const at::Tensor qa = at::randn({3, 2, Lq, 12}, opts), ka = at::randn({3, 1, Lk, 12}, opts),
                   va = at::randn({3, 1, Lk, 5}, opts), slopes = at::rand({2}, opts);
  const at::Tensor key_mask = at::rand({3, Lk}, opts) > 0.3;
  auto attention = dispatcher.findSchemaOrThrow("seqops::attention", "");
  std::vector<c10::IValue> stack{qa, ka, va, key_mask, true, c10::IValue(), 0.0, c10::IValue(),
                                 c10::IValue(), c10::IValue(), true, int64_t{128}, slopes};
  // The rest (rel_keys onwards) at their schema defaults: a boxed call must push every argument.
  const auto& arguments = attention.schema().arguments();
  for (size_t i = stack.size(); i < arguments.size(); ++i) stack.push_back(*arguments[i].default_value());
  attention.callBoxed(&stack);
  const at::Tensor i_pos = at::arange(Lq, opts).unsqueeze(1) + (Lk - Lq), j_pos = at::arange(Lk, opts);
  const at::Tensor visible = (j_pos <= i_pos).logical_and(key_mask.view({3, 1, 1, Lk}));
  const at::Tensor alibi = -slopes.view({2, 1, 1}) * (j_pos - i_pos).abs();  // (H, Lq, Lk)
  const at::Tensor att_logits = (at::matmul(qa, ka.transpose(-1, -2)) / std::sqrt(12.0) + alibi)
                                    .masked_fill(visible.logical_not(), -INFINITY);
  const at::Tensor probs = at::softmax(att_logits, -1).nan_to_num(0.0);  // rows seeing nothing: 0
  expect_close("attention", stack[0].toTensor(), at::matmul(probs, va));

  std::cout << passes << " passed, " << failures << " failed\n";
  return failures == 0 ? 0 : 1;
}
