// Sparse (top-k) teacher KL on CPU: rows in parallel with OpenMP, one row at a time per thread.
//
// Same mathematics as kernels/sparse.py (spec: shared/spec/losses.md, "Sparse (top-k) teacher"). The
// teacher of a row is k (index, log-probability) slots plus, without renormalisation, one "rest"
// bucket of log-mass ``rest``; with a = log-probs/T over the buckets (lse_t their log-sum-exp) and
// b = z/T the student's tempered (and softcapped) logits, per valid row a thread
//
// - loads the student row into an fp32 buffer (reads V elements once; it then stays in L2) and
//   gathers the k support logits b_k;
// - with a rest bucket, masks the support to −inf and takes the log-sum-exp of the rest of the row,
//   lse_rest, so that log q_rest = lse_rest − lse_all never comes from a cancelling 1 − Σ q_k, and
//   lse_all = logaddexp(lse_rest, lse over the support); without one, lse_all over the whole row;
// - loss Σ_k p̃_k (log p̃_k − log q_k) (+ p̃_rest (log p̃_rest − log q_rest)), gradient
//   (q_j − p̃_rest·q_j/q_rest)/T off the support and (q_k − p̃_k)/T on it, scaled by ``scale``, through
//   the student softcap's chain factor, written in the student's dtype (writes V; nothing in the
//   loss-only pass).
//
// The student row is read before anything is written, so grad may alias student. Scratch: two
// V-length and one k-length fp32 buffers per thread. A student row with NaN or +inf, or −inf
// everywhere, has a non-finite lse_all: loss and gradient row NaN. A row whose buckets all hold −inf
// has no teacher mass: loss 0, gradient 0. Indices need not be sorted (unique per row, in [0, V)).
//
// Vocabulary-parallel phases (fastkd.parallel.sparse): the row is one rank's slice of V_r columns and
// the indices are slice-local (outside [0, V_r) for slots another rank holds); stats [N, 4] carries
// the log-sum-exps of b over the slice (lse_all) and over its columns outside the support (lse_rest).
// kStats writes the slice's; kGrad reads the global ones, writes the slice's gradient and returns the
// slice's −Σ p̃_k b_k over the slots it holds (the caller adds the rest of the loss, which needs no
// student logits).
#include "sparse_cpu.h"

#include "divergence_row.h"
#include "row_io.h"

namespace fastkd {
namespace {

enum Phase : int { kFull, kStats, kGrad = 3 };  // fastkd.boundary.parallel's STATS and GRAD

struct SparseCall {
  int64_t k;
  float inv_t, scale, cap;
  bool rest;
  int phase;
};

// One row's teacher: tempered bucket log-sum-exp lse_t = logaddexp(lse_k(a), a_rest).
FASTKD_INLINE float teacher_lse(const float* lp, int64_t k, float inv_t, float a_rest) {
  float m = a_rest;
  for (int64_t s = 0; s < k; ++s) m = std::max(m, lp[s] * inv_t);
  if (m == kNegInf) return kNegInf;
  double total = std::exp(static_cast<double>(a_rest - m));
  for (int64_t s = 0; s < k; ++s) total += std::exp(static_cast<double>(lp[s] * inv_t - m));
  return m + static_cast<float>(std::log(total));
}

// The tempered teacher buckets of one row: p̃_s = exp(a_s − lse_t) of a slot (slot()), log p̃_rest, and
// the gradient's factor scale/T (0 for a row without teacher mass: loss 0, no gradient).
struct Teacher {
  float safe_lse, lp_rest, coef, inv_t;

