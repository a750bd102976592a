"""TAID's public surface: exports, module, in-place gradient, bad input, torch.library, memory."""

from __future__ import annotations

import pytest
import torch

import fastkd
import fastkd.losses as L
from bench.memory import measure
from fastkd.ops.taid import taid_fwd
from tests.conftest import DEVICE
from tests.helpers import HAS_TRITON, ModelOutput

needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="no triton")
Z = torch.randn(2, 3, 11)
U = torch.randn(2, 3, 11)


def pair(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    z, u = torch.randn(*shape, generator=gen), torch.randn(*shape, generator=gen)
    return z.to(DEVICE, dtype), u.to(DEVICE, dtype)


def test_exports():
    assert fastkd.TAIDSchedule is L.TAIDSchedule
    assert {"taid", "TAIDLoss", "TAIDSchedule"} <= set(L.__all__)
    assert L.taid is fastkd.functional.taid and callable(L.taid)


@needs_triton
def test_inplace_grad_writes_the_gradient_over_the_student_logits():
    z, u = pair(4, 300)
    expected_z = z.clone().requires_grad_()
    L.taid(expected_z, u, 0.3, backend="triton").backward()
    leaf = z.clone().requires_grad_()
    student = leaf * 1.0  # a model's logits: not a leaf
    buffer = student.detach()
    L.taid(student, u, 0.3, backend="triton", inplace_grad=True).backward()
    assert torch.equal(leaf.grad, expected_z.grad) and torch.equal(buffer, expected_z.grad)


@needs_triton
def test_fused_backward_twice_raises_a_clear_error():
    z, u = pair(2, 40)
    loss = L.taid(z.requires_grad_(), u, 0.5, backend="triton")
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="one backward per forward"):
        loss.backward()


def test_teacher_gets_no_gradient_and_loss_is_fp32():
    z, u = pair(2, 40, dtype=torch.bfloat16)
    z.requires_grad_()
    u.requires_grad_()
    L.taid(z, u, torch.tensor(0.7, device=DEVICE, requires_grad=True)).backward()
    assert u.grad is None and z.grad.dtype == torch.bfloat16


CASES = [
    ("t above 1", lambda: L.taid(Z, U, 1.5), ValueError, r"t must lie in \[0, 1\], got 1.5"),
    ("t below 0", lambda: L.taid(Z, U, -0.1), ValueError, r"t must lie in \[0, 1\], got -0.1"),
    ("t nan", lambda: L.taid(Z, U, float("nan")), ValueError, r"t must be finite"),
    ("t bool", lambda: L.taid(Z, U, True), TypeError, r"t must be a Python float, got bool"),
    ("t string", lambda: L.taid(Z, U, "0.5"), TypeError, r"t must be a Python float, got str"),
    ("t shape", lambda: L.taid(Z, U, torch.tensor([0.5])), ValueError, r"0-dim tensor, got shape \(1,\)"),
    ("t dtype", lambda: L.taid(Z, U, torch.tensor(1)), TypeError, r"t must be a floating tensor.*int64"),
    ("t device", lambda: L.taid(Z, U, torch.tensor(0.5, device="meta")), ValueError, r"t is on meta"),
    ("t tensor range", lambda: L.taid(Z, U, torch.tensor(1.2)), RuntimeError, r"t must lie in \[0, 1\]"),
    ("shape", lambda: L.taid(Z, torch.randn(2, 3, 12), 0.5), ValueError, r"same shape"),
    ("temperature", lambda: L.taid(Z, U, 0.5, temperature=0.0), ValueError, r"temperature must be > 0"),
    ("reduction", lambda: L.taid(Z, U, 0.5, reduction="avg"), ValueError, r"unknown reduction 'avg'"),
    ("backend", lambda: L.taid(Z, U, 0.5, backend="jax"), ValueError, r"unknown backend 'jax'"),
    ("missing t", lambda: L.taid(Z, U), TypeError, r"missing 1 required positional argument: 't'"),
    ("steps type", lambda: L.TAIDSchedule(10.0), TypeError, r"total_steps must be an int, got float"),
    ("steps value", lambda: L.TAIDSchedule(0), ValueError, r"total_steps must be >= 1, got 0"),
    ("t_start", lambda: L.TAIDSchedule(5, t_start=1.4), ValueError, r"t_start must lie in \[0, 1\], got 1.4"),
    ("t order", lambda: L.TAIDSchedule(5, t_start=0.8, t_end=0.5), ValueError, r"t_start=0.8 and t_end=0.5"),
    ("alpha", lambda: L.TAIDSchedule(5, alpha=-1e-3), ValueError, r"alpha must be >= 0, got -0.001"),
    ("beta", lambda: L.TAIDSchedule(5, beta=2.0), ValueError, r"beta must lie in \[0, 1\], got 2.0"),
    (
        "update shape",
        lambda: L.TAIDSchedule(5).update(torch.ones(3)),
        ValueError,
        r"scalar loss J, got \(3,\)",
    ),
    ("module none", lambda: L.TAIDLoss(5, reduction="none"), ValueError, r"reduction 'mean' or 'sum'"),
    ("module per-call", lambda: L.TAIDLoss(5, labels=torch.zeros(2)), TypeError, r"per-call arguments"),
    ("module unknown", lambda: L.TAIDLoss(5, beta_m=0.9), TypeError, r"unknown option\(s\) \['beta_m'\]"),
    ("module temperature", lambda: L.TAIDLoss(5, temperature=-1.0), ValueError, r"temperature must be > 0"),
]


