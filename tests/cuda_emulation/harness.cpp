// Runs the cluster kernels on the CPU under cluster_common.cuh's emulation: one launch of `rows`
// clusters of `cluster` CTAs, clusters one after another, the CTAs of a cluster on their own threads.
// Between two barriers the fibers of a CTA run one after another, in index order or (reversed = 1)
// the other way round: a result that depends on the order reads what another thread writes without
// a barrier in between, a race on the GPU.
#include <memory>
#include <thread>

#include "divergence_cluster.cuh"

namespace fastkd {
namespace cuda {
namespace emu {
namespace {

constexpr size_t kStack = 64 * 1024;
thread_local void (*body)(const DivergenceArgs&) = nullptr;
thread_local const DivergenceArgs* body_args = nullptr;
bool reversed = false;

void entry() {
  body(*body_args);
  cta->done[cta->current] = true;
  --cta->alive;
}

void run_cta(void (*kernel)(const DivergenceArgs&), const DivergenceArgs& args, Cluster& cluster, int rank,
             int64_t row, size_t smem) {
  Cta self;
  self.cluster = &cluster;
  self.rank = rank;
  self.block = static_cast<unsigned>(row * cluster.size + rank);
  self.smem.assign(smem + 16, 0xAB);  // garbage, as shared memory is
  self.fibers.resize(kThreads);
  self.done.assign(kThreads, false);
  cta = &self;
  body = kernel;
  body_args = &args;
  std::unique_ptr<char[]> stacks(new char[kStack * kThreads]);
  for (int t = 0; t < kThreads; ++t) {
    getcontext(&self.fibers[t]);
    self.fibers[t].uc_stack.ss_sp = stacks.get() + t * kStack;
    self.fibers[t].uc_stack.ss_size = kStack;
    self.fibers[t].uc_link = &self.main;
    makecontext(&self.fibers[t], entry, 0);
  }
  while (self.alive > 0) {
    for (int i = 0; i < kThreads; ++i) {
      const int t = reversed ? kThreads - 1 - i : i;
      if (self.done[t]) continue;
      self.current = t;
      swapcontext(&self.main, &self.fibers[t]);
    }
    if (self.arrived == 0) continue;
    if (self.arrived != self.alive) fail("a barrier that not every thread reached");
    if (self.cluster_wide) cluster.os_barrier.arrive_and_wait();
    self.arrived = 0;
    ++self.generation;
  }
}

template <int DIV, typename T>
void kernel(const DivergenceArgs& args) {
  divergence_cluster_kernel<DIV, T, T>(args);
}

template <typename T>
void (*pick(int divergence))(const DivergenceArgs&) {
  switch (divergence) {
    case FORWARD_KL: return kernel<FORWARD_KL, T>;
    case SOFT_CE: return kernel<SOFT_CE, T>;
    case REVERSE_KL: return kernel<REVERSE_KL, T>;
    case JSD: return kernel<JSD, T>;
    case SKEW_KL: return kernel<SKEW_KL, T>;
    case SKEW_REVERSE_KL: return kernel<SKEW_REVERSE_KL, T>;
    case TVD: return kernel<TVD, T>;
    default: return kernel<AKL, T>;
  }
}

}  // namespace
}  // namespace emu
}  // namespace cuda
}  // namespace fastkd

extern "C" int emu_launch(const fastkd::cuda::DivergenceArgs* args, int divergence, int dtype, int64_t rows,
                          int cluster, int64_t smem, int reversed) {
  using namespace fastkd::cuda;
  emu::reversed = reversed != 0;
  auto kernel = dtype == F32 ? emu::pick<float>(divergence)
                             : (dtype == BF16 ? emu::pick<__nv_bfloat16>(divergence) : emu::pick<__half>(divergence));
  for (int64_t row = 0; row < rows; ++row) {
    emu::Cluster group(cluster);
    std::vector<std::thread> ctas;
    for (int r = 0; r < cluster; ++r) {
      ctas.emplace_back([&, r] { emu::run_cta(kernel, *args, group, r, row, static_cast<size_t>(smem)); });
    }
    for (auto& cta : ctas) cta.join();
  }
  return 0;
}
