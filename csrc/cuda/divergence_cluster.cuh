// The divergence family on Hopper: one thread-block cluster per token row, the row resident in the
// cluster's shared memory, so that HBM sees each logit once: reads 2·V (teacher, student), writes V
// (the gradient). A plain two-pass kernel moves 5·V, the Triton kernel 5·V to 7·V.
//
// CTA r of a cluster of C holds columns [r·slice, (r+1)·slice) of both inputs (slice a multiple of 8,
// −inf padding to whole groups of 8, which every term maps to 0):
//   1. bulk copies (cp.async.bulk, four pieces on four mbarriers, staging.cuh) bring the slice in
//      where 16-byte aligned;
//   2. one pass over shared memory, each piece as soon as it has arrived: online log-sum-exps (base 2) of a = u/T, b = z/T and raw z, the
//      teacher's first arg-max, NaN and out-of-support flags; one exchange over distributed shared
//      memory gives every CTA the row's statistics;
//   3. reverse KL, jsd, skew KLs, tvd and AKL: one more pass for c = Σ q·h (and AKL's gaps, after its
//      threshold search, akl_search.cuh), one more exchange;
//   4. the loss terms and the gradient (h − q·c)/T · scale from shared memory, written once; the
//      loss partials meet in rank 0.
// Per-element loss and h come from terms<DIV> in ../divergence_row.h, the code the CPU kernels run.
// Conventions (spec): NaN or +inf in a valid row, or a row that is −inf everywhere, gives a NaN loss
// and NaN gradient; a divergence that is infinite where the teacher is −inf and the student is not
// gives +inf and a zero gradient; invalid rows give 0 and a zero gradient.
#pragma once

#include "akl_search.cuh"
#include "divergence_args.h"
#include "row_stats.cuh"

