"""The fused op is a registered torch.library custom op that torch.compile traces without breaks."""

from __future__ import annotations

import pytest
import torch

import fastkd.losses as L
from fastkd.ops.divergence import divergence_fwd
from tests.conftest import DEVICE
from tests.helpers import HAS_CPU_EXTENSION, HAS_TRITON, compiled_and_eager

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


@pytest.mark.parametrize("op_name", ["divergence_loss", "divergence_loss_cpu", "taid_loss"])
def test_opcheck_of_the_loss_only_ops(op_name):
    """The evaluation ops (no gradient written) are custom ops with fakes too, and agree with the
    gradient-writing ones."""
    if op_name.endswith("_cpu") and not HAS_CPU_EXTENSION:
        pytest.skip("fastkd._C is not built")
    student, teacher, valid, labels, scale, grad, _, param, temperature, _ = op_args("akl", 0.0)
    op = getattr(torch.ops.fastkd, op_name)
    if op_name == "taid_loss":
        t = torch.tensor(0.4, device=DEVICE)
        args = (student, teacher, valid, t, temperature)
        expected = torch.ops.fastkd.taid_fwd(student, teacher, valid, t, scale, grad, temperature)
    else:
        args = (student, teacher, valid, labels, "akl", param, temperature, 0.0)
        with_grad = torch.ops.fastkd.divergence_cpu if op_name.endswith("_cpu") else divergence_fwd
        expected = with_grad(student, teacher, valid, labels, scale, grad, "akl", param, temperature, 0.0)
    torch.library.opcheck(op, args, test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static"))
    torch.testing.assert_close(op(*args), expected, rtol=1e-5, atol=1e-6)
