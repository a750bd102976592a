"""nn.Module wrappers of SinKD (arXiv 2402.17110): options fixed and checked at construction."""

from __future__ import annotations

from typing import Any

import torch

from fastkd.boundary.options import DivergenceOptions, _check_unit
from fastkd.boundary.sinkhorn import SinkhornOptions
from fastkd.functional.sinkhorn import sinkd_objective, sinkhorn_loss
from fastkd.losses._base import FixedOptionsLoss

_SINKHORN_KEYS = ("tau", "epsilon", "n_iters", "scale", "log_domain")


def _check_sinkhorn(options: dict[str, Any]) -> None:
    SinkhornOptions(**{k: options[k] for k in _SINKHORN_KEYS if k in options})


class SinkhornLoss(FixedOptionsLoss):
    """``criterion(student_logits, teacher_logits, labels=None, mask=None)`` -> S, the batch-wise
    Sinkhorn distance of :func:`fastkd.losses.sinkhorn_loss` (options tau, epsilon, n_iters, scale,
    log_domain, ignore_index, backend)."""

    function = staticmethod(sinkhorn_loss)

    def __init__(self, **options: Any) -> None:
        super().__init__(options, per_call=())
        _check_sinkhorn(options)

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        labels: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return sinkhorn_loss(student_logits, teacher_logits, labels=labels, mask=mask, **self.options)


class SinKDObjectiveLoss(FixedOptionsLoss):
    """``criterion(student_logits, teacher_logits, labels)`` -> α·KD + (1 − α)·CE + weight·S, the
    authors' GLUE objective (:func:`fastkd.losses.sinkd_objective`)."""

    function = staticmethod(sinkd_objective)
    shown = ("alpha", "temperature", "sinkhorn_weight")
    extra_options = _SINKHORN_KEYS

    def __init__(
        self, alpha: float, temperature: float, sinkhorn_weight: float = 0.8, **options: Any
    ) -> None:
        super().__init__(options, per_call=())
        _check_unit("alpha", alpha)
        DivergenceOptions(temperature=temperature)
        _check_sinkhorn(options)
        self.alpha, self.temperature, self.sinkhorn_weight = alpha, temperature, sinkhorn_weight

    def forward(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        return sinkd_objective(
            student_logits, teacher_logits, labels, alpha=self.alpha, temperature=self.temperature,
            sinkhorn_weight=self.sinkhorn_weight, **self.options,
        )  # fmt: skip