namespace fastkd {
namespace cuda {

template <typename TS>
__device__ void fill_slice(TS* grad, int n, int groups, float value, bool aligned) {
  float x[kGroup];
#pragma unroll
  for (int j = 0; j < kGroup; ++j) x[j] = value;
  for (int g = threadIdx.x; g < groups; g += kThreads) store_group(grad + g * kGroup, x, n - g * kGroup, aligned);
}

// Row quantities every CTA derives identically from the exchanged statistics.
struct Row {
  float k, lse2_a, lse2_b, lse2_z, c, w_head, w_tail;
  RowParams rp;
  AklSplit split;
  int64_t first, top1;
};

struct Element {
  float la, lb, p, q;
};

__device__ __forceinline__ Element element(float u, float z, const Row& r) {
  const float da = u * r.k - r.lse2_a, db = z * r.k - r.lse2_b;
  return {da * kLn2, db * kLn2, exp2f(da), exp2f(db)};
}

__device__ __forceinline__ bool in_head(float u, int64_t col, const Row& r) {
  const int64_t key = ordered_key(u);
  return key >= r.split.head_key || col == r.top1 || (key == r.split.tie_key && col <= r.split.tie_col);
}

// Pass 3: c = Σ h, and AKL's head and tail gaps Σ|p − q|.
template <int DIV, typename TS, typename TT>
__device__ void row_sums(const TS* zs, const TT* us, int groups, Row& r, Scratch& s, int& phase,
                         const cg::cluster_group& cluster) {
  float acc[3] = {0.0f, 0.0f, 0.0f};
  for (int g = threadIdx.x; g < groups; g += kThreads) {
    float z[kGroup], u[kGroup];
    load_group(zs, g, z);
    load_group(us, g, u);
#pragma unroll
    for (int j = 0; j < kGroup; ++j) {
      const Element e = element(u[j], z[j], r);
      float term, h;
      terms<DIV>(e.la, e.lb, e.p, e.q, r.rp, term, h);
      acc[0] += h;
      if constexpr (DIV == AKL) {
        const bool head = in_head(u[j], r.first + g * kGroup + j, r);
        const float gap = fabsf(e.p - e.q);
        acc[1] += head ? gap : 0.0f;  // selects: a run-time index would put acc in local memory
        acc[2] += head ? 0.0f : gap;
      }
    }
  }
  cluster_reduce<3, Sum<3>>(acc, s, phase++, cluster);
  r.c = acc[0];
  const float total = fmaxf(acc[1] + acc[2], 1e-8f);
  r.w_head = acc[1] / total;
  r.w_tail = acc[2] / total;
}

// Pass 4: writes the gradient of the slice; returns this thread's part of the soft loss.
template <int DIV, typename TS, typename TT>
__device__ float write_gradient(const TS* zs, const TT* us, TS* grad, int n, int groups, const Row& r,
                                const DivergenceArgs& args, float k_soft, float k_hard, int label, bool zero,
                                bool aligned) {
  const float c = (DIV == FORWARD_KL || DIV == SOFT_CE) ? -1.0f : r.c;
  float loss = 0.0f;
  for (int g = threadIdx.x; g < groups; g += kThreads) {
    float z[kGroup], u[kGroup], out[kGroup];
    load_group(zs, g, z);
    load_group(us, g, u);
#pragma unroll
    for (int j = 0; j < kGroup; ++j) {
      const Element e = element(u[j], z[j], r);
      float term, h, soft;
      terms<DIV>(e.la, e.lb, e.p, e.q, r.rp, term, h);
      if constexpr (DIV == AKL) {
        const bool tail = r.w_tail > 0.0f;  // 0 · ∞ must not poison a row whose tail weight is 0
        term = r.w_head * term + (tail ? r.w_tail * h : 0.0f);
        soft = r.w_head * (e.q - e.p) + (tail ? r.w_tail * (h - e.q * c) : 0.0f);
      } else {
        soft = h - e.q * c;
      }
      float gj = soft * k_soft;
      if (args.hard) gj += k_hard * (exp2f(z[j] * kLog2e - r.lse2_z) - (g * kGroup + j == label ? 1.0f : 0.0f));
      out[j] = zero ? 0.0f : gj;
      loss += term;
    }
    store_group(grad + g * kGroup, out, n - g * kGroup, aligned);
  }
  return loss;
}

template <int DIV, typename TS, typename TT>
__global__ void __launch_bounds__(kThreads, 1) divergence_cluster_kernel(const __grid_constant__ DivergenceArgs args) {
  __shared__ Scratch s;
  unsigned char* slices = dynamic_smem();
  const cg::cluster_group cluster = cg::this_cluster();
  const int64_t row = blockIdx.x / cluster.num_blocks();
  const int64_t first = static_cast<int64_t>(cluster.block_rank()) * args.slice;
  const int n = static_cast<int>(max(min(args.vocab - first, args.slice), static_cast<int64_t>(0)));
  const int groups = (n + kGroup - 1) / kGroup;
  TS* zs = reinterpret_cast<TS*>(slices);
  TT* us = reinterpret_cast<TT*>(slices + ((args.slice * sizeof(TS) + 15) / 16) * 16);
  TS* grad = static_cast<TS*>(args.grad) + row * args.g_stride + first;
  const bool aligned = reinterpret_cast<uintptr_t>(grad) % 16 == 0;
  if (!args.valid[row]) {  // the same decision in every CTA of the cluster
    fill_slice(grad, n, groups, 0.0f, aligned);
    if (cluster.block_rank() == 0 && threadIdx.x == 0) args.loss[row] = 0.0f;
    return;
  }
  const Staging staging = load_slices(zs, static_cast<const TS*>(args.student) + row * args.s_stride + first, us,
                                      static_cast<const TT*>(args.teacher) + row * args.t_stride + first, n, groups, s);
  const int64_t label_col = args.hard ? args.labels[row] - first : -1;
  const int label = label_col >= 0 && label_col < n ? static_cast<int>(label_col) : -1;
  Row r{};
  r.k = args.inv_t * kLog2e;
  r.rp = args.rp;
  r.first = first;
  float st[kStats];
  row_stats(zs, us, groups, first, r.k, label, args.hard != 0, staging, s, cluster, st);
  int phase = 1;
  const bool bad = st[NAN_SEEN] > 0.0f || !isfinite(st[M_A]) || !isfinite(st[M_B]) ||
                   (args.hard && !isfinite(st[M_Z]));
  float loss = NAN;
  if (!bad) {
    r.lse2_a = st[M_A] + log2f(st[S_A]);
    r.lse2_b = st[M_B] + log2f(st[S_B]);
    r.lse2_z = st[M_Z] + log2f(st[S_Z]);
    r.top1 = static_cast<int64_t>(st[TOP1]);
    if constexpr (DIV == AKL) {
      const float lse2_a = r.lse2_a, k = r.k;
      r.split = akl_split(us, groups, first, args.vocab, st[MAX_U], args.rp.param,
                          [=](float u) { return exp2f(u * k - lse2_a); }, s, phase, cluster);
    }
    if constexpr (DIV != FORWARD_KL && DIV != SOFT_CE) row_sums<DIV>(zs, us, groups, r, s, phase, cluster);
    const bool no_student_weight = r.rp.lw2 == -INFINITY;
    const bool infinite = st[OUTSIDE] > 0.0f && (DIV == REVERSE_KL || (DIV == AKL && r.w_tail > 0.0f) ||
                                                 ((DIV == JSD || DIV == SKEW_REVERSE_KL) && no_student_weight));
    const float scale = *args.scale;
    const float k_soft = args.inv_t * scale * (args.hard ? 1.0f - args.hard_w : 1.0f);
    float part[1] = {write_gradient<DIV>(zs, us, grad, n, groups, r, args, k_soft, args.hard_w * scale, label,
                                         infinite, aligned)};
    cluster_reduce<1, Sum<1>>(part, s, phase++, cluster);
    const float lse_z = r.lse2_z * kLn2;
    loss = infinite ? INFINITY
                    : (args.hard ? (1.0f - args.hard_w) * part[0] + args.hard_w * (lse_z - st[Z_LABEL]) : part[0]);
  } else {
    fill_slice(grad, n, groups, NAN, aligned);
  }
  if (cluster.block_rank() == 0 && threadIdx.x == 0) args.loss[row] = loss;
  cluster.sync();  // no CTA leaves while another still reads its shared memory
}

}  // namespace cuda
}  // namespace fastkd
