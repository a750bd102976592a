// Row statistics of the cluster kernel: one pass over the CTA's slice in shared memory, online
// log-sum-exps (base 2) of a = u/T, b = z/T and of raw z, the teacher's first arg-max, and the flags
// of the conventions (spec: shared/spec/losses.md), all combined over the cluster in one exchange.
#pragma once

#include "staging.cuh"

namespace fastkd {
namespace cuda {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

enum StatSlot : int { M_A, S_A, M_B, S_B, M_Z, S_Z, MAX_U, TOP1, NAN_SEEN, OUTSIDE, Z_LABEL, kStats };

// (m, s) pairs of a running Σ 2^(x − m), merged; −inf maxima contribute nothing.
__device__ __forceinline__ void merge_lse(float& m, float& s, float m2, float s2) {
  const float top = fmaxf(m, m2);
  const float safe = top == -INFINITY ? 0.0f : top;
  s = s * exp2f(m - safe) + s2 * exp2f(m2 - safe);
  m = top;
}

struct StatsCombine {
  __device__ __forceinline__ static void apply(float (&acc)[kStats], const float* o) {
    merge_lse(acc[M_A], acc[S_A], o[M_A], o[S_A]);
    merge_lse(acc[M_B], acc[S_B], o[M_B], o[S_B]);
    merge_lse(acc[M_Z], acc[S_Z], o[M_Z], o[S_Z]);
    const bool later = o[MAX_U] > acc[MAX_U] || (o[MAX_U] == acc[MAX_U] && o[TOP1] < acc[TOP1]);
    acc[TOP1] = later ? o[TOP1] : acc[TOP1];
    acc[MAX_U] = later ? o[MAX_U] : acc[MAX_U];
    acc[NAN_SEEN] = fmaxf(acc[NAN_SEEN], o[NAN_SEEN]);
    acc[OUTSIDE] = fmaxf(acc[OUTSIDE], o[OUTSIDE]);
    acc[Z_LABEL] += o[Z_LABEL];
  }
};

// Folds one group of 8 base-2 values into a running (m, s).
__device__ __forceinline__ void fold_group(float& m, float& s, const float (&x)[kGroup]) {
  float top = m;
#pragma unroll
  for (int j = 0; j < kGroup; ++j) top = fmaxf(top, x[j]);
  const float safe = top == -INFINITY ? 0.0f : top;
  float part = 0.0f;
#pragma unroll
  for (int j = 0; j < kGroup; ++j) part += exp2f(x[j] - safe);
  s = s * exp2f(m - safe) + part;
  m = top;
}

// The cluster-wide statistics of a row whose slice (n elements, padded with −inf to whole groups)
// is in zs (student) and us (teacher). k = log2(e)/T; `label` is a local index or −1.
template <typename TS, typename TT>
__device__ void row_stats(const TS* zs, const TT* us, int groups, int64_t first_col, float k, int label, bool hard,
                          const Staging& staging, Scratch& s, const cg::cluster_group& cluster,
                          float (&st)[kStats]) {
  st[M_A] = st[M_B] = st[M_Z] = st[MAX_U] = -INFINITY;
  st[S_A] = st[S_B] = st[S_Z] = st[NAN_SEEN] = st[OUTSIDE] = st[Z_LABEL] = 0.0f;
  st[TOP1] = INFINITY;
  int waited = 0;
  for (int g = threadIdx.x; g < groups; g += kThreads) {
    await_group(staging, s, g, waited);
    float z[kGroup], u[kGroup], a[kGroup], b[kGroup], zz[kGroup];
    load_group(zs, g, z);
    load_group(us, g, u);
#pragma unroll
    for (int j = 0; j < kGroup; ++j) {
      a[j] = u[j] * k;
      b[j] = z[j] * k;
      zz[j] = z[j] * kLog2e;
      const bool nan = u[j] != u[j] || z[j] != z[j];
      st[NAN_SEEN] = nan ? 1.0f : st[NAN_SEEN];
      st[OUTSIDE] = (u[j] == -INFINITY && z[j] > -INFINITY) ? 1.0f : st[OUTSIDE];
      const bool top = u[j] > st[MAX_U];  // strict: the first index of the maximum stays
      st[TOP1] = top ? static_cast<float>(first_col + g * kGroup + j) : st[TOP1];
      st[MAX_U] = top ? u[j] : st[MAX_U];
      st[Z_LABEL] += g * kGroup + j == label ? z[j] : 0.0f;
    }
    fold_group(st[M_A], st[S_A], a);
    fold_group(st[M_B], st[S_B], b);
    if (hard) fold_group(st[M_Z], st[S_Z], zz);
  }
  await_group(staging, s, groups, waited);  // every piece, also those this thread had no group in
  cluster_reduce<kStats, StatsCombine>(st, s, 0, cluster);
}

}  // namespace cuda
}  // namespace fastkd
