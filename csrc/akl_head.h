// AKL's head/tail split of one row without sorting it (Wu et al. 2024, arXiv 2404.02657).
//
// The head is a prefix of the teacher's tokens in stable descending order (by a = u/T, ties in index
// order): those whose cumulative teacher mass is ≤ μ, plus the top-1 token. The tie level is the
// highest level of a whose mass together with everything above it exceeds μ: tokens above it are
// head; its own tokens join in index order while the cumulative mass stays ≤ μ; the rest is tail.
// A histogram of a in quarter-nat bins below max a finds the bin holding the tie level in one pass;
// a weighted quickselect over that bin's tokens (an int32 index buffer) finds the level exactly.
#pragma once

#include <cmath>
#include <cstdint>
#include <utility>

#include "fast_math.h"

namespace fastkd {

struct AklHead {
  bool has_level;    // false: the whole row fits in μ (all head)
  float level;       // the tie level of a
  float mass_above;  // teacher mass strictly above the level
  float tie_p;       // teacher probability of one token at the level
};

inline float median_of_three(float x, float y, float z) {
  return std::fmax(std::fmin(x, y), std::fmin(std::fmax(x, y), z));
}

constexpr int kBins = 128;
constexpr float kBinsPerNat = 4.0f;

FASTKD_INLINE int bin_of(float a, float max_a) {
  const float d = (max_a - a) * kBinsPerNat;
  return d < static_cast<float>(kBins - 1) ? static_cast<int>(d) : kBins - 1;
}

// The bin holding the tie level, the mass of the bins above it, and that bin's tokens in idx[0, *count).
inline int tie_bin(const float* a, const float* p, int32_t* idx, int64_t n, float max_a, float mu,
                   float* above, int64_t* count) {
  float lanes[4][kBins] = {};  // four partial histograms break the add chains of a popular bin
  for (int64_t i = 0; i < n; ++i) lanes[i & 3][bin_of(a[i], max_a)] += p[i];
  float mass[kBins];
  for (int b = 0; b < kBins; ++b) mass[b] = (lanes[0][b] + lanes[1][b]) + (lanes[2][b] + lanes[3][b]);
  int bin = 0;
  *above = 0.0f;
  while (bin < kBins - 1 && *above + mass[bin] <= mu) *above += mass[bin++];
  *count = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (p[i] > 0.0f && bin_of(a[i], max_a) == bin) idx[(*count)++] = static_cast<int32_t>(i);
  }
  return bin;
}

inline AklHead akl_head(const float* a, const float* p, int32_t* idx, int64_t n, float max_a, float mu) {
  int64_t lo = 0, hi = 0;
  float above = 0.0f;
  tie_bin(a, p, idx, n, max_a, mu, &above, &hi);
  while (lo < hi) {
    const float pivot = median_of_three(a[idx[lo]], a[idx[lo + (hi - lo) / 2]], a[idx[hi - 1]]);
    // Three-way partition of idx[lo, hi) into a > pivot | a == pivot | a < pivot.
    int64_t gt = lo, i = lo, lt = hi;
    float mass_gt = 0.0f, mass_eq = 0.0f;
    while (i < lt) {
      const float x = a[idx[i]];
      if (x > pivot) {
        mass_gt += p[idx[i]];
        std::swap(idx[gt++], idx[i++]);
      } else if (x < pivot) {
        std::swap(idx[i], idx[--lt]);
      } else {
        mass_eq += p[idx[i++]];
      }
    }
    if (above + mass_gt > mu) {
      hi = gt;
    } else if (above + mass_gt + mass_eq > mu) {
      return {true, pivot, above + mass_gt, p[idx[gt]]};
    } else {
      above += mass_gt + mass_eq;
      lo = lt;
    }
  }
  return {false, 0.0f, 0.0f, 0.0f};
}

// The first index of the row's maximum (stable sort's top-1).
inline int64_t first_argmax(const float* a, int64_t n, float max) {
  for (int64_t i = 0; i < n; ++i) {
    if (a[i] == max) return i;
  }
  return 0;
}

// g_head, g_tail = Σ |p − q| over the head and the tail (p, q normalised).
// Tokens at the tie level are left out of the vectorised sums and placed afterwards in index order.
inline void akl_gaps(const float* a, const float* p, const float* q, int64_t n, const AklHead& head,
                     int64_t top1, float mu, float* g_head, float* g_tail) {
  const float level = head.has_level ? head.level : kNegInf;
  float in_head = 0.0f, in_tail = 0.0f;
#pragma omp simd reduction(+ : in_head, in_tail)
  for (int64_t i = 0; i < n; ++i) {
    const float gap = std::fabs(p[i] - q[i]);
    const bool tie = head.has_level && a[i] == level;
    const bool is_head = !head.has_level || a[i] > level || i == top1;
    in_head += is_head && !tie ? gap : 0.0f;
    in_tail += is_head || tie ? 0.0f : gap;
  }
  int64_t ties = 0;
  for (int64_t i = 0; head.has_level && i < n; ++i) {
    if (a[i] != level) continue;
    ++ties;
    const bool fits = i == top1 || head.mass_above + static_cast<float>(ties) * head.tie_p <= mu;
    (fits ? in_head : in_tail) += std::fabs(p[i] - q[i]);
  }
  *g_head = in_head;
  *g_tail = in_tail;
}

}  // namespace fastkd
