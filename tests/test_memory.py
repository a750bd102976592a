"""The fused path allocates no [N, V] buffer besides the gradient (in the student's dtype).

On CPU the Triton kernels run under the interpreter and torch.profiler records the launcher's torch
allocations; on a GPU ``max_memory_allocated`` measures the same step. The PyTorch reference is
measured the same way, so the test also shows that the measurement sees [N, V] fp32 buffers.
"""

from __future__ import annotations

import pytest
import torch

import fastkd.losses as L
from bench.memory import measure
from fastkd.boundary.options import DIVERGENCES
from tests.conftest import DEVICE
from tests.helpers import HAS_TRITON, ModelOutput, family_kwargs

N, V = 8, 3000
ROW_SLACK = 4096  # per-row statistics, the loss and scalars: O(N) bytes, never O(V)


def _step(divergence: str, backend: str, dtype: torch.dtype, **options: object):
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(N, V, generator=gen).to(DEVICE, dtype).requires_grad_()
    teacher = torch.randn(N, V, generator=gen).to(DEVICE, dtype)
    labels = torch.randint(0, V, (N,), generator=gen).to(DEVICE)
    extra = dict(labels=labels, **family_kwargs(divergence), **options)

    # inplace_grad writes over a model's logits (a non-leaf): one fresh copy per call, made beforehand
    fresh = [ModelOutput.apply(student) for _ in range(2)] if options.get("inplace_grad") else [student] * 2

    def step() -> None:
        student.grad = None
        L.kd_loss(fresh.pop(), teacher, divergence, backend=backend, **extra).backward()

    step()  # compile / warm up outside the measurement
    return step


@pytest.mark.skipif(not HAS_TRITON, reason="no triton")
@pytest.mark.parametrize("hard", [0.0, 0.4])
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_triton_path_allocates_only_the_gradient(divergence, hard):
    use = measure(_step(divergence, "triton", torch.bfloat16, hard_label_weight=hard), DEVICE)
    gradient = N * V * torch.bfloat16.itemsize
    assert use.peak is not None and use.peak <= gradient + ROW_SLACK, (use.peak, gradient)
    assert all(size <= gradient for size in use.allocations), sorted(use.allocations)[-3:]


@pytest.mark.skipif(not HAS_TRITON, reason="no triton")
def test_inplace_gradient_allocates_no_vocabulary_sized_tensor():
    use = measure(_step("jsd", "triton", torch.float32, inplace_grad=True), DEVICE)
    assert use.peak is not None and use.peak <= ROW_SLACK, use.peak


@pytest.mark.skipif(DEVICE == "cuda", reason="allocation sizes are recorded on CPU only")
def test_the_measurement_sees_fp32_vocabulary_buffers_of_the_reference():
    use = measure(_step("jsd", "torch", torch.bfloat16), DEVICE)
    assert max(use.allocations) >= N * V * 4
    assert use.peak > 4 * N * V * 4
