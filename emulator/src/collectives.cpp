// The warp collectives' host semantics, from the CUDA C++ Programming Guide's contracts (warp
// shuffle functions, warp vote functions, __syncwarp). The scheduler calls a resolver once all
// lanes named in the mask have posted; `lanes[j]` is lane j's post, nullptr outside the mask.
#include <cstring>
#include <sstream>

#include "cuda_runtime.h"

namespace seqops::emulator {
namespace {

enum class Source { Xor, Down, Up, Index };

// Lane `lane` reads var from the lane this returns, or keeps its own (returns lane), by the
// guide's rules for a width-wide segment: xor and down keep their own value when the source is
// past the segment's end, up when it is before the segment's start; an index wraps modulo width.
unsigned source_lane(Source how, unsigned lane, int param, int width) {
  const unsigned w = static_cast<unsigned>(width), start = lane & ~(w - 1);
  switch (how) {
    case Source::Xor: {
      const unsigned src = lane ^ static_cast<unsigned>(param);
      return src >= start + w ? lane : src;
    }
    case Source::Down: {
      const unsigned src = lane + static_cast<unsigned>(param);
      return src >= start + w ? lane : src;
    }
    case Source::Up:
      return static_cast<int>(lane) - param < static_cast<int>(start) ? lane : lane - param;
    case Source::Index: return start + (static_cast<unsigned>(param) % w);
  }
  return lane;
}

template <Source how>
void shuffle(WarpPost* const (&lanes)[32], unsigned mask) {
  unsigned char values[32][8];
  for (unsigned j = 0; j < 32; ++j)
    if (lanes[j] != nullptr) std::memcpy(values[j], lanes[j]->in, lanes[j]->bytes);
  for (unsigned j = 0; j < 32; ++j) {
    WarpPost* p = lanes[j];
    if (p == nullptr) continue;
    const unsigned src = source_lane(how, j, p->param, p->width);
    if (src >= 32 || !(mask >> src & 1u)) {
      std::ostringstream s;
      s << p->what << ": lane " << j << " reads lane " << src << ", outside the mask 0x"
        << std::hex << mask;
      collective_fault(*p, s.str().c_str());
      return;
    }
    std::memcpy(p->out, values[src], p->bytes);
  }
}

}  // namespace

void resolve_shfl_xor(WarpPost* const (&lanes)[32], unsigned mask) { shuffle<Source::Xor>(lanes, mask); }
void resolve_shfl_down(WarpPost* const (&lanes)[32], unsigned mask) { shuffle<Source::Down>(lanes, mask); }
void resolve_shfl_up(WarpPost* const (&lanes)[32], unsigned mask) { shuffle<Source::Up>(lanes, mask); }
void resolve_shfl_idx(WarpPost* const (&lanes)[32], unsigned mask) { shuffle<Source::Index>(lanes, mask); }

void resolve_ballot(WarpPost* const (&lanes)[32], unsigned mask) {
  unsigned bits = 0;
  for (unsigned j = 0; j < 32; ++j)
    if (lanes[j] != nullptr && *static_cast<const unsigned*>(lanes[j]->in) != 0) bits |= 1u << j;
  for (unsigned j = 0; j < 32; ++j)
    if (lanes[j] != nullptr) *static_cast<unsigned*>(lanes[j]->out) = bits & mask;
}

void resolve_syncwarp(WarpPost* const (&)[32], unsigned) {}

}  // namespace seqops::emulator
