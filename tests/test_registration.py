"""The fused op is a registered torch.library custom op that torch.compile traces without breaks."""

from __future__ import annotations

import pytest
import torch

import fastkd.losses as L
from fastkd.ops.divergence import divergence_fwd
from tests.conftest import DEVICE
from tests.helpers import HAS_TRITON, compiled_and_eager

pytestmark = pytest.mark.skipif(not HAS_TRITON, reason="no triton")


def op_args(divergence: str, hard: float) -> tuple:
    gen = torch.Generator().manual_seed(0)
    student = torch.randn(4, 300, generator=gen).to(DEVICE)
    teacher = torch.randn(4, 300, generator=gen).to(DEVICE)
    valid = torch.tensor([True, False, True, True], device=DEVICE)
    labels = torch.tensor([3, -100, 7, 299], device=DEVICE)
    scale = torch.tensor(1 / 3, device=DEVICE)
    grad = torch.empty_like(student)
    return (student, teacher, valid, labels, scale, grad, divergence, 0.3, 1.5, hard)


@pytest.mark.parametrize("divergence, hard", [("forward_kl", 0.0), ("jsd", 0.2), ("akl", 0.0)])
def test_opcheck(divergence, hard):
    torch.library.opcheck(
        divergence_fwd,
        op_args(divergence, hard),
        test_utils=(
            "test_schema",
            "test_faketensor",
            "test_aot_dispatch_static",
            "test_aot_dispatch_dynamic",
        ),
    )


def test_op_is_registered_under_the_fastkd_namespace():
    assert torch.ops.fastkd.divergence_fwd.default is not None
    assert hasattr(torch.ops.fastkd.divergence_fwd.default, "_schema")


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_torch_compile_fullgraph_matches_eager(reduction):
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(2, 3, 257, generator=gen).to(DEVICE)
    u = torch.randn(2, 3, 257, generator=gen).to(DEVICE)
    labels = torch.tensor([[1, -100, 3], [4, 5, -100]], device=DEVICE)

    def step(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
        loss = L.jsd(student * 2.0, teacher, labels=labels, beta=0.4, reduction=reduction, backend="triton")
        return loss.sum()

    loss, compiled_grad, eager_grad = compiled_and_eager(step, z, u)
    assert torch.allclose(loss, step(z, u), rtol=1e-6)
    assert torch.allclose(compiled_grad, eager_grad, rtol=1e-5, atol=1e-9)
