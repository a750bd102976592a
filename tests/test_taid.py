"""TAID against the fp64 oracle: dtypes, reductions, masks, edge cases, both ends of t, runtime t."""

from __future__ import annotations

import pytest
import torch

import fastkd.losses as L
from tests.conftest import DEVICE
from tests.helpers import DTYPES, GRAD_TOL, HAS_TRITON, TRITON_AND_CPU_BACKENDS, assert_close_to_oracle
from tests.oracle import oracle_kd_loss
from tests.oracle_taid import oracle_taid
from tests.test_divergence import EDGE_CASES, logits, some_ignored

needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="no triton")


def run_taid(student, teacher, t, backend, grad_output=1.0, **options):
    """(loss, student gradient) of ``fastkd.losses.taid``; ``t`` a float or made a device tensor."""
    z = student.detach().clone().requires_grad_()
    loss = L.taid(z, teacher, t, backend=backend, **options)
    loss.backward(torch.as_tensor(grad_output, dtype=loss.dtype, device=loss.device).expand_as(loss))
    return loss.detach(), z.grad


def run_oracle(student, teacher, t, grad_output=1.0, **options):
    z = student.detach().to(torch.float64).requires_grad_()
    loss = oracle_taid(z, teacher.to(torch.float64), float(t), **options)
    loss.backward(torch.as_tensor(grad_output, dtype=torch.float64, device=loss.device).expand_as(loss))
    return loss.detach(), z.grad


def assert_taid_matches_oracle(student, teacher, t, backend, grad_output=1.0, as_tensor=False, **options):
    weight = torch.tensor(t, device=student.device) if as_tensor else t
    assert_close_to_oracle(
        lambda b: run_taid(student, teacher, weight, b, grad_output, **options),
        run_oracle(student, teacher, t, grad_output, **options),
        student,
        teacher,
        backend,
        grad_output,
        options,
    )


