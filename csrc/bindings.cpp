// The one pybind11 module of fastkd: fastkd._C.
#include <torch/extension.h>

#include "divergence_cpu.h"

PYBIND11_MODULE(_C, m) {
  m.doc() = "fastkd C++ kernels (CPU, OpenMP)";
  m.def("divergence_fwd_cpu", &fastkd::divergence_fwd_cpu, "Fused divergence loss rows and scaled gradient",
        py::arg("student"), py::arg("teacher"), py::arg("valid"), py::arg("labels"), py::arg("scale"),
        py::arg("grad"), py::arg("divergence"), py::arg("param"), py::arg("temperature"),
        py::arg("hard_label_weight"), py::arg("lw1"), py::arg("lw2"), py::arg("phase") = 0,
        py::arg("stats") = py::none());
}
