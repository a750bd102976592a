// AKL's head/tail split of one row without sorting it (Wu et al. 2024, arXiv 2404.02657).
//
// The head is a prefix of the teacher's tokens in stable descending order (by a = u/T, ties in index
// order): those whose cumulative teacher mass is ≤ μ, plus the top-1 token. It is found by a weighted
// quickselect over the levels of a (expected O(V), an int32 index buffer as scratch): the tie level
// is the highest level whose mass together with everything above it exceeds μ. Tokens above it are
// head; its own tokens join in index order while the cumulative mass stays ≤ μ; the rest is tail.
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

inline AklHead akl_head(const float* a, const float* p, int32_t* idx, int64_t n, float mu) {
  int64_t lo = 0, hi = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (p[i] > 0.0f) idx[hi++] = static_cast<int32_t>(i);
  }
  float above = 0.0f;
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
inline void akl_gaps(const float* a, const float* p, const float* q, int64_t n, const AklHead& head,
                     int64_t top1, float mu, float* g_head, float* g_tail) {
  double in_head = 0.0, in_tail = 0.0;
  int64_t ties = 0;
  for (int64_t i = 0; i < n; ++i) {
    const float gap = std::fabs(p[i] - q[i]);
    bool is_head = !head.has_level || a[i] > head.level || i == top1;
    if (head.has_level && a[i] == head.level) {
      ++ties;
      is_head = is_head || head.mass_above + static_cast<float>(ties) * head.tie_p <= mu;
    }
    (is_head ? in_head : in_tail) += gap;
  }
  *g_head = static_cast<float>(in_head);
  *g_tail = static_cast<float>(in_tail);
}

}  // namespace fastkd
