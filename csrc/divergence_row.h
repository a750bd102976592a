// One token row of the divergence family in fp32, on row buffers that stay in the core's L2 cache.
//
// Same mathematics as kernels/divergence.py (spec: shared/spec/losses.md). With a = u/T, b = z/T:
// the statistics pass stores ea = exp(a − max a), eb = exp(b − max b) and their sums, so p and q cost
// no further exp; the terms pass computes the loss, h_j = q_j·∂ℓ/∂q_j and c = Σ h; the gradient is
// (h_j − q_j·c)/T. Every loop is branch-free (selects only) so that the compiler vectorises it.
#pragma once

#include <cmath>
#include <cstdint>

#include "fast_math.h"

namespace fastkd {

// TAID is not one of fastkd.options.DIVERGENCES: the CPU kernel's mode after them (divergence_cpu.cpp).
enum Divergence : int { FORWARD_KL, SOFT_CE, REVERSE_KL, JSD, SKEW_KL, SKEW_REVERSE_KL, TVD, AKL, TAID };

// Sums over a row are taken in chunks (vectorised fp32 partial sums) and added up in double.
constexpr int64_t kChunk = 2048;

struct RowParams {
  float param;  // β (jsd), α (skew KLs), μ (akl), t (taid)
  float lw1;    // log weight of the teacher in the mixture
  float lw2;    // log weight of the student in the mixture
};

// Row statistics after the statistics pass: log-sum-exps and the normalisers of ea, eb.
struct RowStats {
  float lse_a, lse_b, inv_sum_a, inv_sum_b;
  // Vocabulary-parallel phases (fastkd.parallel) only: where the row-sum pass writes the slice's
  // c = Σ q·h and the gradient pass reads the global c (nullptr in the single-process path).
  float* c_io = nullptr;
};

FASTKD_INLINE float max_of(const float* x, int64_t n) {
  float m = kNegInf;
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

// e_i = exp(x_i − max); returns log Σ exp(x) (−inf for an all −inf row) and 1/Σ e.
FASTKD_INLINE float exp_shifted(const float* x, float max, float* e, int64_t n, float* inv_sum) {
  const float shift = max == kNegInf ? 0.0f : max;
  double total = 0.0;
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t end = start + kChunk < n ? start + kChunk : n;
    float part = 0.0f;
#pragma omp simd reduction(+ : part)
    for (int64_t i = start; i < end; ++i) {
      e[i] = fast_exp(x[i] - shift);
      part += e[i];
    }
    total += part;
  }
  *inv_sum = static_cast<float>(1.0 / total);
  return shift + static_cast<float>(std::log(total));
}

// log(exp(x) + exp(y)), −inf where both vanish.
FASTKD_HD float log_add_exp(float x, float y) {
  const float top = x > y ? x : y;
  const float safe = top == kNegInf ? 0.0f : top;
  return safe + fast_log(fast_exp(x - safe) + fast_exp(y - safe));
}

// Elementwise loss term and h = q·∂ℓ/∂q for la = log p, lb = log q (AKL: forward-KL term, h = the
// reverse-KL term, which its gradient needs). Shared with the CUDA kernels (csrc/cuda/).
template <int DIV>
FASTKD_HD void terms(float la, float lb, float p, float q, const RowParams& rp, float& term, float& h) {
  if constexpr (DIV == FORWARD_KL || DIV == AKL) {
    term = p > 0.0f ? p * (la - lb) : 0.0f;
    h = DIV == AKL ? (q > 0.0f ? q * (lb - la) : 0.0f) : -p;
  } else if constexpr (DIV == SOFT_CE) {
    term = p > 0.0f ? -p * lb : 0.0f;
    h = -p;
  } else if constexpr (DIV == REVERSE_KL) {
    term = q > 0.0f ? q * (lb - la) : 0.0f;
    h = term;
  } else if constexpr (DIV == JSD) {
    const float lm = log_add_exp(rp.lw1 + la, rp.lw2 + lb);
    const float kl_q = q > 0.0f ? q * (lb - lm) : 0.0f;
    term = rp.param * (p > 0.0f ? p * (la - lm) : 0.0f) + (1.0f - rp.param) * kl_q;
    h = (1.0f - rp.param) * kl_q;
  } else if constexpr (DIV == SKEW_KL) {
    const float lm = log_add_exp(rp.lw1 + la, rp.lw2 + lb);
    term = p > 0.0f ? p * (la - lm) : 0.0f;
    h = p > 0.0f ? -(1.0f - rp.param) * fast_exp(la + lb - lm) : 0.0f;
  } else if constexpr (DIV == SKEW_REVERSE_KL) {
    const float lm = log_add_exp(rp.lw1 + la, rp.lw2 + lb);
    term = q > 0.0f ? q * (lb - lm) : 0.0f;
    h = term - (q > 0.0f ? rp.param * fast_exp(2.0f * lb - lm) : 0.0f);
  } else {
    term = 0.5f * std::fabs(p - q);
    h = 0.5f * q * (q > p ? 1.0f : (q < p ? -1.0f : 0.0f));
  }
}

// Terms pass: p, q normalised in place (ea -> p, eb -> q), h stored; returns Σ term, sets c = Σ h.
template <int DIV>
FASTKD_INLINE float terms_pass(const float* a, const float* b, float* p, float* q, float* h, int64_t n,
                        const RowStats& st, const RowParams& rp, float* c) {
  double loss = 0.0, c_total = 0.0;
  for (int64_t start = 0; start < n; start += kChunk) {
    const int64_t end = start + kChunk < n ? start + kChunk : n;
    float loss_part = 0.0f, c_part = 0.0f;
#pragma omp simd reduction(+ : loss_part, c_part)
    for (int64_t i = start; i < end; ++i) {
      const float pi = p[i] * st.inv_sum_a;
      const float qi = q[i] * st.inv_sum_b;
      float term, hi;
      terms<DIV>(a[i] - st.lse_a, b[i] - st.lse_b, pi, qi, rp, term, hi);
      p[i] = pi;
      q[i] = qi;
      h[i] = hi;
      loss_part += term;
      c_part += hi;
    }
    loss += loss_part;
    c_total += c_part;
  }
  *c = static_cast<float>(c_total);
  return static_cast<float>(loss);
}

}  // namespace fastkd
