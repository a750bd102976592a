"""Runners and the oracle comparison of the RLKD family (the tolerance table is tests/helpers.py's)."""

from __future__ import annotations

import torch

import fastkd.losses as L
from tests.helpers import GRAD_TOL, PARAM_NAME, max_err
from tests.oracle_ranking import oracle_ranking_loss, oracle_rlkd


def _expand(grad_output: object, loss: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(grad_output, dtype=loss.dtype, device=loss.device).expand_as(loss)


def run_fastkd(
    fn: str,
    student: torch.Tensor,
    teacher: torch.Tensor,
    backend: str,
    grad_output: object = 1.0,
    **options: object,
) -> tuple[torch.Tensor, torch.Tensor]:
    z = student.detach().clone().requires_grad_()
    loss = getattr(L, fn)(z, teacher, backend=backend, **options)
    loss.backward(_expand(grad_output, loss))
    return loss.detach(), z.grad


def run_oracle(
    fn: str, student: torch.Tensor, teacher: torch.Tensor, grad_output: object = 1.0, **options: object
) -> tuple[torch.Tensor, torch.Tensor]:
    options = dict(options)
    k = options.pop("k", 5)
    z = student.detach().to(torch.float64).requires_grad_()
    u = teacher.to(torch.float64)
    if fn == "ranking_loss":
        loss = oracle_ranking_loss(z, u, k, **options)
    else:
        divergence = options.pop("divergence", "forward_kl")
        name = PARAM_NAME.get(divergence)
        param = options.pop(name, None) if name else None
        loss = oracle_rlkd(z, u, k, divergence, param=param, **options)
    loss.backward(_expand(grad_output, loss))
    return loss.detach(), z.grad


def assert_matches_oracle(
    fn: str,
    student: torch.Tensor,
    teacher: torch.Tensor,
    backend: str,
    grad_output: object = 1.0,
    **options: object,
) -> None:
    """Loss and gradient within twice the torch backend's error of the fp64 oracle plus one rounding of
    the student's dtype (of the largest gradient entry) and fp32's rounding of the loss; no NaN."""
    loss, grad = run_fastkd(fn, student, teacher, backend, grad_output, **options)
    exact_loss, exact_grad = run_oracle(fn, student, teacher, grad_output, **options)
    assert loss.dtype == torch.float32 and grad.dtype == student.dtype
    assert not torch.isnan(loss).any() and not torch.isnan(grad).any()
    base_loss, base_grad = run_fastkd(fn, student, teacher, "torch", grad_output, **options)
    slack = 2 * max_err(base_grad, exact_grad) + 2 * GRAD_TOL[student.dtype] * exact_grad.abs().max().item()
    assert max_err(grad, exact_grad) <= slack + 1e-9, (max_err(grad, exact_grad), slack)
    loss_slack = 2 * max_err(base_loss, exact_loss) + 1e-5 * (1.0 + exact_loss.abs().max().item())
    assert max_err(loss, exact_loss) <= loss_slack, (loss, exact_loss)
