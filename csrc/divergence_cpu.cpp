// Fused divergence losses on CPU: rows in parallel with OpenMP, one row at a time per thread.
//
// Per valid row of V logits a thread converts teacher and student to fp32 row buffers (reads 2·V
// input elements once), then works on those buffers while they sit in its L2 cache: the statistics
// pass (exp of both rows), the terms pass (loss, h = q·∂ℓ/∂q and c = Σ h), AKL's head search, and
// the gradient pass, which writes V elements in the student's dtype (nothing without ``grad``: the
// loss-only evaluation pass). Scratch is six V-length fp32
// buffers (and one int32 for AKL) per thread, so memory beyond the gradient is O(threads·V), never
// [N, V]. Row I/O, SIMD clones and the row loop: row_io.h.
//
// TAID (arXiv 2501.16937) is a mode of this kernel: soft cross-entropy to the target
// p_t = softmax((1 − t)·b + t·a), the teacher row buffer replaced by that mix right after the loads
// (mix_taid), t in RowParams::param.
#include "divergence_cpu.h"

#include <algorithm>

#include "akl_head.h"
#include "divergence_row.h"
#include "row_io.h"

namespace fastkd {
namespace {

constexpr int kBuffers = 6;

struct Row {
  float *a, *b, *p, *q, *h, *z;  // u/T, z/T, exp-shifted then normalised p, q; h; raw z (hard term)
  int32_t* order;                // AKL's index scratch
};

// Phases of a call. kFull is the single-process loss. The others serve fastkd.parallel, where the
// row is one rank's contiguous slice of the vocabulary and the stats row [4] holds (lse_a, lse_b,
// lse_z, c): kStats writes the slice's log-sum-exps; kRowSum reads the global ones and writes the
// slice's c = Σ q·h; kGrad reads the global statistics, returns the slice's (unweighted) soft loss
// terms and writes the slice's gradient, the hard-label part included (label local, or out of
// [0, n) when another rank holds it). The caller combines the slices with O(rows) all-reduces.
enum Phase : int { kFull, kStats, kRowSum, kGrad };

struct Call {
  RowParams rp;
  int div;
  float inv_t, hard_w, scale, s_cap, t_cap;
  bool hard;
  int phase = kFull;
};

// TAID's target logits over the teacher's row buffer: a ← (1 − t)·b + t·a, a side of weight 0 dropped
// (so its −inf entries give no 0·(−inf) = NaN), as fastkd/reference/taid.py::interpolated_logits.
// Returns the mix's max, or NaN where the raw teacher row holds NaN or +inf (probe = Σ 0·a over its
// non −inf entries is NaN exactly then) or, for a whole row (not a vocabulary slice, which may be all
// padding), is −inf everywhere: at every t such a row is non-finite, and the NaN max makes the row's
// log-sum-exp NaN, which valid_row turns into a NaN loss and gradient (kStats: a NaN global statistic).
FASTKD_CLONES float mix_taid(const float* b, float* a, int64_t n, float t, float max_raw, bool whole_row) {
  const float w_b = 1.0f - t;
  const bool keep_b = t < 1.0f, keep_a = t > 0.0f;
  float probe = 0.0f, m = kNegInf;
#pragma omp simd reduction(+ : probe) reduction(max : m)
  for (int64_t i = 0; i < n; ++i) {
    probe += (a[i] == kNegInf ? 0.0f : a[i]) * 0.0f;
    const float mixed = (keep_b ? w_b * b[i] : 0.0f) + (keep_a ? t * a[i] : 0.0f);
    a[i] = mixed;
    m = mixed > m ? mixed : m;
  }
  const bool finite = probe == 0.0f && (max_raw > kNegInf || !whole_row);
  return finite ? m : kNaN;
}

// Loss and, in row.h, the unscaled-by-T soft gradient (h − q·c); AKL mixes its two KLs. ``infinite``
// says the loss is +inf because the teacher is −inf where the student has mass (reverse KL, skew
// reverse KL at α = 0, AKL's reverse part when its weight is > 0): that row gets a zero gradient.
template <int DIV>
FASTKD_CLONES float soft_part(const Row& row, int64_t n, const RowStats& st, const Call& call, float max_a,
                              bool* infinite) {
  float c = 0.0f;
  const float loss = terms_pass<DIV>(row.a, row.b, row.p, row.q, row.h, n, st, call.rp, &c);
  if constexpr (DIV == AKL) {
    const AklHead head = akl_head(row.a, row.p, row.order, n, max_a, call.rp.param);
    float g_head, g_tail;
    akl_gaps(row.a, row.p, row.q, n, head, first_argmax(row.a, n, max_a), call.rp.param, &g_head, &g_tail);
    const float total = std::max(g_head + g_tail, 1e-8f);
    const float w_head = g_head / total, w_tail = g_tail / total;
    const float rkl = c;
    const bool tail = w_tail > 0.0f;  // a weight-0 reverse part drops out, even where it is +inf
    *infinite = tail && rkl == kPosInf;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) {
      const float tail_grad = tail ? w_tail * (row.h[i] - row.q[i] * rkl) : 0.0f;
      row.h[i] = w_head * (row.q[i] - row.p[i]) + tail_grad;
    }
    return w_head * loss + (tail ? w_tail * rkl : 0.0f);
  } else {
    if constexpr (DIV == FORWARD_KL || DIV == SOFT_CE) {
      c = -1.0f;
    } else if (st.c_io != nullptr) {  // vocabulary-parallel: publish the slice's c, or use the global c
      if (call.phase == kRowSum) *st.c_io = c;
      c = *st.c_io;
    }
    *infinite = c == kPosInf;
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) row.h[i] = row.h[i] - row.q[i] * c;
    return loss;
  }
}

