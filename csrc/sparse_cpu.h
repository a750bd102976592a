// CPU (OpenMP) kernel of the sparse (top-k) teacher KL; see sparse_cpu.cpp.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace fastkd {

// Per-token loss [N] (fp32, unscaled, 0 at invalid rows) of the forward KL from a top-k teacher, and
// scale·∂loss/∂student written into grad (when given: without it the call only evaluates the loss).
// ``student`` [N, V] (unit stride along V; fp32, bf16 or fp16), ``indices`` int64 [N, k] (unique per
// row, in [0, V), any order), ``logprobs`` fp32 [N, k] at temperature 1, ``rest`` fp32 [N] the log rest
// mass (read with ``rest_bucket``, i.e. renormalize=False and k < V), ``valid`` bool [N], ``scale``
// fp32 []. ``grad`` may alias ``student``. A softcap c > 0 makes the loader read c·tanh(z/c) and
// chains the gradient through it (the fused-linear path); 0 reads the logits as they are.
// ``phase`` 0 is the single-process loss; 1 and 3 are the vocabulary-parallel STATS and GRAD phases
// of fastkd.parallel on one rank's slice (slice-local indices), which write / read ``stats`` [N, 4]
// fp32 (lse of b over the slice, over its columns outside the support); see sparse_cpu.cpp.
at::Tensor sparse_kl_fwd_cpu(const at::Tensor& student, const at::Tensor& indices, const at::Tensor& logprobs,
                             const at::Tensor& rest, const at::Tensor& valid, const at::Tensor& scale,
                             const std::optional<at::Tensor>& grad, bool rest_bucket, double temperature,
                             double student_softcap = 0.0, int64_t phase = 0,
                             const std::optional<at::Tensor>& stats = std::nullopt);

}  // namespace fastkd
