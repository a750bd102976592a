"""The divergence family as functions of (student_logits, teacher_logits).

Every function takes logits of any leading shape [..., V] (fp32, bf16 or fp16; the teacher is
detached) and these keyword options:

- ``labels`` (integer, leading shape; ``ignore_index`` positions are skipped) and/or ``mask`` (bool,
  leading shape): the valid tokens;
- ``temperature`` T > 0: q = softmax(z/T) for the student, p = softmax(u/T) for the teacher (no T²);
- ``reduction``: ``"mean"`` over valid tokens (0 when none is valid), ``"sum"`` or ``"none"``;
- ``num_items_in_batch``: replaces the number of valid tokens as the mean's divisor;
- ``hard_label_weight`` w: returns (1 − w)·divergence + w·CE(z, labels), CE at T = 1;
- ``backend``: ``"auto"``, ``"triton"``, ``"cuda"``, ``"cpu"`` or ``"torch"``;
- ``inplace_grad``: fused backends write the gradient over ``student_logits`` (saves one [N, V]);
  refused for a leaf that requires grad and for expanded or overlapping logits; never done when no
  gradient is taken;
- ``check_finite``: raise a ValueError naming the first valid token whose student or teacher row is
  not finite (NaN, +inf, overflow at T, −inf everywhere); None (default) reads FASTKD_CHECK_FINITE=1.
  It reads the inputs once more and synchronises.

The loss is fp32; the student's gradient has the student's dtype. Under ``torch.no_grad()``, or when
the student does not require grad, the fused backends compute the loss only (no gradient buffer).

Non-finite inputs: a valid token whose student or teacher row holds NaN or +inf, or is −inf
everywhere, has loss NaN (so a reduced loss is NaN) and a NaN gradient row (so GradScaler skips the
step), on every backend; ignored tokens never reach the loss or the other rows. A teacher −inf where
the student has mass makes reverse_kl, jsd(β = 1), skew_reverse_kl(α = 0) and akl (reverse part of
weight > 0) +inf for that token with a zero gradient row; give the student −inf in the same columns
(padded vocabulary) to mean those ids do not exist. Fused losses are differentiable once
(``create_graph=True`` is an error; ``backend="torch"`` supports double backward).
"""

from __future__ import annotations

from typing import Any

import torch

from fastkd.backends import resolve
from fastkd.boundary.inputs import (
    check_finite_inputs,
    check_inplace_grad,
    gradient_wanted,
    prepare,
    reduce_rows,
    unit_stride,
)
from fastkd.boundary.options import FAMILY_PARAMETER, DivergenceOptions
from fastkd.functions.divergence import DivergenceFunction, divergence_value
from fastkd.reference import divergence as reference


def _family_param(divergence: str, params: dict[str, float | None]) -> float | None:
    expected = FAMILY_PARAMETER.get(divergence, (None, None))[0]
    for name, value in params.items():
        if value is not None and name != expected:
            raise TypeError(f"divergence {divergence!r} takes no parameter {name!r}")
    return params.get(expected) if expected else None