float dispatch_soft(const Row& row, int64_t n, const RowStats& st, const Call& call, float max_a,
                    bool* infinite) {
  switch (call.div) {
    case FORWARD_KL:
      return soft_part<FORWARD_KL>(row, n, st, call, max_a, infinite);
    case SOFT_CE:
      return soft_part<SOFT_CE>(row, n, st, call, max_a, infinite);
    case REVERSE_KL:
      return soft_part<REVERSE_KL>(row, n, st, call, max_a, infinite);
    case JSD:
      return soft_part<JSD>(row, n, st, call, max_a, infinite);
    case SKEW_KL:
      return soft_part<SKEW_KL>(row, n, st, call, max_a, infinite);
    case SKEW_REVERSE_KL:
      return soft_part<SKEW_REVERSE_KL>(row, n, st, call, max_a, infinite);
    case TVD:
      return soft_part<TVD>(row, n, st, call, max_a, infinite);
    case TAID:  // soft cross-entropy to the mixed target in row.a
      return soft_part<SOFT_CE>(row, n, st, call, max_a, infinite);
    default:
      return soft_part<AKL>(row, n, st, call, max_a, infinite);
  }
}

// Vocabulary-parallel: the normaliser that turns the slice's e = exp(x − shift) (exp_shifted) into
// probabilities of the global row, exp(shift − lse) with lse the global log-sum-exp.
FASTKD_INLINE float global_inv_sum(float max, float lse) {
  return std::exp((max == kNegInf ? 0.0f : max) - lse);
}

// Vocabulary-parallel: kStats stores the slice's log-sum-exps (a slice may be all −inf: padding) and
// returns true; the other phases put the global ones into ``st`` (and point it at the row's c).
FASTKD_INLINE bool slice_stats(const Row& row, int64_t n, const Call& call, float max_a, float max_b,
                               float* stats, RowStats& st) {
  if (call.phase == kStats) {
    float unused;
    stats[0] = st.lse_a;
    stats[1] = st.lse_b;
    stats[2] = call.hard ? exp_shifted(row.z, max_of(row.z, n), row.z, n, &unused) : 0.0f;
    return true;
  }
  st.inv_sum_a = global_inv_sum(max_a, stats[0]);
  st.inv_sum_b = global_inv_sum(max_b, stats[1]);
  st.lse_a = stats[0];
  st.lse_b = stats[1];
  st.c_io = stats + 3;
  return false;
}

// One valid row: returns its loss and leaves the scaled fp32 gradient in row.h. A row with NaN or
// +inf in either input, or −inf everywhere, has a non-finite log-sum-exp (NaN reaches the sum, and
// inf − inf is NaN): its loss and gradient are NaN. A +inf divergence gives a zero gradient.
// With ``stats`` (a vocabulary-parallel phase, see Phase) the row is a slice and the checks apply
// to the global statistics.
FASTKD_CLONES float valid_row(const Row& row, int64_t n, const Call& call, float max_a, float max_b,
                              int64_t label, float* stats) {
  RowStats st;
  st.lse_a = exp_shifted(row.a, max_a, row.p, n, &st.inv_sum_a);
  st.lse_b = exp_shifted(row.b, max_b, row.q, n, &st.inv_sum_b);
  const bool here = stats == nullptr || (label >= 0 && label < n);  // the label's logit is in this row
  if (stats != nullptr && slice_stats(row, n, call, max_a, max_b, stats, st)) return 0.0f;
  if (!(std::fabs(st.lse_a) < kPosInf && std::fabs(st.lse_b) < kPosInf)) {
    std::fill(row.h, row.h + n, kNaN);
    return kNaN;
  }
  bool infinite = false;
  const float soft = dispatch_soft(row, n, st, call, max_a, &infinite);
  if (call.phase == kRowSum) return soft;
  if (infinite) {
    std::fill(row.h, row.h + n, 0.0f);
    return kPosInf;
  }
  const float k_soft = call.inv_t * call.scale * (call.hard ? 1.0f - call.hard_w : 1.0f);
  if (!call.hard) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) row.h[i] *= k_soft;
    return soft;
  }
  const float z_label = here ? row.z[label] : 0.0f;
  float inv_sum_z;
  const float max_z = max_of(row.z, n);
  const float lse_z = exp_shifted(row.z, max_z, row.z, n, &inv_sum_z);
  if (stats != nullptr) inv_sum_z = global_inv_sum(max_z, stats[2]);
  const float k_hard = call.hard_w * call.scale * inv_sum_z;
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) row.h[i] = row.h[i] * k_soft + row.z[i] * k_hard;
  if (here) row.h[label] -= call.hard_w * call.scale;
  return stats != nullptr ? soft : (1.0f - call.hard_w) * soft + call.hard_w * (lse_z - z_label);
}

}  // namespace

