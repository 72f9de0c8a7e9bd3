// Runs TorchScript models that call seqops ops with LibTorch and the seqops library only (no
// Python), the C++ half of tests/deploy/test_script.py.
//
//   seqops_load_scripted DIR NAME...
//
// For each NAME, DIR/NAME.pt is a model saved by torch.jit.save and DIR/NAME.data.pt holds
// (args, expected) saved by torch.save: the forward's arguments and the tensors Python computed.
// Prints PASS or FAIL per model; the exit status is 0 only when every model matches.
//
// Inference only: seqops registers its autograd formulas from Python, so a C++ program that
// needs gradients through these ops does not get them (see the README's deployment table).
#include <torch/script.h>
#include <torch/serialize.h>

#include <fstream>
#include <iostream>
#include <iterator>
#include <string>
#include <vector>

namespace {

std::vector<char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open " + path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// The tensors of a forward's result, depth first (a tensor, or tuples / lists of them).
void flatten(const c10::IValue& value, std::vector<at::Tensor>& out) {
  if (value.isTensor()) {
    out.push_back(value.toTensor());
  } else if (value.isTuple()) {
    for (const auto& v : value.toTupleRef().elements()) flatten(v, out);
  } else if (value.isList()) {
    for (const auto& v : value.toListRef()) flatten(v, out);
  }
}

// Empty string when the model reproduces Python's outputs, else what differs.
std::string check(const std::string& dir, const std::string& name) {
  torch::jit::Module model = torch::jit::load(dir + "/" + name + ".pt");
  model.eval();
  const c10::IValue data = torch::pickle_load(read_bytes(dir + "/" + name + ".data.pt"));
  const auto& pair = data.toTupleRef().elements();
  const auto& arg_values = pair.at(0).toTupleRef().elements();
  std::vector<c10::IValue> args(arg_values.begin(), arg_values.end());
  std::vector<at::Tensor> got, want;
  {
    torch::NoGradGuard no_grad;
    flatten(model.forward(args), got);
  }
  flatten(pair.at(1), want);
  if (got.size() != want.size())
    return std::to_string(got.size()) + " outputs, expected " + std::to_string(want.size());
  for (size_t i = 0; i < got.size(); ++i) {
    if (got[i].sizes() != want[i].sizes()) return "output " + std::to_string(i) + " has another shape";
    if (!at::allclose(got[i], want[i], 1e-4, 1e-5))
      return "output " + std::to_string(i) + " differs by " +
             std::to_string((got[i] - want[i]).abs().max().item<double>());
  }
  return "";
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::cerr << "usage: " << argv[0] << " DIR NAME...\n";
    return 2;
  }
  int failures = 0;
  for (int i = 2; i < argc; ++i) {
    std::string error;
    try {
      error = check(argv[1], argv[i]);
    } catch (const std::exception& e) {
      error = e.what();
    }
    if (!error.empty()) ++failures;
    std::cout << (error.empty() ? "PASS " : "FAIL ") << argv[i] << (error.empty() ? "" : ": " + error) << "\n";
  }
  return failures == 0 ? 0 : 1;
}
