"""Runners and the tolerance rule for the SinKD tests: fastkd paths against the fp64 oracle."""

from __future__ import annotations

import math

import pytest
import torch

import fastkd.losses as L
from fastkd.boundary.sinkhorn import SinkhornOptions
from fastkd.functional.sinkhorn import fused_sinkhorn
from tests.helpers import GRAD_TOL, HAS_TRITON, LOSS_TOL, max_err
from tests.oracle_sinkhorn import oracle_sinkhorn

# "torch": the public torch backend (unrolled reference); "fused-torch": SinkhornFunction with the chunked
# PyTorch cost ops; "triton": SinkhornFunction with the Triton kernels (interpreted on CPU).
IMPLS = [
    "torch",
    "fused-torch",
    pytest.param("triton", marks=pytest.mark.skipif(not HAS_TRITON, reason="no triton")),
]
ALL_IMPLS = ["torch", "fused-torch"] + (["triton"] if HAS_TRITON else [])
SINKHORN_KEYS = ("tau", "epsilon", "n_iters", "scale", "log_domain")


def run_impl(
    impl: str, student: torch.Tensor, teacher: torch.Tensor, grad_output: float = 1.0, **options: object
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, student gradient) of one fastkd path; ``options`` are sinkhorn_loss's keywords."""
    z = student.detach().clone().requires_grad_()
    if impl == "torch":
        loss = L.sinkhorn_loss(z, teacher, backend="torch", **options)
    else:
        sinkhorn = SinkhornOptions(**{k: v for k, v in options.items() if k in SINKHORN_KEYS})
        valid = _valid(student, options.get("mask"), options.get("labels"), options.get("ignore_index", -100))
        flat = z.reshape(-1, z.shape[-1])
        loss = fused_sinkhorn(flat, teacher.reshape(flat.shape), valid, sinkhorn, impl.removeprefix("fused-"))
    (loss * grad_output).backward()
    return loss.detach(), z.grad


def _valid(student: torch.Tensor, mask: object, labels: object, ignore_index: int) -> torch.Tensor:
    valid = torch.ones(student.shape[:-1], dtype=torch.bool, device=student.device)
    if mask is not None:
        valid &= mask
    if labels is not None:
        valid &= labels != ignore_index
    return valid.reshape(-1)


def run_oracle(
    student: torch.Tensor, teacher: torch.Tensor, grad_output: float = 1.0, **options: object
) -> tuple[torch.Tensor, torch.Tensor]:
    z = student.detach().to(torch.float64).requires_grad_()
    valid = _valid(student, options.get("mask"), options.get("labels"), options.get("ignore_index", -100))
    kept = {k: v for k, v in options.items() if k in SINKHORN_KEYS and k != "log_domain"}
    loss = oracle_sinkhorn(z, teacher.to(torch.float64), valid, **kept)
    (loss * grad_output).backward()
    return loss.detach(), z.grad


def floor(student: torch.Tensor, options: dict) -> float:
    """fp32's relative error floor on these rows: W carries about √V roundings, amplified by 1/ε."""
    epsilon = float(options.get("epsilon", 0.1))
    return (
        64
        * torch.finfo(torch.float32).eps
        * math.sqrt(max(student.shape[-1] / 1000, 1))
        * max(1.0, 0.1 / epsilon)
    )


def assert_matches_oracle(
    impl: str | list[str],
    student: torch.Tensor,
    teacher: torch.Tensor,
    grad_output: float = 1.0,
    **options: object,
) -> None:
    """Loss and gradient within twice the torch backend's error (same dtype) of the fp64 oracle, plus
    one rounding of the dtype and fp32's floor, relative to the largest exact value (plus one
    subnormal step: fp16 gradients of 1e-5 are subnormal); no NaN. ``impl`` may list several paths,
    which then share one oracle and one reference run."""
    exact_loss, exact_grad = run_oracle(student, teacher, grad_output, **options)
    ref_loss, ref_grad = run_impl("torch", student, teacher, grad_output, **options)
    relative = floor(student, options)
    subnormal_step = torch.finfo(student.dtype).tiny * torch.finfo(student.dtype).eps  # fp16: 6e-8
    grad_scale = exact_grad.abs().max().item()
    for name in [impl] if isinstance(impl, str) else impl:
        loss, grad = (
            (ref_loss, ref_grad)
            if name == "torch"
            else run_impl(name, student, teacher, grad_output, **options)
        )
        assert loss.dtype == torch.float32 and grad.dtype == student.dtype
        assert not torch.isnan(loss).any() and not torch.isnan(grad).any()
        base_loss, base_grad = (
            (0.0, 0.0) if name == "torch" else (max_err(ref_loss, exact_loss), max_err(ref_grad, exact_grad))
        )
        grad_slack = 2 * base_grad + (GRAD_TOL[student.dtype] + relative) * grad_scale + subnormal_step
        assert max_err(grad, exact_grad) <= grad_slack, (
            name,
            max_err(grad, exact_grad),
            base_grad,
            grad_scale,
        )
        loss_slack = 2 * base_loss + (LOSS_TOL + relative) * abs(exact_loss.item()) + 1e-30
        assert max_err(loss, exact_loss) <= loss_slack, (name, loss.item(), exact_loss.item(), base_loss)