@pytest.mark.parametrize("call, error, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_raises_clear_error(call, error, message):
    with pytest.raises(error, match=message):
        call()


def op_args() -> tuple:
    z, u = pair(4, 300)
    valid = torch.tensor([True, False, True, True], device=DEVICE)
    t = torch.tensor(0.35, device=DEVICE)
    return (z, u, valid, t, torch.tensor(1 / 3, device=DEVICE), torch.empty_like(z), 1.5)


@needs_triton
def test_opcheck():
    utils = ("test_schema", "test_faketensor", "test_aot_dispatch_static", "test_aot_dispatch_dynamic")
    torch.library.opcheck(taid_fwd, op_args(), test_utils=utils)
    assert torch.ops.fastkd.taid_fwd.default is not None


@needs_triton
def test_torch_compile_fullgraph_matches_eager_and_a_new_t_does_not_recompile():
    from torch._dynamo.testing import CompileCounterWithBackend

    z, u = pair(2, 3, 257, seed=1)
    labels = torch.tensor([[1, -100, 3], [4, 5, -100]], device=DEVICE)

    def step(student: torch.Tensor, teacher: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return L.taid(student * 2.0, teacher, t, labels=labels, temperature=1.5, backend="triton")

    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(step, backend=counter, fullgraph=True)
    for value in (0.3, 0.8):
        t = torch.tensor(value, device=DEVICE)
        eager_z, compiled_z = z.clone().requires_grad_(), z.clone().requires_grad_()
        expected = step(eager_z, u, t)
        expected.backward()
        loss = compiled(compiled_z, u, t)
        loss.backward()
        assert torch.allclose(loss, expected, rtol=1e-6)
        assert torch.allclose(compiled_z.grad, eager_z.grad, rtol=1e-5, atol=1e-9)
    assert counter.frame_count == 1


@needs_triton
@pytest.mark.skipif(DEVICE != "cpu", reason="profiler memory records of CPU tensors")
def test_peak_memory_is_the_gradient_and_per_row_scalars_only():
    n, v = 8, 4096
    z, u = pair(n, v, dtype=torch.bfloat16)
    t = torch.tensor(0.4)
    per_row = 64 * n + 1024
    for inplace, limit in ((False, n * v * 2 + per_row), (True, per_row)):
        student = ModelOutput.apply(z.clone().requires_grad_())  # a model's logits: not a leaf
        call = lambda s=student, i=inplace: L.taid(s, u, t, backend="triton", inplace_grad=i).backward()
        peak = measure(call, "cpu").peak
        assert 0 < peak <= limit, (inplace, peak, limit)
    student = z.clone().requires_grad_()
    reference = measure(lambda: L.taid(student, u, t, backend="torch").backward(), "cpu").peak
    assert reference > 4 * n * v * 4  # the plain PyTorch version holds several fp32 [N, V] tensors
