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
#pragma once
#include <ATen/ATen.h>

#include <optional>

namespace seqops {

enum class ScorePolicy : int { None = 0, DenseBias = 1, T5 = 2, Alibi = 3, RelativeKeys = 4 };

const char* score_policy_name(ScorePolicy p);

struct AttentionArgs {
  int64_t batch, heads_q, heads_k, len_q, len_k, dim, dim_v;
  bool causal;
  double scale;
  double dropout_p;
  uint64_t dropout_seed, dropout_offset;  // from dropout_rng; used when dropout_p > 0
  ScorePolicy policy;
  int64_t query_offset;  // r = j - (i + query_offset)
  // Relative-position policies (T5, ALiBi, relative keys).
  bool t5_bidirectional;
  int64_t t5_num_buckets, t5_max_distance;
  int64_t rel_len, rel_zero;  // relative keys: R rows and the row of r = 0
  // Causal visibility: query i sees key j <= i + causal_shift (causal_shift = Lk - Lq).
  int64_t causal_shift() const { return len_k - len_q; }
  // Relative positions any (query, key) pair can have: [r_min, r_max].
  int64_t r_min() const { return -(len_q - 1) - query_offset; }
  int64_t r_max() const { return len_k - 1 - query_offset; }
  int64_t num_relative() const { return len_q + len_k - 1; }
};

// The optional tensors of the op, as given.
struct ScoreTensors {
  std::optional<at::Tensor> key_padding_mask, dropout_rng, bias, t5_table, alibi_slopes, rel_keys, rel_scores,
      content_bias, position_bias;
};

// Validates everything and resolves the defaults (scale, query_offset, rel_zero).
AttentionArgs check_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const ScoreTensors& s, bool causal, std::optional<double> scale,
                              double dropout_p,
                              bool t5_bidirectional, int64_t t5_max_distance,
                              std::optional<int64_t> rel_zero,
                              std::optional<int64_t> query_offset);

// The backward's extra checks: grad_out and out (B, Hq, Lq, dv), lse (B, Hq, Lq).
void check_attention_backward(const AttentionArgs& a, const at::Tensor& q,
                              const at::Tensor& grad_out, const at::Tensor& out,
                              const at::Tensor& lse);

// The gradients attention_backward returns; those of absent tensors are empty (numel 0).
struct AttentionGrads {
  at::Tensor q, k, v, bias, t5_table, alibi_slopes, rel_keys, rel_scores, content_bias,
      position_bias;
};

}  // namespace seqops