def divergence_options(divergence: str, **options: Any) -> DivergenceOptions:
    """The checked options of ``divergence`` from keyword options: its family parameter among beta /
    alpha / mu (another family's parameter is a TypeError), and temperature, reduction, ignore_index and
    hard_label_weight where given; other keys (backend, ...) are not looked at."""
    params = {name: options.get(name) for name in ("beta", "alpha", "mu")}
    settings = ("temperature", "reduction", "ignore_index", "hard_label_weight")
    return DivergenceOptions.build(
        divergence, _family_param(divergence, params), **{k: options[k] for k in settings if k in options}
    )


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    divergence: str = "forward_kl",
    *,
    labels: torch.Tensor | None = None,
    mask: torch.Tensor | None = None,
    ignore_index: int = -100,
    temperature: float = 1.0,
    reduction: str = "mean",
    num_items_in_batch: int | torch.Tensor | None = None,
    hard_label_weight: float = 0.0,
    backend: str = "auto",
    inplace_grad: bool = False,
    beta: float | None = None,
    alpha: float | None = None,
    mu: float | None = None,
    check_finite: bool | None = None,
) -> torch.Tensor:
    """Knowledge-distillation loss ``divergence`` between student and teacher logits.

    ``divergence`` is one of forward_kl, soft_cross_entropy, reverse_kl, jsd (``beta``, teacher weight,
    default 0.5), skew_kl / skew_reverse_kl (``alpha``, default 0.1), tvd, akl (``mu``, default 0.5).
    See the module docstring for the options and ``shared/spec/losses.md`` for the formulas.
    """
    options = divergence_options(
        divergence,
        beta=beta,
        alpha=alpha,
        mu=mu,
        temperature=temperature,
        reduction=reduction,
        ignore_index=ignore_index,
        hard_label_weight=hard_label_weight,
    )
    flat = prepare(student_logits, teacher_logits, options, labels, mask, num_items_in_batch)
    check_finite_inputs(check_finite, flat, temperature)
    name = resolve(backend, flat.student)
    if name == "torch":
        return reference.divergence_loss(flat, options)
    if not gradient_wanted(flat.student):
        rows = divergence_value(
            unit_stride(flat.student), unit_stride(flat.teacher), flat.valid, flat.labels, options, name
        )
        return reduce_rows(rows, flat.leading_shape, flat.divisor, options.reduction)
    if inplace_grad:
        check_inplace_grad(student_logits)
    return DivergenceFunction.apply(
        unit_stride(flat.student),
        unit_stride(flat.teacher),
        flat.valid,
        flat.labels,
        flat.divisor,
        options,
        flat.leading_shape,
        inplace_grad,
        name,
    )


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, **options: Any) -> torch.Tensor:
    """Forward KL(p‖q) = Σ p (log p − log q), p teacher, q student; gradient (q − p)/T."""
    return kd_loss(student_logits, teacher_logits, "forward_kl", **options)


def soft_cross_entropy(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, **options: Any
) -> torch.Tensor:
    """Soft-target cross-entropy −Σ p log q = KL(p‖q) + H(p); same gradient as forward KL."""
    return kd_loss(student_logits, teacher_logits, "soft_cross_entropy", **options)


def reverse_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, **options: Any) -> torch.Tensor:
    """Reverse KL(q‖p) = Σ q (log q − log p), the mode-seeking direction."""
    return kd_loss(student_logits, teacher_logits, "reverse_kl", **options)


def jsd(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, beta: float = 0.5, **options: Any
) -> torch.Tensor:
    """Generalised JSD β·KL(p‖m) + (1−β)·KL(q‖m), m = βp + (1−β)q; β = 0 / 1 give forward / reverse KL."""
    return kd_loss(student_logits, teacher_logits, "jsd", beta=beta, **options)


def skew_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, alpha: float = 0.1, **options: Any
) -> torch.Tensor:
    """DistiLLM skew KL: KL(p ‖ αp + (1−α)q) (arXiv 2402.03898)."""
    return kd_loss(student_logits, teacher_logits, "skew_kl", alpha=alpha, **options)


def skew_reverse_kl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, alpha: float = 0.1, **options: Any
) -> torch.Tensor:
    """DistiLLM skew reverse KL: KL(q ‖ (1−α)p + αq) (arXiv 2402.03898)."""
    return kd_loss(student_logits, teacher_logits, "skew_reverse_kl", alpha=alpha, **options)


def tvd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, **options: Any) -> torch.Tensor:
    """Total variation distance ½ Σ |p − q|."""
    return kd_loss(student_logits, teacher_logits, "tvd", **options)


def akl(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, mu: float = 0.5, **options: Any
) -> torch.Tensor:
    """Adaptive KL (arXiv 2404.02657): w_H·KL(p‖q) + w_T·KL(q‖p), weights from the head/tail gaps at μ."""
    return kd_loss(student_logits, teacher_logits, "akl", mu=mu, **options)
