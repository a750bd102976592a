"""Forward+backward of the divergence losses: fastkd against PyTorch eager, torch.compile and Liger.

Run ``python -m pytest bench/bench_divergences.py --benchmark-json=out.json`` and turn the JSON into a
table and a plot with ``python -m bench.report out.json``. Providers run side by side in one session:

- ``fastkd-triton``: ``kd_loss(backend="triton")`` (CUDA only);
- ``fastkd-cuda``: ``kd_loss(backend="cuda")``, the Hopper cluster kernels (sm_90, once ``fastkd._C`` is
  built with them; ``FASTKD_CUDA_CTA_BYTES`` changes the plan's shared memory per CTA);
- ``fastkd-cpu``: ``kd_loss(backend="cpu")``, the C++ kernels (CPU, once ``fastkd._C`` is built);
- ``torch-eager``: ``kd_loss(backend="torch")``, the pure-PyTorch reference;
- ``torch-compile``: ``torch.compile(fullgraph=True)`` of that same reference call (static shapes on
  CUDA for the fastest peer; PyTorch's default automatic-dynamic shapes on CPU to bound compile time);
- ``liger``: Liger-Kernel's ``LigerKLDIVLoss`` (forward_kl), ``LigerJSD`` (jsd with the same β, teacher
  weight; β = 1 is its reverse KL) and ``LigerTVDLoss`` (tvd) on CUDA. Liger takes log-probabilities
  (probabilities for TVD), so its timed call includes PyTorch's softmax of both sides.

One round is one forward and one backward from fresh (``grad = None``) student logits, with a CUDA
synchronisation inside the timed call. ``extra_info`` records GB/s (3·N·V·itemsize bytes over the
median) and the peak memory beyond the inputs: ``torch.cuda.max_memory_allocated`` on CUDA, the
profiler's allocation events on CPU (``peak_mem_method`` says which; ``None`` if not measurable).
``FASTKD_BENCH_DIVERGENCES`` = ``all`` or a comma-separated list widens the default three divergences.
"""

from __future__ import annotations

import os

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

from bench.common import DEVICE, DTYPES, LossFn, bench_logits, compiled, require_cpu_extension, require_triton
from bench.shapes import Shape, dtype_name, shapes
from fastkd.backends import cuda_kernels_available
from fastkd.boundary.options import DIVERGENCES, FAMILY_PARAMETER
from fastkd.losses import kd_loss

PROVIDERS = ("fastkd-triton", "fastkd-cuda", "fastkd-cpu", "torch-eager", "torch-compile", "liger")
DEFAULT_DIVERGENCES = ("forward_kl", "reverse_kl", "jsd")


def selected_divergences() -> tuple[str, ...]:
    value = os.environ.get("FASTKD_BENCH_DIVERGENCES", "").strip()
    if not value:
        return DEFAULT_DIVERGENCES
    if value == "all":
        return DIVERGENCES
    names = tuple(name.strip() for name in value.split(","))
    unknown = [name for name in names if name not in DIVERGENCES]
    if unknown:
        raise ValueError(f"FASTKD_BENCH_DIVERGENCES names unknown divergences {unknown}")
    return names


def _fastkd(divergence: str, backend: str) -> LossFn:
    return lambda student, teacher: kd_loss(student, teacher, divergence, backend=backend)


def _liger(divergence: str) -> LossFn:
    try:
        from liger_kernel.transformers import LigerJSD, LigerKLDIVLoss, LigerTVDLoss
    except ImportError as exc:
        pytest.skip(f"liger_kernel is not importable: {exc}")
    log_softmax = lambda x: torch.log_softmax(x, dim=-1)
    if divergence == "forward_kl":
        kl = LigerKLDIVLoss(reduction="batchmean", log_target=True)
        return lambda student, teacher: kl(log_softmax(student), log_softmax(teacher))
    if divergence in ("reverse_kl", "jsd"):
        beta = 1.0 if divergence == "reverse_kl" else FAMILY_PARAMETER["jsd"][1]
        jsd = LigerJSD(beta=beta)
        return lambda student, teacher: jsd(log_softmax(student), log_softmax(teacher))
    if divergence == "tvd":
        tvd = LigerTVDLoss(reduction="batchmean")
        return lambda student, teacher: tvd(student.softmax(-1), teacher.softmax(-1))
    pytest.skip(f"Liger-Kernel has no {divergence} loss")


def make_loss(provider: str, divergence: str) -> LossFn:
    """The loss callable of ``provider``; skips the test when the provider cannot run here."""
    if provider == "fastkd-triton":
        require_triton()
        return _fastkd(divergence, "triton")
    if provider == "fastkd-cuda":
        if DEVICE != "cuda" or not cuda_kernels_available() or torch.cuda.get_device_capability()[0] < 9:
            pytest.skip("fastkd-cuda needs an sm_90 GPU and fastkd._C built with its CUDA kernels")
        return _fastkd(divergence, "cuda")
    if provider == "fastkd-cpu":
        require_cpu_extension()
        return _fastkd(divergence, "cpu")
    if provider == "torch-eager":
        return _fastkd(divergence, "torch")
    if provider == "torch-compile":
        return compiled(_fastkd(divergence, "torch"))
    if DEVICE != "cuda":
        pytest.skip("liger needs a CUDA device")
    return _liger(divergence)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize("shape", shapes(DEVICE), ids=str)
@pytest.mark.parametrize("divergence", selected_divergences())
def test_divergence(
    benchmark: BenchmarkFixture, divergence: str, shape: Shape, dtype: torch.dtype, provider: str
) -> None:
    loss_fn = make_loss(provider, divergence)
    group = f"{divergence} {shape} {dtype_name(dtype)}"
    bench_logits(benchmark, loss_fn, provider, divergence, group, shape, dtype)
