// CPU (OpenMP) implementation of the fused divergence kernels; see divergence_cpu.cpp.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace fastkd {

// Per-token loss [N] (fp32, unscaled, 0 at invalid rows); writes scale·∂loss/∂student into grad
// (when given: without it the call only evaluates the loss).
// ``divergence`` indexes fastkd.options.DIVERGENCES, or is one past them for TAID (``param`` = t in
// [0, 1]); ``lw1``, ``lw2`` are the logs of the mixture weights (teacher, student) of jsd and the skew KLs. ``grad`` may alias ``student``. A softcap c > 0
// makes the row loader read c·tanh(x/c) for that side's logits x and chains the student's gradient
// through it (the fused-linear path); 0 reads the logits as they are.
// ``phase`` 0 is the single-process loss; 1-3 are the vocabulary-parallel phases of fastkd.parallel
// (statistics, row sum, gradient) on one rank's slice, which read / write ``stats`` [N, 4] fp32
// (lse_a, lse_b, lse_z, c); see Phase in divergence_cpu.cpp.
at::Tensor divergence_fwd_cpu(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& valid,
                              const std::optional<at::Tensor>& labels, const at::Tensor& scale,
                              const std::optional<at::Tensor>& grad, int64_t divergence, double param,
                              double temperature, double hard_label_weight, double lw1, double lw2,
                              double student_softcap, double teacher_softcap, int64_t phase = 0,
                              const std::optional<at::Tensor>& stats = std::nullopt);

}  // namespace fastkd
