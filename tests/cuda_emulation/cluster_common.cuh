// CPU stand-in for csrc/cuda/cluster_common.cuh: the same names, so that the cluster kernels compile
// with g++ and run on the CPU (tests/test_cuda_emulation.py). One OS thread per CTA (thread_local
// storage stands for its shared memory), one ucontext fiber per CUDA thread, switched at barriers;
// the bulk copies are memcpy, the cluster exchange reads the other CTAs' slots in rank order.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <ucontext.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#undef __device__
#undef __global__
#undef __shared__
#undef __launch_bounds__
#undef __grid_constant__
#define __device__
#define __global__
#define __shared__ static thread_local
#define __launch_bounds__(threads, blocks)
#define __grid_constant__

using std::isfinite;
using std::max;
using std::min;

inline int __float_as_int(float x) {
  int bits;
  std::memcpy(&bits, &x, sizeof bits);
  return bits;
}

inline float __int_as_float(int bits) {
  float x;
  std::memcpy(&x, &bits, sizeof x);
  return x;
}

namespace fastkd {
namespace cuda {

constexpr int kThreads = 512;
constexpr int kWarps = kThreads / 32;
constexpr int kGroup = 8;
constexpr int kSlots = 16;
constexpr int kChunks = 4;  // bulk copies of a slice, each on its own barrier

struct Scratch {
  float slot[2][kSlots];
  float result[kSlots];
  unsigned long long barrier[kChunks];
};

namespace emu {

struct Index {
  unsigned x, y, z;
};

struct Cluster {  // shared by the OS threads of one cluster
  explicit Cluster(int size) : size(size), os_barrier(size), scratch(size, nullptr) {}
  int size;
  std::barrier<> os_barrier;
  std::vector<Scratch*> scratch;
};

struct Cta {  // one per OS thread
  Cluster* cluster;
  int rank;
  unsigned block;
  std::vector<ucontext_t> fibers;
  std::vector<bool> done;
  ucontext_t main;
  int current = 0, arrived = 0, alive = kThreads;
  long generation = 0;
  bool cluster_wide = false;
  std::vector<unsigned char> smem;
  std::vector<float> values = std::vector<float>(kThreads * kSlots);
};

inline thread_local Cta* cta = nullptr;

inline Index thread_index() { return {static_cast<unsigned>(cta->current), 0, 0}; }
inline Index block_index() { return {cta->block, 0, 0}; }

// A fiber waits at a barrier of the CTA (or of the cluster) until every fiber has arrived.
inline void barrier(bool cluster_wide) {
  const long generation = cta->generation;
  cta->cluster_wide = cluster_wide;
  ++cta->arrived;
  while (cta->generation == generation) swapcontext(&cta->fibers[cta->current], &cta->main);
}

}  // namespace emu

#define threadIdx (::fastkd::cuda::emu::thread_index())
#define blockIdx (::fastkd::cuda::emu::block_index())

inline void __syncthreads() { emu::barrier(false); }

namespace cg {
struct cluster_group {
  unsigned num_blocks() const { return static_cast<unsigned>(emu::cta->cluster->size); }
  unsigned block_rank() const { return static_cast<unsigned>(emu::cta->rank); }
  void sync() const { emu::barrier(true); }
};
inline cluster_group this_cluster() { return {}; }
}  // namespace cg

inline unsigned char* dynamic_smem() { return emu::cta->smem.data(); }

inline float to_float(float x) { return x; }
inline float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
inline float to_float(__half x) { return __half2float(x); }

template <typename T>
T from_float(float x);
template <>
inline float from_float<float>(float x) { return x; }
template <>
inline __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }
template <>
inline __half from_float<__half>(float x) { return __float2half_rn(x); }

template <typename T>
inline void load_group(const T* base, int g, float (&x)[kGroup]) {
  for (int j = 0; j < kGroup; ++j) x[j] = to_float(base[g * kGroup + j]);
}

template <typename T>
inline void store_group(T* dst, const float (&x)[kGroup], int n, bool) {
  for (int j = 0; j < kGroup && j < n; ++j) dst[j] = from_float<T>(x[j]);
}

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "cuda emulation: %s\n", what);
  std::abort();
}

inline void barrier_init(unsigned long long* bar) { *bar = 0; }
inline void barrier_expect(unsigned long long* bar, uint32_t bytes) { *bar += bytes; }
inline void barrier_wait(unsigned long long* bar) {
  if (*bar == 0) fail("waiting on a barrier that expects no bytes");  // bulk_copy completed already
}
inline void bulk_copy(void* dst, const void* src, uint32_t bytes, unsigned long long*) {
  if (bytes % 16 || reinterpret_cast<uintptr_t>(src) % 16 || reinterpret_cast<uintptr_t>(dst) % 16) {
    fail("bulk copy of unaligned memory");
  }
  std::memcpy(dst, src, bytes);
}

template <int K, typename Combine>
inline void cluster_reduce(float (&v)[K], Scratch& s, int phase, const cg::cluster_group& cluster) {
  float* values = emu::cta->values.data();
  for (int k = 0; k < K; ++k) values[threadIdx.x * kSlots + k] = v[k];
  emu::cta->cluster->scratch[emu::cta->rank] = &s;
  __syncthreads();
  float* mine = s.slot[phase & 1];
  if (threadIdx.x == 0) {
    for (int t = 1; t < kThreads; ++t) Combine::apply(v, values + t * kSlots);
    for (int k = 0; k < K; ++k) mine[k] = v[k];
  }
  cluster.sync();
  if (threadIdx.x == 0) {
    const auto& all = emu::cta->cluster->scratch;
    for (int k = 0; k < K; ++k) v[k] = all[0]->slot[phase & 1][k];
    for (int r = 1; r < emu::cta->cluster->size; ++r) Combine::apply(v, all[r]->slot[phase & 1]);
    for (int k = 0; k < K; ++k) s.result[k] = v[k];
  }
  __syncthreads();
  for (int k = 0; k < K; ++k) v[k] = s.result[k];
}

template <int K>
struct Sum {
  static void apply(float (&acc)[K], const float* other) {
    for (int k = 0; k < K; ++k) acc[k] += other[k];
  }
};

}  // namespace cuda
}  // namespace fastkd
