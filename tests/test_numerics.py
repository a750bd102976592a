"""Numerical integrity of the divergence family on every backend (spec: conventions; issue 8).

Non-finite inputs give NaN rows (loss and gradient) and never leak; a teacher −inf under student mass
gives +inf with a zero gradient row; fp16 gradients survive GradScaler factors; no gradient work
without autograd; no double backward through a fused loss.
"""

from __future__ import annotations

import pytest
import torch

import fastkd.losses as L
from fastkd.boundary.options import DIVERGENCES
from tests.conftest import DEVICE
from tests.helpers import BACKENDS, family_kwargs

NAN, INF = float("nan"), float("inf")
FUSED = BACKENDS[1:]  # triton, cpu


def pair(rows: int = 6, vocab: int = 37, seed: int = 0, dtype: torch.dtype = torch.float32) -> tuple:
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(rows, vocab, generator=gen) * 2
    u = torch.randn(rows, vocab, generator=gen) * 2
    return z.to(dtype=dtype, device=DEVICE), u.to(dtype=dtype, device=DEVICE)


def loss_and_grad(z, u, divergence, backend, **options):
    z = z.detach().clone().requires_grad_()
    loss = L.kd_loss(z, u, divergence, backend=backend, **{**family_kwargs(divergence), **options})
    (loss.sum() if loss.dim() else loss).backward()
    return loss.detach(), z.grad


def poisoned() -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """Rows 1-4 break the rule in each way (teacher NaN, student +inf, teacher −inf everywhere,
    student NaN); row 5 is ignored and holds NaN; rows 0 and 5's neighbours are clean."""
    z, u = pair()
    u[1, 3] = NAN
    z[2, 5] = INF
    u[3, :] = -INF
    z[4, 0] = NAN
    z[5, 2] = NAN
    u[5, :] = INF
    return z, u, [1, 2, 3, 4]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_non_finite_rows_give_nan_and_stay_isolated(divergence, backend):
    z, u, bad = poisoned()
    labels = torch.zeros(6, dtype=torch.int64, device=DEVICE)
    labels[5] = -100
    rows, grad = loss_and_grad(z, u, divergence, backend, labels=labels, reduction="none")
    clean, clean_grad = loss_and_grad(z[:1], u[:1], divergence, "torch", reduction="none")
    assert rows[bad].isnan().all(), rows
    assert grad[bad].isnan().all()
    torch.testing.assert_close(rows[0], clean[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad[0], clean_grad[0], rtol=1e-3, atol=1e-5)
    assert rows[5] == 0 and (grad[5] == 0).all()  # the ignored row never leaks
    mean, _ = loss_and_grad(z, u, divergence, backend, labels=labels)
    assert mean.isnan()
    kept, kept_grad = loss_and_grad(z, u, divergence, backend, labels=labels, mask=torch.arange(6) % 5 == 0)
    assert kept.isfinite() and kept_grad.isfinite().all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_tempered_overflow_is_not_a_finite_loss(backend):
    z = torch.zeros(2, 40, dtype=torch.bfloat16, device=DEVICE)
    z[0, 1] = 1e37  # 1e39 at T = 0.01 overflows fp32
    u = z.clone()
    rows, _ = loss_and_grad(z, u, "forward_kl", backend, temperature=0.01, reduction="none")
    assert rows[0].isnan() and rows[1] == 0


REVERSE_TYPE = [("reverse_kl", {}), ("jsd", {"beta": 1.0}), ("skew_reverse_kl", {"alpha": 0.0}), ("akl", {})]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("divergence", "param"), REVERSE_TYPE, ids=[d for d, _ in REVERSE_TYPE])
def test_teacher_minus_inf_under_student_mass_is_inf_with_zero_gradient(divergence, backend, param):
    z, u = pair(3, 40)
    u[1, :4] = -INF  # padded teacher ids, student finite there
    u[1, 4] = 9.0  # teacher mass on one token: akl's tail carries the padded ids
    z = z.clone().requires_grad_()
    rows = L.kd_loss(z, u, divergence, backend=backend, reduction="none", **param)
    rows.sum().backward()
    assert rows[1] == INF and rows[[0, 2]].isfinite().all()
    assert (z.grad[1] == 0).all() and z.grad.isfinite().all()
    padded = z.detach().clone()
    padded[1, :4] = -INF  # the documented recipe: the student gets −inf in the same columns
    fixed, grad = loss_and_grad(padded, u, divergence, backend, reduction="none", **param)
    assert fixed.isfinite().all() and grad.isfinite().all() and (grad[1, :4] == 0).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_akl_with_mu_one_is_forward_kl(backend):
    z, u = pair(8, 300, seed=3)
    got, grad = loss_and_grad(z, u * 4, "akl", backend, mu=1.0)
    want, want_grad = loss_and_grad(z, u * 4, "forward_kl", backend)
    assert got == want and torch.equal(grad, want_grad)