@pytest.mark.parametrize("t, as_tensor", [(0.0, False), (0.35, True), (0.8, False), (1.0, True)])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", TRITON_AND_CPU_BACKENDS)
def test_matches_oracle(backend, dtype, t, as_tensor):
    z, u = logits(2, 3, 1271, dtype=dtype), logits(2, 3, 1271, dtype=dtype, seed=5)
    labels = some_ignored(2, 3, vocab=1271)
    assert_taid_matches_oracle(
        z, u, t, backend, grad_output=1.7, as_tensor=as_tensor, labels=labels, temperature=2.0
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("backend", TRITON_AND_CPU_BACKENDS)
def test_reductions_masks_and_divisor(backend, reduction):
    z, u = logits(4, 5, 300), logits(4, 5, 300, seed=7)
    mask = torch.rand(4, 5, generator=torch.Generator().manual_seed(3)).to(DEVICE) > 0.3
    grad_output = torch.linspace(0.5, 2.0, 20, device=DEVICE).reshape(4, 5) if reduction == "none" else 0.6
    options = dict(labels=some_ignored(4, 5, vocab=300), mask=mask, reduction=reduction, temperature=0.7)
    assert_taid_matches_oracle(z, u, 0.6, backend, grad_output, **options)
    if reduction == "mean":
        assert_taid_matches_oracle(z, u, 0.6, backend, num_items_in_batch=37)


def _one_sided_neg_inf(z: torch.Tensor, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """−inf in the student only at some positions, in the teacher only at others."""
    z, u = z.clone(), u.clone()
    z[..., 10:20] = float("-inf")
    u[..., 30:45] = float("-inf")
    return z, u


TAID_EDGE_CASES = {
    **EDGE_CASES,
    "one_sided_neg_inf": lambda: (*_one_sided_neg_inf(logits(3, 1271), logits(3, 1271, seed=2)), {}),
}


# One t is enough for the wide vocabulary (slow under the interpreter); both ends for the rest.
EDGE_PARAMS = [
    (case, t)
    for case in sorted(TAID_EDGE_CASES)
    for t in ((0.5,) if case == "wide_vocab" else (0.0, 0.5, 1.0))
]


@pytest.mark.parametrize("case, t", EDGE_PARAMS)
@pytest.mark.parametrize("backend", TRITON_AND_CPU_BACKENDS)
def test_edge_cases(backend, case, t):
    z, u, options = TAID_EDGE_CASES[case]()
    if case == "one_sided_neg_inf" and t == 1.0:
        # the teacher puts mass where the student has none: the true loss is +inf, the gradient finite
        loss, grad = run_taid(z, u, t, backend)
        assert loss == float("inf") and torch.isfinite(grad).all()
        return
    assert_taid_matches_oracle(z, u, t, backend, grad_output=1.3, **options)


@pytest.mark.parametrize("backend", TRITON_AND_CPU_BACKENDS)
def test_mixed_dtypes_and_non_contiguous_inputs(backend):
    z = logits(40, 8).T  # [8, 40], not unit stride along V
    u = logits(8, 40, seed=4, dtype=torch.bfloat16)
    assert_taid_matches_oracle(z, u, 0.45, backend)


@pytest.mark.parametrize("backend", TRITON_AND_CPU_BACKENDS)
def test_t_zero_is_the_student_entropy_with_zero_gradient(backend):
    z, u = logits(4, 1271), logits(4, 1271, seed=3)
    loss, grad = run_taid(z, u, 0.0, backend, reduction="none", temperature=1.5)
    log_q = torch.log_softmax(z.double() / 1.5, dim=-1)
    entropy = -(log_q.exp() * log_q).sum(-1)
    assert torch.allclose(loss.double(), entropy, rtol=1e-5, atol=1e-5)
    if backend in ("triton", "cpu"):
        assert torch.equal(grad, torch.zeros_like(grad))  # target and q are the same bits
    else:
        assert grad.abs().max() < 1e-7


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("backend", TRITON_AND_CPU_BACKENDS)
def test_t_one_is_soft_cross_entropy(backend, dtype):
    z, u = logits(3, 2, 777, dtype=dtype), logits(3, 2, 777, dtype=dtype, seed=8)
    options = dict(labels=some_ignored(3, 2, vocab=777), temperature=1.3, reduction="sum")
    loss, grad = run_taid(z, u, 1.0, backend, **options)
    z_ce = z.detach().clone().requires_grad_()
    expected = L.soft_cross_entropy(z_ce, u, backend=backend, **options)
    expected.backward()
    assert torch.allclose(loss, expected.detach(), rtol=1e-6, atol=1e-6)
    slack = GRAD_TOL[dtype] * z_ce.grad.abs().max().item() + 1e-9  # one rounding in the gradient's dtype
    assert (grad.float() - z_ce.grad.float()).abs().max() <= slack
    exact = oracle_kd_loss(z.double(), u.double(), "soft_cross_entropy", **options)
    assert torch.allclose(loss.double(), exact, rtol=1e-5)


@pytest.mark.parametrize("backend", TRITON_AND_CPU_BACKENDS)
def test_tensor_t_is_read_at_run_time(backend):
    """The same call with a tensor t changed in place between calls follows the new value."""
    z, u = logits(3, 500), logits(3, 500, seed=1)
    t = torch.tensor(0.2, device=DEVICE)
    first = run_taid(z, u, t, backend)
    t.fill_(0.9)
    second = run_taid(z, u, t, backend)
    for value, (loss, grad) in ((0.2, first), (0.9, second)):
        exact_loss, exact_grad = run_oracle(z, u, value)
        assert torch.allclose(loss.double(), exact_loss, rtol=1e-5)
        assert torch.allclose(grad.double(), exact_grad, atol=1e-6)
    assert not torch.allclose(first[0], second[0])


@needs_triton
def test_t_is_a_pointer_and_changing_it_does_not_recompile():
    import inspect

    import triton.language as tl

    from fastkd.kernels.taid import taid_kernel

    params = inspect.signature(getattr(taid_kernel, "fn", taid_kernel)).parameters
    assert "t" not in params and params["mix_ptr"].annotation is not tl.constexpr
    assert [n for n, p in params.items() if p.annotation is tl.constexpr] == ["BLOCK", "WRITE_GRAD"]
    if DEVICE != "cuda":
        return
    z, u = logits(2, 300), logits(2, 300, seed=1)
    for value in (0.1, 0.5, 0.93):
        L.taid(z, u, torch.tensor(value, device=DEVICE), backend="triton")
        L.taid(z, u, value, backend="triton", temperature=1.0 + value)
    kernels = sum(len(cache) for cache in taid_kernel.device_caches[torch.cuda.current_device()][0].values())
    assert kernels == 1
