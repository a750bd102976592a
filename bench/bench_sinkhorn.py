"""Forward+backward of SinKD (arXiv 2402.17110): fastkd against the PyTorch reference and torch.compile.

Run ``python -m pytest bench/bench_sinkhorn.py --benchmark-json=out.json``. Providers side by side:

- ``fastkd-triton``: ``sinkhorn_loss(backend="triton")`` (CUDA only): tiled cost kernel, Sinkhorn rounds
  in torch ops, backward recomputing the rounds and a tiled gradient kernel;
- ``fastkd-fused-torch``: the same algorithm with the cost and gradient in chunked PyTorch ops;
- ``torch-eager``: ``sinkhorn_loss(backend="torch")``, the unrolled reference (torch.cdist + autograd);
- ``torch-compile``: ``torch.compile(fullgraph=True)`` of that reference.

The SinKD authors' code is not a PyPI package, so it is not a provider. ``extra_info`` records the pair
terms per second (B²·V / median) and the peak memory beyond the inputs and the gradient (as
bench_divergences.py).
"""

from __future__ import annotations

import pytest
import torch
from pytest_benchmark.fixture import BenchmarkFixture

from bench.common import DEVICE, LossFn, device_name, forward_backward, memory_info, time_step
from bench.shapes import dtype_name, logit_bytes
from fastkd.boundary.sinkhorn import SinkhornOptions
from fastkd.functional.sinkhorn import fused_sinkhorn
from fastkd.losses import sinkhorn_loss

PROVIDERS = ("fastkd-triton", "fastkd-fused-torch", "torch-eager", "torch-compile")
GPU_SHAPES = ((512, 2), (4096, 3), (256, 32000), (1024, 32000), (128, 128256))
CPU_SHAPES = ((64, 2), (512, 2), (16, 1271), (32, 32000))
DTYPE = torch.bfloat16 if DEVICE == "cuda" else torch.float32


def make_loss(provider: str) -> LossFn:
    if provider == "fastkd-triton":
        if DEVICE != "cuda":
            pytest.skip("the Triton provider needs a CUDA device")
        return lambda z, u: sinkhorn_loss(z, u, backend="triton")
    if provider == "fastkd-fused-torch":
        options = SinkhornOptions()
        return lambda z, u: fused_sinkhorn(
            z, u, torch.ones(z.shape[0], dtype=torch.bool, device=z.device), options, "torch"
        )
    reference = lambda z, u: sinkhorn_loss(z, u, backend="torch")
    if provider == "torch-eager":
        return reference
    return torch.compile(reference, fullgraph=True)


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize(
    "shape", GPU_SHAPES if DEVICE == "cuda" else CPU_SHAPES, ids=lambda s: f"B{s[0]}-V{s[1]}"
)
def test_sinkhorn(benchmark: BenchmarkFixture, shape: tuple[int, int], provider: str) -> None:
    rows, vocab = shape
    loss_fn = make_loss(provider)
    generator = torch.Generator(DEVICE).manual_seed(0)
    student = (2.0 * torch.randn(rows, vocab, device=DEVICE, generator=generator)).to(DTYPE).requires_grad_()
    teacher = (2.0 * torch.randn(rows, vocab, device=DEVICE, generator=generator)).to(DTYPE)

    step = lambda: forward_backward(loss_fn, student, teacher)
    group = f"sinkhorn B{rows}-V{vocab} {dtype_name(DTYPE)}"
    median, memory = time_step(benchmark, step, student, provider, group)
    benchmark.extra_info.update(
        provider=provider,
        B=rows,
        V=vocab,
        dtype=dtype_name(DTYPE),
        device=device_name(),
        pair_terms_per_s=rows * rows * vocab / median if median else None,
        **memory_info(memory, logit_bytes(rows, vocab, DTYPE)),
    )
