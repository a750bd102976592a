// Instantiations of the cluster kernel (every divergence × dtype; the cluster size is a launch
// attribute) and their launch. Torch-free: tests/test_cuda_compile.py compiles this file alone.
#include "divergence_cluster.cuh"

namespace fastkd {
namespace cuda {
namespace {

using Launch = cudaError_t (*)(const DivergenceArgs&, int64_t, int, size_t, cudaStream_t);

template <int DIV, typename T>
cudaError_t launch(const DivergenceArgs& args, int64_t rows, int cluster, size_t smem, cudaStream_t stream) {
  const auto kernel = divergence_cluster_kernel<DIV, T, T>;
  const cudaError_t status =
      cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (status != cudaSuccess) return status;
  cudaLaunchAttribute attribute[1];
  attribute[0].id = cudaLaunchAttributeClusterDimension;
  attribute[0].val.clusterDim.x = static_cast<unsigned>(cluster);
  attribute[0].val.clusterDim.y = 1;
  attribute[0].val.clusterDim.z = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3(static_cast<unsigned>(rows * cluster));
  config.blockDim = dim3(kThreads);
  config.dynamicSmemBytes = smem;
  config.stream = stream;
  config.attrs = attribute;
  config.numAttrs = 1;
  return cudaLaunchKernelEx(&config, kernel, args);
}

template <int DIV>
Launch by_dtype(int dtype) {
  switch (dtype) {
    case F32:
      return launch<DIV, float>;
    case BF16:
      return launch<DIV, __nv_bfloat16>;
    default:
      return launch<DIV, __half>;
  }
}

Launch pick(int divergence, int dtype) {
  switch (divergence) {
    case FORWARD_KL:
      return by_dtype<FORWARD_KL>(dtype);
    case SOFT_CE:
      return by_dtype<SOFT_CE>(dtype);
    case REVERSE_KL:
      return by_dtype<REVERSE_KL>(dtype);
    case JSD:
      return by_dtype<JSD>(dtype);
    case SKEW_KL:
      return by_dtype<SKEW_KL>(dtype);
    case SKEW_REVERSE_KL:
      return by_dtype<SKEW_REVERSE_KL>(dtype);
    case TVD:
      return by_dtype<TVD>(dtype);
    default:
      return by_dtype<AKL>(dtype);
  }
}

}  // namespace

cudaError_t launch_divergence_cluster(const DivergenceArgs& args, int divergence, int dtype, int64_t rows,
                                      int cluster, size_t smem, cudaStream_t stream) {
  if (divergence < FORWARD_KL || divergence > AKL || dtype < F32 || dtype > F16) return cudaErrorInvalidValue;
  if (cluster < 1 || cluster > 8 || rows * cluster > INT32_MAX) return cudaErrorInvalidConfiguration;
  return pick(divergence, dtype)(args, rows, cluster, smem, stream);
}

}  // namespace cuda
}  // namespace fastkd
