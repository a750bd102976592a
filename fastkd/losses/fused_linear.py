"""The fused-linear KD loss as a module: ``criterion(student_hidden, student_weight, teacher_hidden,
teacher_weight, labels=...)``."""

from __future__ import annotations

from typing import Any

import torch

from fastkd.functional.fused_linear import fused_linear_kd
from fastkd.losses._base import CALL_OPTIONS, FixedOptionsLoss

# Tensors of a call, never construction options.
CALL_TENSORS = (
    "student_bias",
    "teacher_bias",
    "teacher_logits",
    "teacher_topk_indices",
    "teacher_topk_logprobs",
)


class FusedLinearKDLoss(FixedOptionsLoss):
    """:func:`fastkd.losses.fused_linear_kd` with ``divergence`` and keyword ``options`` fixed (beta /
    alpha / mu, t, logit scales and softcaps, temperature, reduction, hard_label_weight, chunk_size,
    grad_weight_dtype, backend, ...). Each call takes the student's hidden states and weight, the
    teacher (hidden states and weight, or one of the tensors ``teacher_logits`` /
    ``teacher_topk_indices`` + ``teacher_topk_logprobs`` as keywords), the biases, labels, mask,
    num_items_in_batch, and optionally ``t`` (overrides a fixed one: TAID's schedule moves it)."""

    shown = ("divergence",)

    def __init__(self, divergence: str = "forward_kl", **options: Any) -> None:
        super().__init__(options, per_call=CALL_OPTIONS + CALL_TENSORS)
        self.divergence = divergence

    def forward(
        self,
        student_hidden: torch.Tensor,
        student_weight: torch.Tensor,
        teacher_hidden: torch.Tensor | None = None,
        teacher_weight: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
        num_items_in_batch: int | torch.Tensor | None = None,
        **tensors: Any,
    ) -> torch.Tensor:
        unknown = sorted(set(tensors) - {*CALL_TENSORS, "t", "backend"})
        if unknown:
            raise TypeError(
                f"unexpected per-call arguments {unknown}; the per-call tensors are {list(CALL_TENSORS)}"
            )
        return fused_linear_kd(
            student_hidden,
            student_weight,
            teacher_hidden,
            teacher_weight,
            labels=labels,
            mask=mask,
            num_items_in_batch=num_items_in_batch,
            divergence=self.divergence,
            **{**self.options, **tensors},
        )
