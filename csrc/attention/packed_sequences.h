// Packed sequences (the attention ops' cu_seqlens option): several sequences share each row of
// tokens, q and k packed alike; cu_seqlens (num_sequences + 1) holds the sequences' first tokens
// and the row's length, as FlashAttention's varlen layout. A query sees only its own sequence's
// keys (KeyBand::seq_begin / seq_end), positions restart per sequence: relative positions r =
// j - i need nothing more (i and j share a sequence), rotary rotates token t to t - seq_begin[t].
#pragma once
#include <vector>

#include "attention/attention.h"

namespace seqops {

// Checks what cu_seqlens is (1-D int32 / int64 of at least 2 offsets, on the CPU or q's device)
// and what it packs (Lq = Lk < 2^31, no query_offset), and records num_sequences in a. Its
// values are checked where they are read, by packed_sequences.
void check_packed_sequences(AttentionArgs& a, const AttentionOptions& o, const at::Tensor& q);

// The offsets on the host and each token's sequence bounds, (len_q,) int32 on the kernels'
// device, for the key band.
struct PackedSequences {
  at::Tensor begin, end;         // undefined when not packed
  std::vector<int64_t> offsets;  // cu_seqlens
  int64_t max_seqlen = 0;
  // a with its band restricted to each token's sequence, its seq_offsets and max_seqlen set;
  // points into this object, which must outlive the kernels that read it.
  AttentionArgs restrict(AttentionArgs a) const;
};

// Reads cu_seqlens once on the host (a CUDA tensor is copied back: one synchronization),
// checks its values (starts at 0, non-decreasing, ends at the length of q and k) and builds the
// bounds on `device`; empty when a is not packed.
PackedSequences packed_sequences(const AttentionArgs& a, const AttentionOptions& o, const at::Device& device);

// The kernels' blocks of at most `rows` queries (or keys: they share the packing): consecutive
// from row 0, restarting at each packed sequence's first token, so that no block spans two
// sequences and a block's tiles read its own sequence's rows only (values of another sequence,
// even NaN or Inf, never meet it). Each block as (first row, rows).
struct RowBlock {
  int64_t first, rows;
};
std::vector<RowBlock> row_blocks(const AttentionArgs& a, int64_t rows);

// Rotary positions of the tokens, float64 (len,) on `device`: i + first, or, when a's band holds
// packed sequences (PackedSequences::restrict), each token's index within its sequence.
at::Tensor token_positions(const AttentionArgs& a, int64_t first, int64_t len, const at::Device& device);

}  // namespace seqops
