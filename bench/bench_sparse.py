"""Forward+backward of the sparse (top-k) teacher KL: fastkd against plain PyTorch and torch.compile.

Run ``python -m pytest bench/bench_sparse.py --benchmark-json=out.json`` and render it with
``python -m bench.report out.json`` (the case name says k and the mode). Providers side by side:

- ``fastkd-triton``: ``sparse_kl(backend="triton")`` (CUDA only);
- ``fastkd-cpu``: ``sparse_kl(backend="cpu")``, the C++ kernel (CPU, once ``fastkd._C`` is built);
- ``torch-eager``: ``sparse_kl(backend="torch")``, fastkd's pure-PyTorch reference (stable rest mass);
- ``torch-gather``: a plain PyTorch gather-based implementation, as one would write it by hand
  (log_softmax of the student, gather at the indices, rest mass as log(1 − Σ q_k));
- ``torch-compile``: ``torch.compile(fullgraph=True)`` of that plain implementation.

No peer package has this loss. One round is one forward and one backward from fresh student logits;
``extra_info`` records GB/s (bytes that must move: read the student, write its gradient, read the
cache) and the peak memory beyond the inputs (``bench/memory.py``).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

import fastkd
from bench.common import (
    DEVICE,
    DTYPES,
    compiled,
    forward_backward,
    logits_info,
    make_logits,
    require_cpu_extension,
    require_triton,
    time_step,
)
from bench.shapes import Shape, dtype_name, logit_bytes, shapes
from fastkd.losses import sparse_kl

PROVIDERS = ("fastkd-triton", "fastkd-cpu", "torch-eager", "torch-gather", "torch-compile")
K = 64
Cache = tuple[torch.Tensor, torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def gather_sparse_kl(z: torch.Tensor, idx: torch.Tensor, lp: torch.Tensor, renormalize: bool) -> torch.Tensor:
    """Plain PyTorch sparse-teacher forward KL (token mean, T = 1), the way it is usually written."""
    lq = torch.log_softmax(z.float(), dim=-1).gather(-1, idx)
    if renormalize:
        lp = torch.log_softmax(lp, dim=-1)
    p = lp.exp()
    loss = (p * (lp - lq)).sum(-1)
    if not renormalize:
        p_rest = (1.0 - p.sum(-1)).clamp_min(1e-30)
        q_rest = (1.0 - lq.exp().sum(-1)).clamp_min(1e-30)
        loss = loss + p_rest * (p_rest.log() - q_rest.log())
    return loss.mean()


def make_loss(provider: str, renormalize: bool) -> LossFn:
    if provider == "fastkd-triton":
        require_triton()
        return lambda z, idx, lp: sparse_kl(z, idx, lp, renormalize=renormalize, backend="triton")
    if provider == "fastkd-cpu":
        require_cpu_extension()
        return lambda z, idx, lp: sparse_kl(z, idx, lp, renormalize=renormalize, backend="cpu")
    if provider == "torch-eager":
        return lambda z, idx, lp: sparse_kl(z, idx, lp, renormalize=renormalize, backend="torch")
    plain = lambda z, idx, lp: gather_sparse_kl(z, idx, lp, renormalize)
    if provider == "torch-gather":
        return plain
    return compiled(plain)


def make_inputs(shape: Shape, dtype: torch.dtype) -> tuple[torch.Tensor, Cache]:
    """Student logits (a leaf that requires grad), N(0, 2²), and the top-K cache of a teacher."""
    student, teacher = make_logits(shape, dtype)
    return student, fastkd.teacher_topk(teacher, min(K, shape.v))


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize("shape", shapes(DEVICE), ids=str)
@pytest.mark.parametrize("renormalize", [True, False], ids=["renorm", "rest"])
def test_sparse_kl(
    benchmark: BenchmarkFixture, renormalize: bool, shape: Shape, dtype: torch.dtype, provider: str
) -> None:
    loss_fn = make_loss(provider, renormalize)
    student, (idx, lp) = make_inputs(shape, dtype)
    step = lambda: forward_backward(loss_fn, student, idx, lp)
    case = f"sparse_kl-k{idx.shape[-1]}-{'renorm' if renormalize else 'rest'}"
    median, memory = time_step(benchmark, step, student, provider, f"{case} {shape} {dtype_name(dtype)}")
    nbytes = 2 * logit_bytes(shape.n, shape.v, dtype) + idx.numel() * 12
    benchmark.extra_info.update(logits_info(provider, case, shape, dtype, nbytes, median, memory))
