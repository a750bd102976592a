"""Forward+backward of TAID (arXiv 2501.16937): fastkd against plain PyTorch and torch.compile.

Run ``python -m pytest bench/bench_taid.py --benchmark-json=out.json`` and turn the JSON into a table
and a plot with ``python -m bench.report out.json`` (``divergence`` is ``"taid"`` in the records).
Providers, side by side in one session, all at t = 0.5 held in a device tensor:

- ``fastkd-triton``: ``taid(backend="triton")`` (CUDA only);
- ``fastkd-cpu``: ``taid(backend="cpu")``, the C++ divergence kernel's TAID mode (CPU, once
  ``fastkd._C`` is built);
- ``torch-eager``: ``taid(backend="torch")``, the pure-PyTorch reference;
- ``torch-compile``: ``torch.compile(fullgraph=True)`` of that same reference call;
- ``naive``: TAID as one writes it from the paper in plain PyTorch (log-softmax of both models, mix,
  softmax, cross-entropy), eager. The authors' code is not a PyPI package, so it is not a provider.

Rounds, timing, GB/s (3·N·V·itemsize bytes over the median) and peak memory are measured exactly as in
``bench_divergences.py``: both use ``bench/common.py``.
"""

from __future__ import annotations

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

from bench.common import DEVICE, DTYPES, LossFn, bench_logits, compiled, require_cpu_extension, require_triton
from bench.shapes import Shape, dtype_name, shapes
from fastkd.losses import taid

PROVIDERS = ("fastkd-triton", "fastkd-cpu", "torch-eager", "torch-compile", "naive")
T = 0.5


def naive_taid(student: torch.Tensor, teacher: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Token-mean TAID written directly from the paper's formulas (T = 1)."""
    log_q = torch.log_softmax(student.float(), dim=-1)
    log_p = torch.log_softmax(teacher.float(), dim=-1)
    target = torch.softmax((1 - t) * log_q.detach() + t * log_p, dim=-1)
    return -(target * log_q).sum(-1).mean()


def make_loss(provider: str) -> LossFn:
    """The loss callable of ``provider``; skips the test when the provider cannot run here."""
    t = torch.tensor(T, device=DEVICE)
    if provider == "fastkd-triton":
        require_triton()
        return lambda student, teacher: taid(student, teacher, t, backend="triton")
    if provider == "fastkd-cpu":
        require_cpu_extension()
        return lambda student, teacher: taid(student, teacher, t, backend="cpu")
    reference = lambda student, teacher: taid(student, teacher, t, backend="torch")
    if provider == "torch-eager":
        return reference
    if provider == "torch-compile":
        return compiled(reference)
    return lambda student, teacher: naive_taid(student, teacher, t)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize("shape", shapes(DEVICE), ids=str)
def test_taid(benchmark: BenchmarkFixture, shape: Shape, dtype: torch.dtype, provider: str) -> None:
    loss_fn = make_loss(provider)
    bench_logits(benchmark, loss_fn, provider, "taid", f"taid {shape} {dtype_name(dtype)}", shape, dtype, t=T)