  Teacher(const float* lp, float rest, const SparseCall& c) : inv_t(c.inv_t) {
    const float a_rest = c.rest ? rest * c.inv_t : kNegInf;
    const float lse_t = teacher_lse(lp, c.k, c.inv_t, a_rest);
    safe_lse = lse_t == kNegInf ? 0.0f : lse_t;
    lp_rest = a_rest - safe_lse;
    coef = lse_t == kNegInf ? 0.0f : c.scale * c.inv_t;
  }
  // (log p̃_s, p̃_s) of a slot with stored log-prob ``lp`` (p̃ = 0 for a −inf padding slot).
  void slot(float lp, float* log_p, float* p) const {
    const float a = lp * inv_t;
    *log_p = a - safe_lse;
    *p = a == kNegInf ? 0.0f : std::exp(*log_p);
  }
};

// A row whose student log-sum-exp is not finite: NaN gradient row, NaN loss.
FASTKD_INLINE float nan_row(float* g, int64_t n) {
  std::fill(g, g + n, kNaN);
  return kNaN;
}

// log(exp(x) + exp(y)) for row scalars, in libm precision; −inf where both vanish, NaN for a NaN.
FASTKD_INLINE float log_add(float x, float y) {
  const float top = std::max(x, y);
  if (top == kNegInf) return kNegInf;
  return top + std::log(std::exp(x - top) + std::exp(y - top));
}

// log Σ_k exp(b[idx_k]) over the gathered support logits bk (NaN if one is NaN or +inf).
FASTKD_INLINE float support_lse(const float* bk, int64_t k) {
  float m = kNegInf;
  for (int64_t s = 0; s < k; ++s) m = bk[s] > m || bk[s] != bk[s] ? bk[s] : m;
  const float shift = m == kNegInf ? 0.0f : m;
  double total = 0.0;
  for (int64_t s = 0; s < k; ++s) total += std::exp(static_cast<double>(bk[s] - shift));
  return shift + static_cast<float>(std::log(total));
}

// The student's log-sum-exps of one valid row: returns lse_all; e (in g) = exp(b − shift) off the
// support (0 on it with a rest bucket), and *q_factor, *rest_factor turn e_j into q_j and into
// q_j/q_rest (0 without a rest bucket, or when the rest columns are all −inf); *lse_rest for the loss.
FASTKD_CLONES float student_lse(float* b, float* g, const float* bk, const int64_t* idx, int64_t n,
                                const SparseCall& c, float max_b, float* q_factor, float* rest_factor,
                                float* lse_rest) {
  float inv_sum;
  if (!c.rest) {
    *rest_factor = 0.0f;
    *lse_rest = kNegInf;
    const float lse_all = exp_shifted(b, max_b, g, n, &inv_sum);
    *q_factor = inv_sum;
    return lse_all;
  }
  for (int64_t s = 0; s < c.k; ++s) b[idx[s]] = kNegInf;
  const float max_rest = max_of(b, n);
  *lse_rest = exp_shifted(b, max_rest, g, n, &inv_sum);
  for (int64_t s = 0; s < c.k; ++s) b[idx[s]] = bk[s];  // restored: the softcap's chain factor reads b
  const float lse_all = log_add(support_lse(bk, c.k), *lse_rest);
  *q_factor = std::exp((max_rest == kNegInf ? 0.0f : max_rest) - lse_all);
  *rest_factor = *lse_rest == kNegInf ? 0.0f : inv_sum;
  return lse_all;
}

// One valid row: returns its loss and leaves the scaled fp32 gradient in g (module comment).
FASTKD_CLONES float sparse_row(float* b, float* g, float* bk, const int64_t* idx, const float* lp, float rest,
                               int64_t n, const SparseCall& c, float max_b, bool write) {
  for (int64_t s = 0; s < c.k; ++s) bk[s] = b[idx[s]];
  float q_factor, rest_factor, lse_rest;
  const float lse_all = student_lse(b, g, bk, idx, n, c, max_b, &q_factor, &rest_factor, &lse_rest);
  if (!(std::fabs(lse_all) < kPosInf)) return nan_row(g, n);
  const Teacher teacher(lp, rest, c);
  const float p_rest = std::exp(teacher.lp_rest);
  double loss = p_rest > 0.0f ? p_rest * (teacher.lp_rest - (lse_rest - lse_all)) : 0.0;
  if (write) {
    const float k_dense = (q_factor - p_rest * rest_factor) * teacher.coef;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) g[i] *= k_dense;
  }
  for (int64_t s = 0; s < c.k; ++s) {
    float lp_s, p;
    teacher.slot(lp[s], &lp_s, &p);
    const float lq_s = bk[s] - lse_all;
    loss += p > 0.0f ? p * (lp_s - lq_s) : 0.0f;
    if (write) g[idx[s]] = (std::exp(lq_s) - p) * teacher.coef;
  }
  return static_cast<float>(loss);
}

// kStats on a slice: stats[0] = log-sum-exp of b, with a rest bucket stats[1] = that over the slice's
// columns outside the support (b is masked in place; the row is not used afterwards).
FASTKD_CLONES void slice_stats(float* b, float* g, const int64_t* idx, int64_t n, const SparseCall& c,
                               float max_b, float* stats) {
  float unused;
  stats[0] = exp_shifted(b, max_b, g, n, &unused);
  if (!c.rest) return;
  for (int64_t s = 0; s < c.k; ++s) {
    if (idx[s] >= 0 && idx[s] < n) b[idx[s]] = kNegInf;
  }
  stats[1] = exp_shifted(b, max_of(b, n), g, n, &unused);
}

// kGrad on a slice, from the global log-sum-exps in stats: the slice's gradient in g and −Σ p̃_k b_k
// over the slots it holds. A non-finite global row (NaN or +inf in some slice, or −inf everywhere) is NaN.
FASTKD_CLONES float slice_grad(const float* b, float* g, const int64_t* idx, const float* lp, float rest,
                               int64_t n, const SparseCall& c, const float* stats) {
  const float lse_all = stats[0], lse_rest = stats[1];
  if (!(std::fabs(lse_all) < kPosInf)) return nan_row(g, n);
  const Teacher teacher(lp, rest, c);
  const float p_rest = lse_rest > kNegInf ? std::exp(teacher.lp_rest) : 0.0f;
  const float coef = teacher.coef;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) {
    const float off_support = p_rest * fast_exp(std::min(b[i] - lse_rest, 0.0f));
    g[i] = (fast_exp(b[i] - lse_all) - off_support) * coef;
  }
  double picked = 0.0;
  for (int64_t s = 0; s < c.k; ++s) {
    if (idx[s] < 0 || idx[s] >= n) continue;  // another rank's slot
    float lp_s, p;
    teacher.slot(lp[s], &lp_s, &p);
    const float bs = b[idx[s]];
    g[idx[s]] = (std::exp(bs - lse_all) - p) * coef;
    picked += p > 0.0f ? p * bs : 0.0f;
  }
  return static_cast<float>(-picked);
}

}  // namespace

