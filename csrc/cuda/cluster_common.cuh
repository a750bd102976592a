// Device helpers of the cluster kernels: dtype conversion, 8-element groups in shared memory, the bulk
// copy engine (cp.async.bulk on an mbarrier), and block + cluster reductions over distributed shared
// memory. Torch-free, so that the kernels compile standalone into a cubin (tests/test_cuda_compile.py).
// Everything the kernels use of CUDA beyond plain arithmetic is here, so tests/cuda_emulation/ can put
// a CPU version of this one file under them and run them on the CPU.
#pragma once

#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

namespace fastkd {
namespace cuda {

namespace cg = cooperative_groups;

constexpr int kThreads = 512;            // threads of one CTA
constexpr int kWarps = kThreads / 32;
constexpr int kGroup = 8;                // consecutive elements a thread handles at once
constexpr int kSlots = 16;
constexpr int kChunks = 4;  // bulk copies of a slice, each on its own barrier               // floats one CTA contributes to one cluster exchange

// Static shared memory of one CTA: the reductions' scratch and the bulk copies' barrier.
struct Scratch {
  float warp[kWarps][kSlots];
  float slot[2][kSlots];  // what this CTA shares with its cluster (double-buffered: one sync each)
  float result[kSlots];   // the cluster-wide result, read by every thread of the CTA
  unsigned long long barrier[kChunks];
};

// The CTA's dynamic shared memory, 16-byte aligned.
__device__ __forceinline__ unsigned char* dynamic_smem() {
  extern __shared__ __align__(16) unsigned char smem[];
  return smem;
}

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half_rn(x); }

// Elements g·8 … g·8+7 of a 16-byte aligned shared buffer, as fp32 (16-byte loads).
template <typename T>
__device__ __forceinline__ void load_group(const T* base, int g, float (&x)[kGroup]) {
  constexpr int kVec = 16 / sizeof(T);
  const uint4* words = reinterpret_cast<const uint4*>(base + g * kGroup);
#pragma unroll
  for (int v = 0; v < kGroup / kVec; ++v) {
    const uint4 w = words[v];
    const T* e = reinterpret_cast<const T*>(&w);
#pragma unroll
    for (int j = 0; j < kVec; ++j) x[v * kVec + j] = to_float(e[j]);
  }
}

// Stores the first n (≤ 8) values at dst in T; 16-byte stores when the group is whole and aligned.
template <typename T>
__device__ __forceinline__ void store_group(T* dst, const float (&x)[kGroup], int n, bool aligned) {
  constexpr int kVec = 16 / sizeof(T);
  if (aligned && n == kGroup) {
#pragma unroll
    for (int v = 0; v < kGroup / kVec; ++v) {
      uint4 w;
      T* e = reinterpret_cast<T*>(&w);
#pragma unroll
      for (int j = 0; j < kVec; ++j) e[j] = from_float<T>(x[v * kVec + j]);
      reinterpret_cast<uint4*>(dst)[v] = w;
    }
  } else {
#pragma unroll
    for (int j = 0; j < kGroup; ++j) {
      if (j < n) dst[j] = from_float<T>(x[j]);
    }
  }
}

__device__ __forceinline__ uint32_t smem_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void barrier_init(unsigned long long* bar) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;" ::"r"(smem_address(bar)));
  asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
}

// One thread: the barrier completes once `bytes` have arrived through bulk copies.
__device__ __forceinline__ void barrier_expect(unsigned long long* bar, uint32_t bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_address(bar)), "r"(bytes)
               : "memory");
}

__device__ __forceinline__ void barrier_wait(unsigned long long* bar) {
  asm volatile(
      "{\n .reg .pred done;\n WAIT:\n mbarrier.try_wait.parity.shared::cta.b64 done, [%0], 0;\n"
      " @!done bra WAIT;\n}" ::"r"(smem_address(bar))
      : "memory");
}

// Global → shared copy by the bulk copy engine; src, dst and bytes multiples of 16.
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, uint32_t bytes, unsigned long long* bar) {
  asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                   smem_address(dst)),
               "l"(src), "r"(bytes), "r"(smem_address(bar))
               : "memory");
}

// K values of every thread, combined by Combine::apply(acc, other) over the warp, the CTA and the
// cluster, in a fixed order: every CTA gets the bitwise-same result (so all take the same branches).
// Every thread of every CTA of the cluster must call it; `phase` alternates the shared slot.
template <int K, typename Combine>
__device__ __forceinline__ void cluster_reduce(float (&v)[K], Scratch& s, int phase, const cg::cluster_group& cluster) {
  static_assert(K <= kSlots, "too many values for one exchange");
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) {
    float other[K];
#pragma unroll
    for (int k = 0; k < K; ++k) other[k] = __shfl_down_sync(0xffffffffu, v[k], offset);
    Combine::apply(v, other);
  }
  const int warp = threadIdx.x / 32;
  if (threadIdx.x % 32 == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) s.warp[warp][k] = v[k];
  }
  __syncthreads();
  float* mine = s.slot[phase & 1];
  if (threadIdx.x == 0) {
    for (int w = 1; w < kWarps; ++w) Combine::apply(v, s.warp[w]);
#pragma unroll
    for (int k = 0; k < K; ++k) mine[k] = v[k];
  }
  cluster.sync();
  if (threadIdx.x == 0) {
    const float* first = cluster.map_shared_rank(mine, 0);
#pragma unroll
    for (int k = 0; k < K; ++k) v[k] = first[k];
    for (unsigned r = 1; r < cluster.num_blocks(); ++r) Combine::apply(v, cluster.map_shared_rank(mine, r));
#pragma unroll
    for (int k = 0; k < K; ++k) s.result[k] = v[k];
  }
  __syncthreads();
#pragma unroll
  for (int k = 0; k < K; ++k) v[k] = s.result[k];
}

template <int K>
struct Sum {
  __device__ __forceinline__ static void apply(float (&acc)[K], const float* other) {
#pragma unroll
    for (int k = 0; k < K; ++k) acc[k] += other[k];
  }
};

}  // namespace cuda
}  // namespace fastkd
