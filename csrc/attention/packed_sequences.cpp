#include "attention/packed_sequences.h"

#include <algorithm>
#include <limits>

namespace seqops {

void check_packed_sequences(AttentionArgs& a, const AttentionOptions& o, const at::Tensor& q) {
  a.num_sequences = a.max_seqlen = 0;
  if (!o.cu_seqlens) return;
  const at::Tensor& c = *o.cu_seqlens;
  TORCH_CHECK(c.dim() == 1 && (c.scalar_type() == at::kLong || c.scalar_type() == at::kInt) && c.numel() >= 2,
              "cu_seqlens must be a 1-D int32 or int64 tensor of num_sequences + 1 >= 2 offsets, got dtype ",
              c.scalar_type(), " and shape ", c.sizes());
  TORCH_CHECK(c.is_cpu() || c.device() == q.device(), "cu_seqlens must be on the CPU or q's device (", q.device(),
              "), got ", c.device());
  TORCH_CHECK(a.len_q == a.len_k, "cu_seqlens packs self-attention (q and k share the sequences): q and k "
              "must have the same length, got Lq = ", a.len_q, " and Lk = ", a.len_k);
  TORCH_CHECK(!o.query_offset || *o.query_offset == 0, "query_offset does not combine with cu_seqlens "
              "(positions restart at each sequence's first token), got query_offset = ", *o.query_offset);
  TORCH_CHECK(a.len_q <= std::numeric_limits<int32_t>::max(), "cu_seqlens: packed rows hold at most 2^31 - 1 tokens, got ",
              a.len_q);
  a.num_sequences = c.numel() - 1;
}

PackedSequences packed_sequences(const AttentionArgs& a, const AttentionOptions& o, const at::Device& device) {
  if (a.num_sequences == 0) return {};
  PackedSequences packed;
  const at::Tensor host = o.cu_seqlens->to(at::kCPU, at::kLong).contiguous();
  const int64_t* off = host.data_ptr<int64_t>();
  const int64_t n = host.numel();
  TORCH_CHECK(off[0] == 0 && off[n - 1] == a.len_q, "cu_seqlens must start at 0 and end at the length of q (",
              a.len_q, "), got ", off[0], " and ", off[n - 1]);
  for (int64_t s = 0; s + 1 < n; ++s) {
    TORCH_CHECK(off[s + 1] >= off[s], "cu_seqlens must be non-decreasing, got cu_seqlens[", s + 1, "] = ",
                off[s + 1], " < cu_seqlens[", s, "] = ", off[s]);
    packed.max_seqlen = std::max(packed.max_seqlen, off[s + 1] - off[s]);
  }
  packed.offsets.assign(off, off + n);
  // Per token, the offset its sequence starts at (shift 0) or ends at (shift 1).
  const at::Tensor cu = host.to(device);
  const at::Tensor lengths = cu.narrow(0, 1, n - 1) - cu.narrow(0, 0, n - 1);
  const auto bounds = [&](int64_t shift) {
    return at::repeat_interleave(cu.narrow(0, shift, n - 1), lengths, 0, a.len_q).to(at::kInt).contiguous();
  };
  packed.begin = bounds(0);
  packed.end = bounds(1);
  return packed;
}

AttentionArgs PackedSequences::restrict(AttentionArgs a) const {
  if (begin.defined()) {
    a.band.seq_begin = begin.data_ptr<int32_t>();
    a.band.seq_end = end.data_ptr<int32_t>();
    a.seq_offsets = offsets.data();
    a.max_seqlen = max_seqlen;
  }
  return a;
}

std::vector<RowBlock> row_blocks(const AttentionArgs& a, int64_t rows) {
  std::vector<RowBlock> blocks;
  const auto add = [&](int64_t first, int64_t end) {
    for (int64_t i = first; i < end; i += rows) blocks.push_back({i, std::min(rows, end - i)});
  };
  if (a.seq_offsets == nullptr) add(0, a.len_q);
  else
    for (int64_t s = 0; s < a.num_sequences; ++s) add(a.seq_offsets[s], a.seq_offsets[s + 1]);
  return blocks;
}

at::Tensor token_positions(const AttentionArgs& a, int64_t first, int64_t len, const at::Device& device) {
  const auto f64 = at::TensorOptions().dtype(at::kDouble).device(device);
  if (a.band.seq_begin == nullptr) return at::arange(first, first + len, f64);
  const at::Tensor begin = at::from_blob(const_cast<int32_t*>(a.band.seq_begin), {len},
                                         at::TensorOptions().dtype(at::kInt).device(device));
  return at::arange(len, f64) - begin.to(at::kDouble);
}

}  // namespace seqops
