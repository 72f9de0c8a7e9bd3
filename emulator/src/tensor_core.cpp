// Host semantics of mma.sync m16n8k16 (f16 / bf16 inputs, fp32 accumulators) and ldmatrix m8n8
// b16, from the PTX ISA's contract and fragment layouts (csrc/common/cuda/tensor_core.cuh has the
// layouts; tests/emu/shim_test.cpp checks each against a plain matrix product).
//
// Rounding: the ISA defines D = A B + C with fp32 accumulation but not the order or rounding of
// the tensor core's internal sum. Here every product is exact (16-bit inputs) and the 16 products
// plus C are summed in double, then rounded once to float: the most accurate result the contract
// allows. A device may differ from it in the last bits, so GPU-vs-emulator comparisons need an
// fp32 tolerance, not bit equality (the emulator's own runs in different thread orders still agree
// bit for bit).
#include "emulator/tensor_core.h"

#include <cmath>
#include <cstring>
#include <sstream>

#include "cuda_runtime.h"

namespace seqops::emulator {
namespace {

constexpr unsigned kFullWarp = 0xffffffffu;

double bf16_value(uint16_t bits) {
  const uint32_t wide = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &wide, sizeof f);
  return f;
}

double f16_value(uint16_t bits) {
  const int exponent = bits >> 10 & 0x1f, mantissa = bits & 0x3ff;
  const double sign = bits >> 15 ? -1.0 : 1.0;
  if (exponent == 0x1f) return mantissa ? std::nan("") : sign * INFINITY;
  if (exponent == 0) return sign * std::ldexp(mantissa, -24);  // zero and subnormals
  return sign * std::ldexp(mantissa | 0x400, exponent - 25);
}

uint16_t low(uint32_t pair) { return static_cast<uint16_t>(pair & 0xffffu); }
uint16_t high(uint32_t pair) { return static_cast<uint16_t>(pair >> 16); }

struct MmaOperands {
  uint32_t a[4], b[2];
  float c[4];
};

// lane = 4 g + t; the layouts of tensor_core.cuh.
template <bool kBF16>
void resolve_mma(WarpPost* const (&lanes)[32], unsigned) {
  const auto value = [](uint16_t bits) { return kBF16 ? bf16_value(bits) : f16_value(bits); };
  double a[16][16], b[16][8], c[16][8];
  for (int lane = 0; lane < 32; ++lane) {
    const auto& in = *static_cast<const MmaOperands*>(lanes[lane]->in);
    const int g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; ++i) {
      const int row = g + 8 * (i & 1), col = 2 * t + 8 * (i >> 1);
      a[row][col] = value(low(in.a[i]));
      a[row][col + 1] = value(high(in.a[i]));
      c[g + 8 * (i >> 1)][2 * t + (i & 1)] = in.c[i];
    }
    for (int i = 0; i < 2; ++i) {
      b[2 * t + 8 * i][g] = value(low(in.b[i]));
      b[2 * t + 8 * i + 1][g] = value(high(in.b[i]));
    }
  }
  for (int lane = 0; lane < 32; ++lane) {
    auto* d = static_cast<float*>(lanes[lane]->out);
    const int g = lane / 4, t = lane % 4;
    for (int i = 0; i < 4; ++i) {
      const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1);
      double sum = c[row][col];
      for (int k = 0; k < 16; ++k) sum += a[row][k] * b[k][col];
      d[i] = static_cast<float>(sum);
    }
  }
}

// Lanes 8j .. 8j + 7 address the rows of tile j; lane 4 g + t receives (row g, columns 2t, 2t + 1)
// of each tile, or with kTrans (rows 2t, 2t + 1, column g).
template <int kTiles, bool kTrans>
void resolve_ldmatrix(WarpPost* const (&lanes)[32], unsigned) {
  uint16_t tile[kTiles][8][8];
  for (int j = 0; j < kTiles; ++j) {
    for (int r = 0; r < 8; ++r) {
      const WarpPost& source = *lanes[8 * j + r];
      const void* row = *static_cast<const void* const*>(source.in);
      const char* problem = reinterpret_cast<uintptr_t>(row) % 16 != 0 ? "is not 16-byte aligned"
                            : !in_shared_memory(row, 16)              ? "is not in shared memory"
                                                                      : nullptr;
      if (problem != nullptr) {
        std::ostringstream s;
        s << source.what << ": lane " << 8 * j + r << "'s row address " << row << " " << problem;
        collective_fault(source, s.str().c_str());
        return;
      }
      std::memcpy(tile[j][r], row, 16);
    }
  }
  for (int lane = 0; lane < 32; ++lane) {
    auto* out = static_cast<uint32_t*>(lanes[lane]->out);
    const int g = lane / 4, t = lane % 4;
    for (int j = 0; j < kTiles; ++j)
      out[j] = kTrans ? (tile[j][2 * t][g] | static_cast<uint32_t>(tile[j][2 * t + 1][g]) << 16)
                      : (tile[j][g][2 * t] | static_cast<uint32_t>(tile[j][g][2 * t + 1]) << 16);
  }
}

template <bool kTrans>
constexpr WarpResolver ldmatrix_resolver(int tiles) {
  return tiles == 1 ? resolve_ldmatrix<1, kTrans>
         : tiles == 2 ? resolve_ldmatrix<2, kTrans>
                      : resolve_ldmatrix<4, kTrans>;
}

const char* ldmatrix_name(int tiles, bool trans) {
  static const char* const names[2][3] = {
      {"ldmatrix.m8n8.x1", "ldmatrix.m8n8.x2", "ldmatrix.m8n8.x4"},
      {"ldmatrix.m8n8.x1.trans", "ldmatrix.m8n8.x2.trans", "ldmatrix.m8n8.x4.trans"}};
  return names[trans][tiles == 1 ? 0 : tiles == 2 ? 1 : 2];
}

}  // namespace

void mma_m16n8k16(bool bf16, float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                  const char* file, int line) {
  MmaOperands in;
  std::memcpy(in.a, a, sizeof in.a);
  std::memcpy(in.b, b, sizeof in.b);
  std::memcpy(in.c, d, sizeof in.c);
  float out[4];
  WarpPost post{bf16 ? resolve_mma<true> : resolve_mma<false>,
                bf16 ? "mma.sync.m16n8k16.bf16" : "mma.sync.m16n8k16.f16",
                kFullWarp, &in, out, sizeof in, 0, 32, file, line};
  warp_collective(post);
  std::memcpy(d, out, sizeof out);
}

void ldmatrix(int tiles, bool trans, uint32_t* r, const void* row, const char* file, int line) {
  WarpPost post{trans ? ldmatrix_resolver<true>(tiles) : ldmatrix_resolver<false>(tiles),
                ldmatrix_name(tiles, trans), kFullWarp, &row, r, sizeof row, 0, 32, file, line};
  warp_collective(post);
}

}  // namespace seqops::emulator
