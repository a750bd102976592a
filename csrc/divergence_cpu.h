// CPU (OpenMP) implementation of the fused divergence kernels; see divergence_cpu.cpp.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace fastkd {

// Per-token loss [N] (fp32, unscaled, 0 at invalid rows); writes scale·∂loss/∂student into grad.
// ``divergence`` indexes fastkd.options.DIVERGENCES; ``lw1``, ``lw2`` are the logs of the mixture
// weights (teacher, student) of jsd and the skew KLs. ``grad`` may alias ``student``. A softcap c > 0
// makes the row loader read c·tanh(x/c) for that side's logits x and chains the student's gradient
// through it (the fused-linear path); 0 reads the logits as they are.
at::Tensor divergence_fwd_cpu(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& valid,
                              const std::optional<at::Tensor>& labels, const at::Tensor& scale,
                              at::Tensor& grad, int64_t divergence, double param, double temperature,
                              double hard_label_weight, double lw1, double lw2, double student_softcap,
                              double teacher_softcap);

}  // namespace fastkd
