// The launch of the cluster kernels, seen from the host: plain C++ (no device code, no torch), so that
// both the kernels' translation unit and the torch-facing launcher include it.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "../divergence_row.h"

namespace fastkd {
namespace cuda {

// Everything a launch needs, by value (a __grid_constant__ parameter); strides in elements.
struct DivergenceArgs {
  const void* student;
  const void* teacher;
  void* grad;
  float* loss;
  const bool* valid;
  const int64_t* labels;  // int64 [N] when hard, else unused
  const float* scale;     // fp32 [] factor of the gradient (1/N_valid for a mean)
  int64_t s_stride, t_stride, g_stride, vocab, slice;
  float inv_t, hard_w;
  RowParams rp;
  int hard;
};

enum DType : int { F32, BF16, F16 };

// One row per cluster of `cluster` CTAs (1, 2, 4 or 8), `smem` dynamic shared-memory bytes per CTA,
// teacher and student in `dtype`, on `stream`; no host synchronisation. Returns the launch's status.
cudaError_t launch_divergence_cluster(const DivergenceArgs& args, int divergence, int dtype, int64_t rows,
                                      int cluster, size_t smem, cudaStream_t stream);

}  // namespace cuda
}  // namespace fastkd
