// The torch-facing launcher of the Hopper cluster kernels (divergence_cluster.cuh); see
// fastkd/ops/divergence_cuda.py for the op and fastkd/ops/cuda_plan.py for the launch plan.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace fastkd {

// Per-token loss [N] (fp32, unscaled, 0 at invalid rows); writes scale·∂loss/∂student into grad.
// Arguments as divergence_fwd_cpu's, plus the plan: `cluster` CTAs per row, `slice` columns per CTA
// and `smem_bytes` of dynamic shared memory per CTA. Runs on the current stream of student's device.
at::Tensor divergence_fwd_cuda(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& valid,
                               const std::optional<at::Tensor>& labels, const at::Tensor& scale,
                               at::Tensor& grad, int64_t divergence, double param, double temperature,
                               double hard_label_weight, double lw1, double lw2, int64_t cluster, int64_t slice,
                               int64_t smem_bytes);

}  // namespace fastkd
