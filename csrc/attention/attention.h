// The attention op's contract, shared by the CPU and CUDA entry points: the parsed arguments
// (AttentionArgs), the score policy they select, and their validation.
//
// logits[b,h,i,j] = scale * q_i . k_j + term(b,h,i,j), masked, softmax over j, times v.
// The score term is chosen by which optional tensors are given (at most one policy):
//   none          no term;
//   dense bias    bias broadcastable to (B, Hq, Lq, Lk), added as is;
//   T5            t5_table (Hq, num_buckets)[h, bucket(r)], bucket as in T5 (relative_position.h);
//   ALiBi         -alibi_slopes[h] * |r|;
//   relative keys the whole logit becomes scale * ((q_i + u_h).k_j + (q_i + v_h).R[n, h] + S[n, h])
//                 with n = r + rel_zero, R = rel_keys (L_rel, Hq, d), S = rel_scores (L_rel, Hq),
//                 u = content_bias (Hq, d), v = position_bias (Hq, d) (each optional but R).
// r = j - (i + query_offset) is the key's position minus the query's; query_offset defaults to
// Lk - Lq (the queries are the last Lq positions of the keys' span: self-attention and
// Transformer-XL memory) and rel_zero to L_rel - 1 (R's last row is distance 0, rows before it
// look back, as Transformer-XL lays R out).
// Rotary positions (rotary.h): with rotary_dim > 0, q_i and k_j are rotated to positions
// i + query_offset and j before their dot product (any score policy but relative keys).
// Visibility (key_band.h): causal and the sliding window (window_left, window_right; -1 =
// unbounded) keep key j for query i iff -window_left <= j - (i + Lk - Lq) <= window_right (<= 0
// when causal), the bottom-right-aligned window of FlashAttention.
// Packed sequences (cu_seqlens, attention/packed_sequences.h): several sequences share each row
// of tokens (self-attention: q and k packed alike); a query sees only keys of its own sequence,
// and every position (r, rotary, causal, window) counts from its sequence's first token.
#pragma once
#include <ATen/ATen.h>

#include "attention/key_band.h"

#include <optional>
#include <type_traits>

namespace seqops {

using OptTensor = std::optional<at::Tensor>;

// The options both attention ops take after their tensors, written once as X(parameter type,
// name, schema text). This list makes the op schemas (attention/schema.cpp), the dispatcher
// signature of both entry points (attention/entry.h) and AttentionOptions; its names, order and
// defaults are the ops' ABI (saved TorchScript models call them), and seqops/ops/attention.py's
// OPTIONS mirrors it for Python. A new score policy adds its tensors here (and to
// SEQOPS_ATTENTION_SCORE_GRADS when they get a gradient), its selection and checks in
// attention/checks.cpp, and its kernels.
#define SEQOPS_ATTENTION_OPTIONS(X)                                         \
  X(const OptTensor&, key_padding_mask, "Tensor? key_padding_mask=None")    \
  X(bool, causal, "bool causal=False")                                      \
  X(std::optional<double>, scale, "float? scale=None")                      \
  X(double, dropout_p, "float dropout_p=0.0")                               \
  X(const OptTensor&, dropout_rng, "Tensor? dropout_rng=None")              \
  X(const OptTensor&, bias, "Tensor? bias=None")                            \
  X(const OptTensor&, t5_table, "Tensor? t5_table=None")                    \
  X(bool, t5_bidirectional, "bool t5_bidirectional=True")                   \
  X(int64_t, t5_max_distance, "int t5_max_distance=128")                    \
  X(const OptTensor&, alibi_slopes, "Tensor? alibi_slopes=None")            \
  X(const OptTensor&, rel_keys, "Tensor? rel_keys=None")                    \
  X(const OptTensor&, rel_scores, "Tensor? rel_scores=None")                \
  X(const OptTensor&, content_bias, "Tensor? content_bias=None")            \
  X(const OptTensor&, position_bias, "Tensor? position_bias=None")          \
  X(std::optional<int64_t>, rel_zero, "SymInt? rel_zero=None")              \
  X(std::optional<int64_t>, query_offset, "SymInt? query_offset=None")      \
  X(int64_t, window_left, "int window_left=-1")                             \
  X(int64_t, window_right, "int window_right=-1")                           \
  X(int64_t, rotary_dim, "int rotary_dim=0")                                \
  X(double, rotary_base, "float rotary_base=10000.0")                       \
  X(bool, rotary_interleaved, "bool rotary_interleaved=False")             \
  X(const OptTensor&, cu_seqlens, "Tensor? cu_seqlens=None")

// The options that carry a gradient, in attention_backward's output order (after q, k, v).
#define SEQOPS_ATTENTION_SCORE_GRADS(X) \
  X(bias) X(t5_table) X(alibi_slopes) X(rel_keys) X(rel_scores) X(content_bias) X(position_bias)

// The options of one call as given, built once from the dispatcher's arguments
// (attention/entry.h) and passed to the checks and the kernels.
struct AttentionOptions {
#define SEQOPS_OPTION_FIELD(Param, name, schema) std::remove_cvref_t<Param> name;
  SEQOPS_ATTENTION_OPTIONS(SEQOPS_OPTION_FIELD)
#undef SEQOPS_OPTION_FIELD
};

enum class ScorePolicy : int { None = 0, DenseBias = 1, T5 = 2, Alibi = 3, RelativeKeys = 4 };

const char* score_policy_name(ScorePolicy p);

struct AttentionArgs {
  int64_t batch, heads_q, heads_k, len_q, len_k, dim, dim_v;
  KeyBand band;  // the keys each query sees (causal, window)
  double scale;
  double dropout_p;
  uint64_t dropout_seed, dropout_offset;  // from dropout_rng; used when dropout_p > 0
  ScorePolicy policy;
  int64_t query_offset;  // r = j - (i + query_offset)
  // Relative-position policies (T5, ALiBi, relative keys).
  bool t5_bidirectional;
  int64_t t5_num_buckets, t5_max_distance;
  int64_t rel_len, rel_zero;  // relative keys: R rows and the row of r = 0
  int64_t rotary_dim;         // rotated features of q and k (0: none); see rotary.h
  double rotary_base;
  bool rotary_interleaved;
  int64_t num_sequences, max_seqlen;  // packed: sequences per row (checks), the longest (restrict)
  const int64_t* seq_offsets;         // packed: cu_seqlens on the host (PackedSequences::restrict)
  // The causal diagonal: query i's own position among the keys is i + causal_shift.
  int64_t causal_shift() const { return len_k - len_q; }
  // Relative positions any (query, key) pair can have: [r_min, r_max].
  int64_t r_min() const { return -(len_q - 1) - query_offset; }
  int64_t r_max() const { return len_k - 1 - query_offset; }
  int64_t num_relative() const { return len_q + len_k - 1; }
};

// Validates everything and resolves the defaults (scale, query_offset, rel_zero).
AttentionArgs check_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const AttentionOptions& o);

// The backward's extra checks: grad_out and out (B, Hq, Lq, dv), lse (B, Hq, Lq).
void check_attention_backward(const AttentionArgs& a, const at::Tensor& q,
                              const at::Tensor& grad_out, const at::Tensor& out,
                              const at::Tensor& lse);

// The gradients attention_backward returns; those of absent tensors are empty (numel 0).
struct AttentionGrads {
  at::Tensor q, k, v;
#define SEQOPS_GRAD_FIELD(name) at::Tensor name;
  SEQOPS_ATTENTION_SCORE_GRADS(SEQOPS_GRAD_FIELD)
#undef SEQOPS_GRAD_FIELD
};

}  // namespace seqops
