"""Runners and the oracle comparison of the RLKD family (the tolerance table is tests/helpers.py's)."""

from __future__ import annotations

import torch

import fastkd.losses as L
from tests.helpers import PARAM_NAME, assert_close_to_oracle
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
    """The core's tolerance rule (tests/helpers.py): within twice the torch backend's error of the fp64
    oracle, plus one rounding of the dtype and fp32's floor on these logits; no NaN."""
    assert_close_to_oracle(
        lambda b: run_fastkd(fn, student, teacher, b, grad_output, **options),
        run_oracle(fn, student, teacher, grad_output, **options),
        student,
        teacher,
        backend,
        grad_output,
        {key: value for key, value in options.items() if key != "k"},
    )
