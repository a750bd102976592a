// Row I/O and the OpenMP row loop shared by the CPU kernels (divergence_cpu.cpp, sparse_cpu.cpp).
//
// A kernel converts one token row of its inputs to fp32 row buffers (load_row: logits times a factor,
// through an optional softcap), computes on them while they sit in the core's L2 cache, and writes the
// gradient row in the student's dtype (store_row). for_each_row runs the rows of a call on OpenMP
// threads; a row is computed by one thread from start to end, so its result does not depend on the
// thread that computes it or on the thread count.
//
// The row functions are compiled twice (x86-64-v3, i.e. AVX2+FMA, and baseline x86-64) and picked at
// load time, so the build stays portable without -march. -fno-trapping-math (setup.py) lets the
// compiler turn the selects of the row loops into vector blends; it changes no result.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <optional>

#include "fast_math.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && __GNUC__ >= 12
#define FASTKD_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define FASTKD_CLONES
#endif

namespace fastkd {
namespace {

// out = k·x in fp32, or k·cap·tanh(x/cap) for a softcap cap > 0 (the fused-linear path); returns max(out).
template <typename T>
FASTKD_CLONES float load_row(const void* src, int64_t n, float k, float cap, float* out) {
  const T* x = static_cast<const T*>(src);
  float m = kNegInf;
  if (cap > 0.0f) {
    const float inv_cap = 1.0f / cap, k_cap = k * cap;
    for (int64_t i = 0; i < n; ++i) {
      out[i] = k_cap * std::tanh(static_cast<float>(x[i]) * inv_cap);
      m = out[i] > m ? out[i] : m;
    }
    return m;
  }
#pragma omp simd reduction(max : m)
  for (int64_t i = 0; i < n; ++i) {
    out[i] = static_cast<float>(x[i]) * k;
    m = out[i] > m ? out[i] : m;
  }
  return m;
}

// The student softcap's chain factor on the gradient: h_i *= 1 − tanh², tanh = z_i/cap = b_i/(cap·inv_t).
FASTKD_CLONES void chain_softcap(const float* b, int64_t n, float cap, float inv_t, float* h) {
  const float k = 1.0f / (cap * inv_t);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) h[i] *= 1.0f - (b[i] * k) * (b[i] * k);
}

template <typename T>
FASTKD_CLONES void store_row(const float* x, int64_t n, void* dst) {
  T* out = static_cast<T*>(dst);
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<T>(x[i]);
}

using Loader = float (*)(const void*, int64_t, float, float, float*);
using Storer = void (*)(const float*, int64_t, void*);

template <typename F>
F by_dtype(at::ScalarType dtype, F f32, F bf16, F f16) {
  switch (dtype) {
    case at::kFloat:
      return f32;
    case at::kBFloat16:
      return bf16;
    case at::kHalf:
      return f16;
    default:
      TORCH_CHECK(false, "fastkd cpu backend takes float32, bfloat16 or float16 logits, got ", dtype);
  }
}

Loader loader(at::ScalarType dtype) {
  return by_dtype<Loader>(dtype, load_row<float>, load_row<c10::BFloat16>, load_row<c10::Half>);
}

Storer storer(at::ScalarType dtype) {
  return by_dtype<Storer>(dtype, store_row<float>, store_row<c10::BFloat16>, store_row<c10::Half>);
}

// [N, V] rows of one tensor, addressed in bytes (int64 offsets: N·V passes 2^31 at real sizes).
struct Rows {
  char* base;
  int64_t step;

  explicit Rows(const at::Tensor& x)
      : base(static_cast<char*>(x.data_ptr())), step(x.stride(0) * x.element_size()) {}
  Rows() : base(nullptr), step(0) {}
  char* operator[](int64_t r) const { return base + r * step; }
};

// The gradient output of a call: nothing (the loss-only evaluation pass), or grad rows in the student's
// dtype. put() writes a row's fp32 gradient h, zeros for an invalid row (whose h is not computed).
struct GradOut {
  Rows rows;
  Storer store = nullptr;

  explicit GradOut(const std::optional<at::Tensor>& grad) {
    if (grad.has_value()) {
      rows = Rows(*grad);
      store = storer(grad->scalar_type());
    }
  }
  bool wanted() const { return store != nullptr; }
  void put(int64_t r, bool valid, float* h, int64_t n) const {
    if (!valid) std::fill(h, h + n, 0.0f);
    store(h, n, rows[r]);
  }
};

// How many threads a call of ``rows`` rows uses: torch's thread count, at most one per row.
inline int row_threads(int64_t rows) {
  return static_cast<int>(std::min<int64_t>(std::max(at::get_num_threads(), 1), rows));
}

// body(r, tid) for every row r of [0, rows) on ``threads`` OpenMP threads (tid: the thread's index, for
// its scratch buffers), in dynamic chunks of about 8192 elements.
template <typename Body>
void for_each_row(int64_t rows, int64_t n, int threads, const Body& body) {
  const int64_t chunk = std::max<int64_t>(1, 8192 / n);
#pragma omp parallel num_threads(threads)
  {
    const int tid = omp_get_thread_num();
#pragma omp for schedule(dynamic, chunk)
    for (int64_t r = 0; r < rows; ++r) body(r, tid);
  }
}

}  // namespace
}  // namespace fastkd
