// Bringing a CTA's slice of both rows into shared memory: bulk copies of the 16-byte aligned prefix
// in kChunks pieces, each completing on its own mbarrier, so that the first pass over a piece starts
// while later pieces are still in flight; plain loads for the rest (unaligned rows, the last few
// bytes) and −inf padding up to whole groups of 8, which every term maps to 0.
#pragma once

#include "cluster_common.cuh"

namespace fastkd {
namespace cuda {

// Where the pieces start (in groups) and which of them wait on bulk copies.
struct Staging {
  int begin[kChunks];
  bool bulk[kChunks];
};

template <typename T>
__device__ __forceinline__ int bulk_elements(const T* src, int n) {
  return reinterpret_cast<uintptr_t>(src) % 16 == 0 ? static_cast<int>((n * sizeof(T)) & ~size_t{15}) / sizeof(T) : 0;
}

template <typename TS, typename TT>
__device__ Staging load_slices(TS* zs, const TS* z, TT* us, const TT* u, int n, int groups, Scratch& s) {
  const int z_bulk = bulk_elements(z, n), u_bulk = bulk_elements(u, n);
  Staging st;
#pragma unroll
  for (int c = 0; c < kChunks; ++c) st.begin[c] = groups * c / kChunks;
  if (threadIdx.x == 0) {
#pragma unroll
    for (int c = 0; c < kChunks; ++c) barrier_init(&s.barrier[c]);
  }
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {  // piece c: elements [begin_c, begin_c+1) · 8 of each bulk prefix
    const int from = st.begin[c] * kGroup, to = c + 1 < kChunks ? groups * (c + 1) / kChunks * kGroup : groups * kGroup;
    const int z_count = max(min(to, z_bulk) - from, 0), u_count = max(min(to, u_bulk) - from, 0);
    st.bulk[c] = z_count + u_count > 0;
    if (threadIdx.x == 0 && st.bulk[c]) {
      barrier_expect(&s.barrier[c], static_cast<uint32_t>(z_count * sizeof(TS) + u_count * sizeof(TT)));
      if (z_count > 0) bulk_copy(zs + from, z + from, static_cast<uint32_t>(z_count * sizeof(TS)), &s.barrier[c]);
      if (u_count > 0) bulk_copy(us + from, u + from, static_cast<uint32_t>(u_count * sizeof(TT)), &s.barrier[c]);
    }
  }
  for (int i = z_bulk + threadIdx.x; i < groups * kGroup; i += kThreads) zs[i] = i < n ? z[i] : from_float<TS>(-INFINITY);
  for (int i = u_bulk + threadIdx.x; i < groups * kGroup; i += kThreads) us[i] = i < n ? u[i] : from_float<TT>(-INFINITY);
  __syncthreads();  // the barriers are initialised and the plain loads visible
  return st;
}

// Before a thread reads group g for the first time: the pieces that start at or before g have
// arrived. `waited` counts the pieces this thread has waited for (groups come in increasing order).
// Unrolled: indexing Staging at run time would put it in local memory.
__device__ __forceinline__ void await_group(const Staging& st, Scratch& s, int g, int& waited) {
#pragma unroll
  for (int c = 0; c < kChunks; ++c) {
    if (c >= waited && g >= st.begin[c]) {
      if (st.bulk[c]) barrier_wait(&s.barrier[c]);
      waited = c + 1;
    }
  }
}

}  // namespace cuda
}  // namespace fastkd
