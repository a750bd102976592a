// AKL's head/tail split over the slices in shared memory, with the semantics of the Triton kernel
// (kernels/divergence.py) and the spec: the head is the prefix of the teacher's stable descending
// order whose cumulative mass is ≤ μ, plus the top-1 token. Two 16-ary searches, each step one pass
// over the slice and one cluster exchange of 16 partial sums: the smallest ordered key of u whose
// mass at or above it is ≤ μ (about 8 steps), then, only when the tie level is split, the column of
// the last tie that still fits (about 5 steps).
#pragma once

#include "cluster_common.cuh"

namespace fastkd {
namespace cuda {

constexpr int kWays = kSlots;

// fp32 → int64 with the same order (−0 and +0 are one level).
__device__ __forceinline__ int64_t ordered_key(float x) {
  const int bits = __float_as_int(x + 0.0f);
  return bits < 0 ? static_cast<int64_t>(bits ^ 0x7FFFFFFF) : static_cast<int64_t>(bits);
}

__device__ __forceinline__ float key_value(int64_t key) {
  const int bits = static_cast<int>(key);
  return __int_as_float(bits < 0 ? bits ^ 0x7FFFFFFF : bits);
}

struct AklSplit {
  int64_t head_key;  // tokens with key ≥ head_key are head
  int64_t tie_key;   // the tie level; its tokens at columns ≤ tie_col are head too
  int64_t tie_col;
};

// f[w] = this thread's Σ weight over the columns of its groups whose level is ≥ cand[w], where
// element(u, col) gives a column's (level, weight).
template <typename TT, typename Element>
__device__ __forceinline__ void sums_at_or_above(const TT* us, int groups, int64_t first_col,
                                                 const int64_t (&cand)[kWays], float (&f)[kWays], Element element) {
#pragma unroll
  for (int w = 0; w < kWays; ++w) f[w] = 0.0f;
  for (int g = threadIdx.x; g < groups; g += kThreads) {
    float u[kGroup];
    load_group(us, g, u);
#pragma unroll
    for (int j = 0; j < kGroup; ++j) {
      int64_t level;
      float weight;
      element(u[j], first_col + g * kGroup + j, level, weight);
#pragma unroll
      for (int w = 0; w < kWays; ++w) f[w] += level >= cand[w] ? weight : 0.0f;
    }
  }
}

// Smallest x in (lo, hi] with done(F(x)), F given at 16 candidates per step by partial(cand, out)
// (this thread's share, summed over the cluster). done must hold at hi. Also returns F at x.
template <typename Partial, typename Done>
__device__ int64_t search16(int64_t lo, int64_t hi, Partial partial, Done done, Scratch& s, int& phase,
                            const cg::cluster_group& cluster, float* f_hi) {
  while (hi - lo > 1) {
    int64_t cand[kWays];
#pragma unroll
    for (int w = 0; w < kWays; ++w) cand[w] = max(lo + ((hi - lo) * (w + 1)) / (kWays + 1), lo + 1);
    float f[kWays];
    partial(cand, f);
    cluster_reduce<kWays, Sum<kWays>>(f, s, phase++, cluster);
    int64_t new_lo = lo, new_hi = hi;
#pragma unroll
    for (int w = 0; w < kWays; ++w) {
      if (done(f[w])) {
        if (cand[w] < new_hi) *f_hi = f[w];
        new_hi = min(new_hi, cand[w]);
      } else {
        new_lo = max(new_lo, cand[w]);
      }
    }
    lo = new_lo;
    hi = new_hi;
  }
  return hi;
}

// us: the teacher slice (groups of 8, −inf padded); p_of(u) its probability; first_col its column.
template <typename TT, typename Prob>
__device__ AklSplit akl_split(const TT* us, int groups, int64_t first_col, int64_t vocab, float max_u, float mu,
                              Prob p_of, Scratch& s, int& phase, const cg::cluster_group& cluster) {
  if (mu >= 1.0f) return {ordered_key(-INFINITY), 0, -1};  // the whole row is head
  float mass_hi = 0.0f;
  auto mass_above = [&](const int64_t (&cand)[kWays], float (&f)[kWays]) {
    sums_at_or_above(us, groups, first_col, cand, f, [&](float u, int64_t, int64_t& level, float& weight) {
      level = ordered_key(u);
      weight = p_of(u);
    });
  };
  const int64_t head_key = search16(
      ordered_key(-INFINITY) - 1, ordered_key(max_u) + 1, mass_above, [&](float m) { return m <= mu; }, s, phase,
      cluster, &mass_hi);
  const int64_t tie_key = head_key - 1;
  const float tie_p = p_of(key_value(tie_key));
  float ties[1] = {0.0f};
  for (int g = threadIdx.x; g < groups; g += kThreads) {
    float u[kGroup];
    load_group(us, g, u);
#pragma unroll
    for (int j = 0; j < kGroup; ++j) ties[0] += ordered_key(u[j]) == tie_key ? 1.0f : 0.0f;
  }
  cluster_reduce<1, Sum<1>>(ties, s, phase++, cluster);
  // The ties that fit: the largest k with mass_hi + k·tie_p ≤ μ in fp32, as a cumulative sum decides.
  const auto fits = [&](float count) { return mass_hi + count * tie_p <= mu; };
  float admitted = fminf(fmaxf(floorf((mu - mass_hi) / tie_p), 0.0f), ties[0]);
  while (admitted > 0.0f && !fits(admitted)) admitted -= 1.0f;
  while (admitted < ties[0] && fits(admitted + 1.0f)) admitted += 1.0f;
  if (admitted >= ties[0]) return {head_key, tie_key, vocab};
  if (admitted == 0.0f) return {head_key, tie_key, -1};
  auto ties_up_to = [&](const int64_t (&cand)[kWays], float (&f)[kWays]) {  // columns ≤ c: levels −col ≥ −c
    int64_t negated[kWays];
#pragma unroll
    for (int w = 0; w < kWays; ++w) negated[w] = -cand[w];
    sums_at_or_above(us, groups, first_col, negated, f, [&](float u, int64_t col, int64_t& level, float& weight) {
      level = -col;
      weight = ordered_key(u) == tie_key ? 1.0f : 0.0f;
    });
  };
  float unused = 0.0f;
  const int64_t tie_col = search16(
      -1, vocab - 1, ties_up_to, [&](float count) { return count >= admitted; }, s, phase, cluster, &unused);
  return {head_key, tie_key, tie_col};
}

}  // namespace cuda
}  // namespace fastkd