at::Tensor divergence_fwd_cpu(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& valid,
                              const std::optional<at::Tensor>& labels, const at::Tensor& scale,
                              const std::optional<at::Tensor>& grad, int64_t divergence, double param,
                              double temperature, double hard_label_weight, double lw1, double lw2,
                              double student_softcap, double teacher_softcap, int64_t phase,
                              const std::optional<at::Tensor>& stats) {
  const bool write = grad.has_value();
  TORCH_CHECK(student.dim() == 2 && teacher.sizes() == student.sizes() &&
                  (!write || grad->sizes() == student.sizes()),
              "student, teacher and grad must be [N, V] of one shape");
  TORCH_CHECK(student.stride(1) == 1 && teacher.stride(1) == 1 && (!write || grad->stride(1) == 1),
              "student, teacher and grad need unit stride along V");
  TORCH_CHECK(!write || grad->scalar_type() == student.scalar_type(), "grad must have the student's dtype");
  TORCH_CHECK(valid.scalar_type() == at::kBool && valid.is_contiguous() && valid.numel() == student.size(0),
              "valid must be a contiguous bool [N] tensor");
  TORCH_CHECK(divergence >= FORWARD_KL && divergence <= TAID, "unknown divergence index ", divergence);
  TORCH_CHECK(phase >= kFull && phase <= kGrad, "unknown phase ", phase);
  const bool sliced = phase != kFull;  // a vocabulary-parallel phase on one rank's slice
  TORCH_CHECK(!sliced || divergence != AKL, "akl has no vocabulary-parallel phases");
  TORCH_CHECK(!sliced || (stats.has_value() && stats->scalar_type() == at::kFloat && stats->is_contiguous() &&
                          stats->dim() == 2 && stats->size(0) == student.size(0) && stats->size(1) == 4),
              "a vocabulary-parallel phase needs contiguous fp32 stats [N, 4]");
  const bool hard = hard_label_weight > 0.0;
  TORCH_CHECK(!hard || (labels.has_value() && labels->scalar_type() == at::kLong && labels->is_contiguous()),
              "the hard-label term needs contiguous int64 labels");
  const int64_t rows = student.size(0), n = student.size(1);
  auto loss = at::zeros({rows}, student.options().dtype(at::kFloat));
  if (rows == 0) return loss;
  const Call call{{static_cast<float>(param), static_cast<float>(lw1), static_cast<float>(lw2)},
                  static_cast<int>(divergence),
                  static_cast<float>(1.0 / temperature),
                  static_cast<float>(hard_label_weight),
                  scale.to(at::kFloat).item<float>(),
                  static_cast<float>(student_softcap),
                  static_cast<float>(teacher_softcap),
                  hard,
                  static_cast<int>(phase)};
  const Loader load_s = loader(student.scalar_type()), load_t = loader(teacher.scalar_type());
  const GradOut out(grad);
  const int threads = row_threads(rows);
  auto scratch = at::empty({threads, kBuffers * n}, student.options().dtype(at::kFloat));
  auto order = at::empty({divergence == AKL ? threads : 0, n}, student.options().dtype(at::kInt));
  const bool* valid_ptr = valid.data_ptr<bool>();
  const int64_t* label_ptr = hard ? labels->data_ptr<int64_t>() : nullptr;
  float* loss_ptr = loss.data_ptr<float>();
  float* stats_ptr = sliced ? stats->data_ptr<float>() : nullptr;
  const Rows s_rows(student), t_rows(teacher);
  const bool store = write && (phase == kFull || phase == kGrad);
  for_each_row(rows, n, threads, [&](int64_t r, int tid) {
    float* base = scratch.data_ptr<float>() + tid * kBuffers * n;
    const Row row{base,         base + n,     base + 2 * n, base + 3 * n,
                  base + 4 * n, base + 5 * n, divergence == AKL ? order.data_ptr<int32_t>() + tid * n : nullptr};
    if (valid_ptr[r]) {
      const float max_b = load_s(s_rows[r], n, call.inv_t, call.s_cap, row.b);
      float max_a = load_t(t_rows[r], n, call.inv_t, call.t_cap, row.a);
      if (divergence == TAID) max_a = mix_taid(row.b, row.a, n, call.rp.param, max_a, !sliced);
      if (hard) load_s(s_rows[r], n, 1.0f, call.s_cap, row.z);
      loss_ptr[r] = valid_row(row, n, call, max_a, max_b, hard ? label_ptr[r] : 0,
                              sliced ? stats_ptr + 4 * r : nullptr);
      if (write && call.s_cap > 0.0f) chain_softcap(row.b, n, call.s_cap, call.inv_t, row.h);
    }
    if (store) out.put(r, valid_ptr[r], row.h, n);
  });
  return loss;
}

}  // namespace fastkd
