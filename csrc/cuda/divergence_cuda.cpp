// Checks, device guard, current stream and launch of the cluster kernels (torch side).
#include "divergence_cuda.h"

#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "divergence_args.h"

namespace fastkd {
namespace {

int dtype_code(at::ScalarType dtype) {
  switch (dtype) {
    case at::kFloat:
      return cuda::F32;
    case at::kBFloat16:
      return cuda::BF16;
    case at::kHalf:
      return cuda::F16;
    default:
      TORCH_CHECK(false, "fastkd cuda backend takes float32, bfloat16 or float16 logits, got ", dtype);
  }
}

void check_inputs(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& valid,
                  const at::Tensor& scale, const at::Tensor& grad) {
  TORCH_CHECK(student.is_cuda() && teacher.device() == student.device() && grad.device() == student.device() &&
                  valid.device() == student.device() && scale.device() == student.device(),
              "student, teacher, grad, valid and scale must be on one CUDA device");
  TORCH_CHECK(student.dim() == 2 && teacher.sizes() == student.sizes() && grad.sizes() == student.sizes(),
              "student, teacher and grad must be [N, V] of one shape");
  TORCH_CHECK(student.stride(1) == 1 && teacher.stride(1) == 1 && grad.stride(1) == 1,
              "student, teacher and grad need unit stride along V");
  TORCH_CHECK(teacher.scalar_type() == student.scalar_type() && grad.scalar_type() == student.scalar_type(),
              "the cluster kernel takes teacher, student and grad of one dtype");
  TORCH_CHECK(valid.scalar_type() == at::kBool && valid.is_contiguous() && valid.numel() == student.size(0),
              "valid must be a contiguous bool [N] tensor");
  TORCH_CHECK(scale.scalar_type() == at::kFloat && scale.numel() == 1, "scale must be a one-element fp32 tensor");
}

}  // namespace

at::Tensor divergence_fwd_cuda(const at::Tensor& student, const at::Tensor& teacher, const at::Tensor& valid,
                               const std::optional<at::Tensor>& labels, const at::Tensor& scale,
                               at::Tensor& grad, int64_t divergence, double param, double temperature,
                               double hard_label_weight, double lw1, double lw2, int64_t cluster, int64_t slice,
                               int64_t smem_bytes) {
  check_inputs(student, teacher, valid, scale, grad);
  const bool hard = hard_label_weight > 0.0;
  TORCH_CHECK(!hard || (labels.has_value() && labels->is_cuda() && labels->scalar_type() == at::kLong &&
                        labels->is_contiguous() && labels->numel() == student.size(0)),
              "the hard-label term needs contiguous int64 labels [N] on the device");
  TORCH_CHECK(slice > 0 && slice % 8 == 0 && cluster * slice >= student.size(1),
              "the launch plan does not cover the row: cluster ", cluster, " × slice ", slice, " < V ",
              student.size(1));
  const c10::cuda::CUDAGuard guard(student.device());
  const int64_t rows = student.size(0);
  auto loss = at::empty({rows}, student.options().dtype(at::kFloat));
  if (rows == 0) return loss;
  cuda::DivergenceArgs args{};
  args.student = student.data_ptr();
  args.teacher = teacher.data_ptr();
  args.grad = grad.data_ptr();
  args.loss = loss.data_ptr<float>();
  args.valid = valid.data_ptr<bool>();
  args.labels = hard ? labels->data_ptr<int64_t>() : nullptr;
  args.scale = scale.data_ptr<float>();
  args.s_stride = student.stride(0);
  args.t_stride = teacher.stride(0);
  args.g_stride = grad.stride(0);
  args.vocab = student.size(1);
  args.slice = slice;
  args.inv_t = static_cast<float>(1.0 / temperature);
  args.hard_w = static_cast<float>(hard_label_weight);
  args.rp = RowParams{static_cast<float>(param), static_cast<float>(lw1), static_cast<float>(lw2)};
  args.hard = hard ? 1 : 0;
  const cudaError_t status =
      cuda::launch_divergence_cluster(args, static_cast<int>(divergence), dtype_code(student.scalar_type()), rows,
                                      static_cast<int>(cluster), static_cast<size_t>(smem_bytes),
                                      c10::cuda::getCurrentCUDAStream().stream());
  TORCH_CHECK(status == cudaSuccess, "fastkd cuda divergence kernel failed to launch: ", cudaGetErrorString(status),
              " (cluster ", cluster, ", ", smem_bytes, " bytes of shared memory per block)");
  return loss;
}

}  // namespace fastkd
