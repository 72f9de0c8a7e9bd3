// Validation of the attention op's arguments (both devices run the same checks).
#include <cmath>

#include "attention/attention.h"
#include "attention/packed_sequences.h"
#include "common/checks.h"
#include "common/dtype.h"

namespace seqops {

const char* score_policy_name(ScorePolicy p) {
  switch (p) {
    case ScorePolicy::None: return "none";
    case ScorePolicy::DenseBias: return "bias";
    case ScorePolicy::T5: return "t5_table";
    case ScorePolicy::Alibi: return "alibi_slopes";
    case ScorePolicy::RelativeKeys: return "rel_keys";
  }
  return "?";
}

namespace {

void check_operand(const at::Tensor& t, const char* name, const at::Tensor& q) {
  check_rank(t, name, 4, "(batch, heads, length, head_dim)");
  check_same_device(t, name, q, "q");
  check_same_dtype(t, name, q, "q");
}

// The score tensors may be float32 even for low-precision q (parameters under autocast).
void check_score_tensor(const at::Tensor& t, const char* name, const at::Tensor& q,
                        at::IntArrayRef expected) {
  TORCH_CHECK(t.sizes() == expected, name, " must have shape ", expected, ", got ", t.sizes());
  check_same_device(t, name, q, "q");
  TORCH_CHECK(at::isFloatingType(t.scalar_type()), name, " must be a floating tensor, got ",
              t.scalar_type());
}

// Only one score policy per call; returns the one the given tensors select.
ScorePolicy select_policy(const AttentionOptions& s) {
  ScorePolicy policy = ScorePolicy::None;
  const std::pair<const std::optional<at::Tensor>*, ScorePolicy> selectors[] = {
      {&s.bias, ScorePolicy::DenseBias},
      {&s.t5_table, ScorePolicy::T5},
      {&s.alibi_slopes, ScorePolicy::Alibi},
      {&s.rel_keys, ScorePolicy::RelativeKeys}};
  for (const auto& [tensor, p] : selectors) {
    if (!tensor->has_value()) continue;
    TORCH_CHECK(policy == ScorePolicy::None, "attention takes one score term per call, got both ",
                score_policy_name(policy), " and ", score_policy_name(p));
    policy = p;
  }
  for (const auto& [tensor, name] :
       {std::pair{&s.rel_scores, "rel_scores"}, std::pair{&s.content_bias, "content_bias"},
        std::pair{&s.position_bias, "position_bias"}}) {
    TORCH_CHECK(!tensor->has_value() || policy == ScorePolicy::RelativeKeys, name,
                " belongs to the relative-keys score term and needs rel_keys");
  }
  return policy;
}

}  // namespace

AttentionArgs check_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v,
                              const AttentionOptions& s) {
  const bool causal = s.causal, t5_bidirectional = s.t5_bidirectional;
  const double dropout_p = s.dropout_p;
  const int64_t t5_max_distance = s.t5_max_distance;
  const std::optional<int64_t> rel_zero = s.rel_zero;
  check_rank(q, "q", 4, "(batch, heads, length, head_dim)");
  check_floating_dtype(q, "q");
  check_operand(k, "k", q);
  check_operand(v, "v", q);
  AttentionArgs a{};
  a.batch = q.size(0);
  a.heads_q = q.size(1);
  a.len_q = q.size(2);
  a.dim = q.size(3);
  a.heads_k = k.size(1);
  a.len_k = k.size(2);
  a.dim_v = v.size(3);
  TORCH_CHECK(a.batch >= 1 && a.heads_q >= 1 && a.len_q >= 1 && a.dim >= 1,
              "q must have non-zero sizes, got shape ", q.sizes());
  TORCH_CHECK(a.heads_k >= 1 && a.len_k >= 1, "k must have non-zero sizes, got shape ", k.sizes());
  TORCH_CHECK(a.dim_v >= 1, "v must have head_dim >= 1, got shape ", v.sizes());
  check_size(k, "k", 0, a.batch, "batch of q");
  check_size(k, "k", 3, a.dim, "head_dim of q");
  TORCH_CHECK(a.heads_q % a.heads_k == 0, "k's heads (", a.heads_k,
              ") must divide q's heads (", a.heads_q, ") for grouped attention; q shape ",
              q.sizes(), ", k shape ", k.sizes());
  check_size(v, "v", 0, a.batch, "batch of q");
  check_size(v, "v", 1, a.heads_k, "heads of k");
  check_size(v, "v", 2, a.len_k, "length of k");

  if (s.key_padding_mask) {
    const auto& m = *s.key_padding_mask;
    TORCH_CHECK(m.scalar_type() == at::kBool,
                "key_padding_mask must be a bool tensor (True = attend), got dtype ",
                m.scalar_type(), "; convert a 0/1 mask with mask.bool()");
    TORCH_CHECK(m.dim() == 2 && m.size(0) == a.batch && m.size(1) == a.len_k,
                "key_padding_mask must have shape (batch, key length) = (", a.batch, ", ",
                a.len_k, "), got ", m.sizes());
    check_same_device(m, "key_padding_mask", q, "q");
  }

  for (const auto& [w, name] : {std::pair{s.window_left, "window_left"}, std::pair{s.window_right, "window_right"}})
    TORCH_CHECK(w >= -1, name, " must be >= 0, or -1 for no limit, got ", w);
  const int64_t shift = a.causal_shift();
  a.band.len_q = a.len_q;
  a.band.len_k = a.len_k;
  // A window wider than Lq + Lk is no limit (and cannot overflow the offsets).
  const int64_t span = a.len_q + a.len_k;
  const auto reach = [span](int64_t w) { return w < 0 || w > span ? span : w; };
  a.band.lo = shift - reach(s.window_left);
  a.band.hi = shift + reach(s.window_right);
  if (causal && a.band.hi > shift) a.band.hi = shift;
  a.scale = s.scale.value_or(1.0 / std::sqrt(static_cast<double>(a.dim)));
  TORCH_CHECK(std::isfinite(a.scale), "scale must be finite, got ", a.scale);
  check_dropout_p(dropout_p, "dropout_p");
  a.dropout_p = dropout_p;
  if (dropout_p > 0) {
    TORCH_CHECK(s.dropout_rng.has_value(),
                "dropout_p > 0 needs dropout_rng, a CPU int64 tensor (seed, offset)");
    const DropoutStream stream = read_dropout_rng(*s.dropout_rng, "dropout_rng");
    a.dropout_seed = stream.seed;
    a.dropout_offset = stream.offset;
    // Each draw's Philox counter holds (key / 4, query, batch * head) in 32-bit words
    // (common/philox.h): past these sizes the draws would repeat.
    constexpr int64_t kWord = int64_t(1) << 32;
    TORCH_CHECK(a.batch * a.heads_q <= kWord && a.len_q <= kWord && (a.len_k + 3) / 4 <= kWord,
                "attention dropout numbers its draws with 32-bit counters: it needs batch * heads "
                "<= 2^32, query length <= 2^32 and key length <= 2^34, got batch * heads = ",
                a.batch * a.heads_q, ", query length ", a.len_q, ", key length ", a.len_k);
  }
  a.query_offset = s.query_offset.value_or(a.len_k - a.len_q);
  check_packed_sequences(a, s, q);

  a.policy = select_policy(s);
  switch (a.policy) {
    case ScorePolicy::None: break;
    case ScorePolicy::DenseBias: {
      const auto& b = *s.bias;
      TORCH_CHECK(b.dim() <= 4, "bias must be broadcastable to (batch, heads, Lq, Lk) = (",
                  a.batch, ", ", a.heads_q, ", ", a.len_q, ", ", a.len_k, "), got shape ",
                  b.sizes());
      const int64_t full[4] = {a.batch, a.heads_q, a.len_q, a.len_k};
      for (int64_t d = 0; d < b.dim(); ++d) {
        const int64_t size = b.size(b.dim() - 1 - d), want = full[3 - d];
        TORCH_CHECK(size == want || size == 1,
                    "bias must be broadcastable to (batch, heads, Lq, Lk) = (", a.batch, ", ",
                    a.heads_q, ", ", a.len_q, ", ", a.len_k, "), got shape ", b.sizes());
      }
      check_same_device(b, "bias", q, "q");
      TORCH_CHECK(at::isFloatingType(b.scalar_type()), "bias must be a floating tensor, got ",
                  b.scalar_type());
      break;
    }
    case ScorePolicy::T5: {
      const auto& t = *s.t5_table;
      check_rank(t, "t5_table", 2, "(heads, num_buckets)");
      check_score_tensor(t, "t5_table", q, {a.heads_q, t.size(1)});
      a.t5_num_buckets = t.size(1);
      a.t5_bidirectional = t5_bidirectional;
      a.t5_max_distance = t5_max_distance;
      const int64_t min_buckets = t5_bidirectional ? 4 : 2;
      TORCH_CHECK(a.t5_num_buckets >= min_buckets, "t5_table needs at least ", min_buckets,
                  " buckets", t5_bidirectional ? " when bidirectional" : "", ", got ",
                  a.t5_num_buckets);
      const int64_t max_exact = (t5_bidirectional ? a.t5_num_buckets / 2 : a.t5_num_buckets) / 2;
      TORCH_CHECK(t5_max_distance > max_exact, "t5_max_distance must exceed the exact range ",
                  max_exact, " of ", a.t5_num_buckets, " buckets, got ", t5_max_distance);
      break;
    }
    case ScorePolicy::Alibi:
      check_score_tensor(*s.alibi_slopes, "alibi_slopes", q, {a.heads_q});
      break;
    case ScorePolicy::RelativeKeys: {
      const auto& r = *s.rel_keys;
      check_rank(r, "rel_keys", 3, "(L_rel, heads, head_dim)");
      a.rel_len = r.size(0);
      check_score_tensor(r, "rel_keys", q, {a.rel_len, a.heads_q, a.dim});
      if (s.rel_scores) check_score_tensor(*s.rel_scores, "rel_scores", q, {a.rel_len, a.heads_q});
      if (s.content_bias) check_score_tensor(*s.content_bias, "content_bias", q, {a.heads_q, a.dim});
      if (s.position_bias)
        check_score_tensor(*s.position_bias, "position_bias", q, {a.heads_q, a.dim});
      a.rel_zero = rel_zero.value_or(a.rel_len - 1);
      // Every visible pair needs a row of R: r ranges over [r_min, r_max], capped above at
      // band.hi - query_offset by the causal mask / the window's right edge.
      const int64_t lo = a.r_min() + a.rel_zero;
      const int64_t hi = std::min(a.r_max(), a.band.hi - a.query_offset) + a.rel_zero;
      TORCH_CHECK(lo >= 0 && hi < a.rel_len, "rel_keys has ", a.rel_len,
                  " rows but this call reads rows ", lo, "..", hi, " (r = j - (i + query_offset) in [",
                  a.r_min(), ", ", hi - a.rel_zero, "], rel_zero = ", a.rel_zero,
                  ", query_offset = ", a.query_offset, ")");
      break;
    }
  }
  TORCH_CHECK(a.policy != ScorePolicy::None || !rel_zero.has_value(),
              "rel_zero needs rel_keys");
  a.rotary_dim = s.rotary_dim;
  a.rotary_base = s.rotary_base;
  a.rotary_interleaved = s.rotary_interleaved;
  TORCH_CHECK(a.rotary_dim >= 0 && a.rotary_dim % 2 == 0 && a.rotary_dim <= a.dim,
              "rotary_dim must be even and in [0, head_dim = ", a.dim, "] (0: no rotary), got ",
              a.rotary_dim);
  TORCH_CHECK(std::isfinite(a.rotary_base) && a.rotary_base > 0, "rotary_base must be finite and > 0, got ",
              a.rotary_base);
  TORCH_CHECK(a.rotary_dim == 0 || a.policy != ScorePolicy::RelativeKeys,
              "rotary_dim does not combine with rel_keys (relative keys carry their own positions)");
  return a;
}

void check_attention_backward(const AttentionArgs& a, const at::Tensor& q,
                              const at::Tensor& grad_out, const at::Tensor& out,
                              const at::Tensor& lse) {
  const std::vector<int64_t> out_shape{a.batch, a.heads_q, a.len_q, a.dim_v};
  for (auto [t, name] : {std::pair{&grad_out, "grad_out"}, std::pair{&out, "out"}}) {
    TORCH_CHECK(t->sizes() == at::IntArrayRef(out_shape), name, " must have shape ",
                at::IntArrayRef(out_shape), ", got ", t->sizes());
    check_same_device(*t, name, q, "q");
    check_same_dtype(*t, name, q, "q");
  }
  const std::vector<int64_t> lse_shape{a.batch, a.heads_q, a.len_q};
  TORCH_CHECK(lse.sizes() == at::IntArrayRef(lse_shape), "lse must have shape ",
              at::IntArrayRef(lse_shape), ", got ", lse.sizes());
  check_same_device(lse, "lse", q, "q");
  const auto acc = accumulate_type(q);
  TORCH_CHECK(lse.scalar_type() == acc, "lse must be ", acc, ", got ", lse.scalar_type());
}

}  // namespace seqops
