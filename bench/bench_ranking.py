"""Forward+backward of RLKD's ranking loss and rlkd: fastkd against plain PyTorch and torch.compile.

Run ``python -m pytest bench/bench_ranking.py --benchmark-json=out.json`` (``python -m bench.report``
makes the table). Providers, side by side in one session:

- ``fastkd-triton``: ``backend="triton"`` (CUDA only): one Triton pass finds both top-k sets;
- ``fastkd-torch``: ``backend="torch"``, the reference (stable full sorts for the top-k sets);
- ``torch-eager``: plain PyTorch: ``torch.topk`` of both rows, a padded union, soft ranks and Pearson
  correlation through autograd (``fastkd.reference.softrank`` in eager), plus
  ``kd_loss(backend="torch")`` / 2 for rlkd;
- ``torch-compile``: ``torch.compile(fullgraph=True)`` of that plain function (skipped if it fails).

The original RLKD code is not on PyPI and torchsort's sdist does not build here, so neither runs.
Timing, memory and ``extra_info`` come from ``bench/common.py``, as in ``bench/bench_divergences.py``
(one forward and one backward a round; GB/s counts 3·N·V·itemsize bytes: read both logits, write the
student gradient).
"""

from __future__ import annotations

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

from bench.common import DEVICE, DTYPES, LossFn, bench_logits, compiled, require_triton
from bench.shapes import Shape, dtype_name, shapes
from fastkd.losses import kd_loss, ranking_loss, rlkd
from fastkd.reference.softrank import rank_loss

PROVIDERS = ("fastkd-triton", "fastkd-torch", "torch-eager", "torch-compile")
LOSSES = ("ranking_loss", "rlkd")
K = 5


def plain_ranking(student: torch.Tensor, teacher: torch.Tensor, k: int = K) -> torch.Tensor:
    """Mean over tokens of 1 − ρ with torch.topk index sets (the straightforward PyTorch version)."""
    top_t = teacher.topk(k, dim=-1).indices
    top_s = student.detach().topk(k, dim=-1).indices
    dup = (top_s[:, :, None] == top_t[:, None, :]).any(-1)
    index = torch.cat([top_t, top_s], dim=-1)
    slot = torch.cat([torch.ones_like(dup), ~dup], dim=-1)
    return rank_loss(teacher.gather(-1, index), student.gather(-1, index), slot).float().mean()


def make_loss(provider: str, loss: str) -> LossFn:
    if provider in ("fastkd-triton", "fastkd-torch"):
        if provider == "fastkd-triton":
            require_triton()
        fn = ranking_loss if loss == "ranking_loss" else rlkd
        backend = provider.removeprefix("fastkd-")
        return lambda student, teacher: fn(student, teacher, k=K, backend=backend)
    if loss == "ranking_loss":
        plain = plain_ranking
    else:
        plain = lambda s, t: plain_ranking(s, t) + 0.5 * kd_loss(s, t, backend="torch")
    if provider == "torch-eager":
        return plain
    return compiled(plain)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
@pytest.mark.parametrize("shape", shapes(DEVICE), ids=str)
@pytest.mark.parametrize("loss", LOSSES)
def test_ranking(
    benchmark: BenchmarkFixture, loss: str, shape: Shape, dtype: torch.dtype, provider: str
) -> None:
    loss_fn = make_loss(provider, loss)
    bench_logits(
        benchmark, loss_fn, provider, loss, f"{loss} k={K} {shape} {dtype_name(dtype)}", shape, dtype
    )