at::Tensor sparse_kl_fwd_cpu(const at::Tensor& student, const at::Tensor& indices, const at::Tensor& logprobs,
                             const at::Tensor& rest, const at::Tensor& valid, const at::Tensor& scale,
                             const std::optional<at::Tensor>& grad, bool rest_bucket, double temperature,
                             double student_softcap, int64_t phase, const std::optional<at::Tensor>& stats) {
  const bool write = grad.has_value();
  TORCH_CHECK(phase == kFull || phase == kStats || phase == kGrad, "unknown phase ", phase);
  const bool sliced = phase != kFull;
  TORCH_CHECK(student.dim() == 2 && student.stride(1) == 1, "student must be [N, V] with unit stride along V");
  TORCH_CHECK(!write || (grad->sizes() == student.sizes() && grad->stride(1) == 1 &&
                         grad->scalar_type() == student.scalar_type()),
              "grad must be [N, V] like student, with unit stride along V and the student's dtype");
  const int64_t rows = student.size(0), n = student.size(1);
  TORCH_CHECK(indices.dim() == 2 && indices.size(0) == rows && indices.scalar_type() == at::kLong &&
                  indices.is_contiguous() && logprobs.sizes() == indices.sizes() &&
                  logprobs.scalar_type() == at::kFloat && logprobs.is_contiguous(),
              "indices and logprobs must be contiguous int64 and fp32 [N, k]");
  TORCH_CHECK(rest.scalar_type() == at::kFloat && rest.is_contiguous() && rest.numel() == rows,
              "rest must be a contiguous fp32 [N] tensor");
  TORCH_CHECK(valid.scalar_type() == at::kBool && valid.is_contiguous() && valid.numel() == rows,
              "valid must be a contiguous bool [N] tensor");
  TORCH_CHECK(!sliced || (stats.has_value() && stats->scalar_type() == at::kFloat && stats->is_contiguous() &&
                          stats->dim() == 2 && stats->size(0) == rows && stats->size(1) == 4 &&
                          student_softcap == 0.0),
              "a vocabulary-parallel phase needs contiguous fp32 stats [N, 4] and no softcap");
  auto loss = at::zeros({rows}, student.options().dtype(at::kFloat));
  if (rows == 0) return loss;
  const int64_t k = indices.size(1);
  const SparseCall call{k,
                        static_cast<float>(1.0 / temperature),
                        scale.to(at::kFloat).item<float>(),
                        static_cast<float>(student_softcap),
                        rest_bucket,
                        static_cast<int>(phase)};
  const Loader load_s = loader(student.scalar_type());
  const GradOut out(grad);
  const int threads = row_threads(rows);
  const int64_t per_thread = 2 * n + k;
  auto scratch = at::empty({threads, per_thread}, student.options().dtype(at::kFloat));
  const bool* valid_ptr = valid.data_ptr<bool>();
  const int64_t* idx_ptr = indices.data_ptr<int64_t>();
  const float* lp_ptr = logprobs.data_ptr<float>();
  const float* rest_ptr = rest.data_ptr<float>();
  float* loss_ptr = loss.data_ptr<float>();
  float* stats_ptr = sliced ? stats->data_ptr<float>() : nullptr;
  const Rows s_rows(student);
  for_each_row(rows, n, threads, [&](int64_t r, int tid) {
    float* b = scratch.data_ptr<float>() + tid * per_thread;
    float *g = b + n, *bk = b + 2 * n;
    const int64_t* idx = idx_ptr + r * k;
    if (valid_ptr[r]) {
      const float max_b = load_s(s_rows[r], n, call.inv_t, call.cap, b);
      if (phase == kStats) {
        slice_stats(b, g, idx, n, call, max_b, stats_ptr + 4 * r);
      } else if (phase == kGrad) {
        loss_ptr[r] = slice_grad(b, g, idx, lp_ptr + r * k, rest_ptr[r], n, call, stats_ptr + 4 * r);
      } else {
        loss_ptr[r] = sparse_row(b, g, bk, idx, lp_ptr + r * k, rest_ptr[r], n, call, max_b, write);
        if (write && call.cap > 0.0f) chain_softcap(b, n, call.cap, call.inv_t, g);
      }
    }
    if (write && phase != kStats) out.put(r, valid_ptr[r], g, n);
  });
  return loss;
}

}  // namespace fastkd