def fp16_gradient_error(
    backend: str, rows: int, tokens: int, vocab: int = 16, factor: float = 65536.0
) -> tuple[float, float]:
    """(fraction of zero gradient entries where the fp64 gradient is not 0, relative L2 error) of
    (factor·loss).backward() on fp16 logits [rows, vocab] as GradScaler runs it, the mean taken over
    ``tokens`` (``num_items_in_batch``: the 1/N that underflowed is the divisor, whatever the rows)."""
    gen = torch.Generator().manual_seed(7)
    z = (torch.randn(rows, vocab, generator=gen) * 2).to(torch.float16)
    u = (torch.randn(rows, vocab, generator=gen) * 2).to(torch.float16)
    exact = z.to(torch.float64).requires_grad_()
    L.forward_kl(exact, u.to(torch.float64), num_items_in_batch=tokens).mul(factor).backward()
    student = z.to(DEVICE).requires_grad_()
    L.forward_kl(student, u.to(DEVICE), backend=backend, num_items_in_batch=tokens).mul(factor).backward()
    got, want = student.grad.cpu().to(torch.float64), exact.grad
    underflow = ((got == 0) & (want != 0)).double().mean().item()
    return underflow, ((got - want).norm() / want.norm()).item()


@pytest.mark.parametrize("backend", BACKENDS)
def test_fp16_gradient_survives_loss_scaling(backend):
    rows = 32768 if backend != "triton" else 64  # the interpreter runs a row at a time
    for tokens in (4096, 32768):
        underflow, error = fp16_gradient_error(backend, min(rows, tokens), tokens)
        base_underflow, base_error = fp16_gradient_error("torch", min(rows, tokens), tokens)
        assert underflow <= base_underflow + 1e-3, (tokens, underflow, base_underflow)
        assert error <= 2 * base_error + 1e-4, (tokens, error, base_error)
        assert error < 1e-3


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("divergence", ["forward_kl", "soft_cross_entropy", "reverse_kl", "akl"])
def test_loss_only_pass_without_autograd(divergence, backend):
    z, u = pair(5, 300, seed=4)
    want, _ = loss_and_grad(z, u, divergence, "torch", reduction="none")
    student = z.clone()
    with torch.no_grad():
        trained = z.clone().requires_grad_()
        got = L.kd_loss(trained, u, divergence, backend=backend, inplace_grad=True, reduction="none")
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert torch.equal(trained, z)  # never written in place without a gradient
    plain = L.kd_loss(student, u, divergence, backend=backend, inplace_grad=True, reduction="none")
    assert torch.equal(student, z) and not plain.requires_grad
    torch.testing.assert_close(plain, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("backend", FUSED)
def test_inplace_grad_refuses_leaves_and_shared_memory(backend):
    z, u = pair(4, 40)
    with pytest.raises(ValueError, match="leaf tensor that requires grad"):
        L.forward_kl(z.clone().requires_grad_(), u, backend=backend, inplace_grad=True)
    row = torch.randn(1, 40, device=DEVICE, requires_grad=True) * 1.0  # a non-leaf
    with pytest.raises(ValueError, match="expanded or overlapping"):
        L.forward_kl(row.expand(4, 40), u, backend=backend, inplace_grad=True)


@pytest.mark.parametrize("backend", FUSED)
def test_double_backward_is_a_clear_error(backend):
    z, u = pair(3, 40)
    z.requires_grad_()
    loss = L.forward_kl(z, u, backend=backend)
    with pytest.raises(RuntimeError, match="backend='torch'"):
        torch.autograd.grad(loss, z, create_graph=True)
    loss = L.forward_kl(z, u, backend="torch")
    (grad,) = torch.autograd.grad(loss, z, create_graph=True)
    (hessian_row,) = torch.autograd.grad(grad[0, 0], z)
    assert hessian_row.abs().sum() > 0
