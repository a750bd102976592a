// The one pybind11 module of fastkd: fastkd._C. Built with FASTKD_WITH_CUDA (setup.py, when torch has
// CUDA and nvcc is found) it also holds the Hopper cluster kernels of csrc/cuda/.
#include <torch/extension.h>

#include "divergence_cpu.h"
#include "sparse_cpu.h"
#ifdef FASTKD_WITH_CUDA
#include "cuda/divergence_cuda.h"
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastkd C++ kernels (CPU, OpenMP; CUDA cluster kernels for sm_90 when built with them)";
  m.def("divergence_fwd_cpu", &fastkd::divergence_fwd_cpu, "Fused divergence loss rows and scaled gradient",
        py::arg("student"), py::arg("teacher"), py::arg("valid"), py::arg("labels"), py::arg("scale"),
        py::arg("grad"), py::arg("divergence"), py::arg("param"), py::arg("temperature"),
        py::arg("hard_label_weight"), py::arg("lw1"), py::arg("lw2"), py::arg("student_softcap") = 0.0,
        py::arg("teacher_softcap") = 0.0, py::arg("phase") = 0,
        py::arg("stats") = py::none());
  m.def("sparse_kl_fwd_cpu", &fastkd::sparse_kl_fwd_cpu, "Sparse (top-k) teacher KL loss rows and scaled gradient",
        py::arg("student"), py::arg("indices"), py::arg("logprobs"), py::arg("rest"), py::arg("valid"),
        py::arg("scale"), py::arg("grad"), py::arg("rest_bucket"), py::arg("temperature"),
        py::arg("student_softcap") = 0.0, py::arg("phase") = 0, py::arg("stats") = py::none());
#ifdef FASTKD_WITH_CUDA
  m.def("divergence_fwd_cuda", &fastkd::divergence_fwd_cuda,
        "Fused divergence loss rows and scaled gradient, one thread-block cluster per row (sm_90)",
        py::arg("student"), py::arg("teacher"), py::arg("valid"), py::arg("labels"), py::arg("scale"),
        py::arg("grad"), py::arg("divergence"), py::arg("param"), py::arg("temperature"),
        py::arg("hard_label_weight"), py::arg("lw1"), py::arg("lw2"), py::arg("cluster"), py::arg("slice"),
        py::arg("smem_bytes"));
  m.attr("cuda_kernels") = true;
#else
  m.attr("cuda_kernels") = false;
#endif
}
